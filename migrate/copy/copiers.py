"""How one work unit is copied: block by block without TensorStore when the chunks are the
source blocks (payloads moved as bytes when the output codec can carry them, else decoded
and re-encoded one block at a time; :mod:`migrate.copy.transplant`), otherwise through
TensorStore (read, transpose, write)."""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from stat import S_ISREG

import numpy as np

from migrate.copy.options import EngineOptions
from migrate.copy.precomputed import check_chunk_links, image_source, own_files
from migrate.copy.transplant import (
    Transplanter,
    block_error,
    chunk_key,
    crc_of,
    file_kind,
    n5_key,
    unit_blocks,
)
from migrate.copy.tsio import (
    HandleCache,
    LevelHandles,
    box_slices,
    is_storage_error,
    ts_error_text,
)
from migrate.dest.ledger import crc_hex
from migrate.dest.records import BlockEntry, ChunkEntry, UnitEntries
from migrate.errors import SourceDataError
from migrate.storage import LocalStore, Store, join_key
from migrate.storage.local import dangling_link
from migrate.storage.reread import in_transit, retry_in_transit
from migrate.target.codecs import recodable
from schemas.plan import LevelPlan, NgffVersion, Plan

Copier = Callable[[LevelPlan, int], tuple[int, UnitEntries]]
"""Copies work unit ``unit`` of a level; returns the voxel bytes it covered and what it
wrote and read (:class:`~migrate.dest.records.UnitEntries`, for the ledger)."""


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


def copy_unit(
    handles: LevelHandles, level: LevelPlan, unit: int, source: Store | None = None
) -> int:
    """Copy one work unit through TensorStore, piece by piece, source store to destination
    store: TensorStore streams the chunks, decoding one while encoding another, without a
    whole-piece array in between. Chunks equal to the fill value (all zero) are not stored
    (TensorStore's default). A piece whose source blocks did not decode is copied again
    grain by grain when ``source`` is read over a network (:func:`_copy_again`). Returns the
    number of voxel bytes covered."""
    itemsize = np.dtype(level.dtype).itemsize
    grain = level.shard or level.chunks  # a partial shard write would re-read the shard
    box = level.unit_box(unit)
    for piece in split_box(box, tuple(grain), itemsize, PIECE_BYTES):
        try:
            handles.dest[box_slices(piece)].write(handles.source[box_slices(piece)]).result()
        except Exception as exc:
            if source is None or not in_transit(source) or is_storage_error(exc):
                raise
            _copy_again(handles, level, piece, source)
    return math.prod(stop - start for start, stop in box) * itemsize


def _copy_again(
    handles: LevelHandles, level: LevelPlan, piece: tuple[tuple[int, int], ...], source: Store
) -> None:
    """Copy ``piece`` (C order) again one grain (chunk, or shard) at a time, each tried
    until it copies or the attempts run out, every attempt again announced as a retry:
    TensorStore's S3 reads check no checksum, so a block whose body was cut short on the
    way (with a Content-Length to match) fails to decode once, not on the next read; a
    block stored wrong fails every time (the error is raised, and the unit fails)."""
    grain = level.shard or level.chunks
    for cell in split_box(piece, tuple(grain), 1, 0):  # every grain on its own
        region = box_slices(cell)
        retry_in_transit(
            source,
            f"{source.display(level.source_path)} {[list(axis) for axis in cell]}",
            functools.partial(_write, handles, region),
            why=lambda exc: f"TensorStore's read failed ({ts_error_text(exc)})",
            final=is_storage_error,
        )


def _write(handles: LevelHandles, region: tuple[slice, ...]) -> None:
    handles.dest[region].write(handles.source[region]).result()


def unit_grid_positions(level: LevelPlan, unit: int) -> list[tuple[int, ...]]:
    """Grid positions (C order) of the chunks (shards) inside work unit ``unit``."""
    grid = level.shard or level.chunks
    return list(
        itertools.product(
            *(
                range(start // g, math.ceil(stop / g))
                for (start, stop), g in zip(level.unit_box(unit), grid, strict=True)
            )
        )
    )


def own_blocks(level: LevelPlan, unit: int) -> list[tuple[int, ...]]:
    """Grid positions (C order) of the source blocks whose first voxel lies in work unit
    ``unit``: each block belongs to exactly one unit, also where blocks and units are not
    aligned (a block overlapping two units is read by both). For a mirrored level, the
    unit's box is taken in the source (:meth:`~schemas.plan.LevelPlan.source_box`)."""
    box = level.source_box(level.unit_box(unit))
    return [
        position
        for position in unit_blocks(level, unit)
        if all(
            p * b >= start
            for p, b, (start, _stop) in zip(position, level.source_blocks, box, strict=True)
        )
    ]


def block_stamps(source: Store, level: LevelPlan, unit: int) -> tuple[BlockEntry, ...]:
    """(N5 key, size, stamp) of the unit's own source blocks that exist (:func:`own_blocks`),
    asked of the storage before they are read (a ``stat`` each; S3: a HEAD each): a block
    rewritten meanwhile then shows a stamp other than the one recorded, never the reverse."""
    keys = [n5_key(position) for position in own_blocks(level, unit)]
    found = source.map(lambda key: source.stat(join_key(level.source_path, key)), keys)
    return tuple(
        sorted((key, stat[0], stat[1]) for key, stat in zip(keys, found, strict=True) if stat)
    )


def chunk_stamps(
    dest: Store, level: LevelPlan, unit: int, version: NgffVersion
) -> tuple[ChunkEntry, ...]:
    """(key, size, stamp, digest) of the chunks (shards) TensorStore stored for the unit:
    locally a ``stat`` and a read of each file (its CRC-32); on S3 a HEAD each (the ETag)."""
    keys = [chunk_key(version, position) for position in unit_grid_positions(level, unit)]

    def entry(key: str) -> ChunkEntry | None:
        full = join_key(level.dest_path, key)
        if isinstance(dest, LocalStore):
            data = dest.read(full)
            found = dest.stat(full)
            if data is None or found is None:
                return None
            return key, len(data), found[1], crc_hex(crc_of([data]))
        found = dest.stat(full)
        return None if found is None else (key, found[0], found[1], "")

    return tuple(sorted(e for e in dest.map(entry, keys) if e is not None))


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

    roots = {  # where each level is read: precomputed volumes from their dataset folder
        level.dest_path: image_source(source, image)
        for image in plan.images
        if image.source_root is not None
        for level in image.levels
    }

    def copier(level: LevelPlan, unit: int) -> tuple[int, UnitEntries]:
        if level.precomputed is not None:
            store = roots.get(level.dest_path, source)
            if isinstance(store, LocalStore) and not level.precomputed.sharded:
                check_chunk_links(store, level, unit)
            files = own_files(store, level, unit)
            nbytes = copy_unit(cache.get(level, store), level, unit)
            return nbytes, UnitEntries(chunk_stamps(dest, level, unit, plan.ngff_version), files)
        if options.transplant and recodable(level):
            return transplanter.copy_unit(level, unit)
        if isinstance(source, LocalStore):
            check_block_links(source, level, unit)
        blocks = block_stamps(source, level, unit)
        nbytes = copy_unit(cache.get(level), level, unit, source)
        return nbytes, UnitEntries(chunk_stamps(dest, level, unit, plan.ngff_version), blocks)

    return copier
