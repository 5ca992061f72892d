"""Source multiscale metadata (COSEM and/or Neuroglancer-N5) → OME-NGFF axes and datasets.

Pure functions, no I/O: discovery reads the ``attributes.json`` files, this module decides
what they mean. Every per-axis value handled here is in **C order** (z, y, x) unless a name
or docstring says F order; F-order Neuroglancer lists are reversed once, with
:func:`migrate.source.axes.f_to_c`, as soon as they are read.

Sources of truth, per level:

- **COSEM**: the group's ``multiscales[0].datasets[i] = {path, transform}``; a level the group
  does not list falls back to the ``transform`` of the level array. When both exist and
  differ, that is a conflict. ``scale`` → NGFF scale and ``translate`` → NGFF translation,
  float for float (``39.300000000000004`` stays as written).
- **Neuroglancer-N5**: ``pixelResolution`` (group, else s0 array) * ``scales[n]`` (group, else
  the array's ``downsamplingFactors``) → scale. Neuroglancer states no translation, so one is
  derived from the ``downsampling`` option: *windowed* mean by factor f moves the origin by
  ``(f - 1)/2 * s0 spacing``; *subsample* keeps it. A level's own ``pixelResolution`` must
  agree with ``s0 spacing * factor``.

When both conventions are present, COSEM is used (it states translations) and Neuroglancer's
axes names, units and per-level scales are checked against it (relative tolerance 1e-9).
Disagreements are *conflicts*, which block conversion until the user says which convention
to trust (``MappingOptions.trust``); then the trusted one is used and the disagreement is
reported as a warning. Inconsistencies inside one convention (a level's axes that differ from
s0's, a group entry that differs from the array's own transform, a per-array
``pixelResolution`` that differs from the group's) are conflicts too; trusting either
convention resolves those in favour of the primary value (s0's axes, the group entry, the
group's ``pixelResolution * scales``).

Float facts (checked on jrc_hela-2): computing the Neuroglancer translation as
``(f - 1) / 2 * spacing`` gives bit-for-bit the COSEM values, including
``7.5 * 5.24 = 39.300000000000004`` for s4; ``(f - 1) * spacing / 2`` is always identical
(halving is exact), whereas accumulating level by level (``t[n] = t[n-1] + spacing[n-1]/2``)
would give ``39.3`` and ``f * s - s`` rounds twice. Scales ``spacing * f`` are exact for
power-of-two factors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from migrate.errors import MetadataError
from migrate.source.axes import axis_type, f_to_c
from migrate.source.parse import parse_attrs
from migrate.source.units import KNOWN_UNITS, normalize_unit
from schemas.cosem import CosemArrayAttributes, CosemGroupAttributes, STTransform
from schemas.neuroglancer_n5 import (
    NeuroglancerArrayAttributes,
    NeuroglancerGroupAttributes,
    PixelResolution,
)
from schemas.ngff import (
    SPACE_UNITS,
    TIME_UNITS,
    Axis,
    Dataset,
    ScaleTransform,
    TranslationTransform,
)

LEVEL_NAME = re.compile(r"s(0|[1-9][0-9]*)")
"""A scale level array name: ``s`` and a number without leading zeros (``s0``, ``s12``)."""

REL_TOL = 1e-9
"""Relative tolerance when comparing values stated by two sources."""

_DEFAULT_AXES_F = ("x", "y", "z")


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class SourceLevel:
    """One scale level array of a source multiscale group."""

    name: str
    """``s0``, ``s1``, …"""
    attrs: Mapping[str, Any]
    """The raw parsed ``attributes.json`` of the array."""
    location: str
    """Display path of that ``attributes.json``, for messages."""
    shape: tuple[int, ...]
    """C order (the reversed N5 ``dimensions``)."""


@dataclass(frozen=True)
class SourceImage:
    """A source multiscale group and its level arrays."""

    path: str
    """Group path inside the N5 root, e.g. ``em/fibsem-uint16``."""
    group_attrs: Mapping[str, Any]
    """The raw parsed ``attributes.json`` of the group."""
    group_location: str
    """Display path of the group's ``attributes.json``."""
    levels: tuple[SourceLevel, ...]


@dataclass(frozen=True)
class MappingOptions:
    downsampling: Literal["windowed", "subsample"] = "windowed"
    """How Neuroglancer-only pyramids were made (decides their translations)."""
    trust: Literal["cosem", "neuroglancer"] | None = None
    """Which convention wins when they disagree; None: disagreements are conflicts."""
    allow_unknown_units: bool = False
    """Keep units that are not OME-NGFF unit names (as written) instead of failing."""


