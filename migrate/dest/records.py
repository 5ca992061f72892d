"""Unit records kept at DEST while a migration runs, so a killed run picks up where it stopped.

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
(:func:`migrate.dest.marks.dest_completion_mark`): only then is the destination complete.

Every per-unit value here is kept only for units the data proves: a signature for each unit
that has a source block in the listing, a done set of the records found. Nothing is
allocated per unit of a level's *declared* size.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

from migrate.dest.marks import read_json
from migrate.storage import Store, join_key
from migrate.target.layout import dumps
from schemas.plan import ImagePlan, LevelPlan, Plan

STATE_DIR = ".cellmap-migrate"


def image_state_key(image_dest_path: str, *parts: str) -> str:
    return join_key(STATE_DIR, "images", image_dest_path, *parts)


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
    return generation_of(read_json(dest, image_state_key(image_dest_path, "plan.json")))


def generation_of(started: Mapping[str, Any] | None) -> str:
    """The generation recorded in an image's start record (plan.json), "" when none."""
    generation = (started or {}).get("generation")
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
EMPTY_SIGNATURE = f"0:{0:016x}"
"""The signature of a unit none of whose source blocks is stored (all zero)."""


def unit_signatures(source: Store, level: LevelPlan) -> dict[int, str]:
    """A signature of the source blocks of the work units of ``level`` (C-order unit index →
    signature), from one listing of the level: a function of each block's key, size and
    stamp (modification time on disk, ETag on S3), so a block that is rewritten, added or
    removed changes the signature of every unit it falls in. Nothing is read but the
    listing. Only units with a listed block are in the result (the others'
    signature is :data:`EMPTY_SIGNATURE`: see :func:`signature_of`), so its size follows the
    blocks stored, never the level's declared size."""
    ndim = len(level.shape)
    grid = level.unit_grid
    sums: dict[int, int] = {}
    counts: dict[int, int] = {}
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
                sums[linear] = (sums.get(linear, 0) + value) & _MASK
                counts[linear] = counts.get(linear, 0) + 1
    return {unit: f"{counts[unit]}:{total:016x}" for unit, total in sorted(sums.items())}


def signature_of(signatures: Mapping[int, str], unit: int) -> str:
    """The signature of ``unit`` in a :func:`unit_signatures` result."""
    return signatures.get(unit, EMPTY_SIGNATURE)


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
