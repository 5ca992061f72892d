"""Reading Neuroglancer precomputed scales: the stores a plan reads and the signatures of
the chunk (or shard) files behind each work unit (the TensorStore handle of a scale is
:func:`migrate.copy.tsio.open_precomputed`).

A plan reads its ``source`` store; a precomputed image says in ``source_root`` which root
its paths are relative to (its dataset folder), opened here beside the plan's store with
the same S3 settings (:func:`image_source`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping

from migrate.copy.tsio import context, open_precomputed, ts_error_text
from migrate.dest.records import BlockEntry, UnitSums, entry_value
from migrate.dest.state import ImageAtDest
from migrate.errors import SourceDataError
from migrate.storage import LocalStore, Store, join_key, open_store
from migrate.storage.local import dangling_link
from schemas.plan import ImagePlan, LevelPlan

_siblings: dict[tuple[str, str, bool, str], Store] = {}
_lock = threading.Lock()


def image_source(source: Store, image: ImagePlan) -> Store:
    """The store ``image``'s source paths are relative to: ``source`` (the plan's), or the
    image's own ``source_root`` opened like it (read-only, the same S3 options)."""
    root = image.source_root
    return source if root is None else sibling_store(source, root)


def sibling_store(store: Store, url: str) -> Store:
    """The location ``url`` opened like ``store`` (read-only or not, the same S3 options);
    ``store`` itself when it is that location. Opened once per process."""
    if url == store.url:
        return store
    options = getattr(store, "options", None)
    key = (type(store).__name__, url, store.read_only, repr(options))
    with _lock:
        if key not in _siblings:
            _siblings[key] = open_store(url, read_only=store.read_only, s3=options)
        return _siblings[key]


_CHUNK = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)$")
"""An unsharded chunk file: ``<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` (global voxel coordinates)."""

_MASK = 2**64 - 1


def chunk_key(level: LevelPlan, position: tuple[int, ...]) -> str:
    """The file of the unsharded chunk at grid ``position`` (C order), inside the scale."""
    assert level.precomputed is not None
    offset = level.precomputed.voxel_offset
    bounds = [
        (o + p * c, o + min((p + 1) * c, n))
        for o, p, c, n in zip(offset, position, level.source_blocks, level.shape, strict=True)
    ]
    return "_".join(f"{a}-{b}" for a, b in reversed(bounds))


def check_chunk_links(store: LocalStore, level: LevelPlan, unit: int) -> None:
    """Raise SourceDataError naming the chunk files of work unit ``unit`` of an unsharded
    precomputed ``level`` that are symbolic links to nothing: TensorStore would read them as
    absent, all-zero chunks (one ``lstat`` per chunk)."""
    root = store.root / level.source_path
    lost = []
    for position in unit_chunks(level, unit):
        path = root / chunk_key(level, position)
        if os.path.islink(path) and not os.path.exists(path):
            lost.append(dangling_link(path) or str(path))
    if lost:
        raise SourceDataError(
            "; ".join(f"{text} (a lost chunk, not an absent one)" for text in lost)
        )


def unit_chunks(level: LevelPlan, unit: int) -> Iterator[tuple[int, ...]]:
    """Grid positions (C order, from the scale's ``voxel_offset``) of the chunks work unit
    ``unit`` reads (for a mirrored level, those of the mirrored box)."""
    box = level.source_box(level.unit_box(unit))
    return itertools.product(
        *(
            range(start // b, math.ceil(stop / b))
            for (start, stop), b in zip(box, level.source_blocks, strict=True)
        )
    )


def own_files(store: Store, level: LevelPlan, unit: int) -> tuple[BlockEntry, ...]:
    """(file, size, stamp) of the source files of a precomputed ``level`` that work unit
    ``unit`` accounts for in the ledger, asked of the storage before they are read (a
    ``stat`` each; S3: a HEAD each). Unsharded: the chunk files whose first voxel lies in
    the unit's source box, so each file is accounted for by exactly one unit. Sharded: any
    unit may read any shard (which shard holds a chunk depends on a hash), so unit 0
    accounts for every shard file of the scale, from one listing."""
    assert level.precomputed is not None
    if level.precomputed.sharded:
        if unit != 0:
            return ()
        return tuple(
            sorted(
                (key, size, stamp)
                for key, size, stamp in store.list_stats(level.source_path)
                if is_source_file(key, level)
            )
        )
    box = level.source_box(level.unit_box(unit))
    keys = [
        chunk_key(level, position)
        for position in unit_chunks(level, unit)
        if all(
            p * b >= start
            for p, b, (start, _stop) in zip(position, level.source_blocks, box, strict=True)
        )
    ]
    found = store.map(lambda key: store.stat(join_key(level.source_path, key)), keys)
    return tuple(
        sorted((key, stat[0], stat[1]) for key, stat in zip(keys, found, strict=True) if stat)
    )


def is_source_file(key: str, level: LevelPlan) -> bool:
    """Whether ``key`` (relative to the scale's folder) is a file the copy of a precomputed
    ``level`` reads: a shard file (sharded), or a chunk file inside the scale (unsharded),
    as :func:`unit_signatures` counts them."""
    assert level.precomputed is not None
    if level.precomputed.sharded:
        return key.endswith(".shard") and "/" not in key
    match = _CHUNK.match(key)
    if match is None:
        return False
    numbers = [int(value) for value in match.groups()]
    bounds = zip(numbers[0::2], numbers[1::2], strict=True)  # x, y, z
    return all(
        0 <= start - origin < extent and start < stop
        for (start, stop), origin, extent in zip(
            bounds, reversed(level.precomputed.voxel_offset), reversed(level.shape), strict=True
        )
    )


class _EveryUnit(Mapping[int, str]):
    """One signature for every unit of a level (a sharded scale's), without a list of
    them: its size does not grow with the level's declared size."""

    def __init__(self, count: int, signature: str) -> None:
        self._count = count
        self._signature = signature

    def __getitem__(self, unit: int) -> str:
        if 0 <= unit < self._count:
            return self._signature
        raise KeyError(unit)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._count))

    def __len__(self) -> int:
        return self._count


