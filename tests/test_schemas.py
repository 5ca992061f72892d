"""The schemas parse real metadata, keep unknown keys, round-trip, and reject bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.cosem import CosemArrayAttributes, CosemGroupAttributes, STTransform
from schemas.n5 import N5ArrayAttributes
from schemas.neuroglancer_n5 import NeuroglancerArrayAttributes, NeuroglancerGroupAttributes
from schemas.ngff import Axis, Dataset, ImageAttrsV04, MultiscaleV04
from tests.conftest import HELA_GROUP, HELA_S0, NGFF_PUBLISHED, load_reference


def roundtrip(model: BaseModel) -> BaseModel:
    return type(model).model_validate(json.loads(model.model_dump_json(exclude_unset=True)))


def test_reference_group_parses_as_both_conventions() -> None:
    data = load_reference(HELA_GROUP)
    cosem = CosemGroupAttributes.model_validate(data)
    ng = NeuroglancerGroupAttributes.model_validate(data)
    datasets = cosem.multiscales[0].datasets
    assert [d.path for d in datasets] == ["s0", "s1", "s2", "s3", "s4"]
    # order is absent in the published file and means C
    assert "order" not in data["multiscales"][0]["datasets"][0]["transform"]
    assert datasets[4].transform.order == "C"
    assert datasets[4].transform.translate == (39.300000000000004, 30.0, 30.0)
    assert ng.axes == ("x", "y", "z")
    assert ng.scales[4] == (16, 16, 16)
    assert ng.pixelResolution is not None
    assert ng.pixelResolution.dimensions == (4.0, 4.0, 5.24)
    assert roundtrip(cosem) == cosem
    assert roundtrip(ng) == ng


def test_reference_array_parses_and_keeps_unknown_keys() -> None:
    data = load_reference(HELA_S0)
    attrs = N5ArrayAttributes.model_validate(data)
    assert attrs.dimensions == (12000, 1600, 6368)
    assert attrs.compression.type == "gzip"
    # the COSEM and Neuroglancer keys are not N5's, and are kept verbatim
    assert attrs.to_json_dict()["transform"] == data["transform"]
    assert attrs.to_json_dict()["pixelResolution"] == data["pixelResolution"]
    assert CosemArrayAttributes.model_validate(data).transform.scale == (5.24, 4.0, 4.0)
    pixel = NeuroglancerArrayAttributes.model_validate(data).pixelResolution
    assert pixel is not None
    assert pixel.unit == "nm"
    assert roundtrip(attrs) == attrs


def test_published_ngff_parses_with_our_output_model() -> None:
    data = load_reference(NGFF_PUBLISHED)
    attrs = ImageAttrsV04.model_validate(data)
    assert attrs.multiscales[0].datasets[1].translation == (2.62, 2.0, 2.0)
    assert attrs.to_json_dict() == data


@pytest.mark.parametrize(
    ("compression", "expected"),
    [
        ({"type": "raw"}, {"type": "raw"}),
        ({"type": "gzip", "level": -1, "useZlib": True}, {"level": -1, "useZlib": True}),
        ({"type": "bzip2", "blockSize": 9}, {"blockSize": 9}),
        ({"type": "xz", "preset": 6}, {"preset": 6}),
        ({"type": "lz4", "blockSize": 65536}, {"blockSize": 65536}),
        ({"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 2}, {"cname": "zstd"}),
        ({"type": "zstd", "level": 19}, {"level": 19}),
    ],
)
def test_every_n5_compression(compression: dict[str, Any], expected: dict[str, Any]) -> None:
    attrs = N5ArrayAttributes.model_validate(
        {"dimensions": [5, 6], "blockSize": [2, 3], "dataType": "int8", "compression": compression}
    )
    dumped = attrs.to_json_dict()["compression"]
    assert dumped == compression
    assert expected.items() <= dumped.items() or expected == {"type": "raw"}


def test_legacy_compression_type_is_understood() -> None:
    attrs = N5ArrayAttributes.model_validate(
        {"dimensions": [5], "blockSize": [2], "dataType": "uint8", "compressionType": "gzip"}
    )
    assert attrs.compression.type == "gzip"


def errors_of(model: type[BaseModel], data: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


def test_invalid_n5_attributes_say_what_and_where() -> None:
    base = {
        "dimensions": [5, 6],
        "blockSize": [2, 3],
        "dataType": "uint8",
        "compression": {"type": "raw"},
    }
    text = errors_of(N5ArrayAttributes, {**base, "blockSize": [2]})
    assert "dimensions has 2" in text
    assert "blockSize has 1" in text
    text = errors_of(N5ArrayAttributes, {**base, "dataType": "complex64"})
    assert "dataType" in text
    assert "complex64" in text
    text = errors_of(N5ArrayAttributes, {**base, "dataType": "object"})
    assert "varlength" in text
    text = errors_of(N5ArrayAttributes, {**base, "compression": {"type": "snappy"}})
    assert "compression" in text
    assert "snappy" in text


def test_invalid_cosem_transforms() -> None:
    good = {
        "axes": ["z", "y", "x"],
        "units": ["nm"] * 3,
        "scale": [1, 2, 3],
        "translate": [0, 0, 0],
    }
    assert STTransform.model_validate(good).order == "C"
    text = errors_of(STTransform, {**good, "order": "K"})
    assert "order" in text
    assert "'K'" in text
    text = errors_of(STTransform, {**good, "scale": [1, 2]})
    assert "scale has 2" in text
    for bad_path in ("../s0", "/s0", "s0/../../x", ""):
        text = errors_of(
            CosemGroupAttributes,
            {"multiscales": [{"datasets": [{"path": bad_path, "transform": good}]}]},
        )
        assert "path" in text


def test_f_order_transform_reverses_to_c() -> None:
    transform = STTransform.model_validate(
        {
            "axes": ["x", "y", "z"],
            "units": ["nm"] * 3,
            "scale": [4, 4, 5.24],
            "translate": [2, 2, 2.62],
            "order": "F",
        }
    )
    c = transform.in_c_order()
    assert c.axes == ("z", "y", "x")
    assert c.scale == (5.24, 4.0, 4.0)
    assert c.translate == (2.62, 2.0, 2.0)


def test_neuroglancer_lengths_checked() -> None:
    text = errors_of(NeuroglancerGroupAttributes, {"axes": ["x", "y", "z"], "scales": [[1, 1]]})
    assert "scales[0]" in text
    text = errors_of(NeuroglancerGroupAttributes, {"axes": ["x", "y", "z"], "scales": [[1, 1, 0]]})
    assert "scales" in text


def test_ngff_output_rejects_bad_units_and_extra_keys() -> None:
    with pytest.raises(ValidationError, match="not an OME-NGFF space unit"):
        Axis(name="z", type="space", unit="nm")
    with pytest.raises(ValidationError, match="Extra inputs"):
        Axis.model_validate({"name": "z", "type": "space", "colour": "red"})


# --- property tests: every valid model survives to_json -> from_json unchanged ---------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
floats = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def st_transforms(draw: st.DrawFn) -> STTransform:
    n = draw(st.integers(1, 5))
    return STTransform(
        axes=tuple(draw(st.lists(names, min_size=n, max_size=n))),
        units=tuple(
            draw(st.lists(st.sampled_from(["nm", "um", "nanometer"]), min_size=n, max_size=n))
        ),
        scale=tuple(draw(st.lists(floats, min_size=n, max_size=n))),
        translate=tuple(draw(st.lists(floats, min_size=n, max_size=n))),
        order=draw(st.sampled_from(["C", "F"])),
    )


@given(st_transforms())
def test_transform_roundtrip(transform: STTransform) -> None:
    assert roundtrip(transform) == transform
    assert transform.in_c_order().in_c_order() == transform.in_c_order()


@given(
    dims=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
    dtype=st.sampled_from(
        [
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "int8",
            "int16",
            "int32",
            "int64",
            "float32",
            "float64",
        ]
    ),
    compression=st.sampled_from(
        [
            {"type": "raw"},
            {"type": "gzip", "level": 3},
            {"type": "zstd", "level": 1},
            {"type": "blosc", "cname": "lz4"},
        ]
    ),
    extra=st.dictionaries(names, st.integers() | st.text(max_size=5), max_size=3),
)
def test_n5_roundtrip(
    dims: list[int], dtype: str, compression: dict[str, Any], extra: dict[str, Any]
) -> None:
    extra = {
        k: v
        for k, v in extra.items()
        if k not in {"dimensions", "blockSize", "dataType", "compression"}
    }
    data = {
        "dimensions": dims,
        "blockSize": [7] * len(dims),
        "dataType": dtype,
        "compression": compression,
        **extra,
    }
    attrs = N5ArrayAttributes.model_validate(data)
    assert roundtrip(attrs) == attrs
    assert attrs.to_json_dict() == data


@given(
    scales=st.lists(st.tuples(floats, floats, floats), min_size=1, max_size=12),
    translations=st.lists(st.tuples(floats, floats, floats), min_size=12, max_size=12),
)
def test_ngff_roundtrip(
    scales: list[tuple[float, float, float]], translations: list[tuple[float, float, float]]
) -> None:
    multiscale = MultiscaleV04(
        axes=tuple(Axis(name=n, type="space", unit="nanometer") for n in "zyx"),
        datasets=tuple(
            Dataset.model_validate(
                {
                    "path": f"s{i}",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(s)},
                        {"type": "translation", "translation": list(translations[i])},
                    ],
                }
            )
            for i, s in enumerate(scales)
        ),
    )
    attrs = ImageAttrsV04(multiscales=(multiscale,))
    again = ImageAttrsV04.model_validate(json.loads(json.dumps(attrs.to_json_dict())))
    assert again == attrs
