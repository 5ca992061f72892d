"""Neuroglancer-N5 multiscale metadata (``axes/units/scales/pixelResolution``) → a
:class:`Statement`.

Pure, no I/O. Every list in these attributes is in **F order** (x, y, z); the functions here
work in F order (names end in ``_f``) and the statement they build is in C order (z, y, x),
reversed once with :func:`migrate.source.axes.f_to_c`.

Sources of truth, per level: ``pixelResolution`` (group, else s0 array) * ``scales[n]``
(group, else the array's ``downsamplingFactors``) → scale. A level's own ``pixelResolution``
must agree with ``s0 spacing * factor``; the group's ``units`` must agree with
``pixelResolution.unit`` on space axes; the group's ``scales[n]`` with the array's
``downsamplingFactors``. Disagreements are conflicts, resolved (with ``--trust``) in favour
of the group's values.

Neuroglancer states no translation, so one is derived from the ``downsampling`` rule:
*windowed* mean by factor f moves the origin by ``(f - 1)/2 * s0 spacing``; *subsample*
keeps it (0).

Float facts (checked on jrc_hela-2): computing the translation as ``(f - 1) / 2 * spacing``
gives bit-for-bit the COSEM values, including ``7.5 * 5.24 = 39.300000000000004`` for s4;
``(f - 1) * spacing / 2`` is always identical (halving is exact), whereas accumulating level
by level (``t[n] = t[n-1] + spacing[n-1]/2``) would give ``39.3`` and ``f * s - s`` rounds
twice. Scales ``spacing * f`` are exact for power-of-two factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from migrate.errors import MetadataError
from migrate.source.axes import axis_type, f_to_c
from migrate.source.image import SourceImage, SourceLevel
from migrate.source.parse import parse_attrs
from migrate.source.statement import (
    Conflict,
    LevelStatement,
    Ref,
    Statement,
    format_values,
    same_values,
)
from migrate.source.units import normalize_stated_unit
from schemas.neuroglancer_n5 import (
    NeuroglancerArrayAttributes,
    NeuroglancerGroupAttributes,
    PixelResolution,
)

Downsampling = Literal["windowed", "subsample"]
"""How a Neuroglancer-only pyramid was made, which decides its translations: ``windowed``
mean (the origin moves by ``(f - 1)/2 * s0 spacing``) or ``subsample`` (the origin stays)."""


@dataclass
class _Reading:
    """The settings of one reading and what it found (F order throughout)."""

    downsampling: Downsampling
    allow_unknown_units: bool
    warnings: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    def unit(self, unit: str, ref: Ref) -> str | None:
        """The OME-NGFF name of ``unit`` read at ``ref`` (None for an empty one)."""
        return normalize_stated_unit(
            unit, location=ref.location, field=ref.field, allow_unknown=self.allow_unknown_units
        )


@dataclass(frozen=True)
class _NgAttrs:
    """The Neuroglancer attributes of an image, as parsed (every vector in F order)."""

    where: str
    """The group's ``attributes.json``."""
    group: NeuroglancerGroupAttributes | None
    """The group's ``axes``, ``units``, ``scales`` (None when it states none of them)."""
    group_res: PixelResolution | None
    """The group's ``pixelResolution``."""
    arrays: list[NeuroglancerArrayAttributes | None]
    """Per level, its own ``pixelResolution`` and ``downsamplingFactors`` (None: neither)."""

    @property
    def s0_res(self) -> PixelResolution | None:
        """s0's own ``pixelResolution`` (F order)."""
        return self.arrays[0].pixelResolution if self.arrays[0] is not None else None


@dataclass(frozen=True)
class _NgUnits:
    """The Neuroglancer units of an image, all in F order."""

    spatial_f: tuple[bool, ...]
    """Per axis: a space axis or one of unknown kind (``pixelResolution.unit`` applies)."""
    res_unit: tuple[str | None, Ref] | None
    """``pixelResolution``'s single unit (normalised) and where it was read."""
    units_f: tuple[str | None, ...] | None
    unit_refs_f: tuple[Ref, ...] | None


@dataclass(frozen=True)
class _NgSpacing:
    """The s0 voxel spacing (F order) and where it was read."""

    base_f: tuple[float, ...]
    ref: Ref


