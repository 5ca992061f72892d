"""Neuroglancer's N5 multiscale convention. Every list here is in **F order** (x, y, z)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from schemas._base import Number, PositiveInteger, SourceModel, check_same_length


class PixelResolution(SourceModel):
    """Voxel spacing in F order (x, y, z) and a single unit for every axis; a negative
    spacing says the image is stored mirrored along that axis."""

    dimensions: tuple[Number, ...] = Field(min_length=1)
    unit: str

    @field_validator("dimensions")
    @classmethod
    def _nonzero(cls, dimensions: tuple[float, ...]) -> tuple[float, ...]:
        if any(value == 0 for value in dimensions):
            raise ValueError("a voxel size of 0 places every voxel at one point")
        return dimensions


class NeuroglancerGroupAttributes(SourceModel):
    """Group-level ``axes``, ``units``, ``scales`` (integer factors per level), F order."""

    axes: tuple[str, ...] = Field(min_length=1)
    units: tuple[str, ...] | None = None
    scales: tuple[tuple[PositiveInteger, ...], ...] = Field(min_length=1)
    pixelResolution: PixelResolution | None = None

    @model_validator(mode="after")
    def _same_length(self) -> NeuroglancerGroupAttributes:
        check_same_length(
            "group",
            axes=self.axes,
            units=self.units,
            pixelResolution=None
            if self.pixelResolution is None
            else self.pixelResolution.dimensions,
        )
        for level, factors in enumerate(self.scales):
            if len(factors) != len(self.axes):
                raise ValueError(
                    f"scales[{level}] has {len(factors)} factors but axes has {len(self.axes)}"
                )
        return self


class NeuroglancerArrayAttributes(SourceModel):
    """Per-array ``pixelResolution`` (F order) and optional ``downsamplingFactors``."""

    pixelResolution: PixelResolution | None = None
    downsamplingFactors: tuple[PositiveInteger, ...] | None = None
