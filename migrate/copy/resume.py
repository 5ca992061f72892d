"""Resume records kept at DEST while a migration runs, so a killed run picks up where it stopped.

While an image is being copied, ``DEST/.cellmap-migrate/images/<image dest path>/`` holds:

- ``plan.json``: the image's plan and fingerprint, written before any of its chunks;
- ``done/<fingerprint>/<generation>/<level>/<unit>``: one object per finished work unit,
  written only after every chunk of that unit is stored, so each record is independent and
  any number of workers (on any machine) can add records at once without coordination. It
  holds the signature of the unit's source blocks as they were listed before the unit was
  copied (:func:`unit_signatures`: key, size and modification time, or ETag on S3); a
  resumed run lists the source again and redoes the done units whose signature changed.
  The generation is the run id of the run that started the image (kept in ``plan.json``;
  resumed runs keep it): a worker of an older run whose image was deleted and started again
  (``--overwrite``) records under its own generation, which the new run does not count.
  (Records written before generations existed have none: ``done/<fingerprint>/<level>/…``.)

When every unit of an image is done, its OME metadata is written with the fingerprint in the
``cellmap-migrate`` provenance attribute: that is the image's completion mark. The image's
records are then deleted, and ``.cellmap-migrate/`` itself once no image has records left, so
a finished destination holds nothing but Zarr metadata and chunks. Last of all, the root
group's ``cellmap-migrate`` attribute lists every finished image by fingerprint
(:func:`dest_completion_mark`): only then is the destination complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from enum import Enum
from typing import Any

from migrate.storage import Store, join_key
from migrate.target.layout import PROVENANCE_KEY, dumps
from migrate.target.plan import COMPLETE_KEY, plan_groups, with_completion_mark
from schemas.plan import ImagePlan, LevelPlan, Plan

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
    """A Zarr group's user attributes (v2 ``.zattrs`` or v3 ``zarr.json``), None if absent.

    On a store that takes calls in parallel (S3) both documents are asked for at once, one
    round trip instead of two when the group is v2 (or absent); locally, one at a time."""
    keys = [join_key(path, "zarr.json"), join_key(path, ".zattrs")]
    if store.concurrency > 1:
        v3, v2 = store.map(lambda key: read_json(store, key), keys)
    else:
        v3 = read_json(store, keys[0])
        v2 = None if v3 is not None else read_json(store, keys[1])
    if v3 is not None:
        attributes = v3.get("attributes", {})
        return attributes if isinstance(attributes, dict) else {}
    return v2


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
    *,
    signature: str = "",
    generation: str = "",
) -> None:
    """Record a unit as done (by a run of ``generation``), with the signature of the source
    blocks it was copied from."""
    key = join_key(done_prefix(fingerprint, image_dest_path, level, generation), str(unit))
    dest.write(key, signature.encode())


def recorded_signatures(
    dest: Store,
    fingerprint: str,
    image_dest_path: str,
    level: str,
    units: set[int],
    generation: str = "",
) -> dict[int, str]:
    """The source signature recorded with each of the done ``units`` of one level."""
    prefix = done_prefix(fingerprint, image_dest_path, level, generation)
    order = sorted(units)
    raws = dest.map(lambda unit: dest.read(join_key(prefix, str(unit))), order)
    return {
        unit: (raw or b"").decode("ascii", errors="replace")
        for unit, raw in zip(order, raws, strict=True)
    }


_MASK = 2**64 - 1


def unit_signatures(source: Store, level: LevelPlan) -> list[str]:
    """A signature of the source blocks of every work unit of ``level`` (C-order unit index →
    signature), from one listing of the level: a function of each block's key, size and
    stamp (modification time on disk, ETag on S3), so a block that is rewritten, added or
    removed changes the signature of every unit it falls in. Nothing is read but the
    listing."""
    ndim = len(level.shape)
    grid = level.unit_grid
    sums = [0] * level.unit_count
    counts = [0] * level.unit_count
    for key, size, stamp in source.list_stats(level.source_path):
        parts = key.split("/")
        if len(parts) != ndim or not all(part.isdigit() for part in parts):
            continue  # attributes.json and anything else that is not a block
        ranges = []
        for axis, (index, block, unit, extent) in enumerate(
            zip(reversed(parts), level.source_blocks, level.unit_shape, level.shape, strict=True)
        ):
            start = int(index) * block
            if start >= extent:
                break  # outside the array: never read
            stop = min(start + block, extent)
            if level.mirror is not None and level.mirror[axis]:  # where it lands at DEST
                start, stop = extent - stop, extent - start
            ranges.append(range(start // unit, (stop - 1) // unit + 1))
        else:
            text = f"{key}\0{size}\0{stamp}".encode()
            value = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
            for position in itertools.product(*ranges):
                linear = 0
                for p, g in zip(position, grid, strict=True):
                    linear = linear * g + p
                sums[linear] = (sums[linear] + value) & _MASK
                counts[linear] += 1
    return [f"{n}:{total:016x}" for n, total in zip(counts, sums, strict=True)]


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


def dest_completion_mark(dest: Store) -> dict[str, str]:
    """The images DEST's completion mark lists as finished (dest path → image fingerprint);
    empty when there is no mark."""
    return completion_of(group_attributes(dest, ""))


def completion_of(root_attributes: dict[str, Any] | None) -> dict[str, str]:
    """The completion mark in the root group's attributes (see :func:`dest_completion_mark`)."""
    provenance = (root_attributes or {}).get(PROVENANCE_KEY)
    complete = provenance.get(COMPLETE_KEY) if isinstance(provenance, dict) else None
    if not isinstance(complete, dict):
        return {}
    return {str(path): str(fp) for path, fp in complete.items() if isinstance(fp, str)}


def listed_labels(dest: Store, group_paths: list[str]) -> dict[str, tuple[str, ...]]:
    """The label names the ``labels`` groups at ``group_paths`` already list at DEST
    (groups that list none are left out); the groups are read in parallel where the store
    allows."""
    found = dest.map(lambda path: group_attributes(dest, path), group_paths)
    return labels_of(dict(zip(group_paths, found, strict=True)))


def labels_of(attributes: dict[str, dict[str, Any] | None]) -> dict[str, tuple[str, ...]]:
    """The label names each group (path → its attributes) lists (see :func:`listed_labels`)."""
    found: dict[str, tuple[str, ...]] = {}
    for path, attrs in attributes.items():
        group: Any = attrs or {}
        labels = group.get("labels") or group.get("ome", {}).get("labels") or []
        if isinstance(labels, list) and labels:
            found[path] = tuple(str(name) for name in labels)
    return found


def plan_at_dest(plan: Plan, dest: Store) -> Plan:
    """``plan`` as it applies to what DEST already holds: its ``labels`` groups keep listing
    the label images other runs listed, and the completion mark keeps listing the images
    other runs finished there. ``convert`` writes this; ``verify`` compares DEST with it.
    The groups and the root are read in one batch (one round trip on S3)."""
    paths = [group.path for group in plan.groups if group.attributes]
    wanted = list(dict.fromkeys(["", *paths]))
    found = dict(
        zip(wanted, dest.map(lambda path: group_attributes(dest, path), wanted), strict=True)
    )
    existing = labels_of({path: found[path] for path in paths})
    if existing:
        plan = plan.model_copy(
            update={"groups": plan_groups(plan.images, plan.ngff_version, existing)}
        )
    return with_completion_mark(plan, completion_of(found[""]))


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
