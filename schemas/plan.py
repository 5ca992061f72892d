"""The migration plan: a plain, printable, hashable value shipped to every worker.

Every shape, block and chunk here is in **C order** (z, y, x), the order of the output.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, PositiveInt

from schemas._base import TargetModel

NgffVersion = Literal["0.4", "0.5"]
CodecName = Literal["raw", "gzip", "zlib", "bz2", "blosc", "zstd"]
BLOSC_SHUFFLE_NAMES = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
"""Blosc's shuffle codes (N5, Zarr v2) and their names (Zarr v3, ``--blosc-shuffle``)."""


class CodecPlan(TargetModel):
    """The output compression of one array and why it was chosen."""

    name: CodecName
    level: int | None = None
    cname: str | None = None
    shuffle: int | None = None
    blocksize: int | None = None
    endian: Literal["big", "little"]
    transplant: bool
    """Full-size source blocks can be moved as bytes (same codec, big-endian output)."""
    reason: str

    def describe(self) -> str:
        """E.g. ``gzip level 6, big-endian`` or ``blosc zstd level 5 bitshuffle,
        little-endian``: every setting that changes the bytes."""
        parts: list[str] = [self.name]
        if self.cname is not None:
            parts.append(self.cname)
        if self.level is not None:
            parts.append(f"level {self.level}")
        if self.shuffle is not None:
            parts.append(BLOSC_SHUFFLE_NAMES.get(self.shuffle, str(self.shuffle)))
        return " ".join(parts) + f", {self.endian}-endian"


class LevelPlan(TargetModel):
    """One scale level: source array → destination array, and how it is cut into work units."""

    name: str
    source_path: str
    dest_path: str
    shape: tuple[int, ...]
    dtype: str
    source_blocks: tuple[PositiveInt, ...]
    source_compression: dict[str, Any]
    chunks: tuple[PositiveInt, ...]
    shard: tuple[PositiveInt, ...] | None = None
    codec: CodecPlan
    unit_shape: tuple[PositiveInt, ...]
    """Each work unit is a box of this shape (a whole number of chunks, or of shards)."""
    attributes: dict[str, Any]
    """The destination array's user attributes (the source array's, for provenance)."""

    @property
    def unit_grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / u) for n, u in zip(self.shape, self.unit_shape, strict=True))

    @property
    def unit_count(self) -> int:
        return math.prod(self.unit_grid)

    def unit_box(self, index: int) -> tuple[tuple[int, int], ...]:
        """The (start, stop) per axis, C order, of work unit ``index`` (C-order linear index)."""
        grid = self.unit_grid
        position = []
        for extent in reversed(grid):
            position.append(index % extent)
            index //= extent
        position.reverse()
        return tuple(
            (p * u, min((p + 1) * u, n))
            for p, u, n in zip(position, self.unit_shape, self.shape, strict=True)
        )

    def unit_boxes(self) -> Iterator[tuple[int, tuple[tuple[int, int], ...]]]:
        for index in range(self.unit_count):
            yield index, self.unit_box(index)

    @property
    def nbytes(self) -> int:
        import numpy as np

        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class ImagePlan(TargetModel):
    """One multiscale image: its levels and the group metadata written when all are copied."""

    source_path: str
    dest_path: str
    kind: Literal["image", "label"]
    levels: tuple[LevelPlan, ...] = Field(min_length=1)
    attributes: dict[str, Any]
    """The image group's attributes as written at finalize (OME metadata + provenance)."""
    sources: dict[str, str]
    """Which source of truth each metadata value came from."""
    warnings: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


class GroupPlan(TargetModel):
    """A group that is not an image (the root, ``em/``, a ``labels`` group) and its attributes."""

    path: str
    attributes: dict[str, Any]


class Plan(TargetModel):
    """Everything a migration will do; equal plans produce bit-identical output."""

    tool_version: str
    source: str
    source_inner: str
    dest: str
    ngff_version: NgffVersion
    settings: dict[str, Any]
    images: tuple[ImagePlan, ...]
    groups: tuple[GroupPlan, ...]
    orphan_arrays: tuple[str, ...] = ()

    def canonical_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        """A hash of everything that determines the output bytes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def image_fingerprint(self, image: ImagePlan) -> str:
        """A hash of everything that determines one image's output bytes: not how it is cut
        into work units (``unit_shape``), which changes no byte. A run may be resumed with
        another ``--unit-mib``; it goes on with the units the image was started with (unit
        records are per unit index)."""
        described = image.to_json_dict()
        for level in described["levels"]:
            del level["unit_shape"]
        payload = {
            "tool_version": self.tool_version,
            "ngff_version": self.ngff_version,
            "image": described,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def conflicts(self) -> tuple[str, ...]:
        return tuple(c for image in self.images for c in image.conflicts)
