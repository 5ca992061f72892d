"""pydantic ValidationError → MetadataError(location, JSON path, message with the value)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrate.errors import MetadataError
from migrate.source.parse import json_path, parse_attrs
from schemas.cosem import CosemArrayAttributes, CosemGroupAttributes
from schemas.n5 import GzipCompression, N5ArrayAttributes
from schemas.neuroglancer_n5 import NeuroglancerGroupAttributes

WHERE = "jrc_x.n5/em/fibsem-uint16/attributes.json"

TRANSFORM: dict[str, Any] = {
    "axes": ["z", "y", "x"],
    "units": ["nm", "nm", "nm"],
    "scale": [5.24, 4.0, 4.0],
    "translate": [0.0, 0.0, 0.0],
}


def group(*transforms: dict[str, Any]) -> dict[str, Any]:
    return {
        "multiscales": [
            {"datasets": [{"path": f"s{i}", "transform": t} for i, t in enumerate(transforms)]}
        ]
    }


def error_of(model: Any, data: dict[str, Any]) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        parse_attrs(model, data, WHERE)
    assert info.value.location == WHERE
    return info.value


def test_valid_input_parses() -> None:
    parsed = parse_attrs(CosemGroupAttributes, group(TRANSFORM, TRANSFORM), WHERE)
    assert parsed.multiscales[0].datasets[1].path == "s1"


def test_bad_order_names_the_json_path_and_value() -> None:
    bad = {**TRANSFORM, "order": "X"}
    error = error_of(CosemGroupAttributes, group(TRANSFORM, TRANSFORM, bad))
    assert error.field == "multiscales[0].datasets[2].transform.order"
    assert "'X'" in error.message
    # pydantic's follow-on "tuple too short" errors are not counted as further problems.
    assert "more problem" not in error.message
    assert str(error).startswith(f"{WHERE}: multiscales[0].datasets[2].transform.order: ")


def test_wrong_lengths_name_the_transform() -> None:
    bad = {**TRANSFORM, "units": ["nm", "nm"]}
    error = error_of(CosemArrayAttributes, {"transform": bad})
    assert error.field == "transform"
    assert "units has 2" in error.message
    assert "axes has 3" in error.message


def test_missing_field() -> None:
    data = group(TRANSFORM)
    del data["multiscales"][0]["datasets"][0]["transform"]
    error = error_of(CosemGroupAttributes, data)
    assert error.field == "multiscales[0].datasets[0].transform"
    assert "missing" in error.message


def test_dotdot_path() -> None:
    data = group(TRANSFORM)
    data["multiscales"][0]["datasets"][0]["path"] = "../s0"
    error = error_of(CosemGroupAttributes, data)
    assert error.field == "multiscales[0].datasets[0].path"
    assert "'../s0'" in error.message


def test_union_tag_is_not_part_of_the_path() -> None:
    data = {
        "dimensions": [10, 10],
        "blockSize": [5, 5],
        "dataType": "uint8",
        "compression": {"type": "gzip", "level": "max"},
    }
    error = error_of(N5ArrayAttributes, data)
    assert error.field == "compression.level"
    assert "'max'" in error.message


def test_several_problems_are_counted() -> None:
    data = {"axes": ["x", "y"], "scales": [[1, 1], [2, "two"]], "units": 5}
    error = error_of(NeuroglancerGroupAttributes, data)
    assert error.field is not None
    assert "more problem" in error.message


def test_long_values_are_shortened() -> None:
    error = error_of(GzipCompression, {"type": "gzip", "level": "x" * 1000})
    assert error.field == "level"
    assert len(error.message) < 300
    assert "..." in error.message


def test_json_path_of_a_missing_nested_key() -> None:
    data: dict[str, Any] = {"a": [{"b": {}}]}
    assert json_path(("a", 0, "b", "c"), data) == "a[0].b.c"
    assert json_path((), data) is None


@given(
    st.recursive(
        st.integers(),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_json_path_follows_existing_keys(data: Any) -> None:
    """Every path to an existing item renders as the matching JSON path."""

    def walk(value: Any, loc: tuple[int | str, ...], text: str) -> None:
        if loc:
            assert json_path(loc, data) == text
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i), f"{text}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, key), f"{text}.{key}" if text else key)

    walk(copy.deepcopy(data), (), "")
