"""The migration plan: a plain, printable, hashable value shipped to every worker.

Every shape, block and chunk here is in **C order** (z, y, x), the order of the output.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

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


class PrecomputedLevel(TargetModel):
    """Where a level of a Neuroglancer precomputed volume is read from: one scale, opened
    with TensorStore's ``neuroglancer_precomputed`` driver."""

    volume: str
    """The volume folder, relative to the image's source root (a dataset folder)."""
    scale_index: NonNegativeInt
    scale: dict[str, Any]
    """The ``info`` file's ``scales[scale_index]`` as planned (lists in **F order**, x, y, z):
    the volume is opened only while its ``info`` still says this."""

    @property
    def voxel_offset(self) -> tuple[int, ...]:
        """The scale's ``voxel_offset`` in C order (z, y, x): where its chunk grid starts."""
        return tuple(reversed([int(v) for v in self.scale.get("voxel_offset", (0, 0, 0))]))

    @property
    def sharded(self) -> bool:
        return self.scale.get("sharding") is not None


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
    mirror: tuple[bool, ...] | None = None
    """Per axis (C order): is the level written mirrored, output voxel ``j`` being source
    voxel ``N - 1 - j`` (``N`` its extent)? None: no axis is (the field is then absent from
    the plan's JSON, so plans without a mirror keep their fingerprints)."""

    def source_box(self, box: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        """The box of the source holding the voxels of the output ``box`` (C order)."""
        if self.mirror is None:
            return box
        return tuple(
            (n - stop, n - start) if flip else (start, stop)
            for (start, stop), flip, n in zip(box, self.mirror, self.shape, strict=True)
        )

    precomputed: PrecomputedLevel | None = None
    """Set for a level of a precomputed volume (``source_path`` is then the scale's folder);
    None for an N5 array (left out of the JSON: N5 plans keep their fingerprints)."""

    @property
    def unit_grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / u) for n, u in zip(self.shape, self.unit_shape, strict=True))

    @property
    def unit_count(self) -> int:
        return math.prod(self.unit_grid)

    @property
    def source_block_count(self) -> int:
        """Source blocks (precomputed: chunks) of the level's grid: the most it can store."""
        return math.prod(
            math.ceil(n / b) for n, b in zip(self.shape, self.source_blocks, strict=True)
        )

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
    source_format: Literal["precomputed"] | None = None
    """The source format: None for an N5 group (left out of the JSON, so N5 plans keep
    their fingerprints), ``precomputed`` for a Neuroglancer precomputed volume."""
    source_root: str | None = None
    """The root ``source_path`` (and its levels') are relative to, when it is not the
    plan's ``source``: the dataset folder of a precomputed volume. Its path inside the
    dataset is then ``source_path`` (``neuroglancer/em/fibsem-uint8.precomputed``)."""
    attributes: dict[str, Any]
    """The image group's attributes as written at finalize (OME metadata + provenance)."""
    sources: dict[str, str]
    """Which source of truth each metadata value came from."""
    warnings: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    registry_source: str | None = None
    """The name of the image's entry in the registry manifest (None: it has none)."""

    @property
    def format(self) -> Literal["n5", "precomputed"]:
        """``n5`` or ``precomputed``: what the image is read from."""
        return self.source_format or "n5"


class GroupPlan(TargetModel):
    """A group that is not an image (the root, ``em/``, a ``labels`` group) and its attributes."""

    path: str
    attributes: dict[str, Any]


class Plan(TargetModel):
    """Everything a migration will do; equal plans produce bit-identical output."""

    tool_version: str
    source: str
    source_inner: str
    """SRC's path inside ``source``: an N5 group, or the volume of a one-volume plan."""
    dest: str
    ngff_version: NgffVersion
    settings: dict[str, Any]
    images: tuple[ImagePlan, ...]
    groups: tuple[GroupPlan, ...]
    orphan_arrays: tuple[str, ...] = ()
    registry_dataset: dict[str, Any] | None = None
    """With a registry manifest: the dataset's name, the manifest's digest and its
    ``metadata`` (title, DOIs, publications, imaging), kept at DEST's root group."""
    registry_unmatched: tuple[str, ...] = ()
    """Sources the manifest lists that match no image of this plan."""
    dataset: str | None = None
    """The dataset folder, when SRC was one (its N5 images and precomputed volumes
    together) or a precomputed volume in one; None for an N5 SRC. ``source`` is then the
    dataset's N5 root (or the dataset folder, when it has none or SRC is one volume)."""

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
