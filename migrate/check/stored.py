"""Every stored chunk (shard) of a box at DEST, read as bytes and proven one whole stream of
its level's codec (:mod:`migrate.target.streams`), using the voxels TensorStore already
decoded for the box so that nothing is decoded twice where it can be helped.

A chunk that lies wholly inside the array is checked against TensorStore's values (a CRC of
them, for gzip and zlib); an edge chunk's padding beyond the array is not among those values,
so an edge chunk is decoded here. On S3, bytes that do not check are read again until two
reads agree (:func:`migrate.storage.reread.read_until_stable`) before they are judged.
Positions and boxes are in **C order** (z, y, x).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.copy.transplant import chunk_key
from migrate.storage import Store, join_key
from migrate.storage.reread import read_until_stable
from migrate.target.streams import check_chunk, check_shard
from schemas.plan import LevelPlan, NgffVersion

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class StoredChunks:
    """The stored objects of one level at DEST and how to check them (``source``: where the
    level is migrated from)."""

    source: Store
    dest: Store
    level: LevelPlan
    version: NgffVersion

    @property
    def grid(self) -> tuple[int, ...]:
        """The shape of one stored object: a shard, or a chunk."""
        return tuple(self.level.shard or self.level.chunks)

    @property
    def stored_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.level.dtype).newbyteorder(
            ">" if self.level.codec.endian == "big" else "<"
        )

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.level.chunks) * self.stored_dtype.itemsize

    def positions(self, box: Box) -> Iterator[tuple[int, ...]]:
        """Grid positions of the stored objects of a grid-aligned ``box``, C order."""
        return itertools.product(
            *(
                range(start // g, math.ceil(stop / g))
                for (start, stop), g in zip(box, self.grid, strict=True)
            )
        )

    def cells(self, box: Box) -> list[Box]:
        """The grid-aligned ``box`` cut into its stored objects (chunks or shards), C order."""
        return [
            tuple(
                (p * g, min((p + 1) * g, n))
                for p, g, n in zip(position, self.grid, self.level.shape, strict=True)
            )
            for position in self.positions(box)
        ]

    def key(self, box: Box) -> str:
        """The key of the stored object whose cell is ``box``."""
        position = [start // g for (start, _), g in zip(box, self.grid, strict=True)]
        return join_key(self.level.dest_path, chunk_key(self.version, position))

    def _decoded(
        self, values: npt.NDArray[Any], box: Box, origin: Sequence[int], padded: bool
    ) -> bytes | memoryview | None:
        """The decoded bytes of the chunk whose first voxel is ``origin``, in the stored
        byte order, from ``values`` (the box's voxels). An edge chunk's padding beyond the
        array is not among them: with ``padded`` it is taken to be zeros (what every writer
        of ours, and TensorStore, pads with: a CRC that does not match then sends the chunk
        to be decoded), else None (decode it)."""
        chunks, shape = self.level.chunks, self.level.shape
        extents = [max(0, min(o + c, n) - o) for o, c, n in zip(origin, chunks, shape, strict=True)]
        region = tuple(
            slice(o - start, o - start + e)
            for o, e, (start, _) in zip(origin, extents, box, strict=True)
        )
        if extents == list(chunks):
            return np.ascontiguousarray(values[region], dtype=self.stored_dtype).data.cast("B")
        if not padded:
            return None
        chunk = np.zeros(chunks, dtype=self.stored_dtype)
        if all(extents):  # (an inner chunk of a shard may lie wholly outside the array)
            chunk[tuple(slice(0, e) for e in extents)] = values[region]
        return chunk.data.cast("B")

    def problem(
        self,
        stored: bytes,
        position: tuple[int, ...],
        box: Box,
        values: npt.NDArray[Any],
        padded: bool = True,
    ) -> str | None:
        """Why the object at grid ``position`` is not whole, or None. Edge chunks are first
        checked as if padded with zeros, and decoded only when that does not check."""
        codec = self.level.codec.name
        origin = [p * g for p, g in zip(position, self.grid, strict=True)]
        if self.level.shard is None:
            found = check_chunk(
                codec,
                stored,
                self.chunk_nbytes,
                lambda: self._decoded(values, box, origin, padded),
            )
        else:
            per_shard = [s // c for s, c in zip(self.level.shard, self.level.chunks, strict=True)]
            inner = list(itertools.product(*(range(n) for n in per_shard)))

            def decoded(number: int) -> bytes | memoryview | None:
                chunk = zip(origin, inner[number], self.level.chunks, strict=True)
                start = [o + i * c for o, i, c in chunk]
                return self._decoded(values, box, start, padded)

            problems = check_shard(codec, stored, len(inner), self.chunk_nbytes, decoded)
            found = "; ".join(problems) or None
        if found is not None and padded:
            return self.problem(stored, position, box, values, padded=False)
        return found

    def check_box(self, box: Box, values: npt.NDArray[Any]) -> list[str]:
        """Every stored object of ``box`` (``values``: its voxels as TensorStore read them
        from DEST) that is not one whole stream, as ``<location>: <why>``."""
        positions = list(self.positions(box))
        keys = [self.key(cell) for cell in self.cells(box)]
        # one object at a time from a local disk; many at a time (in flight) from S3
        reads = self.dest.map if self.dest.concurrency > 1 else map
        problems = []
        for key, position, stored in zip(keys, positions, reads(self.dest.read, keys), strict=True):
            if stored is None:
                continue  # not stored: the fill value, nothing to check
            found = self.problem(stored, position, box, values)
            if found is not None:
                again = read_until_stable(self.dest, key, stored, "the chunk read is not whole")
                if again != stored:
                    found = None if again is None else self.problem(again, position, box, values)
            if found is not None:
                problems.append(f"{self.dest.display(key)}: {found}")
        return problems
