"""Resume records kept at DEST while a migration runs, so a killed run picks up where it stopped.

While an image is being copied, ``DEST/.cellmap-migrate/images/<image dest path>/`` holds:

- ``plan.json``: the image's plan and fingerprint, written before any of its chunks;
- ``done/<fingerprint>/<generation>/<level>/<unit>``: one empty object per finished work
  unit, written only after every chunk of that unit is stored, so each record is independent
  and any number of workers (on any machine) can add records at once without coordination.
  The generation is the run id of the run that started the image (kept in ``plan.json``;
  resumed runs keep it): a worker of an older run whose image was deleted and started again
  (``--overwrite``) records under its own generation, which the new run does not count.
  (Records written before generations existed have none: ``done/<fingerprint>/<level>/…``.)

When every unit of an image is done, its OME metadata is written with the fingerprint in the
``cellmap-migrate`` provenance attribute: that is the completion mark. The image's records are
then deleted, and ``.cellmap-migrate/`` itself once no image has records left, so a finished
destination holds nothing but Zarr metadata and chunks.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from migrate.storage import Store, join_key
from migrate.target.layout import PROVENANCE_KEY, dumps
from schemas.plan import ImagePlan, Plan

STATE_DIR = ".cellmap-migrate"


def image_state_key(image_dest_path: str, *parts: str) -> str:
    return join_key(STATE_DIR, "images", image_dest_path, *parts)


class ImageState(Enum):
    NEW = "new"  # nothing at DEST
    PARTIAL = "partial"  # started with the same plan
    COMPLETE = "complete"  # finished with the same plan
    DIFFERENT = "different"  # started or finished with another plan
    FOREIGN = "foreign"  # DEST holds data cellmap-migrate did not write


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    raw = store.read(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def group_attributes(store: Store, path: str) -> dict[str, Any] | None:
    """A Zarr group's user attributes (v2 ``.zattrs`` or v3 ``zarr.json``), None if absent."""
    v3 = read_json(store, join_key(path, "zarr.json"))
    if v3 is not None:
        attributes = v3.get("attributes", {})
        return attributes if isinstance(attributes, dict) else {}
    return read_json(store, join_key(path, ".zattrs"))


def completion_mark(store: Store, path: str) -> dict[str, Any] | None:
    """The provenance of a finished image at ``path`` (it carries the fingerprint), or None."""
    attributes = group_attributes(store, path) or {}
    provenance = attributes.get(PROVENANCE_KEY)
    if isinstance(provenance, dict) and provenance.get("fingerprint"):
        return provenance
    return None


def image_state(dest: Store, plan: Plan, image: ImagePlan) -> ImageState:
    """Where this image stands at DEST relative to ``plan``."""
    fingerprint = plan.image_fingerprint(image)
    finished = completion_mark(dest, image.dest_path)
    if finished is not None:
        return (
            ImageState.COMPLETE if finished["fingerprint"] == fingerprint else ImageState.DIFFERENT
        )
    started = read_json(dest, image_state_key(image.dest_path, "plan.json"))
    if started is not None:
        same = started.get("fingerprint") == fingerprint
        return ImageState.PARTIAL if same else ImageState.DIFFERENT
    if dest.exists_prefix(image.dest_path):
        return ImageState.FOREIGN
    return ImageState.NEW


def record_start(dest: Store, plan: Plan, image: ImagePlan, generation: str = "") -> None:
    dest.write(
        image_state_key(image.dest_path, "plan.json"),
        dumps(
            {
                "fingerprint": plan.image_fingerprint(image),
                "generation": generation,
                "plan_fingerprint": plan.fingerprint,
                "tool_version": plan.tool_version,
                "ngff_version": plan.ngff_version,
                "source": plan.source,
                "image": image.to_json_dict(),
            }
        ),
    )


def recorded_generation(dest: Store, image_dest_path: str) -> str:
    """The generation of the image's records (its plan.json), "" when it has none."""
    started = read_json(dest, image_state_key(image_dest_path, "plan.json")) or {}
    generation = started.get("generation")
    return generation if isinstance(generation, str) else ""


def done_prefix(fingerprint: str, image_dest_path: str, level: str, generation: str = "") -> str:
    return image_state_key(image_dest_path, "done", fingerprint, generation, level)


def record_unit(
    dest: Store,
    fingerprint: str,
    image_dest_path: str,
    level: str,
    unit: int,
    generation: str = "",
) -> None:
    prefix = done_prefix(fingerprint, image_dest_path, level, generation)
    dest.write(join_key(prefix, str(unit)), b"")


def done_units(
    dest: Store, fingerprint: str, image_dest_path: str, level: str, generation: str = ""
) -> set[int]:
    """Indices of the work units of one level already recorded as finished (by runs of
    ``generation``)."""
    done: set[int] = set()
    for key in dest.list_keys(done_prefix(fingerprint, image_dest_path, level, generation)):
        name = key.rsplit("/", 1)[-1]
        if name.isdigit():
            done.add(int(name))
    return done


def forget_image(dest: Store, image_dest_path: str) -> None:
    """Drop an image's resume records, and the state folder once nothing is left in it."""
    dest.delete_prefix(image_state_key(image_dest_path))
    if next(iter(dest.list_keys(STATE_DIR)), None) is None:
        dest.delete_prefix(STATE_DIR)


def started_images(dest: Store) -> list[dict[str, Any]]:
    """The recorded plan.json of every image started but not finished at DEST.

    Walks the state folder's directories without descending into ``done/`` records.
    """
    found: list[dict[str, Any]] = []
    pending = [join_key(STATE_DIR, "images")]
    while pending:
        prefix = pending.pop()
        dirs, files = dest.list_dir(prefix)
        if "plan.json" in files:
            record = read_json(dest, join_key(prefix, "plan.json"))
            if record is not None:
                found.append(record)
        pending.extend(join_key(prefix, name) for name in dirs if name != "done")
    return sorted(found, key=lambda record: str(record.get("image", {}).get("dest_path")))
