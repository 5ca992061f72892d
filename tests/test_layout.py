"""The JSON we write: stable, valid, and readable in a diff."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from migrate.target.layout import dumps

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
def test_dumps_is_json_that_reads_back_equal(value: Any) -> None:
    text = dumps(value)
    assert json.loads(text) == value
    assert dumps(json.loads(text)) == text  # stable: same value, same bytes
    assert text.endswith(b"\n")


def test_floating_point_noise_is_written_as_is() -> None:
    assert dumps({"translate": [39.300000000000004, 2.62]}) == (
        b'{"translate": [39.300000000000004, 2.62]}\n'
    )


def test_small_items_stay_on_one_line() -> None:
    text = dumps(
        {"axes": [{"name": "z", "type": "space", "unit": "nanometer"}], "long": ["x" * 60] * 3}
    )
    assert text.decode().splitlines() == [
        "{",
        '  "axes": [',
        '    {"name": "z", "type": "space", "unit": "nanometer"}',
        "  ],",
        '  "long": [',
        f'    "{"x" * 60}",',
        f'    "{"x" * 60}",',
        f'    "{"x" * 60}"',
        "  ]",
        "}",
    ]
