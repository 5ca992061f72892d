"""Source multiscale metadata → OME-NGFF axes and datasets (migrate.source.reconcile)."""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import ome_zarr_models.v04
import ome_zarr_models.v05
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.errors import MetadataError
from migrate.source.axes import axis_type, c_to_f, f_to_c
from migrate.source.image import SourceImage, SourceLevel, sort_level_names
from migrate.source.reconcile import MappedImage, MappingOptions, map_image
from schemas.ngff import MultiscaleV04, MultiscaleV05
from tests import conftest
from tests.conftest import load_reference

# ----------------------------------------------------------------------- reference data


HELA_GROUP = load_reference(conftest.HELA_GROUP)
HELA_S0 = load_reference(conftest.HELA_S0)
NGFF_PUBLISHED = load_reference(conftest.NGFF_PUBLISHED)

GROUP_AT = "jrc_hela-2.n5/em/fibsem-uint16/attributes.json"

# Hand-written from the published metadata (C order: z, y, x; nanometers).
HELA_SCALES = [
    (5.24, 4.0, 4.0),
    (10.48, 8.0, 8.0),
    (20.96, 16.0, 16.0),
    (41.92, 32.0, 32.0),
    (83.84, 64.0, 64.0),
]
HELA_TRANSLATIONS = [
    (0.0, 0.0, 0.0),
    (2.62, 2.0, 2.0),
    (7.86, 6.0, 6.0),
    (18.34, 14.0, 14.0),
    (39.300000000000004, 30.0, 30.0),
]
HELA_SHAPES: list[tuple[int, ...]] = [  # C order; s0 is (6368, 1600, 12000) z, y, x
    (6368, 1600, 12000),
    (3184, 800, 6000),
    (1592, 400, 3000),
    (796, 200, 1500),
    (398, 100, 750),
]


def level_at(name: str) -> str:
    return f"jrc_hela-2.n5/em/fibsem-uint16/{name}/attributes.json"


def n5_array(shape_c: tuple[int, ...]) -> dict[str, Any]:
    return {
        "dimensions": list(c_to_f(shape_c)),
        "blockSize": [64] * len(shape_c),
        "dataType": "uint16",
        "compression": {"type": "gzip"},
    }


def hela(
    group: dict[str, Any] | None = None,
    s0: dict[str, Any] | None = None,
    others: dict[str, dict[str, Any]] | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    names: Sequence[str] | None = None,
) -> SourceImage:
    """The hela-2 image; ``others`` adds keys to the attributes of s1…s4."""
    shapes = shapes or HELA_SHAPES
    names = names or [f"s{n}" for n in range(len(shapes))]
    levels = []
    for name, shape in zip(names, shapes, strict=True):
        if name == "s0":
            attrs = copy.deepcopy(HELA_S0 if s0 is None else s0)
        else:
            attrs = {**n5_array(shape), **(others or {}).get(name, {})}
        levels.append(SourceLevel(name=name, attrs=attrs, location=level_at(name), shape=shape))
    return SourceImage(
        path="em/fibsem-uint16",
        group_attrs=copy.deepcopy(HELA_GROUP if group is None else group),
        group_location=GROUP_AT,
        levels=tuple(levels),
    )


def assert_hela(mapped: MappedImage) -> None:
    assert [(a.name, a.type, a.unit) for a in mapped.axes] == [
        ("z", "space", "nanometer"),
        ("y", "space", "nanometer"),
        ("x", "space", "nanometer"),
    ]
    assert [d.path for d in mapped.datasets] == ["s0", "s1", "s2", "s3", "s4"]
    # Exact float equality: values are carried (or, for Neuroglancer, computed) bit for bit.
    assert [d.scale for d in mapped.datasets] == HELA_SCALES
    assert [d.translation for d in mapped.datasets] == HELA_TRANSLATIONS
    for dataset in mapped.datasets:
        assert [t.type for t in dataset.coordinateTransformations] == ["scale", "translation"]
    assert mapped.conflicts == ()
    assert mapped.warnings == ()