@dataclass(frozen=True)
class MappedImage:
    """The OME-NGFF metadata of one image, and how it was arrived at."""

    axes: tuple[Axis, ...]
    """C order."""
    datasets: tuple[Dataset, ...]
    """One per level, ``s0, s1, …`` in numeric order; each with a scale and a translation."""
    sources: Mapping[str, str]
    """Where each value came from (``axes``, ``units``, ``scale``, ``translation``, …)."""
    warnings: tuple[str, ...]
    """Things the user should know that do not stop the conversion."""
    conflicts: tuple[str, ...]
    """Disagreements between sources that block conversion until ``trust`` is given."""


def level_number(name: str) -> int | None:
    """The N of a level name ``sN``, or None when ``name`` is not a level name."""
    match = LEVEL_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def sort_level_names(names: Iterable[str]) -> list[str]:
    """The level names (``sN``) among ``names``, sorted by N: ``s9`` before ``s10``.

    Names that are not ``s`` + a number without leading zeros (``raw``, ``s01``) are ignored:
    they are not scale levels. Duplicates are kept.
    """
    numbered = [(level_number(name), name) for name in names]
    return [name for number, name in sorted((n, s) for n, s in numbered if n is not None)]


def map_image(image: SourceImage, options: MappingOptions) -> MappedImage:
    """Map a source multiscale image to OME-NGFF axes and datasets (C order throughout).

    Raises :class:`MetadataError` (naming file and field) for metadata that cannot be mapped;
    returns disagreements between sources in ``conflicts`` (or, with ``options.trust``, in
    ``warnings``).
    """
    levels = _check_levels(image)
    ndim = len(levels[0].shape)
    report = _Report()
    cosem = _read_cosem(image, levels, ndim, options, report)
    ng = _read_neuroglancer(image, levels, ndim, options, report)
    if cosem is None and ng is None:
        raise MetadataError(
            image.group_location,
            None,
            "no multiscale metadata: looked for COSEM 'multiscales' here and 'transform' in "
            "each level's attributes.json, and for Neuroglancer 'axes', 'scales', "
            "'pixelResolution' here and 'pixelResolution' in each level's attributes.json",
        )
    if cosem is not None and ng is not None:
        _compare(cosem, ng, levels, report)

    chosen = ng if cosem is None or (options.trust == "neuroglancer" and ng is not None) else cosem
    assert chosen is not None
    if chosen.incomplete is not None:
        error = chosen.incomplete
        if chosen is cosem and ng is not None and ng.incomplete is None:
            hint = "; pass --trust neuroglancer to use the Neuroglancer metadata instead"
            raise MetadataError(error.location, error.field, error.message + hint)
        raise error
    if chosen is ng and cosem is not None and cosem.incomplete is not None:
        report.warnings.append(f"COSEM metadata ignored (--trust neuroglancer): {cosem.incomplete}")

    names, axes_ref = _axis_names(chosen, ndim, image, report)
    units = chosen.units if chosen.units is not None else (None,) * ndim
    axes = _build_axes(names, axes_ref, units, chosen.unit_refs, options, report)
    scales = [_known(scale) for scale in chosen.scales]
    translations = [_known(translation) for translation in chosen.translations]
    _check_order(levels, names, scales, chosen.scale_refs)
    _check_shapes(levels, names, chosen.factors, report)

    datasets = tuple(
        Dataset(
            path=level.name,
            coordinateTransformations=(
                ScaleTransform(scale=scale),
                TranslationTransform(translation=translation),
            ),
        )
        for level, scale, translation in zip(levels, scales, translations, strict=True)
    )
    sources = dict(chosen.sources)
    other = ng if chosen is cosem else cosem
    if other is not None:
        sources["checked"] = report.checked_text(other.name)

    warnings = list(report.warnings)
    conflicts: list[str] = []
    for conflict in report.conflicts:
        if options.trust is None:
            conflicts.append(conflict.text)
        else:
            used = conflict.used or f"the {chosen.name} value"
            warnings.append(f"{conflict.text}; used {used} (--trust {options.trust})")
    return MappedImage(
        axes=axes,
        datasets=datasets,
        sources=sources,
        warnings=tuple(warnings),
        conflicts=tuple(conflicts),
    )


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Ref:
    """Where a value was read: a file and the JSON path inside it."""

    location: str
    field: str

    def __str__(self) -> str:
        return f"{self.location} {self.field}"


@dataclass(frozen=True)
class _Conflict:
    text: str
    used: str | None = None
    """What is used when the user passes --trust; None: the trusted convention's value."""


@dataclass
class _Report:
    warnings: list[str] = field(default_factory=list)
    conflicts: list[_Conflict] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def checked_text(self, other: str) -> str:
        if not self.checked:
            return f"{other} metadata states nothing that could be compared"
        return f"{other} {', '.join(self.checked)} compared (relative tolerance {REL_TOL:g})"


