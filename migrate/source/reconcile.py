"""Source multiscale metadata → OME-NGFF axes and datasets: the readers' statements reconciled.

Pure functions, no I/O: discovery reads the ``attributes.json`` files, the readers of each
source convention (:mod:`migrate.source.cosem`, :mod:`migrate.source.neuroglancer_n5`) say
what they state, each as a :class:`~migrate.source.statement.Statement`, and this module
decides what the image is. Every per-axis value here is in **C order** (z, y, x).

The statements are given in order of preference: COSEM first (it states translations), then
Neuroglancer. The first is used unless ``MappingOptions.trust`` names another; every other
statement is checked against the first (axes names, units, per-level scales; relative
tolerance :data:`~migrate.source.statement.REL_TOL`). Disagreements, between conventions or
inside one (each reader reports its own), are *conflicts*, which block conversion until the
user says which convention to trust; then the trusted one is used and each disagreement is
reported as a warning saying which value was used. A statement that cannot map every level
(``incomplete``) is an error only when it is the one used; when a later one could, the error
says which ``--trust`` would use it.

Then the chosen statement is checked as OME-NGFF needs it: axes names (``x, y, z`` assumed,
with a warning, when none are stated), units that fit their axes, an axes layout OME-NGFF
allows, levels from highest to lowest resolution; level shapes that do not fit their
downsampling factor are a warning.

More conventions plug in as more statements: a reader returns a ``Statement`` whose
``convention`` is the name ``--trust`` will use for it, and :func:`reconcile` compares and
chooses among any number of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from migrate.errors import MetadataError
from migrate.source.axes import axis_type, f_to_c
from migrate.source.cosem import read_cosem
from migrate.source.image import SourceImage, SourceLevel, ordered_levels
from migrate.source.neuroglancer_n5 import Downsampling, read_neuroglancer_n5
from migrate.source.statement import (
    REL_TOL,
    Conflict,
    Ref,
    Statement,
    format_values,
    same_values,
)
from migrate.source.units import KNOWN_UNITS
from schemas.ngff import (
    SPACE_UNITS,
    TIME_UNITS,
    Axis,
    Dataset,
    ScaleTransform,
    TranslationTransform,
)

Trust = Literal["cosem", "neuroglancer"]
"""The conventions ``--trust`` can name (a :attr:`Statement.convention`)."""

_DEFAULT_AXES_F = ("x", "y", "z")


@dataclass(frozen=True)
class MappingOptions:
    downsampling: Downsampling = "windowed"
    """How Neuroglancer-only pyramids were made (decides their translations)."""
    trust: Trust | None = None
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


def map_image(image: SourceImage, options: MappingOptions) -> MappedImage:
    """Map a source multiscale image to OME-NGFF axes and datasets (C order throughout).

    Reads its COSEM and its Neuroglancer-N5 metadata and reconciles them (:func:`reconcile`).
    Raises :class:`MetadataError` (naming file and field) for metadata that cannot be mapped;
    returns disagreements between sources in ``conflicts`` (or, with ``options.trust``, in
    ``warnings``).
    """
    levels = ordered_levels(image)
    cosem = read_cosem(image, levels, allow_unknown_units=options.allow_unknown_units)
    ng = read_neuroglancer_n5(
        image,
        levels,
        downsampling=options.downsampling,
        allow_unknown_units=options.allow_unknown_units,
    )
    statements = [statement for statement in (cosem, ng) if statement is not None]
    if not statements:
        raise MetadataError(
            image.group_location,
            None,
            "no multiscale metadata: looked for COSEM 'multiscales' here and 'transform' in "
            "each level's attributes.json, and for Neuroglancer 'axes', 'scales', "
            "'pixelResolution' here and 'pixelResolution' in each level's attributes.json",
        )
    return reconcile(statements, levels, options, where=image.group_location)


def reconcile(
    statements: Sequence[Statement],
    levels: Sequence[SourceLevel],
    options: MappingOptions,
    *,
    where: str,
) -> MappedImage:
    """The OME-NGFF axes and datasets of an image from what its conventions state (C order).

    ``statements`` (at least one) are in order of preference, each with one
    :class:`~migrate.source.statement.LevelStatement` per entry of ``levels`` (sorted s0,
    s1, …). ``where`` is the file that should state axes names when none does. Raises
    :class:`MetadataError` when the chosen statement is incomplete or cannot be OME-NGFF.
    """
    assert statements, "reconcile needs at least one statement"
    assert all(len(statement.levels) == len(levels) for statement in statements)
    ndim = len(levels[0].shape)
    first = statements[0]
    position = next(
        (n for n, statement in enumerate(statements) if statement.convention == options.trust), 0
    )
    chosen = statements[position]

    warnings = [text for statement in statements for text in statement.warnings]
    found: list[Conflict] = [c for statement in statements for c in statement.conflicts]
    checked: list[tuple[Statement, Statement, list[str]]] = []
    for other in statements[1:]:
        disagreements, fields = _compare(first, other, levels)
        found += disagreements
        checked.append((first, other, fields))

    if chosen.incomplete is not None:
        error = chosen.incomplete
        # Statements before the chosen one were passed over by --trust: only later ones are
        # offered instead.
        for later in statements[position + 1 :]:
            if later.incomplete is None:
                hint = f"; pass --trust {later.convention} to use the {later.name} metadata instead"
                raise MetadataError(error.location, error.field, error.message + hint)
        raise error
    for passed_over in statements[:position]:
        if passed_over.incomplete is not None:
            warnings.append(
                f"{passed_over.name} metadata ignored (--trust {options.trust}): "
                f"{passed_over.incomplete}"
            )

    sources = dict(chosen.sources)
    names, axes_ref, assumed = _axis_names(chosen, ndim, where)
    if assumed is not None:
        warnings.append(assumed)
        sources["axes"] = f"assumed {', '.join(names)} (no axes names stated)"
    units = chosen.units if chosen.units is not None else (None,) * ndim
    axes = _build_axes(names, axes_ref, units, chosen.unit_refs, options, warnings)
    scales = [_known(level.scale) for level in chosen.levels]
    translations = [_known(level.translation) for level in chosen.levels]
    _check_order(levels, names, scales, [level.scale_ref for level in chosen.levels])
    warnings += _shape_warnings(levels, names, [level.factor for level in chosen.levels])

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
    if checked:
        sources["checked"] = "; ".join(
            _checked_text(a, b, fields, chosen) for a, b, fields in checked
        )

    conflicts: list[str] = []
    for conflict in found:
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


# ------------------------------------------------------------------- two conventions


def _compare(
    first: Statement, other: Statement, levels: Sequence[SourceLevel]
) -> tuple[list[Conflict], list[str]]:
    """Where ``other`` disagrees with ``first`` (axes names, units, per-level scales; C
    order), and which of those both state (``axes``, ``units``, ``scales``)."""
    conflicts: list[Conflict] = []
    checked: list[str] = []
    a, b = first, other
    if a.axes is not None and b.axes is not None:
        checked.append("axes")
        if a.axes != b.axes:
            conflicts.append(
                Conflict(
                    f"axes: {a.name} {a.axes_ref} is {list(a.axes)} but {b.name} "
                    f"{b.axes_ref} is {list(b.axes)} (both in C order)"
                )
            )
    if a.units is not None and b.units is not None:
        checked.append("units")
        if a.units != b.units:
            a_where = a.unit_refs[0] if a.unit_refs else a.name
            b_where = b.unit_refs[0] if b.unit_refs else b.name
            conflicts.append(
                Conflict(
                    f"units: {a.name} {a_where} gives {list(a.units)} but {b.name} "
                    f"{b_where} gives {list(b.units)} (C order, normalised)"
                )
            )
    compared = False
    for level, a_level, b_level in zip(levels, a.levels, b.levels, strict=True):
        a_scale, b_scale = a_level.scale, b_level.scale
        if a_scale is None or b_scale is None:
            continue
        compared = True
        if not same_values(a_scale, b_scale, a_scale):
            conflicts.append(
                Conflict(
                    f"scale of {level.name}: {a.name} {a_level.scale_ref} is "
                    f"{format_values(a_scale)} but {b.name} {b_level.scale_ref} gives "
                    f"{format_values(b_scale)} (C order)"
                )
            )
    if compared:
        checked.append("scales")
    return conflicts, checked


def _checked_text(a: Statement, b: Statement, fields: Sequence[str], chosen: Statement) -> str:
    """What was compared between ``a`` and ``b``, naming the one not used (or both)."""
    if b is chosen:
        other = a.name
    elif a is chosen:
        other = b.name
    else:
        other = f"{a.name} and {b.name}"
    if not fields:
        return f"{other} metadata states nothing that could be compared"
    return f"{other} {', '.join(fields)} compared (relative tolerance {REL_TOL:g})"


# ---------------------------------------------------------------------- final checks


def _known(values: tuple[float, ...] | None) -> tuple[float, ...]:
    assert values is not None  # guaranteed once `incomplete` is None
    return values


def _axis_names(
    chosen: Statement, ndim: int, where: str
) -> tuple[tuple[str, ...], Ref, str | None]:
    """The axes names (C order), where they were read, and a warning when none were stated
    and ``x, y, z`` (F order) were assumed."""
    if chosen.axes is not None and chosen.axes_ref is not None:
        return chosen.axes, chosen.axes_ref, None
    if ndim > len(_DEFAULT_AXES_F):
        raise MetadataError(
            where,
            "axes",
            f"no axes names for {ndim}-dimensional arrays; add 'axes' (F order) to this file",
        )
    names = f_to_c(_DEFAULT_AXES_F[:ndim])
    warning = f"{where} states no axes names; assumed {list(names)} (C order)"
    return names, Ref(where, "axes"), warning


def _build_axes(
    names: tuple[str, ...],
    names_ref: Ref,
    units: tuple[str | None, ...],
    unit_refs: tuple[Ref, ...] | None,
    options: MappingOptions,
    warnings: list[str],
) -> tuple[Axis, ...]:
    """OME-NGFF axes (C order) of names and units; a unit that does not fit its axis kind is
    an error, one that is not an OME-NGFF name (kept by ``allow_unknown_units``) a warning."""
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
            warnings.append(
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


def _check_axes_layout(axes: Sequence[Axis], ref: Ref) -> None:
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
    levels: Sequence[SourceLevel],
    names: tuple[str, ...],
    scales: Sequence[tuple[float, ...]],
    refs: Sequence[Ref | None],
) -> None:
    """OME-NGFF lists levels from highest to lowest resolution: scales (C order) may not
    shrink from one level to the next."""
    for n in range(1, len(levels)):
        for k, name in enumerate(names):
            if scales[n][k] < scales[n - 1][k]:
                ref = refs[n]
                raise MetadataError(
                    ref.location if ref else levels[n].location,
                    ref.field if ref else None,
                    f"{levels[n].name} scale {format_values(scales[n])} is finer than "
                    f"{levels[n - 1].name} scale {format_values(scales[n - 1])} along {name} "
                    "(C order); levels must go from highest to lowest resolution",
                )


def _shape_warnings(
    levels: Sequence[SourceLevel],
    names: tuple[str, ...],
    factors: Sequence[tuple[float, ...] | None],
) -> list[str]:
    """A warning for each level whose shape is not floor or ceil of s0's shape / factor
    (shapes and factors in C order)."""
    warnings = []
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
            warnings.append(
                f"{level.name} shape {list(level.shape)} does not fit its downsampling factor "
                f"{format_values(factor)} of s0 shape {list(s0.shape)} ({', '.join(names)}) — "
                f"{'; '.join(bad)} ({level.location})"
            )
    return warnings
