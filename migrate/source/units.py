"""Unit spellings found in source metadata → OME-NGFF unit names.

OME-NGFF names units with UDUNITS-2 names (``nanometer``, ``micrometer``, ``second``; see
``schemas.ngff.SPACE_UNITS`` and ``TIME_UNITS``). Cellmap sources write abbreviations such as
``nm``. The rules:

- **Symbols** (``nm``, ``um``, ``µm``, ``μm``, ``Å``, ``A``, ``ms``, ``Ms``…) match exactly,
  with their case: SI prefixes differ only by case (``mm`` millimeter / ``Mm`` megameter,
  ``pm`` picometer / ``Pm`` petameter, ``ms`` / ``Ms``), so ``NM`` or ``UM`` are not guessed.
  ``m`` is meter and ``s`` is second; ``M`` and ``S`` are not units here.
- **Names** (``nanometer``, ``Nanometers``, ``nanometre``, ``micron``, ``angstroms``,
  ``seconds``…) match ignoring case, in singular or plural, with ``-metre`` or ``-meter``.
- Surrounding whitespace is ignored.
- Anything else is unknown: an error, or, with ``allow_unknown``, returned exactly as written.
  We keep such a unit rather than drop it because OME-NGFF 0.4 and 0.5 say the unit SHOULD
  (not MUST) be one of the listed names, and the written value is the user's information.
"""

from __future__ import annotations

from migrate.errors import MetadataError
from schemas.ngff import SPACE_UNITS, TIME_UNITS

_PREFIXES: dict[str, str] = {
    "Y": "yotta",
    "Z": "zetta",
    "E": "exa",
    "P": "peta",
    "T": "tera",
    "G": "giga",
    "M": "mega",
    "k": "kilo",
    "h": "hecto",
    "d": "deci",
    "c": "centi",
    "m": "milli",
    "u": "micro",
    "\N{MICRO SIGN}": "micro",
    "\N{GREEK SMALL LETTER MU}": "micro",
    "n": "nano",
    "p": "pico",
    "f": "femto",
    "a": "atto",
    "z": "zepto",
    "y": "yocto",
}


def _symbols() -> dict[str, str]:
    """Case-sensitive abbreviations: every SI prefix symbol + ``m`` / ``s`` in the spec list."""
    table = {"m": "meter", "s": "second"}
    for symbol, prefix in _PREFIXES.items():
        if prefix + "meter" in SPACE_UNITS:
            table[symbol + "m"] = prefix + "meter"
        if prefix + "second" in TIME_UNITS:
            table[symbol + "s"] = prefix + "second"
    table.update(
        {
            "A": "angstrom",
            "\N{LATIN CAPITAL LETTER A WITH RING ABOVE}": "angstrom",
            "\N{ANGSTROM SIGN}": "angstrom",
            "in": "inch",
            "ft": "foot",
            "yd": "yard",
            "mi": "mile",
            "pc": "parsec",
            "min": "minute",
            "h": "hour",
            "d": "day",
        }
    )
    return table


_SYMBOLS = _symbols()

_NAMES: dict[str, str] = {
    "micron": "micrometer",
    "microns": "micrometer",
    "\N{LATIN SMALL LETTER A WITH RING ABOVE}ngstr\N{LATIN SMALL LETTER O WITH DIAERESIS}m": (
        "angstrom"
    ),
    "feet": "foot",
    "inches": "inch",
    "sec": "second",
    "secs": "second",
    "hr": "hour",
    "hrs": "hour",
}
"""Lower-case names (other than spec names and their plurals) that are unambiguous."""

KNOWN_UNITS = SPACE_UNITS | TIME_UNITS
"""Every OME-NGFF unit name; :func:`normalize_unit` returns one of these (or raises)."""


def _from_name(text: str) -> str | None:
    key = text.lower().replace("metre", "meter")
    for candidate in (key, key.removesuffix("s")):
        if candidate in KNOWN_UNITS:
            return candidate
        if candidate in _NAMES:
            return _NAMES[candidate]
    return None


def normalize_unit(unit: str, *, location: str, field: str, allow_unknown: bool = False) -> str:
    """The OME-NGFF name of ``unit`` (``"nm"`` → ``"nanometer"``; see the module docstring).

    ``location`` and ``field`` say where the unit was read (file and JSON path) and appear in
    the error. Raises :class:`MetadataError` for an unknown unit unless ``allow_unknown`` is
    true, in which case the unit is returned exactly as written.
    """
    text = unit.strip()
    normalized = _SYMBOLS.get(text) or _from_name(text)
    if normalized is not None:
        return normalized
    if allow_unknown:
        return unit
    raise MetadataError(
        location,
        field,
        f"unknown unit {unit!r}; use one of {', '.join(sorted(SPACE_UNITS))} (space), "
        f"{', '.join(sorted(TIME_UNITS))} (time), an abbreviation such as nm, um, A, ms, "
        "or --allow-unknown-units",
    )


def normalize_stated_unit(
    unit: str, *, location: str, field: str, allow_unknown: bool = False
) -> str | None:
    """:func:`normalize_unit`, except that an empty (or blank) unit means "no unit": None."""
    if unit.strip() == "":
        return None
    return normalize_unit(unit, location=location, field=field, allow_unknown=allow_unknown)
