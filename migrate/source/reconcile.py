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

The OpenOrganelle registry (:mod:`migrate.source.registry`) is compared with the N5's chosen
statement, not with the first one, and differently: it states only s0 (its transform applies
to every level), and its sign is the image's orientation, so a negative registry scale is not
a disagreement but the news that the image is stored mirrored (:mod:`migrate.source.mirror`).
Axes, units, the s0 scale's magnitude and s0's position (the mirror's translation is the N5
translation plus the s0 extent, nothing else) must agree; an N5 that states a negative scale
where the registry's is positive disagrees on the orientation. Each disagreement is a conflict
that ``--trust registry`` or ``--trust n5`` resolves (for every image, or per image with
``--trust PATTERN=registry``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from migrate.errors import MetadataError
from migrate.source.axes import axis_type, f_to_c
from migrate.source.cosem import read_cosem
from migrate.source.image import SourceImage, SourceLevel, ordered_levels
from migrate.source.mirror import first_position, oriented, retarget, stored_reversed
from migrate.source.neuroglancer_n5 import Downsampling, read_neuroglancer_n5
from migrate.source.statement import (
    REL_TOL,
    Conflict,
    Ref,
    Statement,
    close,
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
"""The N5 conventions ``--trust`` can name (a :attr:`Statement.convention`)."""
RegistryTrust = Literal["registry", "n5"]
"""Which side ``--trust`` takes when the registry and the N5 disagree."""
TRUST_CHOICES = ("cosem", "neuroglancer", "registry", "n5")

REGISTRY_CONFLICT = "registry vs N5: "
"""How every conflict between the registry and the N5 starts (the others are the N5's)."""


@dataclass(frozen=True)
class TrustRule:
    """One ``--trust`` value: ``CHOICE`` (every image) or ``PATTERN=CHOICE`` (the images
    whose path inside the source matches the glob ``PATTERN``)."""

    pattern: str | None
    choice: str


def parse_trust(values: Sequence[str]) -> tuple[TrustRule, ...]:
    """The ``--trust`` values as rules; ValueError (naming the value) for an unknown choice,
    or two different choices of one kind (cosem|neuroglancer, registry|n5) for one scope."""
    rules: list[TrustRule] = []
    seen: dict[tuple[str | None, bool], str] = {}
    for value in values:
        pattern, _, choice = value.rpartition("=") if "=" in value else ("", "", value)
        if choice not in TRUST_CHOICES:
            raise ValueError(
                f"--trust {value!r}: expected {'|'.join(TRUST_CHOICES)}, or "
                f"PATTERN={'|'.join(TRUST_CHOICES)} for the images matching PATTERN"
            )
        if "=" in value and not pattern:
            raise ValueError(f"--trust {value!r}: empty PATTERN before '='")
        scope = (pattern or None, choice in ("registry", "n5"))
        if seen.get(scope, choice) != choice:
            raise ValueError(
                f"--trust {value!r} contradicts --trust {seen[scope]!r} "
                f"({'for ' + repr(pattern) if pattern else 'for every image'})"
            )
        seen[scope] = choice
        rules.append(TrustRule(pattern or None, choice))
    return tuple(rules)


def trust_for(rules: Sequence[TrustRule], path: str) -> tuple[Trust | None, RegistryTrust | None]:
    """What ``--trust`` says for the image at ``path`` (inside its source): a rule whose
    pattern matches it wins over a rule for every image; otherwise the last one given wins."""
    n5: Trust | None = None
    registry: RegistryTrust | None = None
    for specific in (False, True):
        for rule in rules:
            if (rule.pattern is not None) != specific:
                continue
            if rule.pattern is not None and not fnmatch.fnmatchcase(path, rule.pattern):
                continue
            if rule.choice in ("registry", "n5"):
                registry = cast(RegistryTrust, rule.choice)
            else:
                n5 = cast(Trust, rule.choice)
    return n5, registry


_DEFAULT_AXES_F = ("x", "y", "z")


@dataclass(frozen=True)
class MappingOptions:
    downsampling: Downsampling = "windowed"
    """How Neuroglancer-only pyramids were made (decides their translations)."""
    trust: Trust | None = None
    """Which N5 convention wins when they disagree; None: disagreements are conflicts."""
    trust_registry: RegistryTrust | None = None
    """Which wins when the registry and the N5 disagree; None: conflicts."""
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
    mirror: tuple[bool, ...] | None = None
    """The axes along which the image is written mirrored (C order); None: no axis."""


def map_image(
    image: SourceImage, options: MappingOptions, registry: Statement | None = None
) -> MappedImage:
    """Map a source multiscale image to OME-NGFF axes and datasets (C order throughout).

    Reads its COSEM and its Neuroglancer-N5 metadata and reconciles them, and with what
    the ``registry`` states of it, when it has an entry there (:func:`reconcile`).
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
    return reconcile(statements, levels, options, where=image.group_location, registry=registry)


def reconcile(
    statements: Sequence[Statement],
    levels: Sequence[SourceLevel],
    options: MappingOptions,
    *,
    where: str,
    registry: Statement | None = None,
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
    unit_refs = chosen.unit_refs
    scales = [_known(level.scale) for level in chosen.levels]
    translations = [_known(level.translation) for level in chosen.levels]
    _check_signs(levels, names, scales, [level.scale_ref for level in chosen.levels])
    mirror = stored_reversed(scales[0])
    shapes = [level.shape for level in levels]
    if registry is None:
        scales, translations = oriented(scales, translations, shapes, mirror)
    else:
        side = _RegistrySide(chosen, registry, levels, scales, translations, options)
        for conflict in side.conflicts:
            found.append(conflict)
        mirror = side.mirror
        scales, translations = side.geometry()
        if side.trusted and side.units_differ and registry.units is not None:
            units, unit_refs = registry.units, registry.unit_refs
        if side.trusted and side.axes_differ and registry.axes is not None:
            names, axes_ref = registry.axes, registry.axes_ref or axes_ref
        sources.update(side.sources())
    if any(mirror):
        sources["orientation"] = _orientation_text(mirror, names, chosen, registry)
    axes = _build_axes(names, axes_ref, units, unit_refs, options, warnings)
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
        trusted = (
            options.trust_registry if conflict.text.startswith(REGISTRY_CONFLICT) else options.trust
        )
        if trusted is None:
            conflicts.append(conflict.text)
        else:
            used = conflict.used or f"the {chosen.name} value"
            warnings.append(f"{conflict.text}; used {used} (--trust {trusted})")
    return MappedImage(
        axes=axes,
        datasets=datasets,
        sources=sources,
        warnings=tuple(warnings),
        conflicts=tuple(conflicts),
        mirror=mirror if any(mirror) else None,
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


# ------------------------------------------------------------- the registry and the N5


class _RegistrySide:
    """The registry's statement against the N5's chosen one (C order): the conflicts, the
    orientation, and every level's OME scale and translation (positive scales, mirrored
    levels placed by :func:`~migrate.source.mirror.oriented`)."""

    def __init__(
        self,
        chosen: Statement,
        registry: Statement,
        levels: Sequence[SourceLevel],
        scales: Sequence[tuple[float, ...]],
        translations: Sequence[tuple[float, ...]],
        options: MappingOptions,
    ) -> None:
        self.chosen, self.registry, self.levels = chosen, registry, levels
        self.scales, self.translations = list(scales), list(translations)
        self.trusted = options.trust_registry == "registry"
        self.trust = options.trust_registry
        stated = registry.levels[0]
        self.reg_scale = _known(stated.scale)
        self.reg_position = _known(stated.translation)
        n0 = levels[0].shape
        s0, t0 = scales[0], translations[0]
        self.n5_low = tuple(first_position(t, r, n) for t, r, n in zip(t0, s0, n0, strict=True))
        self.reg_low = tuple(
            first_position(t, r, n)
            for t, r, n in zip(self.reg_position, self.reg_scale, n0, strict=True)
        )
        self.conflicts: list[Conflict] = []
        self.units_differ = self.axes_differ = False
        self.scale_axes: set[int] = set()
        self._compare()
        n5_rev, reg_rev = stored_reversed(s0), stored_reversed(self.reg_scale)
        # the registry's word on the orientation, unless the N5 says mirrored where it
        # says upright (a conflict): then the trusted side's
        self.mirror = tuple(
            b or (a and self.trust != "registry") for a, b in zip(n5_rev, reg_rev, strict=True)
        )

    def _ref(self, level: int, what: str) -> Ref | str:
        stated = self.chosen.levels[level]
        ref = stated.scale_ref if what == "scale" else stated.translation_ref
        return ref if ref is not None else self.chosen.name

    def _add(self, text: str) -> None:
        used = "the registry's value" if self.trusted else f"the {self.chosen.name} value"
        self.conflicts.append(Conflict(REGISTRY_CONFLICT + text, used=used))

    def _compare(self) -> None:
        a, b = self.registry, self.chosen
        if a.axes is not None and b.axes is not None and a.axes != b.axes:
            self.axes_differ = True
            self._add(
                f"axes: registry {a.axes_ref} is {list(a.axes)} but {b.name} {b.axes_ref} "
                f"is {list(b.axes)} (both in C order)"
            )
        if a.units is not None and b.units is not None and a.units != b.units:
            self.units_differ = True
            b_where = b.unit_refs[0] if b.unit_refs else b.name
            self._add(
                f"units: registry {a.unit_refs[0] if a.unit_refs else ''} gives "
                f"{list(a.units)} but {b.name} {b_where} gives {list(b.units)} "
                "(C order, normalised)"
            )
        s0 = self.scales[0]
        magnitude = tuple(abs(v) for v in self.reg_scale)
        n5_magnitude = tuple(abs(v) for v in s0)
        reg_ref = self.registry.levels[0].scale_ref
        if not same_values(magnitude, n5_magnitude, n5_magnitude):
            self.scale_axes = {
                k
                for k, (x, y) in enumerate(zip(magnitude, n5_magnitude, strict=True))
                if not close(x, y, y)
            }
            self._add(
                f"scale of s0: registry {reg_ref} is {format_values(self.reg_scale)} (its sign "
                f"is the orientation) but {b.name} {self._ref(0, 'scale')} is "
                f"{format_values(s0)} (C order)"
            )
        flips = [k for k, (x, y) in enumerate(zip(s0, self.reg_scale, strict=True)) if x < 0 < y]
        if flips:
            self._add(
                f"orientation: {b.name} {self._ref(0, 'scale')} {format_values(s0)} says "
                f"stored mirrored along {', '.join(self._axis(k) for k in flips)} but registry "
                f"{reg_ref} {format_values(self.reg_scale)} says upright (C order)"
            )
        moved = [
            k
            for k, (x, y, r) in enumerate(zip(self.reg_low, self.n5_low, n5_magnitude, strict=True))
            if not close(x, y, r)
        ]
        if moved:
            self.scale_axes |= set(moved)
            expected = tuple(
                low + (n * abs(r) if r < 0 else 0.0)
                for low, r, n in zip(self.n5_low, self.reg_scale, self.levels[0].shape, strict=True)
            )
            stated = self.registry.levels[0].translation_ref
            self._add(
                f"translation of s0: registry {stated} is "
                f"{format_values(_translate(self.reg_position, self.reg_scale))} but "
                f"{b.name} {self._ref(0, 'translation')} puts s0 at "
                f"{format_values(self.n5_low)}, for which the registry would say "
                f"{format_values(expected)} (a mirrored axis: position + extent × |scale|; "
                "C order)"
            )

    def _axis(self, k: int) -> str:
        names = self.chosen.axes or self.registry.axes
        return names[k] if names is not None else str(k)

    def geometry(self) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
        """Every level's OME scale and translation (C order)."""
        shapes = [level.shape for level in self.levels]
        scales, translations = oriented(self.scales, self.translations, shapes, self.mirror)
        if self.trusted:
            for axis in sorted(self.scale_axes):
                scales, translations = retarget(
                    scales,
                    translations,
                    axis,
                    abs(self.reg_scale[axis]),
                    self.reg_low[axis],
                )
        return scales, translations

    def sources(self) -> dict[str, str]:
        compared = "registry axes, units, s0 scale (sign: orientation) and position compared"
        return {**self.registry.sources, "registry checked": compared}


def _translate(position: Sequence[float], scale: Sequence[float]) -> tuple[float, ...]:
    """The registry ``translate`` back from a statement's s0 position (see
    :mod:`migrate.source.registry`)."""
    return tuple(p - s if s < 0 else p for p, s in zip(position, scale, strict=True))


def _orientation_text(
    mirror: Sequence[bool],
    names: Sequence[str],
    chosen: Statement,
    registry: Statement | None,
) -> str:
    axes = ", ".join(name for name, flip in zip(names, mirror, strict=True) if flip)
    if registry is not None and any(s < 0 for s in _known(registry.levels[0].scale)):
        ref = registry.levels[0].scale_ref
        said = f"registry {ref} {format_values(_known(registry.levels[0].scale))}"
    else:
        said = f"{chosen.name} {chosen.levels[0].scale_ref} (a negative scale)"
    return f"{said}: stored mirrored along {axes}, written mirrored with positive scales"


# ---------------------------------------------------------------------- final checks


def _check_signs(
    levels: Sequence[SourceLevel],
    names: tuple[str, ...],
    scales: Sequence[tuple[float, ...]],
    refs: Sequence[Ref | None],
) -> None:
    """Every level runs the same way as s0 along each axis (a scale's sign is the
    orientation of the stored data: C order)."""
    for n in range(1, len(levels)):
        for k, name in enumerate(names):
            if (scales[n][k] < 0) != (scales[0][k] < 0):
                ref = refs[n]
                raise MetadataError(
                    ref.location if ref else levels[n].location,
                    ref.field if ref else None,
                    f"{levels[n].name} scale {format_values(scales[n])} and s0 scale "
                    f"{format_values(scales[0])} have opposite signs along {name} (C order): "
                    "one level stored mirrored and another not",
                )


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
