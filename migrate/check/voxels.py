"""Voxel comparison: DEST read with TensorStore's zarr driver against the N5 source read
with its n5 driver, every voxel in boxes of about DEFAULT_UNIT_BYTES or a random sample of
chunks (shards). Boxes are in **C order** (z, y, x).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.copy.events import Progress
from migrate.copy.tsio import box_slices, open_dest_readonly, open_source, ts_error_text
from migrate.storage import Store
from migrate.target.plan import DEFAULT_UNIT_BYTES, grow_unit
from schemas.plan import LevelPlan, Plan

Box = tuple[tuple[int, int], ...]


@dataclass
class VoxelTally:
    """What was compared, and the boxes (or levels) that differ or could not be read."""

    units_checked: int = 0
    units_total: int = 0
    voxels_compared: int = 0
    bytes_compared: int = 0
    problems: list[str] = field(default_factory=list)


def _box(index: int, unit: tuple[int, ...], shape: tuple[int, ...]) -> Box:
    """Box number ``index`` (C-order linear index) of the grid of ``unit`` boxes over ``shape``."""
    counts = [-(-n // u) for n, u in zip(shape, unit, strict=True)]
    position = np.unravel_index(index, counts)
    return tuple(
        (int(p) * u, min((int(p) + 1) * u, n))
        for p, u, n in zip(position, unit, shape, strict=True)
    )


def boxes(level: LevelPlan, sample: float, rng: random.Random) -> tuple[list[Box], int]:
    """What to compare, C order, and of how many: the whole level in write-aligned boxes of
    about DEFAULT_UNIT_BYTES, or a random ``sample`` fraction of its chunks (or shards)."""
    itemsize = np.dtype(level.dtype).itemsize
    grid = level.shard or level.chunks
    unit = grid
    if sample >= 1.0:
        unit = grow_unit(grid, level.shape, itemsize, DEFAULT_UNIT_BYTES)
    count = math.prod(-(-n // u) for n, u in zip(level.shape, unit, strict=True))
    indices: Sequence[int] = range(count)
    if sample < 1.0:
        indices = sorted(rng.sample(range(count), max(1, round(sample * count))))
    return [_box(index, unit, level.shape) for index in indices], count


def bits(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``values`` as unsigned integers of the same width (a view, no copy): compared this
    way, a NaN equals the same NaN and ``-0.0`` differs from ``+0.0``, as their stored bytes
    do (float equality says the opposite of both)."""
    return values.view(f"u{values.dtype.itemsize}") if values.dtype.kind == "f" else values


def _compare(source: Any, dest: Any, box: Box) -> tuple[int, int, str | None]:
    region = box_slices(box)
    a = bits(source[region].read().result())
    b = bits(dest[region].read().result())
    if np.array_equal(a, b):
        return int(a.size), int(a.nbytes), None
    diff = np.argwhere(a != b)
    lo = diff.min(axis=0) + [start for start, _ in box]
    hi = diff.max(axis=0) + [start for start, _ in box] + 1
    where = ", ".join(f"{int(s)}:{int(e)}" for s, e in zip(lo, hi, strict=True))
    return (
        int(a.size),
        int(a.nbytes),
        f"{len(diff)} voxel(s) differ in box [{where}] (z, y, x order)",
    )


def _open_pair(
    plan: Plan, source: Store, dest: Store, level: LevelPlan, workers: int
) -> tuple[Any, Any] | str:
    try:
        src = open_source(source, level, workers)
        dst = open_dest_readonly(dest, level.dest_path, plan.ngff_version, workers)
    except Exception as exc:
        return f"cannot open: {ts_error_text(exc)}"
    if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
        return (
            f"shape/dtype {tuple(dst.shape)} {dst.dtype} != source {tuple(src.shape)} {src.dtype}"
        )
    return src, dst


def compare_voxels(
    plan: Plan,
    source: Store,
    dest: Store,
    sound: set[str],
    missing: set[str],
    *,
    sample: float,
    workers: int,
    rng: random.Random,
    progress: Progress,
) -> VoxelTally:
    """Compare the voxels of every level whose array metadata is as planned (``sound``);
    a level that is neither sound nor ``missing`` is reported as not compared."""
    result = VoxelTally()
    for image in plan.images:
        work = [
            (level, *boxes(level, sample, rng))
            for level in image.levels
            if level.dest_path in sound
        ]
        for level in image.levels:
            if level.dest_path not in sound and level.dest_path not in missing:
                result.problems.append(
                    f"{level.dest_path}: voxels not compared: its array metadata is not the plan's"
                )
        if not work:
            continue
        total_bytes = sum(
            math.prod(stop - start for start, stop in box) * np.dtype(level.dtype).itemsize
            for level, level_boxes, _ in work
            for box in level_boxes
        )
        progress.start(image.dest_path, sum(len(b) for _, b, _ in work), total_bytes, 0, 0)
        for level, level_boxes, count in work:
            result.units_total += count
            pair = _open_pair(plan, source, dest, level, workers)
            if isinstance(pair, str):
                result.problems.append(f"{level.dest_path}: {pair}")
                progress.advance(image.dest_path, len(level_boxes), 0)
                continue
            src, dst = pair
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
                futures = {pool.submit(_compare, src, dst, box): box for box in level_boxes}
                for future in cf.as_completed(futures):
                    try:
                        voxels, nbytes, problem = future.result()
                    except Exception as exc:
                        box = list(futures[future])
                        voxels, nbytes, problem = 0, 0, f"box {box}: {ts_error_text(exc)}"
                    result.units_checked += 1
                    result.voxels_compared += voxels
                    result.bytes_compared += nbytes
                    progress.advance(image.dest_path, 1, nbytes)
                    if problem:
                        result.problems.append(f"{level.dest_path}: {problem}")
    return result
