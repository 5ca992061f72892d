"""The OpenOrganelle registry: one dataset's manifest (``api/<dataset>/manifest.json`` of
``janelia-cellmap/fibsem-metadata``), what the portal read to place and draw every layer.

A manifest names the dataset, describes it (``metadata``: title, imaging, DOIs, …), lists
its volumes (``sources``, keyed by name) and its named Neuroglancer ``views``. A source's
``transform`` lists ``axes``, ``units``, ``scale`` and ``translate`` in **C order** (z, y, x)
and applies to every level of the image; a negative scale says the image is stored mirrored
along that axis. ``views[].position`` is in **x, y, z** order (Neuroglancer's display order).

Parsed strictly (numbers are numbers, known words are known words), keys the models do not
name are kept (``extra="allow"``): the portal's files may say more than this tool uses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas._base import Flag, Number, SourceModel, check_same_length

SampleType = Literal["scalar", "label"]
"""``scalar``: intensities (EM, LM, predictions); ``label``: segment ids."""
ContentType = Literal["em", "lm", "prediction", "segmentation", "analysis"]
"""What a volume is; ``analysis``: derived segment ids (contact sites, skeletons)."""


class RegistryTransform(SourceModel):
    """Scale then translate, applied by the portal to every level (C order lists)."""

    axes: tuple[str, ...] = Field(min_length=1)
    units: tuple[str, ...]
    scale: tuple[Number, ...]
    translate: tuple[Number, ...]

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, scale: tuple[float, ...]) -> tuple[float, ...]:
        if any(value == 0 for value in scale):
            raise ValueError("a scale of 0 places every voxel at one point")
        return scale

    @model_validator(mode="after")
    def _same_length(self) -> RegistryTransform:
        check_same_length(
            "transform",
            axes=self.axes,
            units=self.units,
            scale=self.scale,
            translate=self.translate,
        )
        return self


class ContrastLimits(SourceModel):
    """The display window: ``start``/``end`` shown black…white, within ``min``/``max``."""

    start: Number
    end: Number
    min: Number
    max: Number


class DisplaySettings(SourceModel):
    contrastLimits: ContrastLimits
    color: str | None = None
    """A CSS colour name (``white``, ``red``, …) or None (the portal's default, grey)."""
    invertLUT: Flag = False


class RegistrySource(SourceModel):
    """One volume of the dataset as the portal showed it."""

    name: str = Field(min_length=1)
    description: str = ""
    url: str = Field(min_length=1)
    """Where the volume is, e.g. ``s3://bucket/<dataset>/<dataset>.n5/labels/er_pred``."""
    format: str
    transform: RegistryTransform
    sampleType: SampleType
    contentType: ContentType
    displaySettings: DisplaySettings
    subsources: tuple[Any, ...] = ()


class RegistryView(SourceModel):
    """A named Neuroglancer view: its layers (source names), position (x, y, z, in the
    units of the sources' transforms) and zoom (``scale``; None: the viewer's default)."""

    name: str
    description: str = ""
    sources: tuple[str, ...]
    position: tuple[Number, ...] | None = None
    scale: Number | None = None
    orientation: tuple[Number, ...] | None = None


class Manifest(SourceModel):
    """One dataset's manifest."""

    name: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    sources: dict[str, RegistrySource]
    views: tuple[RegistryView, ...] = ()