def cosem_only_group() -> dict[str, Any]:
    return {"multiscales": copy.deepcopy(HELA_GROUP["multiscales"])}


def ng_only_group() -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in HELA_GROUP.items() if k != "multiscales"}


def ng_only_s0() -> dict[str, Any]:
    return {k: v for k, v in HELA_S0.items() if k != "transform"}


def to_f_order(transform: dict[str, Any]) -> dict[str, Any]:
    out = {key: list(reversed(transform[key])) for key in ("axes", "units", "scale", "translate")}
    return {**out, "order": "F"}


# --------------------------------------------------------------------------- hela-2


def test_hela_as_published() -> None:
    mapped = map_image(hela(), MappingOptions())
    assert_hela(mapped)
    assert "COSEM" in mapped.sources["scale"]
    assert GROUP_AT in mapped.sources["scale"]
    assert "Neuroglancer" in mapped.sources["checked"]


def test_hela_matches_the_published_ngff_metadata() -> None:
    mapped = map_image(hela(), MappingOptions())
    ours = MultiscaleV04(axes=mapped.axes, datasets=mapped.datasets).to_json_dict()
    published = NGFF_PUBLISHED["multiscales"][0]
    assert ours["axes"] == published["axes"]
    assert ours["datasets"][:2] == published["datasets"]


def test_hela_f_ordered_cosem() -> None:
    group = copy.deepcopy(HELA_GROUP)
    for dataset in group["multiscales"][0]["datasets"]:
        dataset["transform"] = to_f_order(dataset["transform"])
    s0 = {**HELA_S0, "transform": to_f_order(HELA_S0["transform"])}
    assert_hela(map_image(hela(group, s0), MappingOptions()))


def test_hela_cosem_only() -> None:
    s0 = {k: v for k, v in HELA_S0.items() if k != "pixelResolution"}
    mapped = map_image(hela(cosem_only_group(), s0), MappingOptions())
    assert_hela(mapped)
    assert "checked" not in mapped.sources


def test_hela_per_array_transforms_only() -> None:
    """No group multiscales: each level's own COSEM transform is the fallback."""
    others = {
        f"s{n}": {"transform": d["transform"]}
        for n, d in enumerate(HELA_GROUP["multiscales"][0]["datasets"])
    }
    mapped = map_image(hela(ng_only_group(), others=others), MappingOptions())
    assert_hela(mapped)
    assert "level array" in mapped.sources["scale"]


def test_hela_neuroglancer_only() -> None:
    """Neuroglancer-only gives the very same floats as COSEM: no tolerance is needed.

    ``(f - 1) / 2 * 5.24`` is 2.62, 7.86, 18.34 and 39.300000000000004 for f = 2, 4, 8, 16,
    exactly the published COSEM translations, and ``5.24 * f`` is exact for powers of two.
    """
    mapped = map_image(hela(ng_only_group(), ng_only_s0()), MappingOptions())
    assert_hela(mapped)
    assert "windowed" in mapped.sources["translation"]
    assert "Neuroglancer" in mapped.sources["scale"]


def test_hela_neuroglancer_only_subsampled() -> None:
    options = MappingOptions(downsampling="subsample")
    mapped = map_image(hela(ng_only_group(), ng_only_s0()), options)
    assert [d.scale for d in mapped.datasets] == HELA_SCALES
    assert [d.translation for d in mapped.datasets] == [(0.0, 0.0, 0.0)] * 5
    assert "subsample" in mapped.sources["translation"]


def test_hela_neuroglancer_only_per_array_pixel_resolution() -> None:
    """No group pixelResolution: s0's own pixelResolution is the base spacing."""
    group = {k: v for k, v in ng_only_group().items() if k != "pixelResolution"}
    mapped = map_image(hela(group, ng_only_s0()), MappingOptions())
    assert_hela(mapped)
    assert level_at("s0") in mapped.sources["scale"]