@dataclass
class _Statement:
    """What one convention states about an image. Vectors in C order; lists per level."""

    name: str
    axes: tuple[str, ...] | None
    axes_ref: _Ref | None
    units: tuple[str | None, ...] | None
    unit_refs: tuple[_Ref, ...] | None
    scales: list[tuple[float, ...] | None]
    scale_refs: list[_Ref | None]
    translations: list[tuple[float, ...] | None]
    factors: list[tuple[float, ...] | None]
    """Downsampling factor of each level relative to s0 (for the shape check)."""
    sources: dict[str, str]
    incomplete: MetadataError | None = None
    """Why this convention cannot map every level on its own (raised if it is chosen)."""


@dataclass(frozen=True)
class _CosemLevel:
    """One level's COSEM transform, in C order, units normalised."""

    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    unit_refs: tuple[_Ref, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    ref: _Ref


def _known(values: tuple[float, ...] | None) -> tuple[float, ...]:
    assert values is not None  # guaranteed once `incomplete` is None
    return values


def _fmt(values: Sequence[object]) -> str:
    return "[" + ", ".join(repr(value) for value in values) + "]"


def _close(a: float, b: float, magnitude: float) -> bool:
    """Equal within REL_TOL of ``magnitude`` (a scale, so zero translations compare sanely)."""
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=REL_TOL * abs(magnitude))


def _same(a: Sequence[float], b: Sequence[float], magnitudes: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        _close(x, y, m) for x, y, m in zip(a, b, magnitudes, strict=False)
    )


def _check_levels(image: SourceImage) -> list[SourceLevel]:
    """The levels sorted s0, s1, …; all present, all of one ndim."""
    where = image.group_location
    if not image.levels:
        raise MetadataError(where, None, "no scale level arrays (s0, s1, …) in this group")
    numbered: dict[int, SourceLevel] = {}
    for level in image.levels:
        number = level_number(level.name)
        if number is None:
            raise MetadataError(
                level.location, None, f"array {level.name!r} is not a scale level name sN"
            )
        if number in numbered:
            raise MetadataError(where, None, f"level {level.name!r} is given twice")
        numbered[number] = level
    present = sorted(numbered)
    missing = [f"s{n}" for n in range(present[-1] + 1) if n not in numbered]
    if missing:
        found = ", ".join(numbered[n].name for n in present)
        raise MetadataError(
            where,
            None,
            f"scale levels must be s0…sN without gaps: found {found}, missing {', '.join(missing)}",
        )
    levels = [numbered[n] for n in present]
    s0 = levels[0]
    for level in levels[1:]:
        if len(level.shape) != len(s0.shape):
            raise MetadataError(
                level.location,
                "dimensions",
                f"{level.name} has {len(level.shape)} dimensions {list(level.shape)} but s0 "
                f"has {len(s0.shape)} {list(s0.shape)} (C order); all levels need the same",
            )
    return levels


def _unit(unit: str, ref: _Ref, options: MappingOptions) -> str | None:
    """Normalised unit; an empty string means "no unit" (None)."""
    if unit.strip() == "":
        return None
    return normalize_unit(
        unit, location=ref.location, field=ref.field, allow_unknown=options.allow_unknown_units
    )


# ----------------------------------------------------------------------------- COSEM


def _cosem_level(
    transform: STTransform, ref: _Ref, level: SourceLevel, ndim: int, options: MappingOptions
) -> _CosemLevel:
    if len(transform.axes) != ndim:
        raise MetadataError(
            ref.location,
            f"{ref.field}.axes",
            f"{len(transform.axes)} axes {list(transform.axes)} for the {ndim}-dimensional "
            f"array {level.name} (shape {list(level.shape)}, C order)",
        )
    for k, value in enumerate(transform.scale):
        if value <= 0:
            raise MetadataError(
                ref.location, f"{ref.field}.scale[{k}]", f"scale must be positive, got {value!r}"
            )
    # Units and their JSON paths are handled in file order, then put in C order.
    unit_refs = tuple(_Ref(ref.location, f"{ref.field}.units[{k}]") for k in range(ndim))
    units = tuple(
        _unit(unit, unit_ref, options)
        for unit, unit_ref in zip(transform.units, unit_refs, strict=True)
    )
    if transform.order == "F":
        units, unit_refs = f_to_c(units), f_to_c(unit_refs)
    c_order = transform.in_c_order()
    return _CosemLevel(
        axes=c_order.axes,
        units=units,
        unit_refs=unit_refs,
        scale=c_order.scale,
        translate=c_order.translate,
        ref=ref,
    )


