"""What the report shows of each image: its levels with their physical placement, from a
plan (``convert``) or from the metadata at DEST (``verify``). Pure.

Shapes, scales and translations are in **C order** (the OME axes order, z, y, x for 3-D).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from migrate.copy.tsio import level_n5_metadata
from migrate.target.codecs import copy_path
from migrate.target.transforms import level_transforms, ome_multiscale
from schemas.plan import ImagePlan, Plan


@dataclass(frozen=True)
class ReportLevel:
    """One level: where it is read on both sides and where its voxels are in space.

    ``scale`` and ``translation`` (C order) are the composed OME transforms: voxel index
    ``i`` has its centre at ``i * scale + translation``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    source_path: str
    source_metadata: dict[str, Any] | None
    """The N5 metadata TensorStore opens the source with (F order lists), None if unknown."""
    dest_path: str
    chunks: tuple[int, ...] | None = None
    codec: str | None = None
    copy_path: str | None = None


@dataclass(frozen=True)
class ReportImage:
    """One multiscale image, finest level first."""

    dest_path: str
    source_path: str
    kind: Literal["image", "label"]
    ngff_version: Literal["0.4", "0.5"]
    axes: tuple[str, ...]
    axis_types: tuple[str, ...]
    units: tuple[str, ...]
    levels: tuple[ReportLevel, ...]

    @property
    def spatial(self) -> bool:
        """Three space axes and nothing else: what the previews know how to cut."""
        return len(self.axes) == 3 and all(kind == "space" for kind in self.axis_types)


SHORT_UNITS = {"nanometer": "nm", "micrometer": "µm", "millimeter": "mm", "angstrom": "Å"}


def short_unit(image: ReportImage, axis: int | None = None) -> str:
    """The unit of ``axis`` (None: the one unit of all axes, "" when they differ) as people
    write it: ``nm`` for ``nanometer``."""
    units = set(image.units) if axis is None else {image.units[axis]}
    if len(units) != 1:
        return ""
    unit = units.pop()
    return SHORT_UNITS.get(unit, unit)


def _axes(
    multiscale: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    axes = multiscale["axes"]
    return (
        tuple(str(a["name"]) for a in axes),
        tuple(str(a.get("type", "")) for a in axes),
        tuple(str(a.get("unit", "")) for a in axes),
    )


def images_of_plan(plan: Plan, *, fast: bool = True) -> list[ReportImage]:
    """The report's view of every image of ``plan`` (what convert writes)."""
    return [image_of_plan(plan, image, fast=fast) for image in plan.images]


def image_of_plan(plan: Plan, image: ImagePlan, *, fast: bool = True) -> ReportImage:
    multiscale = ome_multiscale(image.attributes)
    transforms = level_transforms(multiscale)
    names, types, units = _axes(multiscale)
    levels = []
    for level in image.levels:
        scale, translation = transforms[level.name]
        levels.append(
            ReportLevel(
                name=level.name,
                shape=tuple(level.shape),
                dtype=level.dtype,
                scale=scale,
                translation=translation,
                source_path=level.source_path,
                source_metadata=level_n5_metadata(level),
                dest_path=level.dest_path,
                chunks=tuple(level.shard or level.chunks),
                codec=level.codec.describe(),
                copy_path=copy_path(level, fast=fast),
            )
        )
    return ReportImage(
        dest_path=image.dest_path,
        source_path=image.source_path,
        kind=image.kind,
        ngff_version=plan.ngff_version,
        axes=names,
        axis_types=types,
        units=units,
        levels=tuple(levels),
    )


@dataclass(frozen=True)
class DestLevel:
    """What DEST says of one level (from its Zarr metadata and provenance)."""

    name: str
    dest_path: str
    shape: tuple[int, ...]
    dtype: str
    source_path: str
    source_metadata: dict[str, Any] | None
    chunks: tuple[int, ...] | None = None
    """The chunk (or shard) shape: how DEST is cut for writing."""


def image_of_dest(
    dest_path: str,
    source_path: str,
    kind: Literal["image", "label"],
    ngff_version: Literal["0.4", "0.5"],
    attributes: Mapping[str, Any],
    levels: list[DestLevel],
) -> ReportImage:
    """The report's view of a finished image at DEST, from its group ``attributes``."""
    multiscale = ome_multiscale(attributes)
    transforms = level_transforms(multiscale)
    names, types, units = _axes(multiscale)
    out = []
    for level in levels:
        scale, translation = transforms[level.name]
        out.append(
            ReportLevel(
                name=level.name,
                shape=level.shape,
                dtype=level.dtype,
                scale=scale,
                translation=translation,
                source_path=level.source_path,
                source_metadata=level.source_metadata,
                dest_path=level.dest_path,
                chunks=level.chunks,
            )
        )
    return ReportImage(dest_path, source_path, kind, ngff_version, names, types, units, tuple(out))