def test_hela_n5_viewer_style_downsampling_factors() -> None:
    """Arrays carry pixelResolution and downsamplingFactors; the group has neither list."""
    others = {
        f"s{n}": {
            "downsamplingFactors": [2**n] * 3,
            "pixelResolution": {"dimensions": [4.0 * 2**n, 4.0 * 2**n, 5.24 * 2**n], "unit": "nm"},
        }
        for n in range(1, 5)
    }
    mapped = map_image(hela({}, ng_only_s0(), others), MappingOptions())
    assert [d.scale for d in mapped.datasets] == HELA_SCALES
    assert [d.translation for d in mapped.datasets] == HELA_TRANSLATIONS
    assert [a.name for a in mapped.axes] == ["z", "y", "x"]
    assert any("no axes names" in w for w in mapped.warnings)
    assert mapped.conflicts == ()


# ------------------------------------------------------------------------ bad inputs


def test_wrong_transform_lengths() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][1]["transform"]["units"] = ["nm", "nm"]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert info.value.location == GROUP_AT
    assert info.value.field == "multiscales[0].datasets[1].transform"
    assert "units has 2" in info.value.message


def test_transform_length_differs_from_the_array_ndim() -> None:
    group = cosem_only_group()
    for dataset in group["multiscales"][0]["datasets"]:
        transform = dataset["transform"]
        for key in ("axes", "units", "scale", "translate"):
            transform[key] = transform[key][1:]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group, ng_only_s0()), MappingOptions())
    assert info.value.location == GROUP_AT
    assert info.value.field == "multiscales[0].datasets[0].transform.axes"
    assert "['y', 'x']" in info.value.message


def test_neuroglancer_axes_length() -> None:
    group = ng_only_group()
    group["axes"] = ["x", "y"]
    group["units"] = ["nm", "nm"]
    group["scales"] = [[1, 1]] * 5
    group["pixelResolution"]["dimensions"] = [4.0, 4.0]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group, ng_only_s0()), MappingOptions())
    assert (info.value.location, info.value.field) == (GROUP_AT, "axes")
    assert "['x', 'y']" in info.value.message


def test_bad_order_value() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][2]["transform"]["order"] = "X"
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert info.value.field == "multiscales[0].datasets[2].transform.order"
    assert "'X'" in info.value.message
    assert str(info.value).startswith(GROUP_AT)


def test_unknown_unit() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][0]["transform"]["units"][1] = "furlong"
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert info.value.location == GROUP_AT
    assert info.value.field == "multiscales[0].datasets[0].transform.units[1]"
    assert "'furlong'" in info.value.message


def test_unknown_unit_allowed_is_kept() -> None:
    group = cosem_only_group()
    for dataset in group["multiscales"][0]["datasets"]:
        dataset["transform"]["units"] = ["furlong"] * 3
    s0 = {k: v for k, v in HELA_S0.items() if k not in ("pixelResolution", "transform")}
    mapped = map_image(hela(group, s0), MappingOptions(allow_unknown_units=True))
    assert [a.unit for a in mapped.axes] == ["furlong"] * 3
    assert [a.type for a in mapped.axes] == ["space"] * 3
    assert any("'furlong'" in w and "kept as written" in w for w in mapped.warnings)
    # The written metadata is still accepted by ome-zarr-models (it does not check units).
    MultiscaleV04(axes=mapped.axes, datasets=mapped.datasets)


def test_time_unit_on_a_space_axis() -> None:
    group = cosem_only_group()
    for dataset in group["multiscales"][0]["datasets"]:
        dataset["transform"]["units"] = ["ms", "nm", "nm"]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group, ng_only_s0()), MappingOptions())
    assert info.value.field == "multiscales[0].datasets[0].transform.units[0]"
    assert "'millisecond'" in info.value.message
    assert "'z'" in info.value.message


