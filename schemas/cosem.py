"""COSEM multiscale metadata: per-array ``transform`` and per-group ``multiscales``.

A :class:`STTransform` lists its axes in **C order** (z, y, x) unless ``order == "F"``; a
missing ``order`` means C. Scaling is applied before translation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas._base import Number, RelativePath, SourceModel, check_same_length


class STTransform(SourceModel):
    """Scale-then-translate transform of one array; lists in the order given by ``order``."""

    axes: tuple[str, ...] = Field(min_length=1)
    units: tuple[str, ...]
    scale: tuple[Number, ...]
    translate: tuple[Number, ...]
    order: Literal["C", "F"] = "C"

    @model_validator(mode="after")
    def _same_length(self) -> STTransform:
        check_same_length(
            "transform",
            axes=self.axes,
            units=self.units,
            scale=self.scale,
            translate=self.translate,
        )
        return self

    def in_c_order(self) -> STTransform:
        """The same transform with every list in C order (z, y, x) and ``order`` = C."""
        if self.order == "C":
            return self
        return STTransform(
            axes=self.axes[::-1],
            units=self.units[::-1],
            scale=self.scale[::-1],
            translate=self.translate[::-1],
            order="C",
        )


class CosemDataset(SourceModel):
    """One level of a COSEM multiscale group: a relative array path and its transform."""

    path: RelativePath
    transform: STTransform


class CosemMultiscale(SourceModel):
    name: str | None = None
    datasets: tuple[CosemDataset, ...] = Field(min_length=1)


class CosemGroupAttributes(SourceModel):
    """The ``multiscales`` key of a COSEM multiscale group's ``attributes.json``."""

    multiscales: tuple[CosemMultiscale, ...] = Field(min_length=1)


class CosemArrayAttributes(SourceModel):
    """The ``transform`` key of a COSEM level array's ``attributes.json``."""

    transform: STTransform
