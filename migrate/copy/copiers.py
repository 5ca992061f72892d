"""How one work unit is copied: block by block without TensorStore when the chunks are the
source blocks (payloads moved as bytes when the output codec can carry them, else decoded
and re-encoded one block at a time; :mod:`migrate.copy.transplant`), otherwise through
TensorStore (read, transpose, write)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from stat import S_ISREG

import numpy as np

from migrate.copy.options import EngineOptions
from migrate.copy.transplant import Transplanter, block_error, file_kind, n5_key, unit_blocks
from migrate.copy.tsio import HandleCache, LevelHandles, box_slices
from migrate.errors import SourceDataError
from migrate.storage import LocalStore, Store
from migrate.storage.local import dangling_link
from migrate.target.codecs import recodable
from schemas.plan import LevelPlan, Plan

Copier = Callable[[LevelPlan, int], int]
"""Copies work unit ``unit`` of a level; returns the voxel bytes it covered."""


PIECE_BYTES = 16 * 2**20
"""Units go through TensorStore in pieces of about this many voxel bytes (whole chunks, or
whole shards): bounded memory per unit in flight, whatever the unit size."""


def split_box(
    box: tuple[tuple[int, int], ...], grain: tuple[int, ...], itemsize: int, target: int
) -> list[tuple[tuple[int, int], ...]]:
    """``box`` (C order, aligned to ``grain``) cut into grain-aligned pieces of at most
    ``target`` bytes where possible, by splitting the slowest axes first; C order."""
    pieces = [box]
    for axis in range(len(box)):
        size = math.prod(stop - start for start, stop in pieces[0]) * itemsize
        if size <= target:
            break
        start, stop = box[axis]
        extent = stop - start
        inner = size // max(extent, 1)  # bytes per unit length along this axis
        step = max(grain[axis], (target // max(inner, 1)) // grain[axis] * grain[axis])
        if step >= extent:
            continue
        pieces = [
            (*piece[:axis], (lo, min(lo + step, stop)), *piece[axis + 1 :])
            for piece in pieces
            for lo in range(start, stop, step)
        ]
    return pieces


def copy_unit(handles: LevelHandles, level: LevelPlan, unit: int) -> int:
    """Copy one work unit through TensorStore, piece by piece, source store to destination
    store: TensorStore streams the chunks, decoding one while encoding another, without a
    whole-piece array in between. Chunks equal to the fill value (all zero) are not stored
    (TensorStore's default). Returns the number of voxel bytes covered."""
    itemsize = np.dtype(level.dtype).itemsize
    grain = level.shard or level.chunks  # a partial shard write would re-read the shard
    box = level.unit_box(unit)
    for piece in split_box(box, tuple(grain), itemsize, PIECE_BYTES):
        region = box_slices(piece)
        handles.dest[region].write(handles.source[region]).result()
    return math.prod(stop - start for start, stop in box) * itemsize


def check_block_links(source: LocalStore, level: LevelPlan, unit: int) -> None:
    """Raise SourceDataError naming the block files of work unit ``unit`` that TensorStore
    must not be given: symbolic links to nothing (it would read them as absent, all-zero
    blocks), and directories, FIFOs or devices in place of a block (a FIFO would block the
    read forever). One ``stat`` per block: microseconds, against the milliseconds of
    decoding it."""
    root = source.path(level.source_path)
    lost = []
    for position in unit_blocks(level, unit):
        path = root / n5_key(position)
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            if os.path.islink(path):
                lost.append(f"{dangling_link(path) or path} (a lost block, not an absent one)")
            continue
        except OSError as exc:
            error = block_error(path, exc)
            if not isinstance(error, SourceDataError):
                raise error from exc  # the storage's, not this block's: the run stops
            lost.append(str(error))
            continue
        if not S_ISREG(mode):
            lost.append(f"{path}: {file_kind(mode)} in place of a block file")
    if lost:
        raise SourceDataError("; ".join(lost))


def make_copier(
    plan: Plan, source: Store, dest: Store, cache: HandleCache, options: EngineOptions
) -> Copier:
    """The copier for this run's settings: levels whose chunks are the source blocks are
    copied block by block (unless ``options.transplant`` is off: ``--no-transplant``), the
    others go through TensorStore."""
    transplanter = Transplanter(
        source,
        dest,
        plan.ngff_version,
        workers=options.workers,
        decode_check=options.decode_check,
    )

    def copier(level: LevelPlan, unit: int) -> int:
        if options.transplant and recodable(level):
            return transplanter.copy_unit(level, unit)
        if isinstance(source, LocalStore):
            check_block_links(source, level, unit)
        return copy_unit(cache.get(level), level, unit)

    return copier