def test_level_missing_from_the_middle() -> None:
    image = hela(
        shapes=[HELA_SHAPES[0], HELA_SHAPES[1], HELA_SHAPES[3]],
        names=["s0", "s1", "s3"],
        group=ng_only_group(),
        s0=ng_only_s0(),
    )
    with pytest.raises(MetadataError) as info:
        map_image(image, MappingOptions())
    assert info.value.location == GROUP_AT
    assert "missing s2" in info.value.message


def test_levels_are_sorted_numerically() -> None:
    shapes = [(64, 64, 64)] * 12
    names = [f"s{n}" for n in range(12)]
    group = {
        "axes": ["x", "y", "z"],
        "units": ["nm"] * 3,
        "scales": [[1, 1, 1]] * 12,
        "pixelResolution": {"dimensions": [1.0, 1.0, 1.0], "unit": "nm"},
    }
    image = hela(group, n5_array((64, 64, 64)), shapes=shapes, names=names)
    shuffled = SourceImage(image.path, image.group_attrs, image.group_location, image.levels[::-1])
    mapped = map_image(shuffled, MappingOptions())
    assert [d.path for d in mapped.datasets] == names


def test_sort_level_names() -> None:
    assert sort_level_names(["s10", "s2", "s9", "s0", "s1"]) == ["s0", "s1", "s2", "s9", "s10"]
    assert sort_level_names(["s1", "raw", "s01", "S2", "s0", "labels"]) == ["s0", "s1"]


def test_mismatched_ndim() -> None:
    shapes = [*HELA_SHAPES[:2], (800, 6000)]
    image = hela(ng_only_group(), ng_only_s0(), shapes=shapes)
    with pytest.raises(MetadataError) as info:
        map_image(image, MappingOptions())
    assert (info.value.location, info.value.field) == (level_at("s2"), "dimensions")
    assert "2 dimensions" in info.value.message


def test_dotdot_dataset_path() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][1]["path"] = "../s1"
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert (info.value.location, info.value.field) == (GROUP_AT, "multiscales[0].datasets[1].path")
    assert "'../s1'" in info.value.message


def test_multiscales_path_that_is_not_a_level() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][4]["path"] = "s7"
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert (info.value.location, info.value.field) == (GROUP_AT, "multiscales[0].datasets[4].path")
    assert "'s7'" in info.value.message


def test_neither_convention() -> None:
    s0 = {k: v for k, v in HELA_S0.items() if k not in ("pixelResolution", "transform")}
    with pytest.raises(MetadataError) as info:
        map_image(hela({}, s0), MappingOptions())
    assert info.value.location == GROUP_AT
    for key in ("multiscales", "transform", "axes", "scales", "pixelResolution"):
        assert f"'{key}'" in info.value.message


def conflicting_hela() -> SourceImage:
    """Neuroglancer says 5.0 nm in z where COSEM says 5.24."""
    group = copy.deepcopy(HELA_GROUP)
    group["pixelResolution"]["dimensions"] = [4.0, 4.0, 5.0]
    s0 = {k: v for k, v in HELA_S0.items() if k != "pixelResolution"}
    return hela(group, s0)


def test_conflicting_conventions_block() -> None:
    mapped = map_image(conflicting_hela(), MappingOptions())
    assert len(mapped.conflicts) == 5
    first = mapped.conflicts[1]
    assert "s1" in first
    assert f"{GROUP_AT} multiscales[0].datasets[1].transform.scale" in first
    assert f"{GROUP_AT} pixelResolution * scales[1]" in first
    assert "[10.48, 8.0, 8.0]" in first
    assert "[10.0, 8.0, 8.0]" in first
    assert mapped.warnings == ()


def test_conflicting_conventions_trust_cosem() -> None:
    mapped = map_image(conflicting_hela(), MappingOptions(trust="cosem"))
    assert mapped.conflicts == ()
    assert len(mapped.warnings) == 5
    assert all("--trust cosem" in w for w in mapped.warnings)
    assert [d.scale for d in mapped.datasets] == HELA_SCALES
    assert [d.translation for d in mapped.datasets] == HELA_TRANSLATIONS


