"""Tests of the N5 fixture writer (migrate.example.fixture), checked by TensorStore and
tests/n5_reader.

Expected metadata values are written out by hand (from the published jrc_hela-2 metadata),
never computed with the code under test. Shapes in this file are C order (z, y, x).
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
import tensorstore as ts

from migrate.example.fixture import (
    DTYPES,
    ImageSpec,
    array_attributes,
    example_images,
    level_block_size,
    level_data,
    level_shape,
    write_dataset,
    write_image,
)
from tests.n5_reader import (
    block_files,
    read_attributes,
    read_block,
    read_block_header,
    read_n5_array,
)

COMPRESSIONS: dict[str, dict[str, Any]] = {
    "raw": {"type": "raw"},
    "gzip": {"type": "gzip", "level": -1},
    "gzip-zlib": {"type": "gzip", "level": 5, "useZlib": True},
    "bzip2": {"type": "bzip2", "blockSize": 9},
    "xz": {"type": "xz", "preset": 6},
    "blosc-lz4": {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-zstd-bitshuffle": {"type": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
    "zstd": {"type": "zstd", "level": 3},
}

# ndim -> (shape, block size, factors, voxel size); no block size divides its axis
GEOMETRY: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]]] = {
    2: ((23, 37), (8, 16), (2, 2), (4.0, 4.0)),
    3: ((13, 17, 19), (8, 8, 8), (2, 2, 2), (5.24, 4.0, 4.0)),
    4: ((3, 9, 10, 11), (2, 4, 4, 8), (1, 2, 2, 2), (1.0, 5.24, 4.0, 4.0)),
}
CONTENTS: tuple[Literal["gradient", "noise", "labels", "sparse"], ...] = (
    "gradient",
    "noise",
    "labels",
    "sparse",
)


def ts_read(array_dir: Path) -> npt.NDArray[Any]:
    """Read an N5 array with TensorStore; transposed to C order."""
    store = ts.open(
        {"driver": "n5", "kvstore": {"driver": "file", "path": str(array_dir)}}, read=True
    ).result()
    return np.asarray(store.read().result()).T


def spec_for(
    ndim: int,
    dtype: str,
    compression: dict[str, Any],
    edge_blocks: Literal["truncated", "full"],
    content: Literal["gradient", "noise", "labels", "sparse"],
    levels: int = 2,
) -> ImageSpec:
    shape, block, factors, voxel = GEOMETRY[ndim]
    return ImageSpec(
        path="em/test",
        shape=shape,
        dtype=dtype,
        block_size=block,
        levels=levels,
        factors=factors,
        voxel_size=voxel,
        offset=(0.0,) * ndim,
        compression=compression,
        edge_blocks=edge_blocks,
        content=content,
        seed=ndim,
    )


def check_roundtrip(root: Path, spec: ImageSpec) -> None:
    for level in range(spec.levels):
        array_dir = root / spec.path / f"s{level}"
        expected = level_data(spec, level)
        assert expected.shape == level_shape(spec, level)
        assert expected.dtype == np.dtype(spec.dtype)
        for name, got in (
            ("tensorstore", ts_read(array_dir)),
            ("reader", read_n5_array(array_dir)),
        ):
            assert got.dtype == expected.dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} s{level}")


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("edge_blocks", ["truncated", "full"])
@pytest.mark.parametrize("compression", list(COMPRESSIONS))
def test_roundtrip_compressions(
    tmp_path: Path, compression: str, edge_blocks: Literal["truncated", "full"], ndim: int
) -> None:
    # rotate dtypes and contents over the matrix so that every one meets every compression
    case = list(COMPRESSIONS).index(compression) * 6 + ndim * 2 + (edge_blocks == "full")
    dtype = DTYPES[case % len(DTYPES)]
    content = CONTENTS[case % len(CONTENTS)]
    spec = spec_for(ndim, dtype, COMPRESSIONS[compression], edge_blocks, content)
    write_image(tmp_path, spec)
    check_roundtrip(tmp_path, spec)


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip_dtypes(tmp_path: Path, dtype: str, content: Any) -> None:
    spec = spec_for(3, dtype, COMPRESSIONS["gzip"], "truncated", content)
    write_image(tmp_path, spec)
    check_roundtrip(tmp_path, spec)


@pytest.mark.parametrize("edge_blocks", ["truncated", "full"])
def test_edge_block_headers(tmp_path: Path, edge_blocks: Literal["truncated", "full"]) -> None:
    # C shape (13, 17, 19), blocks 8^3: N5 dims [19, 17, 13], grid [3, 3, 2] (F order)
    spec = ImageSpec(
        path="img",
        shape=(13, 17, 19),
        block_size=(8, 8, 8),
        levels=1,
        compression={"type": "raw"},
        edge_blocks=edge_blocks,
        content="noise",
    )
    write_image(tmp_path, spec)
    array_dir = tmp_path / "img" / "s0"
    files = block_files(array_dir)
    assert sorted(files) == sorted((i, j, k) for i in range(3) for j in range(3) for k in range(2))
    xs, ys, zs = (8, 8, 3), (8, 8, 1), (8, 5)
    for (i, j, k), path in files.items():
        header = read_block_header(path)
        assert header.mode == 0
        if edge_blocks == "truncated":
            assert header.dims == (xs[i], ys[j], zs[k])
        else:
            assert header.dims == (8, 8, 8)
        assert path.stat().st_size == 4 + 3 * 4 + 2 * int(np.prod(header.dims))
    corner = array_dir / "2" / "0" / "1"
    raw = corner.read_bytes()
    assert raw[:16] == struct.pack(
        ">HHIII", 0, 3, *((3, 8, 5) if edge_blocks == "truncated" else (8, 8, 8))
    )
    # payload is big-endian, x fastest: element (x, y, z) at x + nx * (y + ny * z)
    nx, ny = (3, 8) if edge_blocks == "truncated" else (8, 8)
    data = level_data(spec, 0)
    for x, y, z in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 7, 4)]:
        (value,) = struct.unpack_from(">H", raw, 16 + 2 * (x + nx * (y + ny * z)))
        assert value == data[8 + z, 0 + y, 16 + x]
    if edge_blocks == "full":
        padded = read_block(corner, read_attributes(array_dir))
        assert padded.shape == (8, 8, 8)
        assert not padded[5:, :, :].any()
        assert not padded[:, :, 3:].any()


def test_all_zero_blocks_absent(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="labels/pred",
        shape=(40, 41, 42),
        dtype="uint8",
        block_size=(8, 8, 8),
        levels=2,
        content="sparse",
        seed=7,
    )
    write_image(tmp_path, spec)
    for level in range(2):
        array_dir = tmp_path / "labels" / "pred" / f"s{level}"
        files = block_files(array_dir)
        shape = level_shape(spec, level)
        grid = [-(-s // 8) for s in shape]
        present = absent = 0
        for gz in range(grid[0]):
            for gy in range(grid[1]):
                for gx in range(grid[2]):
                    box = (
                        slice(8 * gz, 8 * gz + 8),
                        slice(8 * gy, 8 * gy + 8),
                        slice(8 * gx, 8 * gx + 8),
                    )
                    nonzero = bool(level_data(spec, level, box).any())
                    assert ((gx, gy, gz) in files) == nonzero
                    present += nonzero
                    absent += not nonzero
        assert present > 0
        assert absent > 0
        assert len(files) == present
    check_roundtrip(tmp_path, spec)


def test_twelve_levels(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="em/deep", shape=(30, 50, 70), block_size=(16, 16, 16), levels=12, content="noise"
    )
    write_image(tmp_path, spec)
    image = tmp_path / "em" / "deep"
    assert sorted(p.name for p in image.iterdir() if p.is_dir()) == sorted(
        f"s{n}" for n in range(12)
    )
    expected_dims = {
        0: [70, 50, 30],
        1: [35, 25, 15],
        2: [18, 13, 8],
        5: [3, 2, 1],
        10: [1, 1, 1],
        11: [1, 1, 1],
    }
    for level, dims in expected_dims.items():
        assert read_attributes(image / f"s{level}")["dimensions"] == dims
    attrs = read_attributes(image)
    assert attrs["scales"][10] == [1024, 1024, 1024]
    assert attrs["scales"][11] == [2048, 2048, 2048]
    assert [d["path"] for d in attrs["multiscales"][0]["datasets"]] == [f"s{n}" for n in range(12)]
    assert read_n5_array(image / "s11").shape == (1, 1, 1)
    check_roundtrip(tmp_path, spec)


def test_block_size_per_level(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="labels/seg",
        shape=(50, 60, 70),
        dtype="uint64",
        block_size=((8, 16, 32), (4, 8, 16), (4, 4, 4)),
        levels=4,
        downsampling="subsample",
        content="labels",
    )
    write_image(tmp_path, spec)
    image = tmp_path / "labels" / "seg"
    assert [read_attributes(image / f"s{n}")["blockSize"] for n in range(4)] == [
        [32, 16, 8],
        [16, 8, 4],
        [4, 4, 4],
        [4, 4, 4],
    ]
    # s1 is (25, 30, 35) in blocks (4, 8, 16): F grid [3, 4, 7]; interior blocks are full
    s1_files = block_files(image / "s1")
    interior = [p for (i, j, k), p in s1_files.items() if i < 2 and j < 3 and k < 6]
    assert interior
    assert {read_block_header(p).dims for p in interior} == {(16, 8, 4)}
    assert {read_block_header(p).dims for p in s1_files.values()} <= {
        (x, y, z) for x in (16, 3) for y in (8, 6) for z in (4, 1)
    }
    check_roundtrip(tmp_path, spec)
    values = np.unique(read_n5_array(image / "s0"))
    assert values[0] == 0
    assert 2 <= len(values) <= 9


HELA_GROUP: dict[str, Any] = {
    "axes": ["x", "y", "z"],
    "units": ["nm", "nm", "nm"],
    "scales": [[1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8], [16, 16, 16]],
    "pixelResolution": {"dimensions": [4.0, 4.0, 5.24], "unit": "nm"},
    "multiscales": [
        {
            "name": "fibsem-uint16",
            "datasets": [
                {
                    "path": path,
                    "transform": {
                        "axes": ["z", "y", "x"],
                        "scale": scale,
                        "translate": translate,
                        "units": ["nm", "nm", "nm"],
                    },
                }
                for path, scale, translate in [
                    ("s0", [5.24, 4.0, 4.0], [0.0, 0.0, 0.0]),
                    ("s1", [10.48, 8.0, 8.0], [2.62, 2.0, 2.0]),
                    ("s2", [20.96, 16.0, 16.0], [7.86, 6.0, 6.0]),
                    ("s3", [41.92, 32.0, 32.0], [18.34, 14.0, 14.0]),
                    ("s4", [83.84, 64.0, 64.0], [39.300000000000004, 30.0, 30.0]),
                ]
            ],
        }
    ],
}


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def test_hela_like_metadata(tmp_path: Path) -> None:
    spec = ImageSpec(path="em/fibsem-uint16", shape=(20, 30, 40), levels=5)
    write_image(tmp_path, spec)
    assert load(tmp_path / "attributes.json") == {"n5": "2.5.0"}
    assert load(tmp_path / "em" / "attributes.json") == {}
    image = tmp_path / "em" / "fibsem-uint16"
    assert load(image / "attributes.json") == HELA_GROUP
    assert load(image / "s0" / "attributes.json") == {
        "dimensions": [40, 30, 20],
        "blockSize": [64, 64, 64],
        "dataType": "uint16",
        "compression": {"type": "gzip", "level": -1},
        "pixelResolution": {"dimensions": [4.0, 4.0, 5.24], "unit": "nm"},
        "transform": {
            "axes": ["z", "y", "x"],
            "scale": [5.24, 4.0, 4.0],
            "translate": [0.0, 0.0, 0.0],
            "units": ["nm", "nm", "nm"],
        },
    }
    s1 = load(image / "s1" / "attributes.json")
    assert s1["dimensions"] == [20, 15, 10]
    assert s1["pixelResolution"] == {"dimensions": [8.0, 8.0, 10.48], "unit": "nm"}
    assert s1["transform"]["scale"] == [10.48, 8.0, 8.0]
    assert s1["transform"]["translate"] == [2.62, 2.0, 2.0]
    assert "order" not in s1["transform"]


def test_matches_published_hela_metadata(
    tmp_path: Path, hela_group: dict[str, Any], hela_s0: dict[str, Any]
) -> None:
    """The hela-like defaults reproduce the published jrc_hela-2 attributes (tests/data)."""
    spec = ImageSpec(path="em/fibsem-uint16", shape=(20, 30, 40), levels=5)
    write_image(tmp_path, spec)
    assert load(tmp_path / "em" / "fibsem-uint16" / "attributes.json") == hela_group
    full_size = ImageSpec(path="em/fibsem-uint16", shape=(6368, 1600, 12000), levels=5)
    assert array_attributes(full_size, 0) == hela_s0  # metadata only, no 244 GB write


def test_cosem_order_variants(tmp_path: Path) -> None:
    f_spec = ImageSpec(path="f/img", shape=(20, 30, 40), levels=2, cosem_order="F")
    c_spec = ImageSpec(path="c/img", shape=(20, 30, 40), levels=2, cosem_order="C")
    write_image(tmp_path, f_spec)
    write_image(tmp_path, c_spec)
    f_s1 = {
        "axes": ["x", "y", "z"],
        "scale": [8.0, 8.0, 10.48],
        "translate": [2.0, 2.0, 2.62],
        "units": ["nm", "nm", "nm"],
        "order": "F",
    }
    assert load(tmp_path / "f" / "img" / "s1" / "attributes.json")["transform"] == f_s1
    assert load(tmp_path / "f" / "img" / "attributes.json")["multiscales"][0]["datasets"][1] == {
        "path": "s1",
        "transform": f_s1,
    }
    c_s1 = load(tmp_path / "c" / "img" / "s1" / "attributes.json")["transform"]
    assert c_s1 == {
        "axes": ["z", "y", "x"],
        "scale": [10.48, 8.0, 8.0],
        "translate": [2.62, 2.0, 2.0],
        "units": ["nm", "nm", "nm"],
        "order": "C",
    }


def test_downsampling_rules_and_offset(tmp_path: Path) -> None:
    common: dict[str, Any] = {"shape": (20, 30, 40), "levels": 3, "offset": (10.0, 20.0, 30.0)}
    write_image(tmp_path, ImageSpec(path="sub", downsampling="subsample", **common))
    write_image(tmp_path, ImageSpec(path="win", downsampling="windowed", **common))
    sub = load(tmp_path / "sub" / "s2" / "attributes.json")["transform"]
    assert sub["translate"] == [10.0, 20.0, 30.0]
    assert sub["scale"] == [20.96, 16.0, 16.0]
    win = load(tmp_path / "win" / "s1" / "attributes.json")["transform"]
    assert win["translate"] == pytest.approx([12.62, 22.0, 32.0])
    win2 = load(tmp_path / "win" / "s2" / "attributes.json")["transform"]
    assert win2["translate"] == pytest.approx([17.86, 26.0, 36.0])


def test_metadata_conventions(tmp_path: Path) -> None:
    write_image(tmp_path, ImageSpec(path="a", shape=(9, 9, 9), levels=2, metadata="cosem"))
    write_image(tmp_path, ImageSpec(path="b", shape=(9, 9, 9), levels=2, metadata="neuroglancer"))
    assert set(load(tmp_path / "a" / "attributes.json")) == {"multiscales"}
    assert set(load(tmp_path / "a" / "s1" / "attributes.json")) == {
        "dimensions",
        "blockSize",
        "dataType",
        "compression",
        "transform",
    }
    assert set(load(tmp_path / "b" / "attributes.json")) == {
        "axes",
        "units",
        "scales",
        "pixelResolution",
    }
    assert set(load(tmp_path / "b" / "s1" / "attributes.json")) == {
        "dimensions",
        "blockSize",
        "dataType",
        "compression",
        "pixelResolution",
    }


def test_axis_names_other_ndims(tmp_path: Path) -> None:
    write_image(tmp_path, spec_for(2, "uint8", COMPRESSIONS["raw"], "truncated", "noise"))
    assert load(tmp_path / "em" / "test" / "attributes.json")["axes"] == ["x", "y"]
    assert load(tmp_path / "em" / "test" / "s1" / "attributes.json")["transform"]["axes"] == [
        "y",
        "x",
    ]
    four = tmp_path / "four"
    write_image(four, spec_for(4, "uint8", COMPRESSIONS["raw"], "truncated", "noise"))
    group = load(four / "em" / "test" / "attributes.json")
    assert group["axes"] == ["x", "y", "z", "c"]
    assert group["scales"][1] == [2, 2, 2, 1]
    assert group["multiscales"][0]["datasets"][1]["transform"]["axes"] == ["c", "z", "y", "x"]


def test_level_data_is_tiling_independent() -> None:
    rng = np.random.default_rng(0)
    for content in CONTENTS:
        for dtype in ("uint8", "uint64", "float32", "int16"):
            spec = ImageSpec(
                path="x/y", shape=(33, 47, 51), dtype=dtype, block_size=(8, 8, 8), content=content
            )
            for level in range(3):
                whole = level_data(spec, level)
                again = level_data(spec, level)
                np.testing.assert_array_equal(whole, again)
                for _ in range(3):
                    lo = [int(rng.integers(0, s)) for s in whole.shape]
                    hi = [
                        int(rng.integers(a + 1, s + 1))
                        for a, s in zip(lo, whole.shape, strict=True)
                    ]
                    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
                    np.testing.assert_array_equal(level_data(spec, level, box), whole[box])


@pytest.mark.parametrize("content", CONTENTS)
def test_level_data_big_boxes_are_pieced_exactly(content: Any) -> None:
    # 630 000 voxels: computed internally in pieces; must equal row-by-row computation
    spec = ImageSpec(path="a/b", shape=(3, 300, 700), dtype="uint64", content=content)
    whole = level_data(spec, 0)
    for z in range(3):
        for y0 in range(0, 300, 100):
            box = (slice(z, z + 1), slice(y0, y0 + 100), slice(None))
            np.testing.assert_array_equal(level_data(spec, 0, box), whole[box])
    assert level_data(spec, 0, (slice(2, 2), slice(None), slice(None))).shape == (0, 300, 700)


def test_values_are_plausible() -> None:
    em = level_data(ImageSpec(path="em/a", shape=(40, 50, 60)), 0)
    assert em.dtype == np.uint16
    assert em.min() > 10000
    assert len(np.unique(em)) > 1000
    other = level_data(ImageSpec(path="em/a", shape=(40, 50, 60), seed=1), 0)
    assert not np.array_equal(em, other)
    labels = level_data(
        ImageSpec(path="labels/s", shape=(120, 120, 120), dtype="uint64", content="labels", seed=3),
        0,
    )
    ids = np.unique(labels)
    assert ids[0] == 0
    assert 3 <= len(ids) <= 9
    assert ids.max() > 2**32
    assert (labels == 0).mean() > 0.3
    pred = level_data(ImageSpec(path="p", shape=(40, 50, 60), dtype="float32", content="noise"), 0)
    assert pred.dtype == np.float32
    assert len(np.unique(pred)) > 1000


def test_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        ImageSpec(path="a", shape=(4, 4), factors=(2, 2))
    with pytest.raises(ValueError, match="dtype"):
        ImageSpec(path="a", shape=(4, 4, 4), dtype="complex64")
    with pytest.raises(ValueError, match="block_size"):
        ImageSpec(path="a", shape=(4, 4, 4), levels=1, block_size=((4, 4, 4), (2, 2, 2)))
    spec = ImageSpec(path="a", shape=(4, 4, 4), compression={"type": "lz4", "blockSize": 65536})
    with pytest.raises(NotImplementedError, match="lz4"):
        write_image(tmp_path, spec)
    assert not (tmp_path / "a").exists()
    ok = ImageSpec(path="a", shape=(4, 4, 4), levels=1)
    assert hash(ok) == hash(ImageSpec(path="a", shape=(4, 4, 4), levels=1))
    write_image(tmp_path, ok)
    with pytest.raises(FileExistsError):
        write_image(tmp_path, ok)
    write_image(tmp_path, ok, overwrite=True)


def test_gzip_stream_formats(tmp_path: Path) -> None:
    for name, magic in (("gzip", b"\x1f\x8b"), ("gzip-zlib", b"\x78")):
        spec = ImageSpec(
            path=name,
            shape=(8, 8, 8),
            block_size=(8, 8, 8),
            levels=1,
            compression=COMPRESSIONS[name],
        )
        write_image(tmp_path, spec)
        raw = (tmp_path / name / "s0" / "0" / "0" / "0").read_bytes()
        assert raw[16:].startswith(magic)  # RFC 1952 gzip member vs RFC 1950 zlib stream


def test_bounded_memory(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="em/big",
        shape=(96, 200, 200),
        block_size=(32, 32, 32),
        levels=1,
        compression={"type": "raw"},
    )  # 7.7 MB of uint16
    tracemalloc.start()
    try:
        write_image(tmp_path, spec, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000


def test_example_dataset_tiny(tmp_path: Path) -> None:
    images = example_images("tiny")
    assert [im.path for im in images] == [
        "em/fibsem-uint16",
        "em/fibsem-uint8",
        "lm/er_palm",
        "labels/mito_seg",
        "labels/mito_pred",
    ]
    n5_root = write_dataset(tmp_path, "jrc_example-1", images)
    assert n5_root == tmp_path / "jrc_example-1" / "jrc_example-1.n5"
    thumb = (tmp_path / "jrc_example-1" / "thumbnail.jpg").read_bytes()
    assert thumb[:3] == b"\xff\xd8\xff"
    assert thumb[-2:] == b"\xff\xd9"
    total = sum(p.stat().st_size for p in (tmp_path / "jrc_example-1").rglob("*") if p.is_file())
    assert total < 1_000_000
    fib = load(n5_root / "em" / "fibsem-uint16" / "attributes.json")
    assert "order" not in fib["multiscales"][0]["datasets"][0]["transform"]
    assert fib["multiscales"][0]["datasets"][1]["transform"]["translate"] == [2.62, 2.0, 2.0]
    seg = [load(n5_root / "labels" / "mito_seg" / f"s{n}" / "attributes.json") for n in range(2)]
    assert seg[0]["dataType"] == "uint64"
    assert seg[0]["blockSize"] != seg[1]["blockSize"]
    seg_s1 = load(n5_root / "labels" / "mito_seg" / "attributes.json")["multiscales"][0][
        "datasets"
    ][1]
    assert seg_s1["transform"]["translate"] == [2.62, 2.0, 2.0]  # subsampled: same as s0
    palm = load(n5_root / "lm" / "er_palm" / "s0" / "attributes.json")
    assert palm["dataType"] == "float32"
    assert palm["transform"]["order"] == "F"
    assert palm["transform"]["scale"] == [16.0, 16.0, 20.0]
    for spec in images:
        s0 = read_attributes(n5_root / spec.path / "s0")
        assert all(d % b for d, b in zip(s0["dimensions"], s0["blockSize"], strict=True))
        check_roundtrip(n5_root, spec)
    labels = read_n5_array(n5_root / "labels" / "mito_seg" / "s0")
    assert labels.max() > 2**32
    assert len(block_files(n5_root / "labels" / "mito_pred" / "s0")) < int(
        np.prod([-(-s // 16) for s in images[4].shape])
    )


@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
def test_example_shapes_not_divisible(size: Literal["tiny", "small", "medium"]) -> None:
    for spec in example_images(size):
        block = level_block_size(spec, 0)
        assert all(s % b for s, b in zip(spec.shape, block, strict=True)), spec.path


def test_java_blosc_attributes_with_nthreads(tmp_path: Path) -> None:
    """Java n5-blosc writes ``nthreads``; TensorStore's n5 driver rejects that key in
    attributes.json ("Object includes extra members"), so it has to be given the metadata
    itself (``assume_metadata``) without the key. Our reader ignores it."""
    compression = {
        "type": "blosc",
        "cname": "lz4",
        "clevel": 5,
        "shuffle": 1,
        "blocksize": 0,
        "nthreads": 1,
    }
    spec = ImageSpec(
        path="img", shape=(13, 17, 19), block_size=(8, 8, 8), levels=1, compression=compression
    )
    write_image(tmp_path, spec)
    array_dir = tmp_path / "img" / "s0"
    expected = level_data(spec, 0)
    np.testing.assert_array_equal(read_n5_array(array_dir), expected)
    attrs = read_attributes(array_dir)
    clean = {k: v for k, v in attrs["compression"].items() if k != "nthreads"}
    metadata = {k: attrs[k] for k in ("dimensions", "blockSize", "dataType")}
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(array_dir)},
            "metadata": {**metadata, "compression": clean},
        },
        open=True,
        assume_metadata=True,
        read=True,
    ).result()
    np.testing.assert_array_equal(np.asarray(store.read().result()).T, expected)
