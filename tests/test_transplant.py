"""The block-by-block paths (migrate.copy.transplant): moved bytes, and blocks re-encoded one at a
time, read back equal to the source.

One generated N5 dataset holds an image per codec TensorStore reads (raw, gzip, gzip with
``useZlib``, bzip2, xz, blosc, zstd) and edge-block style (truncated as Java writes them, full
size as TensorStore writes them), each with a different dtype and no axis a multiple of the
block size. It is migrated to Zarr v2 (0.4), Zarr v3 (0.5) and sharded Zarr v3, with and
without the fast path, and every array is read back with zarr-python and with TensorStore
and compared with the source decoded by the independent reader in ``tests/n5_reader.py``.
Shapes and boxes are C order (z, y, x).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
import zarr
from click.testing import CliRunner

from migrate.cli import cli
from migrate.copy import transplant
from migrate.copy.transplant import _any, assemble_shard, isal_level
from migrate.example.fixture import ImageSpec, encode_block, level_block_size, write_dataset
from tests.n5_reader import read_block_header, read_n5_array

COMPRESSIONS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (N5 compression the blocks are written with, dtype)
    "raw": ({"type": "raw"}, "int16"),
    "gzip": ({"type": "gzip", "level": 1}, "uint16"),
    "zlib": ({"type": "gzip", "level": 1, "useZlib": True}, "uint32"),
    "bzip2": ({"type": "bzip2", "blockSize": 1}, "uint8"),
    "xz": ({"type": "xz", "preset": 1}, "int8"),
    "blosc": ({"type": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 1}, "float32"),
    "zstd": ({"type": "zstd", "level": 1}, "uint64"),
}
DECLARED = {"level": -1, "blockSize": 9, "clevel": 5, "preset": 6}
"""What ``attributes.json`` then declares instead (N5 readers need only the type), so that
a block re-encoded with the declared settings differs from the moved bytes: the fast path
cannot fall back silently. Raw blocks read the same either way."""
EDGES = ("truncated", "full")
SHAPE = (20, 27, 35)  # C order; no axis a multiple of the block
BLOCK = (8, 8, 16)
SHARD = "16,16,32"
MODES = {
    "v2": ("--ngff-version", "0.4"),
    "v3": ("--ngff-version", "0.5"),
    "v3-sharded": ("--ngff-version", "0.5", "--shard", SHARD),
}
TRANSPLANTED = {  # codecs whose blocks each mode moves as bytes
    "v2": set(COMPRESSIONS) - {"xz", "bzip2"},  # bz2: Neuroglancer does not read it
    "v3": {"raw", "gzip", "blosc", "zstd"},
    "v3-sharded": {"raw", "gzip", "blosc", "zstd"},
}


def image_path(codec: str, edge: str) -> str:
    return f"em/{codec}-{edge}"


def specs() -> list[ImageSpec]:
    return [
        ImageSpec(
            path=image_path(codec, edge),
            shape=SHAPE,
            dtype=dtype,
            block_size=BLOCK,
            levels=2,
            compression=compression,
            edge_blocks=edge,  # type: ignore[arg-type]
            content="gradient",
            seed=7,
        )
        for codec, (compression, dtype) in COMPRESSIONS.items()
        for edge in EDGES
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The N5 root of the test dataset (written once for the module)."""
    root = write_dataset(tmp_path_factory.mktemp("transplant"), "jrc_transplant-1", specs())
    for attributes in root.glob("em/*/s*/attributes.json"):
        attrs = json.loads(attributes.read_text())
        compression = attrs["compression"]
        if compression["type"] == "zstd":
            compression["level"] = 3
        else:
            compression.update({k: v for k, v in DECLARED.items() if k in compression})
        attributes.write_text(json.dumps(attrs))
    return root


def convert(src: Path, dest: Path, *options: str) -> Any:
    """Run ``cellmap-migrate convert --json`` in process; returns (exit code, output)."""
    result = CliRunner().invoke(
        cli, ["convert", str(src), str(dest), "--json", *options], catch_exceptions=False
    )
    return result.exit_code, result.output


def read_back(dest: Path, array: str, version: str) -> tuple[np.ndarray[Any, Any], ...]:
    """The array at ``dest/array`` read with zarr-python and with TensorStore."""
    with_zarr = zarr.open_array(str(dest / array), mode="r")[...]
    driver = "zarr" if version == "v2" else "zarr3"
    store = ts.open(
        {"driver": driver, "kvstore": {"driver": "file", "path": str(dest / array) + "/"}},
        open=True,
        read=True,
    ).result()
    return np.asarray(with_zarr), store.read().result()