def test_conflicting_conventions_trust_neuroglancer() -> None:
    mapped = map_image(conflicting_hela(), MappingOptions(trust="neuroglancer"))
    assert mapped.conflicts == ()
    assert len(mapped.warnings) == 5
    assert [d.scale for d in mapped.datasets] == [
        (5.0, 4.0, 4.0),
        (10.0, 8.0, 8.0),
        (20.0, 16.0, 16.0),
        (40.0, 32.0, 32.0),
        (80.0, 64.0, 64.0),
    ]
    assert [d.translation for d in mapped.datasets] == [
        (0.0, 0.0, 0.0),
        (2.5, 2.0, 2.0),
        (7.5, 6.0, 6.0),
        (17.5, 14.0, 14.0),
        (37.5, 30.0, 30.0),
    ]
    assert "Neuroglancer" in mapped.sources["scale"]


def test_conflicting_axes_and_units() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["axes"] = ["x", "z", "y"]
    group["units"] = ["um", "um", "um"]
    mapped = map_image(hela(group), MappingOptions())
    axes_conflict = next(c for c in mapped.conflicts if c.startswith("axes"))
    assert f"{GROUP_AT} axes" in axes_conflict
    assert "['z', 'y', 'x']" in axes_conflict
    assert "['y', 'z', 'x']" in axes_conflict
    units_conflict = next(c for c in mapped.conflicts if c.startswith("units"))
    assert "nanometer" in units_conflict
    assert "micrometer" in units_conflict


def test_scales_equal_within_tolerance_do_not_conflict() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["pixelResolution"]["dimensions"] = [4.0, 4.0, 5.24 * (1 + 1e-12)]
    mapped = map_image(hela(group), MappingOptions())
    assert mapped.conflicts == ()


def test_cosem_level_axes_typo_is_a_conflict() -> None:
    group = copy.deepcopy(HELA_GROUP)
    group["multiscales"][0]["datasets"][2]["transform"]["axes"] = ["z", "y", "y"]
    mapped = map_image(hela(group), MappingOptions())
    assert len(mapped.conflicts) == 1
    conflict = mapped.conflicts[0]
    assert "s2" in conflict
    assert f"{GROUP_AT} multiscales[0].datasets[2].transform.axes" in conflict
    assert "['z', 'y', 'y']" in conflict
    assert "['z', 'y', 'x']" in conflict
    trusted = map_image(hela(group), MappingOptions(trust="cosem"))
    assert [a.name for a in trusted.axes] == ["z", "y", "x"]
    assert "s0's axes" in trusted.warnings[0]


def test_group_and_array_transforms_disagree() -> None:
    s0 = copy.deepcopy(HELA_S0)
    s0["transform"]["translate"] = [1.0, 0.0, 0.0]
    mapped = map_image(hela(s0=s0), MappingOptions())
    assert len(mapped.conflicts) == 1
    conflict = mapped.conflicts[0]
    assert f"{GROUP_AT} multiscales[0].datasets[0].transform" in conflict
    assert f"{level_at('s0')} transform" in conflict
    assert "[0.0, 0.0, 0.0] vs [1.0, 0.0, 0.0]" in conflict
    trusted = map_image(hela(s0=s0), MappingOptions(trust="neuroglancer"))
    assert trusted.conflicts == ()
    assert len(trusted.warnings) == 1


def test_per_array_pixel_resolution_disagrees() -> None:
    others = {"s2": {"pixelResolution": {"dimensions": [16.0, 16.0, 20.0], "unit": "nm"}}}
    mapped = map_image(hela(ng_only_group(), ng_only_s0(), others), MappingOptions())
    assert len(mapped.conflicts) == 1
    conflict = mapped.conflicts[0]
    assert level_at("s2") in conflict
    assert "[16.0, 16.0, 20.0]" in conflict
    assert "[16.0, 16.0, 20.96]" in conflict
    trusted = map_image(
        hela(ng_only_group(), ng_only_s0(), others), MappingOptions(trust="neuroglancer")
    )
    assert [d.scale for d in trusted.datasets] == HELA_SCALES