def _cosem_differences(a: _CosemLevel, b: _CosemLevel) -> list[str]:
    """Fields in which two COSEM transforms of one level differ (C order values)."""
    out = []
    if a.axes != b.axes:
        out.append(f"axes {list(a.axes)} vs {list(b.axes)}")
    if a.units != b.units:
        out.append(f"units {list(a.units)} vs {list(b.units)}")
    if not _same(a.scale, b.scale, a.scale):
        out.append(f"scale {_fmt(a.scale)} vs {_fmt(b.scale)}")
    if not _same(a.translate, b.translate, a.scale):
        out.append(f"translate {_fmt(a.translate)} vs {_fmt(b.translate)}")
    return out


def _read_cosem(
    image: SourceImage,
    levels: list[SourceLevel],
    ndim: int,
    options: MappingOptions,
    report: _Report,
) -> _Statement | None:
    where = image.group_location
    names = [level.name for level in levels]
    listed: dict[str, tuple[STTransform, _Ref]] = {}
    if "multiscales" in image.group_attrs:
        group = parse_attrs(CosemGroupAttributes, image.group_attrs, where)
        if len(group.multiscales) > 1:
            report.warnings.append(
                f"{where} multiscales lists {len(group.multiscales)} entries; "
                "only multiscales[0] is used"
            )
        for i, dataset in enumerate(group.multiscales[0].datasets):
            path_field = f"multiscales[0].datasets[{i}].path"
            if dataset.path not in names:
                raise MetadataError(
                    where,
                    path_field,
                    f"{dataset.path!r} is not a scale level array of this group "
                    f"(levels: {', '.join(names)})",
                )
            if dataset.path in listed:
                raise MetadataError(where, path_field, f"{dataset.path!r} is listed twice")
            listed[dataset.path] = (
                dataset.transform,
                _Ref(where, f"multiscales[0].datasets[{i}].transform"),
            )

    found: list[_CosemLevel | None] = []
    from_group: list[str] = []
    from_array: list[str] = []
    for level in levels:
        entry = None
        if level.name in listed:
            transform, ref = listed[level.name]
            entry = _cosem_level(transform, ref, level, ndim, options)
            from_group.append(level.name)
        if "transform" in level.attrs:
            own = parse_attrs(CosemArrayAttributes, level.attrs, level.location).transform
            own_entry = _cosem_level(own, _Ref(level.location, "transform"), level, ndim, options)
            if entry is None:
                entry = own_entry
                from_array.append(level.name)
            elif differences := _cosem_differences(entry, own_entry):
                report.conflicts.append(
                    _Conflict(
                        f"COSEM {level.name}: {entry.ref} and {own_entry.ref} disagree: "
                        f"{'; '.join(differences)} (C order)",
                        used=f"{entry.ref}",
                    )
                )
        found.append(entry)
    if all(entry is None for entry in found):
        return None

    incomplete = None
    for level, entry in zip(levels, found, strict=True):
        if entry is None:
            incomplete = MetadataError(
                level.location,
                "transform",
                f"no COSEM transform for {level.name}: "
                + (
                    f"it is not listed in {where} multiscales[0].datasets"
                    if listed
                    else f"{where} has no COSEM 'multiscales'"
                )
                + " and this attributes.json has no 'transform'",
            )
            break

    s0 = found[0]
    for level, entry in zip(levels[1:], found[1:], strict=True):
        if s0 is None or entry is None:
            continue
        if entry.axes != s0.axes:
            report.conflicts.append(
                _Conflict(
                    f"COSEM axes of {level.name}: {entry.ref}.axes is {list(entry.axes)} but "
                    f"s0's {s0.ref}.axes is {list(s0.axes)} (C order)",
                    used="s0's axes names",
                )
            )
        if entry.units != s0.units:
            report.conflicts.append(
                _Conflict(
                    f"COSEM units of {level.name}: {entry.ref}.units is {list(entry.units)} but "
                    f"s0's {s0.ref}.units is {list(s0.units)} (C order, normalised)",
                    used="s0's units",
                )
            )

    if not from_array:
        origin = f"COSEM multiscales[0].datasets[i].transform ({where})"
    elif not from_group:
        origin = "COSEM transform of each level array (s0: " + levels[0].location + ")"
    else:
        origin = (
            f"COSEM multiscales ({where}) for {', '.join(from_group)}; the level array's own "
            f"transform for {', '.join(from_array)}"
        )
    sources = {
        "axes": f"{origin}: s0's axes",
        "units": f"{origin}: s0's units",
        "scale": f"{origin}: scale",
        "translation": f"{origin}: translate (stated by the source; no downsampling rule used)",
    }
    factors: list[tuple[float, ...] | None] = [
        None if s0 is None or entry is None else _ratio(entry.scale, s0.scale) for entry in found
    ]
    return _Statement(
        name="COSEM",
        axes=None if s0 is None else s0.axes,
        axes_ref=None if s0 is None else _Ref(s0.ref.location, f"{s0.ref.field}.axes"),
        units=None if s0 is None else s0.units,
        unit_refs=None if s0 is None else s0.unit_refs,
        scales=[None if entry is None else entry.scale for entry in found],
        scale_refs=[
            None if entry is None else _Ref(entry.ref.location, f"{entry.ref.field}.scale")
            for entry in found
        ],
        translations=[None if entry is None else entry.translate for entry in found],
        factors=factors,
        sources=sources,
        incomplete=incomplete,
    )