@dataclass(frozen=True)
class _NgLevel:
    """What Neuroglancer states about one level, all in F order (None: cannot tell)."""

    factor_f: tuple[float, ...] | None
    """Downsampling factor relative to the s0 spacing."""
    scale_f: tuple[float, ...] | None
    scale_ref: Ref | None
    translation_f: tuple[float, ...] | None
    translation_ref: Ref | None
    """What the translation was computed from (the scale's fields; None: the subsample rule's
    0, computed from nothing)."""


def read_neuroglancer_n5(
    image: SourceImage,
    levels: Sequence[SourceLevel],
    *,
    downsampling: Downsampling,
    allow_unknown_units: bool,
) -> Statement | None:
    """What the Neuroglancer-N5 attributes of ``image`` state; None when it has none.

    The files are in F order (x, y, z), the returned statement in C order (z, y, x).
    ``levels`` are the image's levels sorted s0, s1, … (see
    :func:`migrate.source.image.ordered_levels`); ``downsampling`` is the rule that gives
    the translations (see the module docstring). Raises :class:`MetadataError` naming the
    file and field for attributes that cannot be read (malformed, lists of the wrong length,
    an unknown unit unless ``allow_unknown_units``).
    """
    ng = _ng_parse(image, levels)
    if ng is None:
        return None
    ndim = len(levels[0].shape)
    reading = _Reading(downsampling, allow_unknown_units)
    _ng_check_lengths(ng, levels, ndim)
    units = _ng_units(ng, levels, ndim, reading)
    factors_f, factor_fields = _ng_factors(ng, levels, ndim, reading)
    spacing, incomplete = _ng_s0_spacing(ng, levels, factors_f)
    per_level = [
        _ng_level(n, level, array, f, factor_fields[n], spacing, units, ndim, reading)
        for n, (level, array, f) in enumerate(zip(levels, ng.arrays, factors_f, strict=True))
    ]
    if incomplete is None:
        incomplete = _ng_missing_scale(ng, levels, per_level)
    group = ng.group
    factors = _ng_relative_factors(per_level, factors_f[0])
    return Statement(
        convention="neuroglancer",
        name="Neuroglancer",
        axes=f_to_c(group.axes) if group is not None else None,
        axes_ref=Ref(ng.where, "axes") if group is not None else None,
        units=None if units.units_f is None else f_to_c(units.units_f),
        unit_refs=None if units.unit_refs_f is None else f_to_c(units.unit_refs_f),
        levels=tuple(
            LevelStatement(
                scale=None if lv.scale_f is None else f_to_c(lv.scale_f),
                scale_ref=lv.scale_ref,
                translation=None if lv.translation_f is None else f_to_c(lv.translation_f),
                translation_ref=lv.translation_ref,
                factor=factor,
            )
            for lv, factor in zip(per_level, factors, strict=True)
        ),
        sources=_ng_sources(ng, levels, downsampling),
        warnings=tuple(reading.warnings),
        conflicts=tuple(reading.conflicts),
        incomplete=incomplete,
    )


def _ng_parse(image: SourceImage, levels: Sequence[SourceLevel]) -> _NgAttrs | None:
    """The group's and each level's Neuroglancer attributes, parsed (F order); None when
    neither the group nor any level states any."""
    where = image.group_location
    attrs = image.group_attrs
    group = (
        parse_attrs(NeuroglancerGroupAttributes, attrs, where)
        if "axes" in attrs or "scales" in attrs
        else None
    )
    group_res: PixelResolution | None
    if group is not None:
        group_res = group.pixelResolution
    elif "pixelResolution" in attrs:
        group_res = parse_attrs(NeuroglancerArrayAttributes, attrs, where).pixelResolution
    else:
        group_res = None
    arrays = [
        parse_attrs(NeuroglancerArrayAttributes, level.attrs, level.location)
        if "pixelResolution" in level.attrs or "downsamplingFactors" in level.attrs
        else None
        for level in levels
    ]
    if group is None and group_res is None and all(array is None for array in arrays):
        return None
    return _NgAttrs(where, group, group_res, arrays)