def test_incomplete_cosem() -> None:
    """A level missing from COSEM blocks conversion; --trust neuroglancer is the way out."""
    group = copy.deepcopy(HELA_GROUP)
    del group["multiscales"][0]["datasets"][4]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group), MappingOptions())
    assert (info.value.location, info.value.field) == (level_at("s4"), "transform")
    assert "--trust neuroglancer" in info.value.message
    mapped = map_image(hela(group), MappingOptions(trust="neuroglancer"))
    assert [d.translation for d in mapped.datasets] == HELA_TRANSLATIONS
    assert any("COSEM metadata ignored" in w for w in mapped.warnings)
    # The level's own transform completes the group's list.
    others = {"s4": {"transform": HELA_GROUP["multiscales"][0]["datasets"][4]["transform"]}}
    assert_hela(map_image(hela(group, others=others), MappingOptions()))


def test_shape_that_does_not_fit_the_factor() -> None:
    shapes = list(HELA_SHAPES)
    shapes[3] = (796, 201, 1500)
    mapped = map_image(hela(shapes=shapes), MappingOptions())
    assert len(mapped.warnings) == 1
    warning = mapped.warnings[0]
    assert warning.startswith("s3 shape [796, 201, 1500]")
    assert "[6368, 1600, 12000]" in warning
    assert "y: 201, expected 200" in warning
    assert mapped.conflicts == ()


def test_odd_sizes_fit_with_floor_or_ceil() -> None:
    shapes = [(7, 5, 9), (3, 3, 5), (2, 1, 2)]
    group = {
        "axes": ["x", "y", "z"],
        "scales": [[1, 1, 1], [2, 2, 2], [4, 4, 4]],
        "pixelResolution": {"dimensions": [1.0, 1.0, 1.0], "unit": "nm"},
    }
    mapped = map_image(hela(group, n5_array(shapes[0]), shapes=shapes), MappingOptions())
    assert mapped.warnings == ()


def test_scales_must_not_shrink() -> None:
    group = ng_only_group()
    group["scales"][2] = [1, 1, 1]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group, ng_only_s0()), MappingOptions())
    assert info.value.location == GROUP_AT
    assert "s2" in info.value.message
    assert "finer" in info.value.message


def test_neuroglancer_scales_too_short() -> None:
    group = ng_only_group()
    group["scales"] = group["scales"][:3]
    with pytest.raises(MetadataError) as info:
        map_image(hela(group, ng_only_s0()), MappingOptions())
    assert info.value.location == level_at("s3")
    assert "scales[3]" in info.value.message


def test_axes_helpers() -> None:
    assert f_to_c(["x", "y", "z"]) == ("z", "y", "x")
    assert c_to_f((1, 2, 3)) == (3, 2, 1)
    assert [axis_type(n) for n in ["x", "Y", "z", "t", "c", "d0"]] == [
        "space",
        "space",
        "space",
        "time",
        "channel",
        None,
    ]


# ------------------------------------------------------------------ property tests