def every_array() -> list[str]:
    return [f"{image_path(c, e)}/s{n}" for c in COMPRESSIONS for e in EDGES for n in (0, 1)]


@pytest.fixture(scope="module")
def expected(dataset: Path) -> dict[str, np.ndarray[Any, Any]]:
    return {array: read_n5_array(dataset / array) for array in every_array()}


def n5_payload(n5_array: Path, position_c: tuple[int, ...]) -> bytes:
    """The payload (block bytes after the header) of the N5 block at C-order ``position_c``."""
    block = n5_array.joinpath(*(str(i) for i in reversed(position_c)))
    return block.read_bytes()[read_block_header(block).size :]


def stored_chunk(dest: Path, array: str, version: str, position: tuple[int, ...]) -> bytes:
    """The stored bytes of the chunk at C-order grid ``position`` (inner chunk of its shard
    for sharded output, located through the shard index)."""
    root = dest / array
    if version == "v2":
        return root.joinpath(*map(str, position)).read_bytes()
    if version == "v3":
        return root.joinpath("c", *map(str, position)).read_bytes()
    shard_shape = [int(s) for s in SHARD.split(",")]
    per_shard = [s // b for s, b in zip(shard_shape, BLOCK, strict=True)]
    shard = [p // n for p, n in zip(position, per_shard, strict=True)]
    inner = [p % n for p, n in zip(position, per_shard, strict=True)]
    data = root.joinpath("c", *map(str, shard)).read_bytes()
    count = int(np.prod(per_shard))
    index = np.frombuffer(data[-(16 * count + 4) : -4], dtype="<u8").reshape(count, 2)
    offset, nbytes = index[int(np.ravel_multi_index(inner, per_shard))]
    return data[int(offset) : int(offset + nbytes)]


def convert_both_ways(
    dataset: Path,
    expected: dict[str, np.ndarray[Any, Any]],
    tmp_path: Path,
    mode: str,
    *options: str,
) -> tuple[Path, Path]:
    """Convert with ``options`` block by block (fast) and with ``--no-transplant`` (slow);
    every array of both reads back (zarr-python and TensorStore) equal to ``expected``."""
    fast, slow = tmp_path / "fast.zarr", tmp_path / "slow.zarr"
    code, output = convert(dataset, fast, *options)
    assert code == 0, output
    code, output = convert(dataset, slow, *options, "--no-transplant")
    assert code == 0, output
    for array in every_array():
        for dest in (fast, slow):
            for got in read_back(dest, array, mode):
                np.testing.assert_array_equal(got, expected[array], err_msg=f"{dest}/{array}")
    return fast, slow


@pytest.mark.parametrize("mode", list(MODES))
def test_transplanted_output_reads_back_equal(
    dataset: Path, expected: dict[str, np.ndarray[Any, Any]], tmp_path: Path, mode: str
) -> None:
    fast, slow = convert_both_ways(dataset, expected, tmp_path, mode, *MODES[mode])
    # The fast path really moved bytes: an interior (full-size) chunk is the N5 payload.
    for codec in COMPRESSIONS:
        for edge in EDGES:
            array = f"{image_path(codec, edge)}/s0"
            moved = stored_chunk(fast, array, mode, (1, 1, 1)) == n5_payload(
                dataset / array, (1, 1, 1)
            )
            assert moved == (codec in TRANSPLANTED[mode] or codec == "raw"), f"{mode} {array}"
            assert (
                stored_chunk(slow, array, mode, (1, 1, 1)) != n5_payload(dataset / array, (1, 1, 1))
                or codec == "raw"
            ), f"{mode} {array} re-encoded"
            if edge == "full" and codec in TRANSPLANTED[mode]:  # full-size edge blocks too
                assert stored_chunk(fast, array, mode, (2, 3, 2)) == n5_payload(
                    dataset / array, (2, 3, 2)
                )


@pytest.mark.parametrize("choice", ["zstd", "gzip", "blosc"])
@pytest.mark.parametrize("mode", list(MODES))
def test_reencoded_block_by_block_reads_back_equal(
    dataset: Path,
    expected: dict[str, np.ndarray[Any, Any]],
    tmp_path: Path,
    mode: str,
    choice: str,
) -> None:
    """``--codec`` other than the source's: every block is decoded and re-encoded one at a
    time (little-endian output), or through TensorStore with ``--no-transplant``; both read
    back equal to the source."""
    options = (*MODES[mode], "--codec", choice, "--unit-mib", "0.001")
    fast, slow = convert_both_ways(dataset, expected, tmp_path, mode, *options)
    for codec in COMPRESSIONS:
        array = f"{image_path(codec, 'truncated')}/s0"
        fast_chunk = stored_chunk(fast, array, mode, (1, 1, 1))
        kept = codec == choice and codec in TRANSPLANTED[mode]
        assert (fast_chunk == n5_payload(dataset / array, (1, 1, 1))) == kept, array
        if choice == "gzip" and not kept:  # ISA-L here, zlib in TensorStore: other bytes
            assert fast_chunk != stored_chunk(slow, array, mode, (1, 1, 1)), array


@pytest.mark.parametrize("mode", ["v2", "v3-sharded"])
def test_skip_decode_check_and_many_units(
    dataset: Path, expected: dict[str, np.ndarray[Any, Any]], tmp_path: Path, mode: str
) -> None:
    dest = tmp_path / "out.zarr"
    code, output = convert(
        dataset, dest, *MODES[mode], "--skip-decode-check", "--unit-mib", "0.001"
    )
    assert code == 0, output
    for array in every_array():
        for got in read_back(dest, array, mode):
            np.testing.assert_array_equal(got, expected[array], err_msg=array)
    array = f"{image_path('gzip', 'truncated')}/s0"
    assert stored_chunk(dest, array, mode, (0, 2, 1)) == n5_payload(dataset / array, (0, 2, 1))


def test_any_kvstore_path(
    dataset: Path,
    expected: dict[str, np.ndarray[Any, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stores that are not local directories (S3) move the bytes through TensorStore's
    kvstore layer: the same output."""

    class NoLocalStores:
        pass

    monkeypatch.setattr(transplant, "LocalStore", NoLocalStores)
    for mode, codec in (("v2", "keep"), ("v3-sharded", "keep"), ("v3", "gzip")):
        dest = tmp_path / f"{mode}-{codec}.zarr"
        code, output = convert(dataset, dest, *MODES[mode], "--codec", codec, "--unit-mib", "0.001")
        assert code == 0, output
        for array in every_array():
            for got in read_back(dest, array, mode):
                np.testing.assert_array_equal(got, expected[array], err_msg=array)
        array = f"{image_path('zstd', 'full')}/s0"
        moved = stored_chunk(dest, array, mode, (2, 3, 2)) == n5_payload(dataset / array, (2, 3, 2))
        assert moved == (codec == "keep")


def test_without_copy_file_range(
    dataset: Path,
    expected: dict[str, np.ndarray[Any, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernel cannot copy between the two files (another file system, an old
    kernel), payloads are copied through a buffer."""

    def refuse(*args: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    for mode in ("v2", "v3-sharded"):
        dest = tmp_path / f"{mode}.zarr"
        code, output = convert(dataset, dest, *MODES[mode], "--skip-decode-check")
        assert code == 0, output
        for array in every_array():
            np.testing.assert_array_equal(read_back(dest, array, mode)[0], expected[array])


def copy_image(dataset: Path, tmp_path: Path, codec: str, edge: str = "truncated") -> Path:
    """A dataset holding only one image of ``dataset`` (to corrupt it); its N5 root."""
    root = tmp_path / "one" / "jrc_one-1.n5"
    shutil.copytree(dataset / image_path(codec, edge), root / image_path(codec, edge))
    (root / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    (root / "em").mkdir(exist_ok=True)
    (root / "em" / "attributes.json").write_text("{}")
    return root


@pytest.mark.parametrize("codec", ["gzip", "zstd", "blosc"])
def test_corrupt_block_is_reported_with_its_key(dataset: Path, tmp_path: Path, codec: str) -> None:
    root = copy_image(dataset, tmp_path, codec)
    block = root / image_path(codec, "truncated") / "s0" / "1" / "2" / "1"  # x/y/z, full size
    raw = block.read_bytes()
    header = read_block_header(block).size
    block.write_bytes(raw[:header] + bytes(b ^ 0x5A for b in raw[header : header + 64]))
    code, output = convert(root, tmp_path / "out.zarr")
    assert code != 0
    assert f"{image_path(codec, 'truncated')}/s0/1/2/1" in output
    # --no-transplant reports the same block
    code, output = convert(root, tmp_path / "slow.zarr", "--no-transplant")
    assert code != 0
    assert f"{image_path(codec, 'truncated')}/s0/1/2/1" in output


def test_bad_blocks_are_reported_even_without_the_decode_check(
    dataset: Path, tmp_path: Path
) -> None:
    root = copy_image(dataset, tmp_path, "gzip")
    s0 = root / image_path("gzip", "truncated") / "s0"
    edge = s0 / "2" / "3" / "2"  # truncated in every axis: always decoded
    raw = edge.read_bytes()
    edge.write_bytes(raw[: len(raw) // 2])
    header = s0 / "0" / "0" / "0"
    raw = header.read_bytes()
    header.write_bytes(struct.pack(">HH", 0, 2) + raw[4:])  # 2 dims in a 3-D array
    for mode in ("v2", "v3-sharded"):
        code, output = convert(root, tmp_path / f"{mode}.zarr", *MODES[mode], "--skip-decode-check")
        assert code != 0
        assert f"{image_path('gzip', 'truncated')}/s0/2/3/2" in output
        assert f"{image_path('gzip', 'truncated')}/s0/0/0/0" in output
        assert "2 dimensions" in output


@pytest.mark.parametrize("codec", ["keep", "zstd"])
@pytest.mark.parametrize("mode", ["v2", "v3-sharded"])
def test_all_zero_blocks_are_not_stored(
    dataset: Path, tmp_path: Path, mode: str, codec: str
) -> None:
    root = copy_image(dataset, tmp_path, "gzip")
    s0 = root / image_path("gzip", "truncated") / "s0"
    compression = COMPRESSIONS["gzip"][0]
    (s0 / "0" / "0" / "0").write_bytes(encode_block(np.zeros(BLOCK, "uint16"), compression))
    edge_shape = tuple(n - p * b for n, p, b in zip(SHAPE, (2, 3, 2), BLOCK, strict=True))
    (s0 / "2" / "3" / "2").write_bytes(encode_block(np.zeros(edge_shape, "uint16"), compression))
    dest = tmp_path / "out.zarr"
    code, output = convert(root, dest, *MODES[mode], "--codec", codec)
    assert code == 0, output
    array = dest / image_path("gzip", "truncated") / "s0"
    if mode == "v2":
        assert not (array / "0" / "0" / "0").exists()
        assert not (array / "2" / "3" / "2").exists()
        assert (array / "0" / "0" / "1").exists()
    else:
        data = (array / "c" / "0" / "0" / "0").read_bytes()
        index = np.frombuffer(data[-(16 * 8 + 4) : -4], dtype="<u8").reshape(8, 2)
        assert (index[0] == 2**64 - 1).all()  # inner chunk (0, 0, 0) absent
        assert not (index[1] == 2**64 - 1).all()
    np.testing.assert_array_equal(zarr.open_array(str(array), mode="r")[...], read_n5_array(s0))


def test_shard_without_blocks_is_not_stored(dataset: Path, tmp_path: Path) -> None:
    """Sharded output without the decode check: a shard whose source blocks are all absent
    is not written, and the array still reads back equal to the source."""
    root = copy_image(dataset, tmp_path, "gzip")
    s0 = root / image_path("gzip", "truncated") / "s0"
    for z in range(2):  # the first shard: blocks (z, y, x) in 0..1 x 0..1 x 0..1
        for y in range(2):
            for x in range(2):
                (s0 / str(x) / str(y) / str(z)).unlink()
    dest = tmp_path / "out.zarr"
    code, output = convert(root, dest, *MODES["v3-sharded"], "--skip-decode-check")
    assert code == 0, output
    array = dest / image_path("gzip", "truncated") / "s0"
    assert not (array / "c" / "0" / "0" / "0").exists()
    assert (array / "c" / "0" / "0" / "1").exists()
    expected = read_n5_array(s0)
    assert not expected[:16, :16, :32].any()
    for got in read_back(dest, f"{image_path('gzip', 'truncated')}/s0", "v3-sharded"):
        np.testing.assert_array_equal(got, expected)


def test_shard_layout() -> None:
    parts = assemble_shard([None, [b"abc"], None, [b"de", b"f"]])
    data = b"".join(parts)
    index = np.frombuffer(data[-(16 * 4 + 4) : -4], dtype="<u8").reshape(4, 2)
    assert data[:6] == b"abcdef"
    assert index.tolist() == [[2**64 - 1] * 2, [0, 3], [2**64 - 1] * 2, [3, 3]]
    import google_crc32c

    assert struct.unpack("<I", data[-4:])[0] == google_crc32c.value(data[-(16 * 4 + 4) : -4])


def test_isal_levels() -> None:
    assert [isal_level(level) for level in range(7)] == [0, 1, 1, 1, 2, 2, 2]
    assert level_block_size(specs()[0], 1) == BLOCK


@pytest.mark.parametrize("size", [0, 7, 4096, 4103, 2**19])
def test_any_nonzero_byte(size: int) -> None:
    data = bytearray(size)
    assert not _any(bytes(data))
    for where in {0, size // 2, size - 1} if size else set():
        data[where] = 1
        assert _any(bytes(data)), where
        data[where] = 0
