"""A source multiscale image as discovery hands it over: a group and its level arrays.

Pure values, no I/O. Shapes are in **C order** (z, y, x), the reversed N5 ``dimensions``.
Levels are arrays named ``sN``, ordered by N (``s9`` before ``s10``); ``s0`` is the full
resolution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrate.errors import MetadataError

LEVEL_NAME = re.compile(r"s(0|[1-9][0-9]*)")
"""A scale level array name: ``s`` and a number without leading zeros (``s0``, ``s12``)."""


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


def ordered_levels(image: SourceImage) -> list[SourceLevel]:
    """The image's levels sorted s0, s1, …, after checking that they can be mapped.

    Raises :class:`MetadataError` when there is no level, a level name is not ``sN``, a level
    is given twice, a level between s0 and the last is missing, or the levels' shapes (C
    order) do not all have the same number of dimensions.
    """
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