@dataclass(frozen=True)
class Case:
    """A generated multiscale image, described independently of the code under test."""

    names: tuple[str, ...]  # C order
    spacing: tuple[float, ...]  # s0 voxel size, C order
    offset: tuple[float, ...]  # s0 origin, C order (COSEM only; Neuroglancer cannot say)
    factors: tuple[tuple[int, ...], ...]  # per level, per axis (C), relative to s0
    shape0: tuple[int, ...]
    units: tuple[str, ...]  # as written in the source, C order
    convention: Literal["cosem", "neuroglancer", "both"]
    order: Literal["C", "F"]
    rule: Literal["windowed", "subsample"]

    def shape(self, n: int) -> tuple[int, ...]:
        return tuple(math.ceil(s / f) for s, f in zip(self.shape0, self.factors[n], strict=True))

    @property
    def origin(self) -> tuple[float, ...]:
        return self.offset if self.convention != "neuroglancer" else (0.0,) * len(self.names)

    def physical(self, n: int, k: int, i: int) -> float:
        """Where voxel ``i`` of level ``n`` lies along axis ``k``.

        Level-n voxel i covers s0 voxels i*f … i*f + f - 1 along the axis. A windowed mean
        sits at their mean position, origin + (i*f + (f - 1)/2) * spacing; subsampling keeps
        s0 voxel i*f, at origin + i*f * spacing.
        """
        f = self.factors[n][k]
        centre = i * f + ((f - 1) / 2 if self.rule == "windowed" else 0)
        return self.origin[k] + centre * self.spacing[k]


SPACE_SPELLINGS = {"nanometer": ["nm", "nanometer", "Nanometers"], "micrometer": ["um", "µm"]}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n_space = draw(st.sampled_from([2, 3]))
    has_t = draw(st.booleans())
    has_c = draw(st.booleans())
    names = (("t",) if has_t else ()) + (("c",) if has_c else ()) + ("z", "y", "x")[-n_space:]
    ndim = len(names)
    spacing = tuple(
        draw(st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False))
        for _ in names
    )
    offset = tuple(
        draw(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False))
        for _ in names
    )
    n_levels = draw(st.integers(min_value=1, max_value=4))
    factors = [(1,) * ndim]
    for _ in range(1, n_levels):
        step = tuple(
            draw(st.integers(min_value=1, max_value=3)) if axis_type(name) == "space" else 1
            for name in names
        )
        factors.append(tuple(a * b for a, b in zip(factors[-1], step, strict=True)))
    shape0 = tuple(draw(st.integers(min_value=1, max_value=40)) for _ in names)
    space_unit = draw(st.sampled_from(sorted(SPACE_SPELLINGS)))
    units = tuple(
        {"time": "ms", "channel": ""}.get(
            axis_type(name) or "", draw(st.sampled_from(SPACE_SPELLINGS[space_unit]))
        )
        for name in names
    )
    return Case(
        names=names,
        spacing=spacing,
        offset=offset,
        factors=tuple(factors),
        shape0=shape0,
        units=units,
        convention=draw(st.sampled_from(["cosem", "neuroglancer", "both"])),
        order=draw(st.sampled_from(["C", "F"])),
        rule=draw(st.sampled_from(["windowed", "subsample"])),
    )


def source_of(case: Case) -> SourceImage:
    """Write ``case`` as the source conventions would (COSEM lists C order unless order F)."""
    group: dict[str, Any] = {}
    levels_cosem = []
    for factor in case.factors:
        scale = [s * f for s, f in zip(case.spacing, factor, strict=True)]
        shift = [
            (f - 1) / 2 * s if case.rule == "windowed" else 0.0
            for s, f in zip(case.spacing, factor, strict=True)
        ]
        transform: dict[str, Any] = {
            "axes": list(case.names),
            "units": list(case.units),
            "scale": scale,
            "translate": [o + d for o, d in zip(case.offset, shift, strict=True)],
        }
        if case.order == "F":
            transform = to_f_order(transform)
        levels_cosem.append(transform)
    if case.convention in ("cosem", "both"):
        group["multiscales"] = [
            {"datasets": [{"path": f"s{n}", "transform": t} for n, t in enumerate(levels_cosem)]}
        ]
    if case.convention in ("neuroglancer", "both"):
        space_unit = next(u for u, n in zip(case.units, case.names, strict=True) if n in "zyx")
        group["axes"] = list(c_to_f(case.names))
        group["units"] = list(c_to_f(case.units))
        group["scales"] = [list(c_to_f(f)) for f in case.factors]
        group["pixelResolution"] = {"dimensions": list(c_to_f(case.spacing)), "unit": space_unit}
    levels = tuple(
        SourceLevel(
            name=f"s{n}",
            attrs=n5_array(case.shape(n)),
            location=f"gen.n5/img/s{n}/attributes.json",
            shape=case.shape(n),
        )
        for n in range(len(case.factors))
    )
    return SourceImage("img", group, "gen.n5/img/attributes.json", levels)