def _ng_check_lengths(ng: _NgAttrs, levels: Sequence[SourceLevel], ndim: int) -> None:
    """Every F-order list has ``ndim`` values (the models only check lists against each
    other); raises MetadataError naming the first that does not."""
    where, group, group_res = ng.where, ng.group, ng.group_res
    if group is not None and len(group.axes) != ndim:
        raise MetadataError(
            where,
            "axes",
            f"{len(group.axes)} axes {list(group.axes)} for {ndim}-dimensional arrays",
        )
    if group_res is not None and len(group_res.dimensions) != ndim:
        raise MetadataError(
            where,
            "pixelResolution.dimensions",
            f"{len(group_res.dimensions)} values {format_values(group_res.dimensions)} for "
            f"{ndim}-dimensional arrays",
        )
    for level, array in zip(levels, ng.arrays, strict=True):
        if array is None:
            continue
        res = array.pixelResolution
        stated: list[tuple[str, Sequence[float] | None]] = [
            ("pixelResolution.dimensions", None if res is None else res.dimensions),
            ("downsamplingFactors", array.downsamplingFactors),
        ]
        for name, values in stated:
            if values is not None and len(values) != ndim:
                raise MetadataError(
                    level.location,
                    name,
                    f"{len(values)} values {format_values(values)} for a {ndim}-dimensional array",
                )


def _ng_units(
    ng: _NgAttrs,
    levels: Sequence[SourceLevel],
    ndim: int,
    reading: _Reading,
) -> _NgUnits:
    """Units, F order: the group's per-axis list, else pixelResolution's single unit, which
    is a spatial resolution: it applies to space axes and to axes of unknown kind only. A
    group list that disagrees with the pixelResolution unit is a conflict."""
    where, group, group_res, s0_array_res = ng.where, ng.group, ng.group_res, ng.s0_res
    spatial_f = (
        tuple(axis_type(name) in ("space", None) for name in group.axes)
        if group is not None
        else (True,) * ndim
    )
    res_unit: tuple[str | None, Ref] | None = None
    if group_res is not None:
        ref = Ref(where, "pixelResolution.unit")
        res_unit = (reading.unit(group_res.unit, ref), ref)
    elif s0_array_res is not None:
        ref = Ref(levels[0].location, "pixelResolution.unit")
        res_unit = (reading.unit(s0_array_res.unit, ref), ref)
    units_f: tuple[str | None, ...] | None = None
    unit_refs_f: tuple[Ref, ...] | None = None
    if group is not None and group.units is not None:
        unit_refs_f = tuple(Ref(where, f"units[{k}]") for k in range(ndim))
        units_f = tuple(
            reading.unit(unit, ref) for unit, ref in zip(group.units, unit_refs_f, strict=True)
        )
        if res_unit is not None and any(
            unit != res_unit[0] for unit, spatial in zip(units_f, spatial_f, strict=True) if spatial
        ):
            reading.conflicts.append(
                Conflict(
                    f"Neuroglancer units: {where} units is {list(units_f)} (F order) but "
                    f"{res_unit[1]} is {res_unit[0]!r} (normalised)",
                    used=f"{where} units",
                )
            )
    elif res_unit is not None:
        units_f = tuple(res_unit[0] if spatial else None for spatial in spatial_f)
        unit_refs_f = (res_unit[1],) * ndim
    return _NgUnits(spatial_f, res_unit, units_f, unit_refs_f)


