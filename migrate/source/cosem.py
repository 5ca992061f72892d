"""COSEM multiscale metadata (``multiscales`` / ``transform``) → a :class:`Statement`.

Pure, no I/O. Sources of truth, per level: the group's ``multiscales[0].datasets[i] = {path,
transform}``; a level the group does not list falls back to the ``transform`` of the level
array. When both exist and differ, that is a conflict (``--trust`` either convention resolves
it in favour of the group entry). ``scale`` becomes the level's scale and ``translate`` its
translation, float for float (``39.300000000000004`` stays as written): COSEM states its
translations, so no downsampling rule is needed.

A ``transform`` lists ``axes``, ``units``, ``scale``, ``translate`` in **C order** (z, y, x)
unless its ``order`` is ``"F"`` (a missing ``order`` means C); the statement is in C order.
Every level's axes and units must equal s0's; a level that differs is a conflict, resolved in
favour of s0's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migrate.errors import MetadataError
from migrate.source.axes import f_to_c
from migrate.source.image import SourceImage, SourceLevel
from migrate.source.parse import parse_attrs
from migrate.source.statement import (
    Conflict,
    LevelStatement,
    Ref,
    Statement,
    close,
    format_values,
    same_values,
)
from migrate.source.units import normalize_stated_unit
from schemas.cosem import CosemArrayAttributes, CosemGroupAttributes, STTransform


@dataclass(frozen=True)
class _CosemLevel:
    """One level's COSEM transform, in C order, units normalised."""

    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    unit_refs: tuple[Ref, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    ref: Ref


def read_cosem(
    image: SourceImage, levels: Sequence[SourceLevel], *, allow_unknown_units: bool
) -> Statement | None:
    """What the COSEM attributes of ``image`` state (C order); None when it has none.

    ``levels`` are the image's levels sorted s0, s1, … (see
    :func:`migrate.source.image.ordered_levels`). Raises :class:`MetadataError` naming the
    file and field for attributes that cannot be read (malformed, wrong number of axes, a
    scale that is not positive, an unknown unit unless ``allow_unknown_units``).
    """
    where = image.group_location
    ndim = len(levels[0].shape)
    warnings: list[str] = []
    conflicts: list[Conflict] = []
    listed = _listed_transforms(image, levels, warnings)

    found: list[_CosemLevel | None] = []
    from_group: list[str] = []
    from_array: list[str] = []
    for level in levels:
        entry = None
        if level.name in listed:
            transform, ref = listed[level.name]
            entry = _cosem_level(transform, ref, level, ndim, allow_unknown_units)
            from_group.append(level.name)
        if "transform" in level.attrs:
            own = parse_attrs(CosemArrayAttributes, level.attrs, level.location).transform
            own_ref = Ref(level.location, "transform")
            own_entry = _cosem_level(own, own_ref, level, ndim, allow_unknown_units)
            if entry is None:
                entry = own_entry
                from_array.append(level.name)
            elif differences := _cosem_differences(entry, own_entry):
                conflicts.append(
                    Conflict(
                        f"COSEM {level.name}: {entry.ref} and {own_entry.ref} disagree: "
                        f"{'; '.join(differences)} (C order)",
                        used=f"{entry.ref}",
                    )
                )
        found.append(entry)
    if all(entry is None for entry in found):
        return None

    s0 = found[0]
    conflicts += _differences_from_s0(levels, found)
    factors: list[tuple[float, ...] | None] = [
        None if s0 is None or entry is None else _ratio(entry.scale, s0.scale) for entry in found
    ]
    return Statement(
        convention="cosem",
        name="COSEM",
        axes=None if s0 is None else s0.axes,
        axes_ref=None if s0 is None else Ref(s0.ref.location, f"{s0.ref.field}.axes"),
        units=None if s0 is None else s0.units,
        unit_refs=None if s0 is None else s0.unit_refs,
        levels=tuple(
            LevelStatement(None, None, None, None, factor)
            if entry is None
            else LevelStatement(
                scale=entry.scale,
                scale_ref=Ref(entry.ref.location, f"{entry.ref.field}.scale"),
                translation=entry.translate,
                translation_ref=Ref(entry.ref.location, f"{entry.ref.field}.translate"),
                factor=factor,
            )
            for entry, factor in zip(found, factors, strict=True)
        ),
        sources=_sources(where, levels, from_group, from_array),
        warnings=tuple(warnings),
        conflicts=tuple(conflicts),
        incomplete=_missing_transform(where, levels, found, bool(listed)),
    )


def _listed_transforms(
    image: SourceImage, levels: Sequence[SourceLevel], warnings: list[str]
) -> dict[str, tuple[STTransform, Ref]]:
    """The transform of each level the group's ``multiscales[0].datasets`` lists, and where
    it was read; empty when the group has no ``multiscales``."""
    where = image.group_location
    names = [level.name for level in levels]
    listed: dict[str, tuple[STTransform, Ref]] = {}
    if "multiscales" not in image.group_attrs:
        return listed
    group = parse_attrs(CosemGroupAttributes, image.group_attrs, where)
    if len(group.multiscales) > 1:
        warnings.append(
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
            Ref(where, f"multiscales[0].datasets[{i}].transform"),
        )
    return listed


def _cosem_level(
    transform: STTransform, ref: Ref, level: SourceLevel, ndim: int, allow_unknown_units: bool
) -> _CosemLevel:
    """One transform (read at ``ref``) checked against its level and put in C order."""
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
    unit_refs = tuple(Ref(ref.location, f"{ref.field}.units[{k}]") for k in range(ndim))
    units = tuple(
        normalize_stated_unit(
            unit,
            location=unit_ref.location,
            field=unit_ref.field,
            allow_unknown=allow_unknown_units,
        )
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
    if not same_values(a.scale, b.scale, a.scale):
        out.append(f"scale {format_values(a.scale)} vs {format_values(b.scale)}")
    if not same_values(a.translate, b.translate, a.scale):
        out.append(f"translate {format_values(a.translate)} vs {format_values(b.translate)}")
    return out


def _differences_from_s0(
    levels: Sequence[SourceLevel], found: Sequence[_CosemLevel | None]
) -> list[Conflict]:
    """A conflict for every level whose axes names or units differ from s0's (C order)."""
    conflicts: list[Conflict] = []
    s0 = found[0]
    for level, entry in zip(levels[1:], found[1:], strict=True):
        if s0 is None or entry is None:
            continue
        if entry.axes != s0.axes:
            conflicts.append(
                Conflict(
                    f"inside the COSEM metadata, the axes of {level.name} differ from s0's: "
                    f"{entry.ref}.axes is {list(entry.axes)} but {s0.ref}.axes is "
                    f"{list(s0.axes)} (C order)",
                    used="s0's axes names",
                )
            )
        if entry.units != s0.units:
            conflicts.append(
                Conflict(
                    f"inside the COSEM metadata, the units of {level.name} differ from s0's: "
                    f"{entry.ref}.units is {list(entry.units)} but {s0.ref}.units is "
                    f"{list(s0.units)} (C order, normalised)",
                    used="s0's units",
                )
            )
    return conflicts


def _missing_transform(
    where: str,
    levels: Sequence[SourceLevel],
    found: Sequence[_CosemLevel | None],
    group_lists: bool,
) -> MetadataError | None:
    """Why the first level without a COSEM transform has none (None: every level has one)."""
    for level, entry in zip(levels, found, strict=True):
        if entry is None:
            return MetadataError(
                level.location,
                "transform",
                f"no COSEM transform for {level.name}: "
                + (
                    f"it is not listed in {where} multiscales[0].datasets"
                    if group_lists
                    else f"{where} has no COSEM 'multiscales'"
                )
                + " and this attributes.json has no 'transform'",
            )
    return None


def _sources(
    where: str,
    levels: Sequence[SourceLevel],
    from_group: Sequence[str],
    from_array: Sequence[str],
) -> dict[str, str]:
    """Where the COSEM values come from, for ``MappedImage.sources``."""
    if not from_array:
        origin = f"COSEM multiscales[0].datasets[i].transform ({where})"
    elif not from_group:
        origin = "COSEM transform of each level array (s0: " + levels[0].location + ")"
    else:
        origin = (
            f"COSEM multiscales ({where}) for {', '.join(from_group)}; the level array's own "
            f"transform for {', '.join(from_array)}"
        )
    return {
        "axes": f"{origin}: s0's axes",
        "units": f"{origin}: s0's units",
        "scale": f"{origin}: scale",
        "translation": f"{origin}: translate (stated by the source; no downsampling rule used)",
    }


def _ratio(scale: Sequence[float], base: Sequence[float]) -> tuple[float, ...]:
    """scale / base per axis, snapped to the nearest integer when within REL_TOL of it."""
    out = []
    for s, b in zip(scale, base, strict=True):
        ratio = s / b
        nearest = round(ratio)
        out.append(float(nearest) if nearest and close(ratio, nearest, ratio) else ratio)
    return tuple(out)