def unit_signatures(store: Store, level: LevelPlan) -> Mapping[int, str]:
    """A signature of the source files of the work units of a precomputed ``level``
    (C-order unit index → signature; see :func:`migrate.dest.records.unit_signatures`),
    from one listing of its scale folder: a function of each file's key, size and stamp
    (modification time, or ETag on S3). Only units with a listed chunk are in the result.

    Unsharded: each chunk file counts for the units its box falls in (for a mirrored level,
    where it lands at DEST). Sharded: which shard holds a chunk depends on a hash of its
    Morton code, so every shard file counts for every unit: a rewritten shard redoes the
    whole level's recorded units (never fewer than changed)."""
    assert level.precomputed is not None
    offset = level.precomputed.voxel_offset
    if level.precomputed.sharded:
        total = files = 0
        for key, size, stamp in store.list_stats(level.source_path):
            if key.endswith(".shard") and "/" not in key:
                total = (total + entry_value(key, size, stamp)) & _MASK
                files += 1
        return _EveryUnit(level.unit_count, f"{files}:{total:016x}") if files else {}
    units = UnitSums(level.unit_grid)
    mirror = level.mirror or (False,) * len(level.shape)
    for key, size, stamp in store.list_stats(level.source_path):
        match = _CHUNK.match(key)
        if match is None:
            continue  # anything that is not a chunk file is never read
        numbers = [int(value) for value in match.groups()]
        bounds = list(zip(numbers[0::2], numbers[1::2], strict=True))  # x, y, z
        ranges = []
        for (start, stop), origin, unit, extent, flip in zip(
            reversed(bounds), offset, level.unit_shape, level.shape, mirror, strict=True
        ):
            lo, hi = start - origin, min(stop - origin, extent)
            if lo < 0 or lo >= hi:
                break  # outside the scale: never read
            if flip:  # where it lands at DEST
                lo, hi = extent - hi, extent - lo
            ranges.append(range(lo // unit, (hi - 1) // unit + 1))
        else:
            units.add(ranges, entry_value(key, size, stamp))
    return units.signatures()


def bad_chunks(store: Store, level: LevelPlan, box: tuple[tuple[int, int], ...]) -> list[str]:
    """The chunks of ``box`` (of the source: C order, from 0) that cannot be read, each
    named by its file (unsharded) or its box (sharded), with TensorStore's reason; the scale
    itself when it cannot be opened."""
    assert level.precomputed is not None
    try:
        array = open_precomputed(store, level.precomputed, context(1))
    except Exception as exc:
        return [f"{store.display(level.source_path)}: {ts_error_text(exc)}"]
    ranges = [
        range(start // b, math.ceil(stop / b))
        for (start, stop), b in zip(box, level.source_blocks, strict=True)
    ]
    bad = []
    for position in itertools.product(*ranges):
        sub = tuple(
            slice(i * b, min((i + 1) * b, n))
            for i, b, n in zip(position, level.source_blocks, level.shape, strict=True)
        )
        try:
            array[sub].read().result()
        except Exception as exc:  # TensorStore reports decode failures as ValueError
            assert level.precomputed is not None
            where = (
                f"chunk {chunk_key(level, position)} in a shard of"
                if level.precomputed.sharded
                else None
            )
            name = (
                f"{where} {store.display(level.source_path)}"
                if where
                else store.display(join_key(level.source_path, chunk_key(level, position)))
            )
            bad.append(f"{name}: {ts_error_text(exc)}")
    return bad


def format_clash(dest: Store, image: ImagePlan, at: ImageAtDest | None) -> str | None:
    """Why ``image`` may not replace what DEST holds at its path (``at``, as the run found
    it): the migration of an image of the other format (an N5 image where a precomputed
    volume would go, or the reverse), which ``--overwrite`` does not replace either; None
    when the formats agree or nothing is there."""
    finished = at.mark if at is not None else None
    if finished is not None:
        there = "precomputed" if finished.get("format") == "precomputed" else "n5"
        origin = f"{str(finished.get('source', '')).rstrip('/')}/{finished.get('path', '')}"
    else:
        recorded = ((at.started if at is not None else None) or {}).get("image")
        if not isinstance(recorded, dict):
            return None
        there = "precomputed" if recorded.get("source_format") == "precomputed" else "n5"
        origin = str(recorded.get("source_path", ""))
    if there == image.format:
        return None
    what = {"n5": "N5 image", "precomputed": "precomputed volume"}
    hint = (
        f"--image-path {image.source_path}=PATH (or --prefix)"
        if image.format == "precomputed"
        else "--prefix, or convert the volume to another path with --image-path"
    )
    return (
        f"{dest.display(image.dest_path)} holds the migration of the {what[there]} {origin}, "
        f"which the {what[image.format]} {image.source_path} would replace; it is never "
        f"replaced by another format, even with --overwrite: say where it goes with {hint}"
    )