def _ratio(scale: Sequence[float], base: Sequence[float]) -> tuple[float, ...]:
    """scale / base per axis, snapped to the nearest integer when within REL_TOL of it."""
    out = []
    for s, b in zip(scale, base, strict=True):
        ratio = s / b
        nearest = round(ratio)
        out.append(float(nearest) if nearest and _close(ratio, nearest, ratio) else ratio)
    return tuple(out)


# ------------------------------------------------------------------------ Neuroglancer


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
    res_unit: tuple[str | None, _Ref] | None
    """``pixelResolution``'s single unit (normalised) and where it was read."""
    units_f: tuple[str | None, ...] | None
    unit_refs_f: tuple[_Ref, ...] | None


@dataclass(frozen=True)
class _NgSpacing:
    """The s0 voxel spacing (F order) and where it was read."""

    base_f: tuple[float, ...]
    ref: _Ref


@dataclass(frozen=True)
class _NgLevel:
    """What Neuroglancer states about one level, all in F order (None: cannot tell)."""

    factor_f: tuple[float, ...] | None
    """Downsampling factor relative to the s0 spacing."""
    scale_f: tuple[float, ...] | None
    scale_ref: _Ref | None
    translation_f: tuple[float, ...] | None


def _read_neuroglancer(
    image: SourceImage,
    levels: list[SourceLevel],
    ndim: int,
    options: MappingOptions,
    report: _Report,
) -> _Statement | None:
    """What the Neuroglancer attributes state (F order in the files, C order in the returned
    statement); None when the image has none."""
    ng = _ng_parse(image, levels)
    if ng is None:
        return None
    _ng_check_lengths(ng, levels, ndim)
    units = _ng_units(ng, levels, ndim, options, report)
    factors_f, factor_fields = _ng_factors(ng, levels, ndim, report)
    spacing, incomplete = _ng_s0_spacing(ng, levels, factors_f)
    per_level = [
        _ng_level(n, level, array, f, factor_fields[n], spacing, units, ndim, options, report)
        for n, (level, array, f) in enumerate(zip(levels, ng.arrays, factors_f, strict=True))
    ]
    if incomplete is None:
        incomplete = _ng_missing_scale(ng, levels, per_level)
    group = ng.group
    return _Statement(
        name="Neuroglancer",
        axes=f_to_c(group.axes) if group is not None else None,
        axes_ref=_Ref(ng.where, "axes") if group is not None else None,
        units=None if units.units_f is None else f_to_c(units.units_f),
        unit_refs=None if units.unit_refs_f is None else f_to_c(units.unit_refs_f),
        scales=[None if lv.scale_f is None else f_to_c(lv.scale_f) for lv in per_level],
        scale_refs=[lv.scale_ref for lv in per_level],
        translations=[
            None if lv.translation_f is None else f_to_c(lv.translation_f) for lv in per_level
        ],
        factors=_ng_relative_factors(per_level, factors_f[0]),
        sources=_ng_sources(ng, levels, options),
        incomplete=incomplete,
    )


def _ng_parse(image: SourceImage, levels: list[SourceLevel]) -> _NgAttrs | None:
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


def _ng_check_lengths(ng: _NgAttrs, levels: list[SourceLevel], ndim: int) -> None:
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
            f"{len(group_res.dimensions)} values {_fmt(group_res.dimensions)} for "
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
                    f"{len(values)} values {_fmt(values)} for a {ndim}-dimensional array",
                )


