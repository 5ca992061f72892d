"""Neuroglancer precomputed volumes: the ``info`` file of a ``<name>.precomputed`` folder.

Every per-axis list in ``info`` is in **F order** (x, y, z): ``size``, ``resolution``
(nanometres), ``voxel_offset``, ``chunk_sizes``, ``compressed_segmentation_block_size``.
Voxel ``i`` of a scale covers ``[(voxel_offset + i) × resolution, (voxel_offset + i + 1) ×
resolution)``: a corner-based grid. Parsed strictly: a missing ``scales``, a scale without a
``resolution``, an unknown ``encoding`` or ``type`` are errors naming the field; unknown keys
(``mesh``, ``skeletons``, …) are kept.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from schemas._base import (
    Integer,
    NonNegativeInteger,
    PositiveInteger,
    PositiveNumber,
    SourceModel,
)

PrecomputedDataType = Literal[
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32"
]
"""The data types of the precomputed format (also the numpy dtype of the same name)."""

Encoding = Literal["raw", "jpeg", "png", "compressed_segmentation"]

MAX_INDEX = 2**62
"""Coordinates (``voxel_offset``, ``voxel_offset + size``) must stay within ±2**62, what
TensorStore's index domains hold."""

Triple = tuple[Integer, Integer, Integer]
PositiveTriple = tuple[PositiveInteger, PositiveInteger, PositiveInteger]


def _scale_key(value: str) -> str:
    """A scale ``key`` names a folder inside the volume: relative, inside it, not empty."""
    parts = value.split("/")
    if (
        value == ""
        or value.startswith("/")
        or "\\" in value
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(char) < 32 for char in value)
    ):
        raise ValueError(
            f"key {value!r} must be a relative path inside the volume (no '..', '.', empty "
            "components, backslashes or control characters)"
        )
    return value


ScaleKey = Annotated[str, AfterValidator(_scale_key)]


class ShardingSpec(SourceModel):
    """``neuroglancer_uint64_sharded_v1``: chunks grouped into shard files
    ``<key>/<shard number in hex>.shard``."""

    type: Literal["neuroglancer_uint64_sharded_v1"] = Field(alias="@type")
    preshift_bits: NonNegativeInteger = Field(le=64)
    hash: Literal["identity", "murmurhash3_x86_128"]
    minishard_bits: NonNegativeInteger = Field(le=64)
    shard_bits: NonNegativeInteger = Field(le=64)
    minishard_index_encoding: Literal["raw", "gzip"] = "raw"
    data_encoding: Literal["raw", "gzip"] = "raw"


class PrecomputedScale(SourceModel):
    """One entry of ``scales``: one resolution level. Lists in F order (x, y, z)."""

    key: ScaleKey
    size: PositiveTriple
    resolution: tuple[PositiveNumber, PositiveNumber, PositiveNumber]
    voxel_offset: Triple = (0, 0, 0)
    chunk_sizes: tuple[PositiveTriple, ...] = Field(min_length=1)
    encoding: Encoding
    compressed_segmentation_block_size: PositiveTriple | None = None
    jpeg_quality: Integer | None = None
    png_level: Integer | None = None
    sharding: ShardingSpec | None = None

    @model_validator(mode="after")
    def _bounds(self) -> PrecomputedScale:
        for offset, size in zip(self.voxel_offset, self.size, strict=True):
            if not (offset >= -MAX_INDEX and offset + size <= MAX_INDEX):
                raise ValueError(
                    f"voxel_offset {list(self.voxel_offset)} + size {list(self.size)} leaves "
                    f"the coordinates TensorStore holds (±2**62)"
                )
        if self.encoding == "compressed_segmentation" and (
            self.compressed_segmentation_block_size is None
        ):
            raise ValueError(
                "encoding 'compressed_segmentation' needs compressed_segmentation_block_size"
            )
        return self


class PrecomputedInfo(SourceModel):
    """The ``info`` file of a precomputed volume (``@type`` neuroglancer_multiscale_volume)."""

    at_type: Literal["neuroglancer_multiscale_volume"] | None = Field(default=None, alias="@type")
    type: Literal["image", "segmentation"]
    data_type: PrecomputedDataType
    num_channels: PositiveInteger
    scales: tuple[PrecomputedScale, ...] = Field(min_length=1)
