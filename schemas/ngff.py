"""The OME-NGFF metadata cellmap-migrate writes: versions 0.4 (Zarr v2) and 0.5 (Zarr v3).

Axes and every per-axis list here are in **C order** (slowest axis first, e.g. z, y, x).

These models describe exactly what we emit, with extra keys forbidden, so our output is
stable and reviewable in a dry-run diff. They are deliberately not built on
``ome-zarr-models``: those models read whole stores (groups plus arrays) and accept more than
we ever write, whereas planning needs pure metadata values before anything exists. The
written result is validated with ``ome-zarr-models`` by ``verify`` and by the tests, so the
two stay independent checks of each other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    FiniteFloat,
    ModelWrapValidatorHandler,
    ValidationInfo,
    model_validator,
)

from schemas._base import RelativePath, TargetModel

SPACE_UNITS = frozenset(
    {
        "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot",
        "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer",
        "mile", "millimeter", "nanometer", "parsec", "petameter", "picometer", "terameter",
        "yard", "yoctometer", "yottameter", "zeptometer", "zettameter",
    }
)  # fmt: skip
"""Space units allowed by the OME-NGFF spec (UDUNITS-2 names)."""

TIME_UNITS = frozenset(
    {
        "attosecond", "centisecond", "day", "decisecond", "exasecond", "femtosecond",
        "gigasecond", "hectosecond", "hour", "kilosecond", "megasecond", "microsecond",
        "millisecond", "minute", "nanosecond", "petasecond", "picosecond", "second",
        "terasecond", "yoctosecond", "yottasecond", "zeptosecond", "zettasecond",
    }
)  # fmt: skip
"""Time units allowed by the OME-NGFF spec (UDUNITS-2 names)."""

AxisType = Literal["space", "time", "channel"]


class Axis(TargetModel):
    name: str = Field(min_length=1)
    type: AxisType | None = None
    unit: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _unit_matches_type(
        cls, data: Any, handler: ModelWrapValidatorHandler[Axis], info: ValidationInfo
    ) -> Axis:
        """A space (time) axis has a space (time) unit from the spec's list.

        The spec says SHOULD, so a unit outside the lists is accepted when the axis is
        validated with ``context={"allow_unknown_units": True}`` (``--allow-unknown-units``);
        a listed unit of the wrong kind (a space axis in seconds) is always rejected. An
        ``Axis`` instance was checked when it was made (it is frozen) and is passed through
        as is, so a multiscale built from such axes does not re-check them without context.
        """
        if isinstance(data, Axis):
            return data
        axis = handler(data)
        allowed = {"space": SPACE_UNITS, "time": TIME_UNITS}.get(axis.type or "")
        if axis.unit is None or allowed is None or axis.unit in allowed:
            return axis
        lenient = isinstance(info.context, dict) and info.context.get("allow_unknown_units")
        if lenient and axis.unit not in SPACE_UNITS | TIME_UNITS:
            return axis
        raise ValueError(f"axis {axis.name!r}: {axis.unit!r} is not an OME-NGFF {axis.type} unit")


class ScaleTransform(TargetModel):
    type: Literal["scale"] = "scale"
    scale: tuple[FiniteFloat, ...]


class TranslationTransform(TargetModel):
    type: Literal["translation"] = "translation"
    translation: tuple[FiniteFloat, ...]


class Dataset(TargetModel):
    """One level: exactly one scale, then optionally one translation (C order)."""

    path: RelativePath
    coordinateTransformations: tuple[ScaleTransform] | tuple[ScaleTransform, TranslationTransform]

    @property
    def scale(self) -> tuple[float, ...]:
        return self.coordinateTransformations[0].scale

    @property
    def translation(self) -> tuple[float, ...]:
        if len(self.coordinateTransformations) == 2:
            return self.coordinateTransformations[1].translation
        return (0.0,) * len(self.scale)


class _MultiscaleBody(TargetModel):
    name: str | None = None
    axes: tuple[Axis, ...] = Field(min_length=2, max_length=5)
    datasets: tuple[Dataset, ...] = Field(min_length=1)
    coordinateTransformations: tuple[ScaleTransform] | None = None
    type: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _MultiscaleBody:
        names = [axis.name for axis in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis names must be unique, got {names}")
        for dataset in self.datasets:
            for transform in dataset.coordinateTransformations:
                values = getattr(transform, transform.type)
                if len(values) != len(self.axes):
                    raise ValueError(
                        f"dataset {dataset.path!r}: {transform.type} has {len(values)} values "
                        f"for {len(self.axes)} axes"
                    )
        paths = [dataset.path for dataset in self.datasets]
        if len(set(paths)) != len(paths):
            raise ValueError(f"dataset paths must be unique, got {paths}")
        return self


class MultiscaleV04(_MultiscaleBody):
    version: Literal["0.4"] = "0.4"


class MultiscaleV05(_MultiscaleBody):
    """In 0.5 the version lives in the ``ome`` wrapper, not in each multiscale."""


class LabelColor(TargetModel):
    label_value: int = Field(alias="label-value")
    rgba: tuple[int, int, int, int]


class LabelSource(TargetModel):
    image: str


class ImageLabelV04(TargetModel):
    version: Literal["0.4"] = "0.4"
    colors: tuple[LabelColor, ...] | None = None
    source: LabelSource | None = None


class ImageLabelV05(TargetModel):
    colors: tuple[LabelColor, ...] | None = None
    source: LabelSource | None = None


class OmeroWindow(TargetModel):
    """The display window of a channel: ``start``…``end`` drawn dark…bright, in ``min``…``max``."""

    min: int | FiniteFloat
    max: int | FiniteFloat
    start: int | FiniteFloat
    end: int | FiniteFloat


class OmeroChannel(TargetModel):
    active: bool = True
    color: str = Field(pattern=r"^[0-9A-F]{6}$")
    """RGB as six hex digits, no ``#`` (what the transitional ``omero`` metadata uses)."""
    inverted: bool = False
    label: str
    window: OmeroWindow


