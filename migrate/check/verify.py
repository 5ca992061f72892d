"""Verification: every voxel (or a random sample of boxes) of DEST equals SRC, and the
metadata is valid OME-NGFF. Boxes are reported in **C order** (z, y, x)."""

from __future__ import annotations

import concurrent.futures as cf
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrate.check.inventory import FinishedLevel, finished_images, started_images
from migrate.check.validate import validate_image, validate_labels_listing
from migrate.copy.tsio import (
    box_slices,
    n5_metadata,
    open_dest_readonly,
    open_source_array,
    ts_error_text,
)
from migrate.errors import MigrationError
from migrate.source.parse import parse_attrs
from migrate.storage import Store
from migrate.target.plan import DEFAULT_UNIT_BYTES, grow_unit
from schemas.n5 import N5ArrayAttributes

Box = tuple[tuple[int, int], ...]


@dataclass
class VerifyResult:
    images: int = 0
    units_checked: int = 0
    bytes_compared: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def _box(index: int, unit: tuple[int, ...], shape: tuple[int, ...]) -> Box:
    """Box number ``index`` (C-order linear index) of the grid of ``unit`` boxes over ``shape``."""
    counts = [-(-n // u) for n, u in zip(shape, unit, strict=True)]
    position = np.unravel_index(index, counts)
    return tuple(
        (int(p) * u, min((int(p) + 1) * u, n))
        for p, u, n in zip(position, unit, shape, strict=True)
    )


def boxes(level: FinishedLevel, sample: float, rng: random.Random) -> Iterator[Box]:
    """What to compare, C order: the whole level in write-aligned boxes of about
    DEFAULT_UNIT_BYTES, or a random ``sample`` fraction of its chunks (or shards)."""
    itemsize = np.dtype(level.dtype).itemsize
    unit = level.grid
    if sample >= 1.0:
        unit = grow_unit(level.grid, level.shape, itemsize, DEFAULT_UNIT_BYTES)
    count = math.prod(-(-n // u) for n, u in zip(level.shape, unit, strict=True))
    indices: Iterable[int] = range(count)
    if sample < 1.0:
        indices = sorted(rng.sample(range(count), max(1, round(sample * count))))
    for index in indices:
        yield _box(index, unit, level.shape)


def _compare(source: Any, dest: Any, box: Box) -> tuple[int, str | None]:
    region = box_slices(box)
    a = source[region].read().result()
    b = dest[region].read().result()
    if np.array_equal(a, b):
        return int(a.nbytes), None
    diff = np.argwhere(a != b)
    lo = diff.min(axis=0) + [start for start, _ in box]
    hi = diff.max(axis=0) + [start for start, _ in box] + 1
    where = ", ".join(f"{int(s)}:{int(e)}" for s, e in zip(lo, hi, strict=True))
    return int(a.nbytes), f"{len(diff)} voxel(s) differ in box [{where}] (z, y, x order)"


def verify(
    source: Store, dest: Store, *, sample: float = 1.0, workers: int = 2, seed: int | None = None
) -> VerifyResult:
    """Compare every finished image at DEST with SRC; collect every problem found."""
    result = VerifyResult()
    rng = random.Random(seed)
    for started in started_images(dest):
        result.images += 1
        result.problems.append(
            f"{dest.display(started.image.dest_path)}: migration is not complete"
        )
    for image in finished_images(dest):
        result.images += 1
        result.problems.extend(validate_image(dest, image))
        if image.kind == "label":
            result.problems.extend(validate_labels_listing(dest, image))
        for level in image.levels:
            where = f"{image.dest_path}/{level.name}"
            try:
                attrs = parse_attrs(N5ArrayAttributes, level.source_attributes, where)
                src = open_source_array(
                    source, level.source_path, n5_metadata(attrs.to_json_dict()), workers
                )
                dst = open_dest_readonly(dest, level.dest_path, image.ngff_version, workers)
            except MigrationError as exc:
                result.problems.append(f"{where}: cannot read its source attributes: {exc}")
                continue
            except Exception as exc:
                result.problems.append(f"{where}: cannot open: {ts_error_text(exc)}")
                continue
            if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                result.problems.append(
                    f"{where}: shape/dtype {tuple(dst.shape)} {dst.dtype} != source "
                    f"{tuple(src.shape)} {src.dtype}"
                )
                continue
            with cf.ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {
                    pool.submit(_compare, src, dst, box): box for box in boxes(level, sample, rng)
                }
                for future in cf.as_completed(futures):
                    try:
                        nbytes, problem = future.result()
                    except Exception as exc:
                        problem, nbytes = f"box {list(futures[future])}: {ts_error_text(exc)}", 0
                    result.units_checked += 1
                    result.bytes_compared += nbytes
                    if problem:
                        result.problems.append(f"{where}: {problem}")
    if result.images == 0:
        raise MigrationError(
            f"{dest.display()}: no cellmap-migrate output found (nothing to verify)"
        )
    return result
