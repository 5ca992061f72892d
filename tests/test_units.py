"""Unit spellings → OME-NGFF unit names (migrate.source.units)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrate.errors import MetadataError
from migrate.source.units import normalize_unit
from schemas.ngff import SPACE_UNITS, TIME_UNITS

LOCATION = "x.n5/em/attributes.json"
FIELD = "units[0]"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("nm", "nanometer"),
        ("nanometers", "nanometer"),
        ("Nanometer", "nanometer"),
        ("nanometre", "nanometer"),
        ("um", "micrometer"),
        ("\u00b5m", "micrometer"),  # MICRO SIGN
        ("\u03bcm", "micrometer"),  # GREEK SMALL LETTER MU
        ("micron", "micrometer"),
        ("microns", "micrometer"),
        ("Microns", "micrometer"),
        ("A", "angstrom"),
        ("\u00c5", "angstrom"),  # LATIN CAPITAL LETTER A WITH RING ABOVE
        ("\u212b", "angstrom"),  # ANGSTROM SIGN
        ("angstroms", "angstrom"),
        ("\u00c5ngstr\u00f6m", "angstrom"),
        ("pm", "picometer"),
        ("Pm", "petameter"),
        ("mm", "millimeter"),
        ("Mm", "megameter"),
        ("cm", "centimeter"),
        ("m", "meter"),
        ("km", "kilometer"),
        ("meters", "meter"),
        ("in", "inch"),
        ("feet", "foot"),
        ("s", "second"),
        ("sec", "second"),
        ("seconds", "second"),
        ("ms", "millisecond"),
        ("Ms", "megasecond"),
        ("us", "microsecond"),
        ("\u00b5s", "microsecond"),
        ("\u03bcs", "microsecond"),
        ("ns", "nanosecond"),
        ("min", "minute"),
        ("h", "hour"),
        ("hours", "hour"),
        ("d", "day"),
        (" nm ", "nanometer"),
    ],
)
def test_source_spellings(written: str, expected: str) -> None:
    assert normalize_unit(written, location=LOCATION, field=FIELD) == expected


@given(st.sampled_from(sorted(SPACE_UNITS | TIME_UNITS)))
def test_spec_names_pass_through(name: str) -> None:
    assert normalize_unit(name, location=LOCATION, field=FIELD) == name
    assert normalize_unit(name.upper(), location=LOCATION, field=FIELD) == name


@pytest.mark.parametrize("written", ["furlong", "NM", "UM", "M", "S", "nmm", "", "a"])
def test_unknown_units_name_file_and_field(written: str) -> None:
    with pytest.raises(MetadataError) as info:
        normalize_unit(written, location="x.n5/em/attributes.json", field="units[2]")
    error = info.value
    assert error.location == "x.n5/em/attributes.json"
    assert error.field == "units[2]"
    assert f"unknown unit {written!r}" in str(error)
    assert "nanometer" in str(error)
    assert "--allow-unknown-units" in str(error)
    assert str(error).startswith("x.n5/em/attributes.json: units[2]: ")


def test_allow_unknown_keeps_the_unit_as_written() -> None:
    def lenient(unit: str) -> str:
        return normalize_unit(unit, location=LOCATION, field=FIELD, allow_unknown=True)

    assert lenient("furlong") == "furlong"
    assert lenient(" Furlong ") == " Furlong "
    # Known spellings are still normalised.
    assert lenient("nm") == "nanometer"
