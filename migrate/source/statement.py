"""What one source convention states about one multiscale image, level by level.

Each reader of a source convention (:mod:`migrate.source.cosem`,
:mod:`migrate.source.neuroglancer_n5`) turns its files into one :class:`Statement`;
:mod:`migrate.source.reconcile` compares the statements, chooses one and makes the OME-NGFF
axes and datasets of it. Pure values, no I/O.

Every per-axis value in a statement is in **C order** (z, y, x), whatever order its files
use: a reader of an F-order convention reverses its lists with
:func:`migrate.source.axes.f_to_c` as soon as it reads them. Numbers are kept as stated or as
computed, never rounded; values stated by two sources are compared with a relative tolerance
of :data:`REL_TOL`. Every value carries a :class:`Ref` (the file and the JSON field it was read
from), so a message can say where to look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from migrate.errors import MetadataError

REL_TOL = 1e-9
"""Relative tolerance when comparing values stated by two sources."""


@dataclass(frozen=True)
class Ref:
    """Where a value was read: a file and the JSON path inside it.

    For a value computed from stated ones, ``field`` says how (e.g. ``pixelResolution *
    scales[2]``).
    """

    location: str
    """Display path of the file, e.g. ``jrc_hela-2.n5/em/fibsem-uint16/attributes.json``."""
    field: str
    """JSON path inside it, e.g. ``multiscales[0].datasets[2].transform.scale``."""

    def __str__(self) -> str:
        return f"{self.location} {self.field}"


@dataclass(frozen=True)
class Conflict:
    """A disagreement that blocks conversion until the user says which source to trust."""

    text: str
    """What disagrees, naming both values and where each was read."""
    used: str | None = None
    """What is used when the user passes ``--trust``; None: the trusted convention's value."""


@dataclass(frozen=True)
class LevelStatement:
    """What a convention states about one level (vectors in C order; None: it cannot tell)."""

    scale: tuple[float, ...] | None
    """Voxel spacing of the level, in the statement's units."""
    scale_ref: Ref | None
    """Where ``scale`` was read (or what it was computed from)."""
    translation: tuple[float, ...] | None
    """Position of the centre of the level's first voxel (OME-NGFF ``translation``)."""
    translation_ref: Ref | None
    """Where ``translation`` was read, or what it was computed from; None when a rule states
    it without reading anything (a subsampled Neuroglancer level keeps the origin: 0)."""
    factor: tuple[float, ...] | None
    """Downsampling factor relative to s0 (for the check of the level's shape)."""


@dataclass(frozen=True)
class Statement:
    """What one convention states about one multiscale image. Vectors in C order (z, y, x).

    ``levels`` has one entry per level array, s0 first, in the order the reconciler is given
    the levels. A statement may be *incomplete* (a level without a scale, say): it is still
    compared with the others, and ``incomplete`` is raised only if it is the one chosen.
    """

    convention: str
    """The name ``--trust`` uses for this convention, e.g. ``cosem``, ``neuroglancer``."""
    name: str
    """Its name in messages, e.g. ``COSEM``, ``Neuroglancer``."""
    axes: tuple[str, ...] | None
    """Axes names, C order; None when the convention states none."""
    axes_ref: Ref | None
    units: tuple[str | None, ...] | None
    """OME-NGFF unit names (normalised), C order; None inside: no unit for that axis; None:
    the convention states no units."""
    unit_refs: tuple[Ref, ...] | None
    """Where each unit was read, C order."""
    levels: tuple[LevelStatement, ...]
    sources: Mapping[str, str]
    """Where each kind of value comes from, in words (``axes``, ``units``, ``scale``,
    ``translation``), for ``MappedImage.sources``."""
    warnings: tuple[str, ...] = ()
    """Things the user should know that do not stop the conversion."""
    conflicts: tuple[Conflict, ...] = ()
    """Disagreements inside this convention (e.g. a level's own metadata against the group's)."""
    incomplete: MetadataError | None = None
    """Why this convention cannot map every level on its own (raised if it is chosen)."""


def format_values(values: Sequence[object]) -> str:
    """``[5.24, 4.0, 4.0]``: values as Python writes them (every float digit kept)."""
    return "[" + ", ".join(repr(value) for value in values) + "]"


def close(a: float, b: float, magnitude: float) -> bool:
    """Equal within REL_TOL of ``magnitude`` (a scale, so zero translations compare sanely)."""
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=REL_TOL * abs(magnitude))


def same_values(a: Sequence[float], b: Sequence[float], magnitudes: Sequence[float]) -> bool:
    """Same length and every pair :func:`close` (per axis, any one order for all three)."""
    return len(a) == len(b) and all(
        close(x, y, m) for x, y, m in zip(a, b, magnitudes, strict=False)
    )