def _ng_factors(
    ng: _NgAttrs, levels: Sequence[SourceLevel], ndim: int, reading: _Reading
) -> tuple[list[tuple[int, ...] | None], list[str]]:
    """Factors per level, F order: the group's ``scales[n]``, else the array's
    ``downsamplingFactors`` (s0: all ones when neither is stated); and the field each was
    read from. Extra group entries are a warning, group and array disagreeing a conflict."""
    where, group = ng.where, ng.group
    group_scales = group.scales if group is not None else ()
    if group is not None and len(group_scales) > len(levels):
        reading.warnings.append(
            f"{where} scales lists {len(group_scales)} levels but only s0…s{len(levels) - 1} "
            "exist; the extra entries are ignored"
        )
    factors_f: list[tuple[int, ...] | None] = []
    factor_fields: list[str] = []
    for n, (level, array) in enumerate(zip(levels, ng.arrays, strict=True)):
        from_group = group_scales[n] if n < len(group_scales) else None
        from_array = array.downsamplingFactors if array is not None else None
        if from_group is not None and from_array is not None and from_group != from_array:
            reading.conflicts.append(
                Conflict(
                    f"Neuroglancer factors of {level.name}: {where} scales[{n}] is "
                    f"{list(from_group)} but {level.location} downsamplingFactors is "
                    f"{list(from_array)} (F order)",
                    used=f"{where} scales[{n}]",
                )
            )
        factors_f.append(from_group or from_array or ((1,) * ndim if n == 0 else None))
        factor_fields.append(
            f"scales[{n}]" if from_group else f"{level.location} downsamplingFactors"
        )
    return factors_f, factor_fields


def _ng_s0_spacing(
    ng: _NgAttrs, levels: Sequence[SourceLevel], factors_f: list[tuple[int, ...] | None]
) -> tuple[_NgSpacing | None, MetadataError | None]:
    """s0 spacing, F order: the group's pixelResolution, else s0's own divided by s0's
    factor; else None and why (the statement is then incomplete)."""
    group_res, s0_array_res = ng.group_res, ng.s0_res
    if group_res is not None:
        return _NgSpacing(group_res.dimensions, Ref(ng.where, "pixelResolution")), None
    if s0_array_res is not None and factors_f[0] is not None:
        base_f = tuple(r / f for r, f in zip(s0_array_res.dimensions, factors_f[0], strict=True))
        return _NgSpacing(base_f, Ref(levels[0].location, "pixelResolution")), None
    return None, MetadataError(
        ng.where,
        "pixelResolution",
        "Neuroglancer metadata states no voxel size: looked for 'pixelResolution' here and "
        f"in {levels[0].location}",
    )


def _ng_level(
    n: int,
    level: SourceLevel,
    array: NeuroglancerArrayAttributes | None,
    f: tuple[int, ...] | None,
    factor_field: str,
    spacing: _NgSpacing | None,
    units: _NgUnits,
    ndim: int,
    reading: _Reading,
) -> _NgLevel:
    """Level ``n``'s factor, scale and translation (F order): s0 spacing * factor ``f``,
    else the level's own pixelResolution; its own pixelResolution (dimensions, then unit)
    disagreeing with the group is a conflict."""
    factor_f, scale_f, scale_ref = _ng_level_scale(level, array, f, factor_field, spacing, reading)
    own_res = array.pixelResolution if array is not None else None
    if own_res is not None and units.res_unit is not None and units.units_f is not None:
        _ng_check_level_unit(level, own_res, units, reading)
    base_f = spacing.base_f if spacing is not None else None
    translation = _ng_translation(factor_f, base_f, ndim, reading.downsampling)
    computed = translation is not None and reading.downsampling == "windowed"
    translation_ref = scale_ref if computed else None
    return _NgLevel(factor_f, scale_f, scale_ref, translation, translation_ref)


def _ng_level_scale(
    level: SourceLevel,
    array: NeuroglancerArrayAttributes | None,
    f: tuple[int, ...] | None,
    factor_field: str,
    spacing: _NgSpacing | None,
    reading: _Reading,
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, Ref | None]:
    """(factor, scale, where the scale comes from) of one level, F order: s0 spacing * its
    factor ``f`` (checked against its own pixelResolution), else its own pixelResolution
    (factor: that / s0 spacing)."""
    own_res = array.pixelResolution if array is not None else None
    factor_f: tuple[float, ...] | None = None
    scale_f: tuple[float, ...] | None = None
    scale_ref: Ref | None = None
    if spacing is not None and f is not None:
        base_f, base_ref = spacing.base_f, spacing.ref
        factor_f = tuple(float(x) for x in f)
        scale_f = tuple(b * x for b, x in zip(base_f, f, strict=True))
        scale_ref = Ref(base_ref.location, f"{base_ref.field} * {factor_field}")
        if own_res is not None and not same_values(own_res.dimensions, scale_f, scale_f):
            reading.conflicts.append(
                Conflict(
                    f"Neuroglancer scale of {level.name}: {level.location} "
                    f"pixelResolution.dimensions is {format_values(own_res.dimensions)} but "
                    f"{base_ref} * factors {list(f)} gives {format_values(scale_f)} (F order)",
                    used=f"{base_ref} * factors",
                )
            )
    elif own_res is not None:
        scale_f = own_res.dimensions
        scale_ref = Ref(level.location, "pixelResolution.dimensions")
        if spacing is not None:
            factor_f = tuple(r / b for r, b in zip(scale_f, spacing.base_f, strict=True))
    return factor_f, scale_f, scale_ref


