"""Neuroglancer precomputed volumes migrate into the same ``<dataset>.zarr`` as the N5 images,
aligned with them: every stored scale one level, JPEG decoded and written losslessly,
compressed_segmentation as a label image, sharded volumes, any ``voxel_offset``.

The source volumes are written by TensorStore (:mod:`migrate.example.precomputed`) from the
levels of the dataset's own N5 EM, so the test knows which voxels must coincide; outputs are
read back with zarr-python, world coordinates are computed here from the OME metadata on
disk, and JPEG is compared with TensorStore's decode of the source.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import ome_zarr_models.v04
import pytest
import zarr

from migrate.example.fixture import ImageSpec, write_dataset
from migrate.example.precomputed import (
    read_scale,
    sharding,
    volume_of_image,
    write_volume,
)
from tests.helpers import output_snapshot, read_zarr, run_cli, snapshot

NAME = "jrc_pc-1"
EM = ImageSpec(
    path="em/fibsem-uint16", shape=(37, 50, 61), dtype="uint16", block_size=(16, 16, 16),
    levels=3, content="gradient", seed=1,
)  # fmt: skip
EM8 = ImageSpec(
    path="em/x", shape=(37, 50, 61), dtype="uint8", levels=3, content="gradient", seed=1
)
LABELS = ImageSpec(
    path="labels/x", shape=(19, 25, 31), dtype="uint64", levels=3, content="labels", seed=3,
    voxel_size=(10.48, 8.0, 8.0), downsampling="subsample",
)  # fmt: skip
CROP = ((4, 8, 12), (13, 19, 25))
"""A box of the EM (offset, size; C order): odd extents, offsets divisible by 4 (3 scales)."""

RAW = "neuroglancer/em/fibsem-raw.precomputed"
JPEG = "neuroglancer/em/fibsem-uint8.precomputed"
CROPPED = "neuroglancer/em/crop-uint16.precomputed"
SHARDED = "neuroglancer/em/sharded-uint16.precomputed"
SEG = "neuroglancer/labels/cells_seg.precomputed"

VOLUMES = {
    RAW: volume_of_image(EM, RAW, chunk=(8, 16, 32)),
    JPEG: volume_of_image(EM8, JPEG, encoding="jpeg", chunk=(16, 32, 32)),
    CROPPED: volume_of_image(EM, CROPPED, crop=CROP, chunk=(8, 8, 8)),
    SHARDED: volume_of_image(EM, SHARDED, chunk=(8, 8, 8), sharded=sharding(2, 1)),
    SEG: volume_of_image(
        LABELS, SEG, encoding="compressed_segmentation", type="segmentation", chunk=(8, 8, 8)
    ),
}
IMAGE_PATHS = {
    RAW: "em/fibsem-raw",
    JPEG: "em/fibsem-uint8",
    CROPPED: "em/crop-uint16",
    SHARDED: "em/sharded-uint16",
    SEG: "labels/cells_seg",
}


def write_pc_dataset(root: Path, volumes: dict[str, Any] | None = None) -> Path:
    """The dataset folder: ``<name>.n5`` with the EM, and the precomputed volumes."""
    n5 = write_dataset(root, NAME, [EM])
    for spec in (volumes or VOLUMES).values():
        write_volume(n5.parent, spec)
    return n5.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pc_dataset(tmp_path_factory.mktemp("pc"))


@pytest.fixture(scope="module")
def converted(dataset: Path) -> Path:
    run = run_cli("convert", str(dataset))
    assert run.exit_code == 0, run.stderr
    return dataset / f"{NAME}.zarr"


def ome_transforms(image: Path) -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """(scale, translation) per level, C order, read from the image's ``.zattrs`` on disk."""
    attrs = json.loads((image / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    out = []
    for dataset in multiscale["datasets"]:
        found = {t["type"]: t for t in dataset["coordinateTransformations"]}
        out.append(
            (np.array(found["scale"]["scale"]), np.array(found["translation"]["translation"]))
        )
    return out


# --------------------------------------------------------------------------------------
# The fixture writer itself
# --------------------------------------------------------------------------------------


def test_fixture_volumes_hold_what_they_were_given(dataset: Path) -> None:
    for path, spec in VOLUMES.items():
        info = json.loads((dataset / path / "info").read_text())
        assert len(info["scales"]) == 3
        for index, scale in enumerate(spec.scales):
            assert info["scales"][index]["voxel_offset"] == list(reversed(scale.voxel_offset))
            if scale.encoding != "jpeg":
                np.testing.assert_array_equal(read_scale(dataset / path, index), scale.data)
    assert any((dataset / SHARDED).rglob("*.shard"))
    assert json.loads((dataset / JPEG / "info").read_text())["scales"][0]["encoding"] == "jpeg"


# --------------------------------------------------------------------------------------
# convert <dataset>: both kinds into one <dataset>.zarr
# --------------------------------------------------------------------------------------


def test_every_level_equals_tensorstores_read_of_the_scale(dataset: Path, converted: Path) -> None:
    for path, spec in VOLUMES.items():
        image = converted / IMAGE_PATHS[path]
        for index, scale in enumerate(spec.scales):
            got = read_zarr(image / f"s{index}")
            decoded = read_scale(dataset / path, index)  # TensorStore's decode of the source
            assert got.dtype == decoded.dtype, (path, index)
            np.testing.assert_array_equal(got, decoded, err_msg=f"{path} s{index}")
            if scale.encoding != "jpeg":  # lossless: the very voxels the volume was made of
                np.testing.assert_array_equal(got, scale.data)
            zarray = json.loads((image / f"s{index}" / ".zarray").read_text())
            assert zarray["chunks"] == list(scale.chunk)  # the stored chunks, by default
        assert not (image / "s3").exists()  # stored scales only: no re-downsampling


def test_jpeg_is_lossy_and_still_written_as_decoded(dataset: Path, converted: Path) -> None:
    """The control of the test above for JPEG: the decoded values are not the originals
    (so comparing with the decode is the only right check), and the output codec is a
    lossless one."""
    original = VOLUMES[JPEG].scales[0].data
    assert not np.array_equal(read_scale(dataset / JPEG, 0), original)
    zarray = json.loads((converted / "em/fibsem-uint8/s0/.zarray").read_text())
    assert zarray["compressor"]["id"] == "zstd"


def world_index(
    index: np.ndarray[Any, Any],
    frm: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    to: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> np.ndarray[Any, Any]:
    """Voxel ``index`` (C order) of one image placed in another's voxel grid through world
    coordinates (centre = translation + index × scale); asserts it lands on a voxel."""
    world = frm[1] + index * frm[0]
    other = (world - to[1]) / to[0]
    rounded = np.rint(other)
    np.testing.assert_allclose(other, rounded, atol=1e-9)
    found: np.ndarray[Any, Any] = rounded.astype(int)
    return found


@pytest.mark.parametrize("path", [RAW, SHARDED, CROPPED])
def test_em_images_coincide_voxel_for_voxel_in_world_coordinates(
    converted: Path, path: str
) -> None:
    """At every level, each voxel of the precomputed-derived image sits, by the written OME
    metadata, on the N5-derived EM voxel holding the same value."""
    n5_image = converted / EM.path
    pc_image = converted / IMAGE_PATHS[path]
    for level, (em_t, pc_t) in enumerate(
        zip(ome_transforms(n5_image), ome_transforms(pc_image), strict=True)
    ):
        np.testing.assert_allclose(pc_t[0], em_t[0], rtol=1e-12)  # same voxel size
        pc = read_zarr(pc_image / f"s{level}")
        em = read_zarr(n5_image / f"s{level}")
        corner = world_index(np.zeros(3), pc_t, em_t)  # where the first voxel lands
        far = world_index(np.array(pc.shape) - 1, pc_t, em_t)  # and the last
        np.testing.assert_array_equal(far - corner, np.array(pc.shape) - 1)
        box = tuple(slice(int(a), int(b) + 1) for a, b in zip(corner, far, strict=True))
        np.testing.assert_array_equal(pc, em[box], err_msg=f"{path} s{level}")
        if path == CROPPED:
            offset = np.array(CROP[0]) // 2**level
            np.testing.assert_array_equal(corner, offset)  # the voxel_offset, exactly


def test_the_translation_rule_in_numbers(converted: Path) -> None:
    """``resolution × (voxel_offset + ½) − resolution_0 / 2`` (C order) for the crop, whose
    offsets are (4, 8, 12), (2, 4, 6), (1, 2, 3) at 5.24 × 4 × 4 nm doubling per level —
    numbers worked out by hand; and s0 of an offset-0 volume at 0, like the N5 EM."""
    expected = [
        ([5.24, 4.0, 4.0], [4 * 5.24, 32.0, 48.0]),
        ([10.48, 8.0, 8.0], [2.5 * 10.48 - 2.62, 4.5 * 8 - 2.0, 6.5 * 8 - 2.0]),
        ([20.96, 16.0, 16.0], [1.5 * 20.96 - 2.62, 2.5 * 16 - 2.0, 3.5 * 16 - 2.0]),
    ]
    for (scale, translation), (want_s, want_t) in zip(
        ome_transforms(converted / IMAGE_PATHS[CROPPED]), expected, strict=True
    ):
        np.testing.assert_allclose(scale, want_s, rtol=1e-12)
        np.testing.assert_allclose(translation, want_t, rtol=1e-12, atol=1e-12)
    raw = ome_transforms(converted / IMAGE_PATHS[RAW])
    assert list(raw[0][1]) == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(raw[1][1], [2.62, 2.0, 2.0], rtol=1e-12)  # a windowed level's


def test_compressed_segmentation_becomes_a_valid_label_image(converted: Path) -> None:
    group = zarr.open_group(str(converted / "labels/cells_seg"), mode="r")
    ome_zarr_models.v04.ImageLabel.from_zarr(group)
    assert "image-label" in group.attrs.asdict()
    listed = zarr.open_group(str(converted / "labels"), mode="r").attrs.asdict()["labels"]
    assert listed == ["cells_seg"]
    for image in ("em/fibsem-uint16", "em/fibsem-raw", "em/crop-uint16", "em/fibsem-uint8"):
        ome_zarr_models.v04.Image.from_zarr(zarr.open_group(str(converted / image), mode="r"))
    assert read_zarr(converted / "labels/cells_seg/s0").dtype == np.uint64


def test_status_info_and_verify_see_the_volumes(dataset: Path, converted: Path) -> None:
    status = run_cli("status", str(converted))
    assert status.exit_code == 0, status.stdout
    for image in IMAGE_PATHS.values():
        assert f"{image}: complete" in status.stdout
    proved = run_cli("verify", str(dataset), str(converted))
    assert proved.exit_code == 0, proved.stdout + proved.stderr
    assert "verified 6 image(s), 18 level(s)" in proved.stdout
    one = run_cli("verify", str(dataset / JPEG), str(converted))
    assert one.exit_code == 0, one.stdout + one.stderr
    assert "verified 1 image(s), 3 level(s)" in one.stdout
    info = run_cli("info", str(dataset))
    assert info.exit_code == 0, info.stdout + info.stderr
    assert "precomputed jpeg" in info.stdout
    assert "precomputed raw, sharded" in info.stdout
    assert "1 N5 image(s), 5 precomputed volume(s)" in info.stdout
    assert "resolution × (voxel_offset + ½) − resolution_0 / 2" in info.stdout
    again = run_cli("convert", str(dataset))
    assert again.exit_code == 0
    assert "already complete" in again.stdout


def test_verify_finds_a_changed_voxel_of_a_volume(
    dataset: Path, converted: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(converted, copy)
    array = zarr.open_array(str(copy / "em/crop-uint16/s1"), mode="r+")
    value: Any = array[3, 4, 5]
    array[3, 4, 5] = int(value) + 1
    run = run_cli("verify", str(dataset), str(copy))
    assert run.exit_code == 1
    assert "em/crop-uint16/s1: 1 voxel(s) differ in box" in run.stdout


def test_n5_images_keep_their_fingerprints(dataset: Path, tmp_path: Path) -> None:
    """An N5 image planned from the dataset folder is the image ``convert <dataset>.n5``
    plans: a DEST migrated from the N5 alone is complete for it, and the dataset run only
    adds the volumes."""
    dest = tmp_path / "out.zarr"
    n5_run = run_cli("convert", str(dataset / f"{NAME}.n5"), str(dest))
    assert n5_run.exit_code == 0, n5_run.stderr
    before = snapshot(dest / EM.path)
    both = run_cli("convert", str(dataset), str(dest), "--json")
    assert both.exit_code == 0, both.stderr
    states = {image["dest_path"]: image["state_before"] for image in both.json["images"]}
    assert states[EM.path] == "complete"
    assert {states[path] for path in IMAGE_PATHS.values()} == {"new"}
    assert snapshot(dest / EM.path) == before
    assert run_cli("verify", str(dataset), str(dest)).exit_code == 0
    n5_only = run_cli("verify", str(dataset / f"{NAME}.n5"), str(dest))
    assert n5_only.exit_code == 0, n5_only.stdout
    assert "not part of SRC" in n5_only.stderr


# --------------------------------------------------------------------------------------
# One volume, its path, clashes
# --------------------------------------------------------------------------------------


def test_one_volume_goes_to_the_datasets_zarr(tmp_path: Path) -> None:
    data = write_pc_dataset(tmp_path, {JPEG: VOLUMES[JPEG]})
    dry = run_cli("convert", str(data / JPEG), "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert f"dest:   {data / f'{NAME}.zarr'}" in dry.stdout
    assert f"{JPEG} -> em/fibsem-uint8" in dry.stdout
    assert "lossy JPEG has no Zarr codec; its decoded values are written losslessly as zstd" in (
        dry.stdout
    )
    assert not (data / f"{NAME}.zarr").exists()
    chosen = run_cli("convert", str(data / JPEG), "--dry-run", "--codec", "blosc")
    assert "blosc zstd level 5" in chosen.stdout
    run = run_cli("convert", str(data / JPEG))
    assert run.exit_code == 0, run.stderr
    assert (data / f"{NAME}.zarr/em/fibsem-uint8/s2/.zarray").exists()
    info = run_cli("info", str(data / JPEG))
    assert info.exit_code == 0, info.stderr
    assert f"precomputed: {data / JPEG} (1 image(s))" in info.stdout
    # a volume outside a dataset's neuroglancer/ folder: DEST must be given
    loose = tmp_path / "loose.precomputed"
    shutil.copytree(data / JPEG, loose)
    refused = run_cli("convert", str(loose), "--dry-run")
    assert refused.exit_code == 1
    assert "give DEST explicitly" in refused.stderr
    given = run_cli("convert", str(loose), str(tmp_path / "loose.zarr"))
    assert given.exit_code == 0, given.stderr
    assert (tmp_path / "loose.zarr/loose/s0/.zarray").exists()


def test_a_clash_with_an_n5_image_is_refused_until_told_where(tmp_path: Path) -> None:
    clash = ImageSpec(path="em/fibsem-uint8", shape=(8, 8, 8), dtype="uint8", levels=1)
    n5 = write_dataset(tmp_path, NAME, [clash])
    write_volume(n5.parent, VOLUMES[JPEG])
    data = n5.parent
    for src in (data, data / JPEG):
        refused = run_cli("convert", str(src), "--dry-run")
        assert refused.exit_code == 1
        line = refused.stderr.strip()
        assert line.startswith("error: ")
        assert "\n" not in line
        assert JPEG in line
        assert "em/fibsem-uint8" in line
        assert f"{NAME}.n5" in line
        assert "--image-path" in line
    nested = run_cli("convert", str(data), "--dry-run", "--image-path", f"{JPEG}=em/fibsem-uint8/j")
    assert nested.exit_code == 1
    assert "would be nested (em/fibsem-uint8/j, em/fibsem-uint8)" in nested.stderr
    told = run_cli("convert", str(data), "--image-path", f"{JPEG}=em/fibsem-uint8-jpeg")
    assert told.exit_code == 0, told.stderr
    out = data / f"{NAME}.zarr"
    assert (out / "em/fibsem-uint8-jpeg/s0/.zarray").exists()
    assert (out / "em/fibsem-uint8/s0/.zarray").exists()
    assert run_cli("verify", str(data), str(out)).exit_code == 0
    # one volume: --prefix says where too
    prefixed = run_cli("convert", str(data / JPEG), str(tmp_path / "p.zarr"), "--prefix", "pc")
    assert prefixed.exit_code == 0, prefixed.stderr
    assert (tmp_path / "p.zarr/pc/em/fibsem-uint8/s0/.zarray").exists()
    # a volume never replaces the N5 image already at DEST, even with --overwrite
    n5_dest = tmp_path / "n5.zarr"
    assert run_cli("convert", str(n5), str(n5_dest)).exit_code == 0
    before = output_snapshot(n5_dest)
    for extra in ((), ("--overwrite",)):
        run = run_cli(
            "convert", str(data / JPEG), str(n5_dest), "--image-path",
            f"{JPEG}=em/fibsem-uint8", *extra,
        )  # fmt: skip
        assert run.exit_code == 1
        assert "never replaced by another format" in run.stderr
    assert output_snapshot(n5_dest) == before


@pytest.mark.parametrize(
    "value", ["nothing", "x=", "=em/x", f"{JPEG}=../x", f"{JPEG}=a//b", f"{JPEG}=.cellmap/x"]
)
def test_bad_image_paths_are_usage_errors(tmp_path: Path, value: str) -> None:
    run = run_cli("convert", str(tmp_path), "--image-path", value, "--dry-run")
    assert run.exit_code == 2
    assert "--image-path" in run.stderr


def test_an_image_path_for_no_volume_is_an_error(dataset: Path) -> None:
    run = run_cli(
        "convert", str(dataset), "--dry-run", "--image-path", "neuroglancer/em/no.precomputed=x"
    )
    assert run.exit_code == 1
    assert "is not a precomputed volume of SRC" in run.stderr


# --------------------------------------------------------------------------------------
# Malformed info: one error line naming the file and the field; nothing written
# --------------------------------------------------------------------------------------


def _break(info: dict[str, Any], case: str) -> str:
    """Break ``info`` as ``case`` says; returns the field the error must name."""
    if case == "no scales":
        del info["scales"]
        return "scales"
    if case == "no resolution":
        del info["scales"][1]["resolution"]
        return "scales[1].resolution"
    if case == "unknown encoding":
        info["scales"][2]["encoding"] = "webp"
        return "scales[2].encoding"
    if case == "channels":
        info["num_channels"] = 3
        return "num_channels"
    if case == "type":
        info["type"] = "mesh"
        return "type"
    if case == "string resolution":
        info["scales"][0]["resolution"] = ["4", 4, 5.24]
        return "scales[0].resolution[0]"
    if case == "escaping key":
        info["scales"][0]["key"] = "../../elsewhere"
        return "scales[0].key"
    if case == "huge chunks":
        info["scales"][0]["chunk_sizes"] = [[4096, 4096, 4096]]
        info["scales"][0]["size"] = [4096, 4096, 4096]
        return "scales[0].chunk_sizes[0]"
    if case == "jpeg of uint16":
        info["data_type"] = "uint16"
        return "scales[0].encoding"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["no scales", "no resolution", "unknown encoding", "channels", "type", "string resolution",
     "escaping key", "huge chunks", "jpeg of uint16"],
)  # fmt: skip
def test_a_malformed_info_is_one_error_naming_file_and_field(tmp_path: Path, case: str) -> None:
    data = write_pc_dataset(tmp_path, {JPEG: VOLUMES[JPEG]})
    info_file = data / JPEG / "info"
    info = json.loads(info_file.read_text())
    field = _break(info, case)
    info_file.write_text(json.dumps(info))
    before = snapshot(data)
    for src in (data, data / JPEG):
        run = run_cli("convert", str(src))
        assert run.exit_code == 1, run.stdout
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("error: "), run.stderr
        assert f"{info_file}: {field}:" in lines[0]
        assert snapshot(data) == before  # nothing written, not even DEST
        assert not (data / f"{NAME}.zarr").exists()


def test_a_huge_declared_size_costs_nothing_to_plan(tmp_path: Path) -> None:
    """A volume whose ``info`` declares 2**40 voxels a side (with sane chunks) is planned
    from its metadata alone: the dry run neither reads nor allocates in proportion."""
    data = write_pc_dataset(tmp_path, {JPEG: VOLUMES[JPEG]})
    info_file = data / JPEG / "info"
    info = json.loads(info_file.read_text())
    info["scales"][0]["size"] = [2**40, 2**40, 2**40]
    info_file.write_text(json.dumps(info))
    run = run_cli("convert", str(data / JPEG), "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert str(2**40) in run.stdout


# --------------------------------------------------------------------------------------
# Unit signatures from the listing of chunk and shard files
# --------------------------------------------------------------------------------------


def test_unit_signatures_follow_the_chunk_and_shard_files(tmp_path: Path) -> None:
    from migrate.api import prepare
    from migrate.copy.precomputed import image_source, unit_signatures
    from migrate.dest.records import signature_of
    from migrate.target.plan import PlanOptions

    data = write_pc_dataset(tmp_path, {CROPPED: VOLUMES[CROPPED], SHARDED: VOLUMES[SHARDED]})
    prepared = prepare(str(data), None, PlanOptions(unit_bytes=8**3 * 2), read_only_dest=True)
    images = {image.source_path: image for image in prepared.plan.images}

    def signatures(path: str) -> list[str]:  # of every unit (unit_signatures: those with files)
        image = images[path]
        found = unit_signatures(image_source(prepared.source, image), image.levels[0])
        return [signature_of(found, unit) for unit in range(image.levels[0].unit_count)]

    cropped = images[CROPPED].levels[0]
    assert cropped.unit_count > 8
    before = signatures(CROPPED)
    assert all(not sig.startswith("0:") for sig in before)  # every unit has chunk files
    # the chunk holding voxels z 8..12, y 0..8, x 8..16 of the scale (a box of global
    # coordinates x 20-28, y 8-16, z 12-17 after the offsets 12, 8, 4)
    chunk = data / CROPPED / cropped.source_path.rsplit("/", 1)[-1] / "20-28_8-16_12-17"
    assert chunk.exists()
    later = chunk.stat().st_mtime_ns + 10**9
    chunk.write_bytes(chunk.read_bytes())  # rewritten: a new modification time
    os.utime(chunk, ns=(later, later))
    after = signatures(CROPPED)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [cropped.unit_grid[1] * cropped.unit_grid[2] + 1], changed
    sharded_before = signatures(SHARDED)
    key = images[SHARDED].levels[0].source_path.rsplit("/", 1)[-1]
    shard = next((data / SHARDED / key).glob("*.shard"))
    later = shard.stat().st_mtime_ns + 10**9
    os.utime(shard, ns=(later, later))
    sharded_after = signatures(SHARDED)
    assert all(a != b for a, b in zip(sharded_before, sharded_after, strict=True))


# --------------------------------------------------------------------------------------
# Bulk: a root where one dataset has both kinds
# --------------------------------------------------------------------------------------


def test_bulk_over_a_root_with_both_kinds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_pc_dataset(root, {JPEG: VOLUMES[JPEG], CROPPED: VOLUMES[CROPPED]})
    write_dataset(root, "jrc_other-1", [EM])
    (root / "jrc_volumes-1").mkdir()  # precomputed volumes only, no N5 root
    write_volume(root / "jrc_volumes-1", VOLUMES[SEG])
    survey = run_cli("bulk", "convert", str(root), "--dry-run", "--json")
    assert survey.exit_code == 0, survey.stderr
    rows = {row["name"]: row for row in survey.json["datasets"]}
    assert rows[NAME]["images"] == 3
    assert rows[NAME]["precomputed"] == 2
    assert "precomputed" in rows[NAME]["conventions"]
    assert rows["jrc_other-1"]["precomputed"] == 0
    summary = tmp_path / "summary.json"
    # --image-path applies where the volume is, and is no error where it is not
    where = f"{JPEG}=em/jpeg"
    run = run_cli("bulk", "convert", str(root), "--summary", str(summary), "--image-path", where)
    assert run.exit_code == 0, run.stderr
    out = root / NAME / f"{NAME}.zarr"
    assert (out / "em/jpeg/s0/.zarray").exists()
    np.testing.assert_array_equal(
        read_zarr(out / "em/crop-uint16/s0"), VOLUMES[CROPPED].scales[0].data
    )
    assert (root / "jrc_other-1/jrc_other-1.zarr/em/fibsem-uint16/s2/.zarray").exists()
    labels = root / "jrc_volumes-1/jrc_volumes-1.zarr/labels/cells_seg"
    np.testing.assert_array_equal(read_zarr(labels / "s1"), VOLUMES[SEG].scales[1].data)
    verified = run_cli("bulk", "verify", str(root))
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert "verified 3 image(s)" in verified.stdout


# --------------------------------------------------------------------------------------
# The rule itself, pure
# --------------------------------------------------------------------------------------


def test_statement_of_an_info_file(tmp_path: Path) -> None:
    from migrate.source.precomputed import precomputed_statement, read_volume
    from migrate.storage import LocalStore

    info = {
        "type": "image", "data_type": "uint8", "num_channels": 1,
        "scales": [
            {"key": "a", "size": [11, 7, 5], "resolution": [4, 4, 5.24],
             "voxel_offset": [3, -2, 1], "chunk_sizes": [[8, 8, 8]], "encoding": "raw"},
            {"key": "b", "size": [6, 4, 3], "resolution": [8, 8, 10.48],
             "voxel_offset": [1, -1, 0], "chunk_sizes": [[8, 8, 8]], "encoding": "raw"},
        ],
    }  # fmt: skip
    (tmp_path / "v.precomputed").mkdir()
    (tmp_path / "v.precomputed/info").write_text(json.dumps(info))
    volume = read_volume(LocalStore(tmp_path, read_only=True), "v.precomputed")
    statement = precomputed_statement(volume)
    assert statement.axes == ("z", "y", "x")
    assert [level.scale for level in statement.levels] == [(5.24, 4, 4), (10.48, 8, 8)]
    # z: 5.24 × (1 + ½) − 2.62 ; y: 4 × (−2 + ½) − 2 ; x: 4 × (3 + ½) − 2
    assert statement.levels[0].translation == pytest.approx((5.24, -8.0, 12.0))
    # z: 10.48 × ½ − 2.62 ; y: 8 × (−1 + ½) − 2 ; x: 8 × (1 + ½) − 2
    assert statement.levels[1].translation == pytest.approx((2.62, -6.0, 10.0))
    assert [level.shape for level in volume.levels] == [(5, 7, 11), (3, 4, 6)]


# --------------------------------------------------------------------------------------
# Killed and resumed; S3
# --------------------------------------------------------------------------------------

KILL_EM = ImageSpec(
    path="em/x", shape=(64, 96, 96), dtype="uint8", levels=3, content="noise", seed=5
)
KILL_VOLUMES = {
    JPEG: volume_of_image(KILL_EM, JPEG, encoding="jpeg", chunk=(16, 16, 16)),
    SHARDED: volume_of_image(
        KILL_EM, SHARDED, chunk=(16, 16, 16), sharded=sharding(3, 2), dtype="uint16"
    ),
}
# one 16³ uint8 chunk per unit of the JPEG volume: a few hundred units, one at a time
KILL_ARGS = ("--workers", "1", "--unit-mib", "0.00390625")


def _kill_when_a_unit_is_recorded(data: Path, dest: Path) -> None:
    """Start ``convert``, wait for its first unit record at DEST (an observed event, not a
    time), then freeze its whole process group and kill it."""
    from tests.helpers import freeze_when, kill_frozen, popen_convert, unit_records

    proc = popen_convert(str(data), str(dest), *KILL_ARGS)
    freeze_when(proc, lambda: unit_records(dest) >= 1, "a unit record at DEST")
    kill_frozen(proc)


@pytest.mark.slow
def test_sigkill_then_resume_is_byte_identical(tmp_path: Path) -> None:
    from tests.helpers import chunk_files, run_subprocess

    data = tmp_path / "src" / NAME
    data.mkdir(parents=True)
    for spec in KILL_VOLUMES.values():
        write_volume(data, spec)
    reference = tmp_path / "reference.zarr"
    assert run_subprocess("convert", str(data), str(reference), *KILL_ARGS).exit_code == 0
    expected = {key: digest for key, (digest, _) in chunk_files(reference).items()}
    dest = tmp_path / "out.zarr"
    _kill_when_a_unit_is_recorded(data, dest)
    assert not (dest / "em/fibsem-uint8/.zattrs").exists()  # not advertised as complete
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1
    assert "INCOMPLETE" in status.stdout
    final = run_subprocess("convert", str(data), str(dest), *KILL_ARGS)
    assert final.exit_code == 0, final.stderr
    assert "partial" in final.stdout
    got = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert got == expected, "resumed output differs from an uninterrupted run"
    assert run_subprocess("verify", str(data), str(dest)).exit_code == 0


def test_s3_source_through_moto(aws: Any, tmp_path: Path) -> None:
    from tests.s3server import s3_client, upload_tree
    from tests.s3server import snapshot as bucket_snapshot

    root = tmp_path / "root"
    data = write_pc_dataset(root, {CROPPED: VOLUMES[CROPPED], SHARDED: VOLUMES[SHARDED]})
    client = s3_client(aws.url)
    client.create_bucket(Bucket="pc-src")
    upload_tree(client, root, "pc-src", "")
    before = bucket_snapshot(client)
    src = f"s3://pc-src/{NAME}"
    local = tmp_path / "out.zarr"
    run = run_cli("convert", src, str(local))
    assert run.exit_code == 0, run.stderr
    for path in (CROPPED, SHARDED):
        for index in range(3):
            np.testing.assert_array_equal(
                read_zarr(local / IMAGE_PATHS[path] / f"s{index}"),
                read_scale(data / path, index),
            )
    assert run_cli("verify", src, str(local)).exit_code == 0
    # one volume, S3 to S3: DEST defaults to the dataset's .zarr in the same bucket
    one = run_cli("convert", f"{src}/{CROPPED}")
    assert one.exit_code == 0, one.stderr
    proved = run_cli("verify", f"{src}/{CROPPED}", f"{src}/{NAME}.zarr")
    assert proved.exit_code == 0, proved.stdout
    after = bucket_snapshot(client)
    unchanged = {key: etag for key, etag in after.items() if key in before}
    assert unchanged == before  # the source objects are untouched
    assert all(key[1].startswith(f"{NAME}/{NAME}.zarr/") for key in set(after) - set(before))


# --------------------------------------------------------------------------------------
# The real Neuroglancer client in headless Chromium
# --------------------------------------------------------------------------------------


def test_real_neuroglancer_draws_the_volume_where_the_n5_em_is(tmp_path: Path) -> None:
    """In the real client (same position, zoom and shader; at the full resolution and zoomed
    out far enough that the client reads the coarsest level):

    - the precomputed-derived layer and the N5-derived layer of the same voxels, each drawn
      alone, give the same pixels;
    - a portal state drawing a cropped volume (non-zero ``voxel_offset``) with Neuroglancer's
      own precomputed reader, and that state re-pointed at the Zarr (``view --from-state``),
      give the same pixels;
    - the control: the volume written with the corner as translation (what CloudVolume
      writes, ``resolution × voxel_offset``) is drawn elsewhere once zoomed out.

    Noise content: every voxel differs from its neighbours."""
    import io
    import subprocess

    from migrate.storage import open_store
    from migrate.view.from_state import convert_state
    from migrate.view.scan import output_images
    from migrate.view.serve import make_server, serve_in_background
    from migrate.view.state import viewer_state
    from tests.test_view import _neuroglancer_and_chromium

    neuroglancer, chromium = _neuroglancer_and_chromium()
    image_module = pytest.importorskip("PIL.Image")
    noise = ImageSpec(
        path="em/fibsem-uint8", shape=(16, 256, 320), dtype="uint8", block_size=(16, 64, 64),
        levels=3, content="noise", seed=9, compression={"type": "gzip", "level": 1},
    )  # fmt: skip
    n5 = write_dataset(tmp_path / "data", NAME, [noise])
    volume = "neuroglancer/em/noise.precomputed"
    crop = "neuroglancer/em/crop.precomputed"
    write_volume(n5.parent, volume_of_image(noise, volume, chunk=(16, 64, 64)))
    cropped = volume_of_image(noise, crop, chunk=(16, 64, 64), crop=((4, 64, 64), (8, 128, 160)))
    write_volume(n5.parent, cropped)
    out = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5.parent), str(out)).exit_code == 0
    corner = tmp_path / "corner.zarr"  # the control: translations of the corner rule
    shutil.copytree(out, corner)
    attrs_file = corner / "em/noise/.zattrs"
    attrs = json.loads(attrs_file.read_text())
    for dataset in attrs["multiscales"][0]["datasets"]:
        dataset["coordinateTransformations"][1]["translation"] = [0.0, 0.0, 0.0]
    attrs_file.write_text(json.dumps(attrs))

    requests: list[str] = []
    server = make_server(str(tmp_path), 0, requests)
    serve_in_background(server)
    cases: dict[str, dict[str, Any]] = {}
    shader = (
        "#uicontrol invlerp normalized(range=[0, 255])\n"
        "void main() {\n  emitGrayscale(normalized());\n}\n"
    )
    zooms = (("fine", 0.05), ("coarse", 3.0))
    position = [150.3, 130.6, 8.4]  # x, y, z in s0 voxels: inside the crop too
    for name, root in (("out", out), ("corner", corner)):
        version, images = output_images(
            open_store(str(root), read_only=True), f"{server.base_url}/{root.name}"
        )
        state = viewer_state(images, version)
        layers = {  # each drawn alone (view lists all but the first EM image hidden)
            layer["name"]: {**layer, "shader": shader, "visible": True} for layer in state["layers"]
        }
        for zoom, scale in zooms:
            view = {
                **state, "layout": "xy", "crossSectionScale": scale, "showAxisLines": False,
                "showScaleBar": False, "position": position,
            }  # fmt: skip
            for layer in ("em/fibsem-uint8", "em/noise"):
                cases[f"{name} {layer} {zoom}"] = {**view, "layers": [layers[layer]]}
        if name == "out":
            portal = {
                "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
                "position": position, "layout": "xy", "showAxisLines": False,
                "showScaleBar": False,
                "layers": [{
                    "type": "image", "name": "crop", "shader": shader,
                    "source": f"precomputed://{server.base_url}/data/{NAME}/{crop}",
                }],
            }  # fmt: skip
            moved = convert_state(portal, images, version).state
            assert moved["layers"][0]["source"].endswith("/out.zarr/em/crop/")
            for zoom, scale in zooms:
                cases[f"portal {zoom}"] = {**portal, "crossSectionScale": scale}
                cases[f"moved {zoom}"] = {**moved, "crossSectionScale": scale}
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--window-size=800,600",
         f"--user-data-dir={tmp_path / 'profile'}", viewer.get_viewer_url()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shots: dict[str, np.ndarray[Any, Any]] = {}
    try:
        for name, case in cases.items():
            viewer.set_state(neuroglancer.ViewerState(case))
            reply = viewer.screenshot(size=[400, 300])  # waits until the chunks are drawn
            pixels = image_module.open(io.BytesIO(reply.screenshot.image))
            shots[name] = np.asarray(pixels)[..., :3].astype(int)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        server.shutdown()
        server.server_close()
        neuroglancer.stop()
    chunks = [line.split()[1] for line in requests if line.split()[2] in ("200", "206")]
    read = {path.rsplit("/", 3)[0] for path in chunks if path.rsplit("/", 1)[-1].isdigit()}
    assert {"/out.zarr/em/noise/s0", "/out.zarr/em/noise/s2"} <= read, read  # both zooms
    assert {"/out.zarr/em/crop/s0", "/out.zarr/em/crop/s2"} <= read, read
    scales = {
        json.loads((n5.parent / crop / "info").read_text())["scales"][k]["key"] for k in (0, 2)
    }
    portal_read = {path.split("/")[-2] for path in chunks if "/crop.precomputed/" in path}
    assert scales <= portal_read, portal_read  # the portal state read the volume itself
    for zoom, _ in zooms:
        n5_layer, volume_layer = shots[f"out em/fibsem-uint8 {zoom}"], shots[f"out em/noise {zoom}"]
        assert n5_layer.std() > 10, zoom  # the noise is on screen, not a blank panel
        np.testing.assert_array_equal(volume_layer, n5_layer, err_msg=zoom)
        assert shots[f"portal {zoom}"].std() > 10, zoom
        np.testing.assert_array_equal(shots[f"moved {zoom}"], shots[f"portal {zoom}"], zoom)
    # the control: the corner rule coincides at s0 and misplaces the coarser levels
    np.testing.assert_array_equal(shots["corner em/noise fine"], shots["out em/fibsem-uint8 fine"])
    shown = shots["out em/fibsem-uint8 coarse"]
    drawn = np.any(shown != shown[0, 0], axis=2)  # where the volume is on screen
    moved_off = np.any(shots["corner em/noise coarse"] != shown, axis=2)
    assert drawn.sum() > 1000
    assert moved_off[drawn].mean() > 0.3, (moved_off[drawn].mean(), drawn.sum())


# --------------------------------------------------------------------------------------
# --report previews
# --------------------------------------------------------------------------------------


def test_report_previews_the_volumes_from_source_and_dest(tmp_path: Path) -> None:
    """``convert --report`` and ``verify --report`` of a dataset folder draw each volume's
    planes read from the precomputed source (TensorStore's decode) beside the Zarr's: the
    same pictures, not a blank or an error."""
    pytest.importorskip("matplotlib")
    from tests.test_report import picture

    data = write_pc_dataset(tmp_path, {CROPPED: VOLUMES[CROPPED], JPEG: VOLUMES[JPEG]})
    dest, report = tmp_path / "out.zarr", tmp_path / "report"
    run = run_cli("convert", str(data), str(dest), "--report", str(report))
    assert run.exit_code == 0, run.stderr
    for image in ("em/crop-uint16", "em/fibsem-uint8", EM.path):
        for plane in ("xy", "xz", "yz"):
            source = picture(report, image, plane, "source")
            np.testing.assert_array_equal(source, picture(report, image, plane, "dest"))
            assert source.std() > 10, (image, plane)
    proved = run_cli("verify", str(data), str(dest), "--report", str(report))
    assert proved.exit_code == 0, proved.stdout
    for plane in ("xy", "xz", "yz"):
        source = picture(report, "em/crop-uint16", plane, "source")
        np.testing.assert_array_equal(source, picture(report, "em/crop-uint16", plane, "dest"))
    assert "cannot" not in (report / "index.html").read_text(encoding="utf-8")


def test_a_dangling_chunk_link_is_a_failed_unit_naming_it(tmp_path: Path) -> None:
    """A chunk file that is a symbolic link to nothing is a lost chunk, not an absent
    (all-zero) one: its unit fails naming it, the image is not finished. Run again once it
    is back, after another chunk was rewritten: the unit copied from that chunk is redone
    (its signature, from the listing of the scale, changed), and the output is right."""
    data = write_pc_dataset(tmp_path, {CROPPED: VOLUMES[CROPPED]})
    key = json.loads((data / CROPPED / "info").read_text())["scales"][0]["key"]
    chunk = data / CROPPED / key / "20-28_8-16_12-17"
    original = chunk.read_bytes()
    chunk.unlink()
    chunk.symlink_to(tmp_path / "gone")
    dest = tmp_path / "out.zarr"
    one_chunk_units = ("--unit-mib", str(8**3 * 2 / 2**20))
    run = run_cli("convert", str(data), str(dest), *one_chunk_units)
    assert run.exit_code == 1
    assert f"{chunk}: a symbolic link to {tmp_path / 'gone'}, which does not exist" in run.stderr
    assert "a lost chunk, not an absent one" in run.stderr
    assert not (dest / "em/crop-uint16/.zattrs").exists()
    chunk.unlink()
    chunk.write_bytes(original)
    other = data / CROPPED / key / "12-20_8-16_4-12"  # a chunk of a unit recorded as done
    later = other.stat().st_mtime_ns + 10**9
    os.utime(other, ns=(later, later))
    again = run_cli("convert", str(data), str(dest), *one_chunk_units)
    assert again.exit_code == 0, again.stderr
    assert "1 unit(s) redone: their source changed since they were copied" in again.stderr
    for index, scale in enumerate(VOLUMES[CROPPED].scales):
        np.testing.assert_array_equal(read_zarr(dest / f"em/crop-uint16/s{index}"), scale.data)


def test_hidden_names_in_neuroglancer_are_no_volumes(tmp_path: Path) -> None:
    """A listing's hidden folders never become image paths: ``neuroglancer/.cellmap-migrate/``
    would otherwise write into DEST's own state folder."""
    data = write_pc_dataset(tmp_path, {JPEG: VOLUMES[JPEG]})
    for hidden in ("neuroglancer/.cellmap-migrate/x.precomputed", "neuroglancer/em/.x.precomputed"):
        shutil.copytree(data / JPEG, data / hidden)
    dry = run_cli("convert", str(data), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert [image["dest_path"] for image in dry.json["plan"]["images"]] == [
        EM.path,
        "em/fibsem-uint8",
    ]
    alone = run_cli("convert", str(data / "neuroglancer/em/.x.precomputed"), "--dry-run")
    assert alone.exit_code == 1
    assert "would be hidden" in alone.stderr


def test_chunks_and_shards_of_a_volume_can_be_chosen(tmp_path: Path) -> None:
    data = write_pc_dataset(tmp_path, {RAW: VOLUMES[RAW]})
    dest = tmp_path / "out.zarr"
    run = run_cli(
        "convert", str(data / RAW), str(dest), "--ngff-version", "0.5",
        "--chunks", "8,8,8", "--shard", "16,32,32",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    meta = json.loads((dest / "em/fibsem-raw/s0/zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [16, 32, 32]
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [8, 8, 8]
    for index, scale in enumerate(VOLUMES[RAW].scales):
        np.testing.assert_array_equal(read_zarr(dest / f"em/fibsem-raw/s{index}"), scale.data)
    assert run_cli("verify", str(data / RAW), str(dest)).exit_code == 0


# --------------------------------------------------------------------------------------
# With the registry: a volume stored upside down, as 5 of the 9 real ones are
# --------------------------------------------------------------------------------------

FLIPPED = "neuroglancer/em/fibsem-flipped.precomputed"


def test_a_volume_the_registry_says_is_upside_down_lands_on_the_n5_em(tmp_path: Path) -> None:
    """The EM's voxels stored as a precomputed volume mirrored along y, every scale (the
    real jrc_hela-2 ``fibsem-uint8``: registry scale y −4, translate y the extent); the
    manifest says so. After ``convert <dataset> --registry``: each level is the stored
    scale read back mirrored, s0 equals the N5 EM voxel for voxel, and the OME metadata
    places every level where the portal drew it. The expected translation is worked out
    here from the corner-based positions (precomputed voxel ``i`` of scale k covers
    ``[i·r_k, (i+1)·r_k)``; mirrored about the registry's ``T = N_0·r_0``), then moved by
    the N5 convention's ``−r_0/2``: ``T − (N_k − ½)·r_k − r_0/2`` along y."""
    import dataclasses

    upright = volume_of_image(EM, FLIPPED, chunk=(8, 16, 16))
    stored = dataclasses.replace(
        upright,
        scales=[dataclasses.replace(s, data=np.flip(s.data, axis=1)) for s in upright.scales],
    )
    data = write_pc_dataset(tmp_path, {FLIPPED: stored})
    manifest = json.loads((Path(__file__).parent / "data/registry/jrc_hela-2.manifest.json")
                          .read_text())  # fmt: skip
    em = manifest["sources"]["fibsem-uint16"]
    em["url"] = f"s3://bucket/{NAME}/{NAME}.n5/em/fibsem-uint16"
    volume = manifest["sources"]["fibsem-uint8"]  # scale [5.24, -4.0, 4.0] in the real one
    volume["url"] = f"s3://bucket/{NAME}/{FLIPPED}/"
    extent_y = EM.shape[1]
    volume["transform"]["translate"] = [0.0, extent_y * 4.0, 0.0]
    manifest["name"] = NAME
    manifest["sources"] = {"fibsem-uint16": em, "fibsem-uint8": volume}
    manifest["views"] = []
    path = tmp_path / f"{NAME}.manifest.json"
    path.write_text(json.dumps(manifest))

    dry = run_cli("convert", str(data), "--dry-run", "--registry", str(path))
    assert dry.exit_code == 0, dry.stderr
    assert "mirrored along y" in dry.stdout
    run = run_cli("convert", str(data), "--registry", str(path))
    assert run.exit_code == 0, run.stderr
    out = data / f"{NAME}.zarr"
    image = out / "em/fibsem-flipped"
    n5_em = read_zarr(out / EM.path / "s0")
    np.testing.assert_array_equal(read_zarr(image / "s0"), n5_em)  # upright again
    r0 = np.array(EM.voxel_size)
    for index, ((scale, translation), spec) in enumerate(
        zip(ome_transforms(image), stored.scales, strict=True)
    ):
        np.testing.assert_array_equal(
            read_zarr(image / f"s{index}"), np.flip(read_scale(data / FLIPPED, index), axis=1)
        )
        rk = np.array(spec.resolution)
        n_k = spec.data.shape[1]
        expected = rk / 2 - r0 / 2  # z and x: the precomputed rule at voxel_offset 0
        expected[1] = extent_y * r0[1] - (n_k - 0.5) * rk[1] - r0[1] / 2
        np.testing.assert_allclose(scale, rk, rtol=1e-12)
        np.testing.assert_allclose(translation, expected, rtol=1e-12, atol=1e-9)
    verify = run_cli("verify", str(data), str(out), "--registry", str(path))
    assert verify.exit_code == 0, verify.stdout + verify.stderr


def test_verify_listing_proves_the_volumes_and_names_a_changed_chunk_or_shard_file(
    tmp_path: Path,
) -> None:
    """The ledger covers precomputed volumes like N5 images: after ``convert`` and a full
    ``verify`` of the dataset folder, ``verify --listing`` proves it; a chunk file (unsharded)
    or a shard file rewritten with other bytes of the same size is named as a source file
    changed since the copy."""
    data = write_pc_dataset(tmp_path, {k: VOLUMES[k] for k in (RAW, SHARDED, SEG)})
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(data), str(dest)).exit_code == 0
    full = run_cli("verify", str(data), str(dest))
    assert full.exit_code == 0, full.stdout + full.stderr
    listed = run_cli("verify", "--listing", str(data), str(dest))
    assert listed.exit_code == 0, listed.stdout + listed.stderr
    assert "proven by listing" in listed.stdout

    def scale0(volume: str) -> Path:
        info = json.loads((data / volume / "info").read_text())
        return data / volume / str(info["scales"][0]["key"])

    chunk = sorted(scale0(RAW).iterdir())[3]
    shard = next(scale0(SHARDED).glob("*.shard"))
    for source_file in (chunk, shard):
        original = source_file.read_bytes()
        source_file.write_bytes(bytes(b ^ 0xFF for b in original))
        try:
            run = run_cli("verify", "--listing", str(data), str(dest))
            assert run.exit_code == 1, run.stdout
            assert f"{source_file}: source block changed since it was copied" in run.stdout
        finally:
            source_file.write_bytes(original)
