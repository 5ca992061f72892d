"""End-to-end `convert`, `status` and `verify` on generated datasets, read back independently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import ome_zarr_models.v04
import ome_zarr_models.v05
import pytest
import tensorstore as ts
import zarr

from migrate.example.fixture import (
    ImageSpec,
    example_images,
    level_data,
    write_dataset,
    write_image,
)
from tests.helpers import (
    chunk_files,
    corrupt,
    output_snapshot,
    read_zarr,
    run_cli,
    run_state,
    snapshot,
)
from tests.n5_reader import read_n5_array

VERSIONS = [
    pytest.param(("0.4", None), id="v0.4"),
    pytest.param(("0.5", None), id="v0.5"),
    pytest.param(("0.5", "32,32,32"), id="v0.5-sharded"),
]

SPECS = [
    ImageSpec(
        path="em/fibsem-uint16",
        shape=(37, 50, 61),
        dtype="uint16",
        block_size=(16, 16, 16),
        compression={"type": "gzip", "level": -1},
        edge_blocks="truncated",
    ),
    ImageSpec(
        path="em/fibsem-uint8",
        shape=(30, 41, 33),
        dtype="uint8",
        block_size=(16, 16, 16),
        compression={"type": "gzip", "level": 4, "useZlib": True},
        edge_blocks="full",
    ),
    ImageSpec(
        path="em/raw-int16",
        shape=(20, 21, 22),
        dtype="int16",
        block_size=(8, 16, 16),
        compression={"type": "raw"},
        edge_blocks="truncated",
        levels=2,
    ),
    ImageSpec(
        path="lm/er_palm",
        shape=(13, 19, 20),
        dtype="float32",
        block_size=(8, 8, 8),
        compression={"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1, "blocksize": 0},
        levels=2,
        voxel_size=(20.0, 16.0, 16.0),
        cosem_order="F",
        metadata="cosem",
    ),
    ImageSpec(
        path="lm/deconv",
        shape=(12, 17, 19),
        dtype="float64",
        block_size=(8, 8, 8),
        compression={"type": "xz", "preset": 1},
        levels=2,
        metadata="neuroglancer",
    ),
    ImageSpec(
        path="lm/b2",
        shape=(12, 17, 19),
        dtype="uint32",
        block_size=(8, 8, 8),
        compression={"type": "bzip2", "blockSize": 9},
        levels=2,
        edge_blocks="full",
    ),
    ImageSpec(
        path="labels/mito_seg",
        shape=(19, 25, 31),
        dtype="uint64",
        content="labels",
        block_size=((16, 16, 16), (8, 8, 8)),
        levels=2,
        downsampling="subsample",
        compression={"type": "zstd", "level": 3},
    ),
    ImageSpec(
        path="labels/er_seg",
        shape=(19, 25, 31),
        dtype="int8",
        content="sparse",
        block_size=(8, 8, 8),
        levels=2,
        downsampling="subsample",
    ),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("src"), "jrc_matrix-1", SPECS)


def check_output(n5: Path, zarr_root: Path, version: str) -> None:
    """Every level equals the source decoded by our own N5 reader; metadata validates."""
    for spec in SPECS:
        for level in range(spec.levels):
            expected = read_n5_array(n5 / spec.path / f"s{level}")
            np.testing.assert_array_equal(expected, level_data(spec, level))  # reader sanity
            got = read_zarr(zarr_root / spec.path / f"s{level}")
            assert got.dtype == expected.dtype, (spec.path, level)
            np.testing.assert_array_equal(got, expected, err_msg=f"{spec.path}/s{level}")
        group = zarr.open_group(str(zarr_root / spec.path), mode="r")
        label = spec.path.endswith("_seg")
        models: Any = ome_zarr_models.v04 if version == "0.4" else ome_zarr_models.v05
        (models.ImageLabel if label else models.Image).from_zarr(group)
        attrs: Any = group.attrs.asdict()
        ome = attrs["ome"] if version == "0.5" else attrs
        assert ("image-label" in ome) == label
        for axis in ome["multiscales"][0]["axes"]:
            assert axis["unit"] in {"nanometer"}, axis
    labels: Any = zarr.open_group(str(zarr_root / "labels"), mode="r").attrs.asdict()
    listed = labels["labels"] if version == "0.4" else labels["ome"]["labels"]
    assert listed == ["er_seg", "mito_seg"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", VERSIONS)
def test_convert_matrix(source: Path, tmp_path: Path, layout: tuple[str, str | None]) -> None:
    version, shard = layout
    dest = tmp_path / "out.zarr"
    before = snapshot(source.parent)
    args = ["convert", str(source), str(dest), "--ngff-version", version, "--workers", "2"]
    if shard:
        args += ["--shard", shard]
    run = run_cli(*args)
    assert run.exit_code == 0, run.stderr
    check_output(source, dest, version)
    assert run_cli("verify", str(source), str(dest)).exit_code == 0
    assert run_cli("status", str(dest)).exit_code == 0
    assert snapshot(source.parent) == before, "the source tree changed"
    if version == "0.5":
        meta = json.loads((dest / "em/fibsem-uint16/s0/zarr.json").read_text())
        assert meta["dimension_names"] == ["z", "y", "x"]
        if shard:
            assert meta["codecs"][0]["name"] == "sharding_indexed"
            # the same data through TensorStore's own zarr3 driver
            array = ts.open(
                {
                    "driver": "zarr3",
                    "kvstore": {"driver": "file", "path": str(dest / "em/fibsem-uint16/s0")},
                }
            ).result()
            np.testing.assert_array_equal(array.read().result(), level_data(SPECS[0], 0))


def test_ome_zarr_reader_reads_the_output(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    assert run_cli("convert", str(n5)).exit_code == 0
    location = parse_url(str(n5.with_suffix(".zarr") / "em" / "fibsem-uint16"))
    assert location is not None
    nodes = list(Reader(location)())
    data = nodes[0].data
    assert len(data) == 3
    spec = example_images("tiny")[0]
    np.testing.assert_array_equal(np.asarray(data[1]).astype("=u2"), level_data(spec, 1))


def test_rerun_of_finished_migration_writes_nothing(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    before = output_snapshot(dest)
    run = run_cli("convert", str(n5))
    assert run.exit_code == 0
    assert "already complete" in run.stdout
    assert output_snapshot(dest) == before
    # the resume records are gone; the ledger stays in the hidden state folder, which Zarr
    # readers do not take for a node (zarr-python's members() says so in a warning)
    assert run_state(dest) == []  # the ledger alone is left
    assert zarr.open_array(str(dest / "em/fibsem-uint16/s0"), mode="r").shape == (37, 50, 61)
    with pytest.warns(UserWarning, match=r"Object at \.cellmap-migrate is not recognized"):
        members = dict(zarr.open_group(str(dest), mode="r").members(max_depth=None))
    assert "em/fibsem-uint16/s0" in members
    assert not any(name.startswith(".cellmap-migrate") for name in members)


def test_records_left_by_a_kill_after_finalizing_are_removed(tmp_path: Path) -> None:
    """Killed after an image's completion mark was written but before its resume records
    were deleted: the next run finds the image complete and removes the records."""
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    before = output_snapshot(dest)
    leftover = dest / ".cellmap-migrate" / "images" / "em" / "fibsem-uint16" / "plan.json"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{}")
    run = run_cli("convert", str(n5))
    assert run.exit_code == 0, run.stderr
    assert "already complete" in run.stdout
    assert run_state(dest) == []  # the ledger alone is left
    assert output_snapshot(dest) == before


def test_empty_blocks_write_no_chunks(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="labels/sparse_seg",
        shape=(64, 64, 64),
        dtype="uint8",
        content="sparse",
        block_size=(16, 16, 16),
        levels=1,
    )
    n5 = tmp_path / "jrc_sparse" / "jrc_sparse.n5"
    write_image(n5, spec)
    source_blocks = [
        p for p in (n5 / spec.path / "s0").rglob("*") if p.is_file() and p.name != "attributes.json"
    ]
    assert 0 < len(source_blocks) < 64
    assert run_cli("convert", str(n5), "--no-transplant").exit_code == 0
    chunks = chunk_files(n5.with_suffix(".zarr"))
    assert len(chunks) == len(source_blocks)


def test_other_settings_over_existing_output_are_refused(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    before = output_snapshot(dest)
    run = run_cli("convert", str(n5), "--codec", "zstd")
    assert run.exit_code == 1
    assert "written with other settings" in run.stderr
    assert 's0/.zarray: compressor {"id":"gzip","level":6} → {"id":"zstd","level":3}' in run.stderr
    assert output_snapshot(dest) == before
    run = run_cli("convert", str(n5), "--codec", "zstd", "--overwrite")
    assert run.exit_code == 0, run.stderr
    meta = json.loads((dest / "em/fibsem-uint16/s0/.zarray").read_text())
    assert meta["compressor"]["id"] == "zstd"
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0


def test_foreign_data_at_dest_is_not_clobbered(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    precious = n5.with_suffix(".zarr") / "em" / "fibsem-uint16" / "notes.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("mine")
    run = run_cli("convert", str(n5))
    assert run.exit_code == 1
    assert "not written by cellmap-migrate" in run.stderr
    assert precious.read_text() == "mine"


def test_verify_detects_one_flipped_voxel(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    array = zarr.open_array(str(dest / "em/fibsem-uint16/s1"), mode="r+")
    value: Any = array[5, 6, 7]
    array[5, 6, 7] = value + 1
    run = run_cli("verify", str(n5), str(dest))
    assert run.exit_code == 1
    assert "em/fibsem-uint16/s1: 1 voxel(s) differ in box [5:6, 6:7, 7:8]" in run.stdout


def test_verify_detects_broken_metadata(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    path = dest / "em/fibsem-uint8/.zattrs"
    attrs = json.loads(path.read_text())
    attrs["multiscales"][0]["axes"][0]["unit"] = "nm"
    path.write_text(json.dumps(attrs))
    run = run_cli("verify", str(n5), str(dest))
    assert run.exit_code == 1
    assert "em/fibsem-uint8: axis 'z' unit 'nm' is not an OME-NGFF unit" in run.stdout


def test_verify_sample(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    full = run_cli("verify", str(n5), str(dest), "--json")
    sample = run_cli("verify", str(n5), str(dest), "--json", "--sample", "0.2", "--seed", "1")
    assert full.exit_code == sample.exit_code == 0
    assert sample.json["units_checked"] > 0
    assert 0 < sample.json["bytes_compared"] < 0.5 * full.json["bytes_compared"]


def test_corrupt_block_is_reported_and_the_rest_completes(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    block = n5 / "em/fibsem-uint16/s0/1/1/1"
    original = corrupt(block)
    run = run_cli("convert", str(n5), "--unit-mib", "0.01")
    assert run.exit_code == 1
    assert "em/fibsem-uint16/s0/1/1/1" in run.stderr
    assert "Traceback" not in run.stderr
    status = run_cli("status", str(dest), "--json")
    assert status.exit_code == 1
    by_image = {image["image"]: image for image in status.json}
    assert not by_image["em/fibsem-uint16"]["complete"]
    s0 = by_image["em/fibsem-uint16"]["levels"][0]
    assert s0["units_done"] == s0["units_total"] - 1
    assert by_image["em/fibsem-uint8"]["complete"]
    # the unfinished image is not advertised as an OME-NGFF image
    assert not (dest / "em/fibsem-uint16/.zattrs").exists()
    block.write_bytes(original)
    run = run_cli("convert", str(n5), "--unit-mib", "0.01")
    assert run.exit_code == 0, run.stderr
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0


def test_status_of_nothing(tmp_path: Path) -> None:
    run = run_cli("status", str(tmp_path))
    assert run.exit_code == 1
    assert "no cellmap-migrate output" in run.stderr


def test_json_progress_lines(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))
    run = run_cli("convert", str(n5), "--json")
    assert run.exit_code == 0
    events = [json.loads(line) for line in run.stderr.splitlines()]
    assert {e["event"] for e in events} >= {"start", "done"}
    result = run.json
    assert result["complete"] is True
    assert len(result["images"]) == 5


def test_demo_runs_the_whole_job(tmp_path: Path) -> None:
    run = run_cli("demo", str(tmp_path / "demo"), "--size", "tiny")
    assert run.exit_code == 0, run.stderr
    assert "--- /dev/null" in run.stdout  # the dry run's diff
    assert "verified 5 image(s)" in run.stdout
    assert ": OK" in run.stdout
    again = run_cli("demo", str(tmp_path / "demo"), "--size", "tiny")
    assert again.exit_code == 0, again.stderr
    assert "metadata: no changes" in again.stdout
    assert "already complete" in again.stdout


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_group_keeps_labels_from_earlier_runs(
    source: Path, tmp_path: Path, version: str
) -> None:
    dest = tmp_path / "out.zarr"
    for name in ("mito_seg", "er_seg"):
        run = run_cli(
            "convert", str(source / "labels" / name), str(dest), "--ngff-version", version
        )
        assert run.exit_code == 0, run.stderr
    labels: Any = zarr.open_group(str(dest / "labels"), mode="r").attrs.asdict()
    listed = labels["labels"] if version == "0.4" else labels["ome"]["labels"]
    assert listed == ["er_seg", "mito_seg"]
    again = run_cli(
        "convert",
        str(source / "labels" / "mito_seg"),
        str(dest),
        "--ngff-version",
        version,
        "--dry-run",
    )
    assert "metadata: no changes" in again.stdout