class Omero(TargetModel):
    """The transitional ``omero`` display metadata (0.4: beside ``multiscales``; 0.5: in
    ``ome``), one channel per image here."""

    channels: tuple[OmeroChannel, ...] = Field(min_length=1)


class Provenance(TargetModel):
    """Where the data came from, and the source's non-OME attributes, kept verbatim.

    On an image group, ``fingerprint`` (the hash of the image's plan) is written together
    with the OME metadata once every level is copied: it is the migration's completion mark.
    """

    tool: Literal["cellmap-migrate"] = "cellmap-migrate"
    version: str
    source: str
    """The source N5 root (URL or absolute path), or the dataset folder of a precomputed
    volume."""
    path: str
    """The group or array inside the source N5 root, or the precomputed volume (or its
    scale folder) inside the dataset folder."""
    format: Literal["precomputed"] | None = None
    """``precomputed`` for a Neuroglancer precomputed volume; None (left out) for N5."""
    source_attributes: dict[str, Any]
    settings: dict[str, Any] | None = None
    """On an image group: the options it was planned with (``PlanOptions.recorded``), so
    that ``verify`` can plan the same migration again from the source."""
    registry_source: dict[str, Any] | None = None
    """On an image group migrated with a registry: its entry in the manifest, verbatim."""
    fingerprint: str | None = None


class ImageAttrsV04(TargetModel):
    """A 0.4 image (or label image) group's ``.zattrs``."""

    multiscales: tuple[MultiscaleV04]
    omero: Omero | None = None
    image_label: ImageLabelV04 | None = Field(default=None, alias="image-label")
    provenance: Provenance | None = Field(default=None, alias="cellmap-migrate")


class LabelsAttrsV04(TargetModel):
    """A 0.4 ``labels`` group's ``.zattrs``: the label images it holds."""

    labels: tuple[RelativePath, ...] = Field(min_length=1)


class OmeV05(TargetModel):
    version: Literal["0.5"] = "0.5"
    multiscales: tuple[MultiscaleV05] | None = None
    omero: Omero | None = None
    image_label: ImageLabelV05 | None = Field(default=None, alias="image-label")
    labels: tuple[RelativePath, ...] | None = None


class AttrsV05(TargetModel):
    """A 0.5 group's ``zarr.json`` attributes: everything OME under ``ome``."""

    ome: OmeV05
    provenance: Provenance | None = Field(default=None, alias="cellmap-migrate")
