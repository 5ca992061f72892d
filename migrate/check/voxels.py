"""Voxel comparison: DEST read with TensorStore's zarr driver against the source read with
its n5 (or neuroglancer_precomputed) driver, every voxel in boxes of about DEFAULT_UNIT_BYTES
or a random sample of chunks (shards). Boxes are in **C order** (z, y, x).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.check.stored import StoredChunks
from migrate.copy.events import Progress
from migrate.copy.precomputed import image_source
from migrate.copy.tsio import box_slices, open_dest_readonly, open_source, ts_error_text
from migrate.storage import Store
from migrate.storage.reread import in_transit, retry_in_transit
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


@dataclass
class BoxResult:
    """One box (or several) compared: voxels and bytes compared, the voxels that differ
    (how many, and the C-order bounds holding them), the boxes that could not be read, and
    every stored chunk that is not one whole stream of its codec."""

    voxels: int = 0
    nbytes: int = 0
    differing: int = 0
    lo: tuple[int, ...] = ()
    hi: tuple[int, ...] = ()
    unread: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    def add(self, other: BoxResult) -> None:
        self.voxels += other.voxels
        self.nbytes += other.nbytes
        if other.differing:
            first = not self.differing
            self.lo = other.lo if first else tuple(map(min, self.lo, other.lo))
            self.hi = other.hi if first else tuple(map(max, self.hi, other.hi))
            self.differing += other.differing
        self.unread += other.unread
        self.chunks += other.chunks

    def problems(self) -> list[str]:
        """The voxels that differ (one line) and the boxes that could not be read."""
        where = ", ".join(f"{s}:{e}" for s, e in zip(self.lo, self.hi, strict=True))
        differ = f"{self.differing} voxel(s) differ in box [{where}] (z, y, x order)"
        return ([differ] if self.differing else []) + self.unread


def _compare(source: Any, dest: Any, box: Box, stored: StoredChunks) -> BoxResult:
    region = box_slices(box)
    values = dest[region].read().result()
    a = bits(source[region].read().result())
    b = bits(values)
    result = BoxResult(int(a.size), int(a.nbytes), chunks=stored.check_box(box, values))
    if not np.array_equal(a, b):
        diff = np.argwhere(a != b)
        result.differing = len(diff)
        result.lo = tuple(
            int(i) + start for i, (start, _) in zip(diff.min(axis=0), box, strict=True)
        )
        result.hi = tuple(
            int(i) + start + 1 for i, (start, _) in zip(diff.max(axis=0), box, strict=True)
        )
    return result


def _compare_again(
    source: Any, dest: Any, box: Box, stored: StoredChunks, failure: Exception
) -> BoxResult:
    """A box whose reading failed (``failure``): on S3 (either side), compared again one
    chunk (shard) at a time, each tried until it reads or the attempts run out, every
    attempt again announced as a retry. TensorStore's S3 reads check no checksum, so a
    response cut short on the way (with a Content-Length to match) fails to decode once,
    not on the next read; a chunk stored wrong fails every time and is reported."""
    remote = _remote(stored.source, stored.dest)
    if remote is None:
        return BoxResult(unread=[f"box {list(box)}: {ts_error_text(failure)}"])
    total = BoxResult()
    for cell in stored.cells(box):
        try:
            total.add(
                retry_in_transit(
                    remote,
                    stored.dest.display(stored.key(cell)),
                    functools.partial(_compare, source, dest, cell, stored),
                    why=lambda exc: f"TensorStore's read failed ({ts_error_text(exc)})",
                )
            )
        except Exception as exc:
            total.unread.append(f"box {list(cell)}: {ts_error_text(exc)}")
    return total


def _remote(source: Store, dest: Store) -> Store | None:
    """The store of the two that is read over a network (DEST first), or None."""
    return dest if in_transit(dest) else source if in_transit(source) else None


def _open_pair(
    plan: Plan, source: Store, dest: Store, level: LevelPlan, workers: int
) -> tuple[Any, Any] | str:
    try:
        src = open_source(source, level, workers)
        dst = retry_in_transit(
            dest,
            dest.display(level.dest_path),
            lambda: open_dest_readonly(dest, level.dest_path, plan.ngff_version, workers),
            why=lambda exc: f"TensorStore cannot open it ({ts_error_text(exc)})",
        )
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
            pair = _open_pair(plan, image_source(source, image), dest, level, workers)
            if isinstance(pair, str):
                result.problems.append(f"{level.dest_path}: {pair}")
                progress.advance(image.dest_path, len(level_boxes), 0)
                continue
            src, dst = pair
            stored = StoredChunks(source, dest, level, plan.ngff_version)
            chunk_problems: list[str] = []
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
                futures = {pool.submit(_compare, src, dst, box, stored): box for box in level_boxes}
                for future in cf.as_completed(futures):
                    try:
                        box_result = future.result()
                    except Exception as exc:
                        box_result = _compare_again(src, dst, futures[future], stored, exc)
                    result.units_checked += 1
                    result.voxels_compared += box_result.voxels
                    result.bytes_compared += box_result.nbytes
                    progress.advance(image.dest_path, 1, box_result.nbytes)
                    for problem in box_result.problems():
                        result.problems.append(f"{level.dest_path}: {problem}")
                    chunk_problems.extend(box_result.chunks)
            result.problems.extend(_at_most(sorted(chunk_problems), level.dest_path))
    return result


MAX_CHUNKS_LISTED = 8
"""Chunks that are not whole streams listed per level; the rest are counted."""


def _at_most(problems: list[str], level: str) -> list[str]:
    if len(problems) <= MAX_CHUNKS_LISTED:
        return problems
    more = len(problems) - MAX_CHUNKS_LISTED
    return [
        *problems[:MAX_CHUNKS_LISTED],
        f"{level}: … and {more} more chunk(s) that are not whole streams",
    ]