def options_of(case: Case) -> MappingOptions:
    return MappingOptions(downsampling=case.rule)


def check_coordinates(case: Case, mapped: MappedImage) -> None:
    """scale * index + translation is where the source says the voxel is."""
    assert [a.name for a in mapped.axes] == list(case.names)
    for n, dataset in enumerate(mapped.datasets):
        assert dataset.path == f"s{n}"
        for k in range(len(case.names)):
            for i in {0, 1, case.shape(n)[k] - 1}:
                got = dataset.scale[k] * i + dataset.translation[k]
                expected = case.physical(n, k, i)
                tolerance = 1e-9 * (
                    abs(case.offset[k]) + case.spacing[k] * case.factors[n][k] * (i + 1)
                )
                assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=tolerance), (n, k, i)


@settings(max_examples=30, deadline=None)
@given(cases())
def test_mapped_metadata_validates_and_keeps_coordinates(case: Case) -> None:
    mapped = map_image(source_of(case), options_of(case))
    assert mapped.conflicts == ()
    assert mapped.warnings == ()
    check_coordinates(case, mapped)
    for axis, unit in zip(mapped.axes, case.units, strict=True):
        expected_unit = {"": None, "ms": "millisecond"}.get(unit)
        if axis.type == "space":
            assert axis.unit in ("nanometer", "micrometer")
        else:
            assert axis.unit == expected_unit

    with tempfile.TemporaryDirectory() as tmp:
        v2 = zarr.open_group(Path(tmp) / "v04.zarr", mode="w", zarr_format=2)
        v3 = zarr.open_group(Path(tmp) / "v05.zarr", mode="w", zarr_format=3)
        for n in range(len(case.factors)):
            v2.create_array(f"s{n}", shape=case.shape(n), dtype="uint8")
            v3.create_array(f"s{n}", shape=case.shape(n), dtype="uint8", dimension_names=case.names)
        v2.attrs.update(
            {
                "multiscales": [
                    MultiscaleV04(axes=mapped.axes, datasets=mapped.datasets).to_json_dict()
                ]
            }
        )
        v3.attrs.update(
            {
                "ome": {
                    "version": "0.5",
                    "multiscales": [
                        MultiscaleV05(axes=mapped.axes, datasets=mapped.datasets).to_json_dict()
                    ],
                }
            }
        )
        ome_zarr_models.v04.Image.from_zarr(v2)
        ome_zarr_models.v05.Image.from_zarr(v3)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_order_and_convention_do_not_change_the_result(case: Case) -> None:
    """C vs F order gives identical output, and so do the conventions where comparable.

    No tolerance is needed: the generated COSEM lists hold ``s * f`` and
    ``offset + (f - 1) / 2 * s``, which are exactly the floats the Neuroglancer path computes
    when the offset is 0 (``0.0 + x == x``).
    """
    mapped = map_image(source_of(case), options_of(case))
    flipped = replace(case, order="F" if case.order == "C" else "C")
    assert map_image(source_of(flipped), options_of(flipped)) == mapped
    check_coordinates(case, mapped)
    if case.convention == "both":
        alone = replace(case, convention="cosem")
        assert map_image(source_of(alone), options_of(alone)).datasets == mapped.datasets
    if case.convention == "neuroglancer":
        alone = replace(case, convention="cosem", offset=(0.0,) * len(case.names))
        assert map_image(source_of(alone), options_of(alone)).datasets == mapped.datasets