def _ng_check_level_unit(
    level: SourceLevel,
    own_res: PixelResolution,
    units: _NgUnits,
    reading: _Reading,
) -> None:
    """A conflict when a level's own pixelResolution unit differs from the group's units of
    the spatial axes (F order)."""
    assert units.units_f is not None
    own_unit_ref = Ref(level.location, "pixelResolution.unit")
    own_unit = reading.unit(own_res.unit, own_unit_ref)
    if any(unit != own_unit for unit, sp in zip(units.units_f, units.spatial_f, strict=True) if sp):
        reading.conflicts.append(
            Conflict(
                f"Neuroglancer unit of {level.name}: {own_unit_ref} is {own_unit!r} "
                f"but the group states {list(units.units_f)} (F order, normalised)",
                used="the group's units",
            )
        )


def _ng_translation(
    factor_f: tuple[float, ...] | None,
    base_f: tuple[float, ...] | None,
    ndim: int,
    downsampling: Downsampling,
) -> tuple[float, ...] | None:
    """The translation of a level with factor ``factor_f`` and s0 spacing ``base_f`` (both F
    order, F order out): windowed ``(f - 1)/2 * spacing``, subsample 0; None when either is
    unknown."""
    if factor_f is None or base_f is None:
        return None
    if downsampling == "windowed":
        return tuple((x - 1) / 2 * b for x, b in zip(factor_f, base_f, strict=True))
    return (0.0,) * ndim


def _ng_missing_scale(
    ng: _NgAttrs, levels: Sequence[SourceLevel], per_level: list[_NgLevel]
) -> MetadataError | None:
    """Why the first level without a scale has none (None: every level has one)."""
    for n, (level, stated) in enumerate(zip(levels, per_level, strict=True)):
        if stated.scale_f is None:
            return MetadataError(
                level.location,
                "pixelResolution",
                f"no Neuroglancer scale for {level.name}: looked for {ng.where} scales[{n}] and "
                "this array's downsamplingFactors and pixelResolution",
            )
    return None


def _ng_relative_factors(
    per_level: list[_NgLevel], s0_factor: tuple[int, ...] | None
) -> list[tuple[float, ...] | None]:
    """Each level's factor relative to s0's (for the shape check), F order in, C order out."""
    return [
        None
        if stated.factor_f is None or s0_factor is None
        else f_to_c(_relative(stated.factor_f, s0_factor))
        for stated in per_level
    ]


def _ng_sources(
    ng: _NgAttrs, levels: Sequence[SourceLevel], downsampling: Downsampling
) -> dict[str, str]:
    """Where the Neuroglancer values come from, for ``MappedImage.sources``."""
    where, group = ng.where, ng.group
    group_or_s0 = f"{where}" if ng.group_res is not None else f"{levels[0].location}"
    rule = (
        "windowed-mean rule (f - 1)/2 * s0 spacing"
        if downsampling == "windowed"
        else "subsample rule: origin kept (0)"
    )
    return {
        "axes": f"Neuroglancer axes ({where}), F order reversed",
        "units": (
            f"Neuroglancer units ({where}), F order reversed"
            if group is not None and group.units is not None
            else f"Neuroglancer pixelResolution.unit ({group_or_s0})"
        ),
        "scale": f"Neuroglancer pixelResolution ({group_or_s0}) * scales, F order reversed",
        "translation": f"Neuroglancer pixelResolution * scales, {rule}",
    }


def _relative(factor: tuple[float, ...], s0_factor: Sequence[int]) -> tuple[float, ...]:
    return tuple(f / f0 for f, f0 in zip(factor, s0_factor, strict=True))
