"""Neuroglancer's N5 multiscale convention. Every list here is in **F order** (x, y, z)."""

from __future__ import annotations

from pydantic import Field, model_validator

from schemas._base import PositiveInteger, PositiveNumber, SourceModel, check_same_length


class PixelResolution(SourceModel):
    """Voxel spacing in F order (x, y, z) and a single unit for every axis."""

    dimensions: tuple[PositiveNumber, ...] = Field(min_length=1)
    unit: str


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
