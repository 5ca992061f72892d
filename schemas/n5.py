"""N5 attributes (saalfeldlab/n5 spec): arrays, groups and their compression.

Every list in N5 attributes is in **F order** (x first): ``dimensions``, ``blockSize``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas._base import (
    Flag,
    Integer,
    NonNegativeInteger,
    PositiveInteger,
    SourceModel,
    check_same_length,
)

N5DataType = Literal[
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"
]

"""The numeric N5 data types. ``object`` (varlength blocks) is not an image and is rejected."""

ITEMSIZE: dict[str, int] = {
    "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8,
    "int8": 1, "int16": 2, "int32": 4, "int64": 8,
    "float32": 4, "float64": 8,
}  # fmt: skip
"""Bytes per value of each N5 data type (also the numpy dtype of the same name)."""


class RawCompression(SourceModel):
    type: Literal["raw"]


class GzipCompression(SourceModel):
    """gzip: an RFC 1952 stream, or a zlib stream when ``useZlib`` is true."""

    type: Literal["gzip"]
    level: Integer = -1
    useZlib: Flag = False


class Bzip2Compression(SourceModel):
    type: Literal["bzip2"]
    blockSize: Integer = 9


class XzCompression(SourceModel):
    type: Literal["xz"]
    preset: Integer = 6


class Lz4Compression(SourceModel):
    """lz4 as written by lz4-java's block stream (not readable by TensorStore)."""

    type: Literal["lz4"]
    blockSize: Integer = 65536


class BloscCompression(SourceModel):
    """The n5-blosc add-on: a standard blosc1 frame."""

    type: Literal["blosc"]
    cname: str = "blosclz"
    clevel: Integer = 6
    shuffle: Integer = 1
    blocksize: Integer = 0
    nthreads: Integer = 1


class ZstdCompression(SourceModel):
    """The n5-zstandard add-on: a zstd frame."""

    type: Literal["zstd"]
    level: Integer = 3


N5Compression = Annotated[
    RawCompression
    | GzipCompression
    | Bzip2Compression
    | XzCompression
    | Lz4Compression
    | BloscCompression
    | ZstdCompression,
    Field(discriminator="type"),
]


class N5ArrayAttributes(SourceModel):
    """``attributes.json`` of an N5 dataset (array). Lists in F order (x, y, z)."""

    dimensions: tuple[NonNegativeInteger, ...] = Field(min_length=1)
    blockSize: tuple[PositiveInteger, ...] = Field(min_length=1)
    dataType: N5DataType
    compression: N5Compression

    @model_validator(mode="before")
    @classmethod
    def _legacy_compression(cls, data: Any) -> Any:
        """N5 < 1.0 wrote ``compressionType: "gzip"`` instead of a ``compression`` object."""
        if isinstance(data, dict) and "compression" not in data and "compressionType" in data:
            return {**data, "compression": {"type": data["compressionType"]}}
        return data

    @field_validator("dataType", mode="before")
    @classmethod
    def _reject_object(cls, value: Any) -> Any:
        if value == "object":
            raise ValueError(
                "dataType 'object' (varlength blocks) is not an image and cannot be migrated"
            )
        return value

    @model_validator(mode="after")
    def _same_ndim(self) -> N5ArrayAttributes:
        check_same_length("array", dimensions=self.dimensions, blockSize=self.blockSize)
        return self

    @property
    def ndim(self) -> int:
        return len(self.dimensions)


class N5GroupAttributes(SourceModel):
    """``attributes.json`` of an N5 group; the root carries the format ``n5`` version."""

    n5: str | None = None


def is_array_attributes(attrs: dict[str, Any]) -> bool:
    """True when a parsed ``attributes.json`` describes an array rather than a group."""
    return "dimensions" in attrs and "dataType" in attrs