def _ng_units(
    ng: _NgAttrs,
    levels: list[SourceLevel],
    ndim: int,
    options: MappingOptions,
    report: _Report,
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
    res_unit: tuple[str | None, _Ref] | None = None
    if group_res is not None:
        ref = _Ref(where, "pixelResolution.unit")
        res_unit = (_unit(group_res.unit, ref, options), ref)
    elif s0_array_res is not None:
        ref = _Ref(levels[0].location, "pixelResolution.unit")
        res_unit = (_unit(s0_array_res.unit, ref, options), ref)
    units_f: tuple[str | None, ...] | None = None
    unit_refs_f: tuple[_Ref, ...] | None = None
    if group is not None and group.units is not None:
        unit_refs_f = tuple(_Ref(where, f"units[{k}]") for k in range(ndim))
        units_f = tuple(
            _unit(unit, ref, options) for unit, ref in zip(group.units, unit_refs_f, strict=True)
        )
        if res_unit is not None and any(
            unit != res_unit[0] for unit, spatial in zip(units_f, spatial_f, strict=True) if spatial
        ):
            report.conflicts.append(
                _Conflict(
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
    ng: _NgAttrs, levels: list[SourceLevel], ndim: int, report: _Report
) -> tuple[list[tuple[int, ...] | None], list[str]]:
    """Factors per level, F order: the group's ``scales[n]``, else the array's
    ``downsamplingFactors`` (s0: all ones when neither is stated); and the field each was
    read from. Extra group entries are a warning, group and array disagreeing a conflict."""
    where, group = ng.where, ng.group
    group_scales = group.scales if group is not None else ()
    if group is not None and len(group_scales) > len(levels):
        report.warnings.append(
            f"{where} scales lists {len(group_scales)} levels but only s0…s{len(levels) - 1} "
            "exist; the extra entries are ignored"
        )
    factors_f: list[tuple[int, ...] | None] = []
    factor_fields: list[str] = []
    for n, (level, array) in enumerate(zip(levels, ng.arrays, strict=True)):
        from_group = group_scales[n] if n < len(group_scales) else None
        from_array = array.downsamplingFactors if array is not None else None
        if from_group is not None and from_array is not None and from_group != from_array:
            report.conflicts.append(
                _Conflict(
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
    ng: _NgAttrs, levels: list[SourceLevel], factors_f: list[tuple[int, ...] | None]
) -> tuple[_NgSpacing | None, MetadataError | None]:
    """s0 spacing, F order: the group's pixelResolution, else s0's own divided by s0's
    factor; else None and why (the statement is then incomplete)."""
    group_res, s0_array_res = ng.group_res, ng.s0_res
    if group_res is not None:
        return _NgSpacing(group_res.dimensions, _Ref(ng.where, "pixelResolution")), None
    if s0_array_res is not None and factors_f[0] is not None:
        base_f = tuple(r / f for r, f in zip(s0_array_res.dimensions, factors_f[0], strict=True))
        return _NgSpacing(base_f, _Ref(levels[0].location, "pixelResolution")), None
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
    options: MappingOptions,
    report: _Report,
) -> _NgLevel:
    """Level ``n``'s factor, scale and translation (F order): s0 spacing * factor ``f``,
    else the level's own pixelResolution; its own pixelResolution (dimensions, then unit)
    disagreeing with the group is a conflict."""
    factor_f, scale_f, scale_ref = _ng_level_scale(level, array, f, factor_field, spacing, report)
    own_res = array.pixelResolution if array is not None else None
    if own_res is not None and units.res_unit is not None and units.units_f is not None:
        _ng_check_level_unit(level, own_res, units, options, report)
    base_f = spacing.base_f if spacing is not None else None
    translation = _ng_translation(factor_f, base_f, ndim, options)
    return _NgLevel(factor_f, scale_f, scale_ref, translation)


def _ng_level_scale(
    level: SourceLevel,
    array: NeuroglancerArrayAttributes | None,
    f: tuple[int, ...] | None,
    factor_field: str,
    spacing: _NgSpacing | None,
    report: _Report,
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, _Ref | None]:
    """(factor, scale, where the scale comes from) of one level, F order: s0 spacing * its
    factor ``f`` (checked against its own pixelResolution), else its own pixelResolution
    (factor: that / s0 spacing)."""
    own_res = array.pixelResolution if array is not None else None
    factor_f: tuple[float, ...] | None = None
    scale_f: tuple[float, ...] | None = None
    scale_ref: _Ref | None = None
    if spacing is not None and f is not None:
        base_f, base_ref = spacing.base_f, spacing.ref
        factor_f = tuple(float(x) for x in f)
        scale_f = tuple(b * x for b, x in zip(base_f, f, strict=True))
        scale_ref = _Ref(base_ref.location, f"{base_ref.field} * {factor_field}")
        if own_res is not None and not _same(own_res.dimensions, scale_f, scale_f):
            report.conflicts.append(
                _Conflict(
                    f"Neuroglancer scale of {level.name}: {level.location} "
                    f"pixelResolution.dimensions is {_fmt(own_res.dimensions)} but "
                    f"{base_ref} * factors {list(f)} gives {_fmt(scale_f)} (F order)",
                    used=f"{base_ref} * factors",
                )
            )
    elif own_res is not None:
        scale_f = own_res.dimensions
        scale_ref = _Ref(level.location, "pixelResolution.dimensions")
        if spacing is not None:
            factor_f = tuple(r / b for r, b in zip(scale_f, spacing.base_f, strict=True))
    return factor_f, scale_f, scale_ref


def _ng_check_level_unit(
    level: SourceLevel,
    own_res: PixelResolution,
    units: _NgUnits,
    options: MappingOptions,
    report: _Report,
) -> None:
    """A conflict when a level's own pixelResolution unit differs from the group's units of
    the spatial axes (F order)."""
    assert units.units_f is not None
    own_unit_ref = _Ref(level.location, "pixelResolution.unit")
    own_unit = _unit(own_res.unit, own_unit_ref, options)
    if any(unit != own_unit for unit, sp in zip(units.units_f, units.spatial_f, strict=True) if sp):
        report.conflicts.append(
            _Conflict(
                f"Neuroglancer unit of {level.name}: {own_unit_ref} is {own_unit!r} "
                f"but the group states {list(units.units_f)} (F order, normalised)",
                used="the group's units",
            )
        )


def _ng_translation(
    factor_f: tuple[float, ...] | None,
    base_f: tuple[float, ...] | None,
    ndim: int,
    options: MappingOptions,
) -> tuple[float, ...] | None:
    """The translation of a level with factor ``factor_f`` and s0 spacing ``base_f`` (both F
    order, F order out): windowed ``(f - 1)/2 * spacing``, subsample 0; None when either is
    unknown."""
    if factor_f is None or base_f is None:
        return None
    if options.downsampling == "windowed":
        return tuple((x - 1) / 2 * b for x, b in zip(factor_f, base_f, strict=True))
    return (0.0,) * ndim


def _ng_missing_scale(
    ng: _NgAttrs, levels: list[SourceLevel], per_level: list[_NgLevel]
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


def _ng_sources(ng: _NgAttrs, levels: list[SourceLevel], options: MappingOptions) -> dict[str, str]:
    """Where the Neuroglancer values come from, for ``MappedImage.sources``."""
    where, group = ng.where, ng.group
    group_or_s0 = f"{where}" if ng.group_res is not None else f"{levels[0].location}"
    rule = (
        "windowed-mean rule (f - 1)/2 * s0 spacing"
        if options.downsampling == "windowed"
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


# -------------------------------------------------------------------- both conventions


def _compare(cosem: _Statement, ng: _Statement, levels: list[SourceLevel], report: _Report) -> None:
    """Record where Neuroglancer disagrees with COSEM (axes names, units, scales; C order)."""
    if cosem.axes is not None and ng.axes is not None:
        report.checked.append("axes")
        if cosem.axes != ng.axes:
            report.conflicts.append(
                _Conflict(
                    f"axes: COSEM {cosem.axes_ref} is {list(cosem.axes)} but Neuroglancer "
                    f"{ng.axes_ref} is {list(ng.axes)} (both in C order)"
                )
            )
    if cosem.units is not None and ng.units is not None:
        report.checked.append("units")
        if cosem.units != ng.units:
            cosem_where = cosem.unit_refs[0] if cosem.unit_refs else "COSEM"
            ng_where = ng.unit_refs[0] if ng.unit_refs else "Neuroglancer"
            report.conflicts.append(
                _Conflict(
                    f"units: COSEM {cosem_where} gives {list(cosem.units)} but Neuroglancer "
                    f"{ng_where} gives {list(ng.units)} (C order, normalised)"
                )
            )
    compared = False
    for level, a, a_ref, b, b_ref in zip(
        levels, cosem.scales, cosem.scale_refs, ng.scales, ng.scale_refs, strict=True
    ):
        if a is None or b is None:
            continue
        compared = True
        if not _same(a, b, a):
            report.conflicts.append(
                _Conflict(
                    f"scale of {level.name}: COSEM {a_ref} is {_fmt(a)} but Neuroglancer "
                    f"{b_ref} gives {_fmt(b)} (C order)"
                )
            )
    if compared:
        report.checked.append("scales")


# ---------------------------------------------------------------------- final checks


def _axis_names(
    chosen: _Statement, ndim: int, image: SourceImage, report: _Report
) -> tuple[tuple[str, ...], _Ref]:
    if chosen.axes is not None and chosen.axes_ref is not None:
        return chosen.axes, chosen.axes_ref
    if ndim > len(_DEFAULT_AXES_F):
        raise MetadataError(
            image.group_location,
            "axes",
            f"no axes names for {ndim}-dimensional arrays; add 'axes' (F order) to this file",
        )
    names = f_to_c(_DEFAULT_AXES_F[:ndim])
    report.warnings.append(
        f"{image.group_location} states no axes names; assumed {list(names)} (C order)"
    )
    chosen.sources["axes"] = f"assumed {', '.join(names)} (no axes names stated)"
    return names, _Ref(image.group_location, "axes")


def _build_axes(
    names: tuple[str, ...],
    names_ref: _Ref,
    units: tuple[str | None, ...],
    unit_refs: tuple[_Ref, ...] | None,
    options: MappingOptions,
    report: _Report,
) -> tuple[Axis, ...]:
    axes = []
    for k, (name, unit) in enumerate(zip(names, units, strict=True)):
        kind = axis_type(name)
        ref = unit_refs[k] if unit_refs is not None else names_ref
        wrong = {"space": TIME_UNITS, "time": SPACE_UNITS}.get(kind or "", frozenset())
        if unit is not None and unit in wrong:
            raise MetadataError(
                ref.location,
                ref.field,
                f"unit {unit!r} does not fit axis {name!r}, a {kind} axis",
            )
        if unit is not None and unit not in KNOWN_UNITS:
            report.warnings.append(
                f"axis {name!r}: unit {unit!r} ({ref}) is not an OME-NGFF unit name; kept as "
                "written (--allow-unknown-units)"
            )
        axes.append(
            Axis.model_validate(
                {"name": name, "type": kind, "unit": unit},
                context={"allow_unknown_units": options.allow_unknown_units},
            )
        )
    _check_axes_layout(axes, names_ref)
    return tuple(axes)


def _check_axes_layout(axes: Sequence[Axis], ref: _Ref) -> None:
    """OME-NGFF 0.4/0.5: 2-5 unique axes; 2-3 space axes last; time first; ≤1 other."""
    names = [axis.name for axis in axes]
    kinds = [axis.type for axis in axes]
    problem = None
    if not 2 <= len(axes) <= 5:
        problem = f"OME-NGFF needs 2 to 5 axes, got {len(axes)}"
    elif len(set(names)) != len(names):
        problem = "axes names must be unique"
    elif kinds.count("space") not in (2, 3):
        problem = f"OME-NGFF needs 2 or 3 space axes (x, y, z), got {kinds.count('space')}"
    elif kinds[-kinds.count("space") :] != ["space"] * kinds.count("space"):
        problem = "space axes must come last (C order)"
    elif kinds.count("time") > 1 or ("time" in kinds and kinds[0] != "time"):
        problem = "at most one time axis, and it must come first"
    elif sum(kind not in ("space", "time") for kind in kinds) > 1:
        problem = "at most one channel or other axis"
    if problem is not None:
        raise MetadataError(
            ref.location, ref.field, f"axes {names} (C order) cannot be OME-NGFF: {problem}"
        )


def _check_order(
    levels: list[SourceLevel],
    names: tuple[str, ...],
    scales: list[tuple[float, ...]],
    refs: list[_Ref | None],
) -> None:
    """OME-NGFF lists levels from highest to lowest resolution: scales may not shrink."""
    for n in range(1, len(levels)):
        for k, name in enumerate(names):
            if scales[n][k] < scales[n - 1][k]:
                ref = refs[n]
                raise MetadataError(
                    ref.location if ref else levels[n].location,
                    ref.field if ref else None,
                    f"{levels[n].name} scale {_fmt(scales[n])} is finer than "
                    f"{levels[n - 1].name} scale {_fmt(scales[n - 1])} along {name} (C order); "
                    "levels must go from highest to lowest resolution",
                )


def _check_shapes(
    levels: list[SourceLevel],
    names: tuple[str, ...],
    factors: list[tuple[float, ...] | None],
    report: _Report,
) -> None:
    """Warn about levels whose shape is not floor or ceil of s0's shape / factor."""
    s0 = levels[0]
    for level, factor in zip(levels[1:], factors[1:], strict=True):
        if factor is None:
            continue
        bad = []
        for name, size0, size, f in zip(names, s0.shape, level.shape, factor, strict=True):
            low, high = math.floor(size0 / f), math.ceil(size0 / f)
            if size not in (low, high):
                expected = f"{low}" if low == high else f"{low} or {high}"
                bad.append(f"{name}: {size}, expected {expected} for factor {f:g}")
        if bad:
            report.warnings.append(
                f"{level.name} shape {list(level.shape)} does not fit its downsampling factor "
                f"{_fmt(factor)} of s0 shape {list(s0.shape)} ({', '.join(names)}) — "
                f"{'; '.join(bad)} ({level.location})"
            )
