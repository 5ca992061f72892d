"""``cellmap-migrate info PATH``: what an N5 tree or an OME-Zarr output holds, local or S3.

Expected values come from the fixture's own specification (shapes, blocks, voxel sizes and
translations it wrote), from zarr-python reading the outputs, and from listing the files or
objects independently; every run is checked to leave the tree byte for byte unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import zarr

from migrate.example.fixture import (
    ImageSpec,
    example_images,
    level_block_size,
    level_scale,
    level_shape,
    level_translation,
    write_dataset,
)
from tests.helpers import run_cli, snapshot
from tests.s3server import (
    MotoServer,
    keys,
    s3_client,
    upload_tree,
)
from tests.s3server import snapshot as s3_snapshot

NAME = "jrc_info-1"


@pytest.fixture(scope="module")
def specs() -> list[ImageSpec]:
    return example_images("tiny")


@pytest.fixture
def n5(tmp_path: Path, specs: list[ImageSpec]) -> Path:
    return write_dataset(tmp_path, NAME, specs)


def info_json(*args: str) -> dict[str, Any]:
    run = run_cli("info", *args, "--json")
    assert run.exit_code == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def by_path(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {image["path"]: image for image in info["images"]}


def close(a: Any, b: Any) -> bool:
    if len(a) != len(b):
        return False
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


def assert_levels_match_the_fixture(image: dict[str, Any], spec: ImageSpec) -> None:
    """Shape, voxel size and translation of every level as the fixture wrote them (C order)."""
    assert [level["name"] for level in image["levels"]] == [f"s{i}" for i in range(spec.levels)]
    for index, level in enumerate(image["levels"]):
        assert tuple(level["shape"]) == level_shape(spec, index), (spec.path, index)
        assert level["dtype"] == spec.dtype
        assert close(level["scale"], level_scale(spec, index)), (spec.path, index)
        assert close(level["translation"], level_translation(spec, index)), (spec.path, index)
    assert image["axes"] == ["z", "y", "x"]
    assert image["units"] == ["nanometer"] * 3


def test_n5_tree(n5: Path, specs: list[ImageSpec]) -> None:
    before = snapshot(n5.parent)
    info = info_json(str(n5))
    assert snapshot(n5.parent) == before  # wrote nothing
    assert info["format"] == "N5"
    images = by_path(info)
    assert set(images) == {spec.path for spec in specs}
    for spec in specs:
        image = images[spec.path]
        assert_levels_match_the_fixture(image, spec)
        for index, level in enumerate(image["levels"]):
            assert tuple(level["chunks"]) == level_block_size(spec, index)
        assert image["problems"] == []
    # where each value came from, as the dry run says it
    em = images["em/fibsem-uint16"]
    assert em["levels"][0]["codec"] == "gzip level -1"
    assert {em["sources"][k]["convention"] for k in ("axes", "scale", "translation")} == {"COSEM"}
    assert em["sources"]["checked"]["convention"] == "Neuroglancer"
    pred = images["labels/mito_pred"]
    assert pred["sources"]["scale"]["convention"] == "Neuroglancer"
    assert "windowed" in pred["sources"]["translation"]["detail"]
    assert images["labels/mito_seg"]["kind"] == "label"
    assert images["lm/er_palm"]["levels"][0]["codec"].startswith("blosc zstd")


def test_n5_text_names_sources_and_units(n5: Path) -> None:
    run = run_cli("info", str(n5))
    assert run.exit_code == 0, run.stderr
    dry = run_cli("convert", str(n5), "--dry-run")
    for line in dry.stdout.splitlines():  # every attribution of the dry run, word for word
        if line.strip().startswith(("scale: from", "translation: from", "axes: from")):
            _what, _, where = line.strip().partition(": from ")
            assert f"from {where}" in run.stdout, line
    assert "em/fibsem-uint16  image  axes (z, y, x)  unit nanometer" in run.stdout
    assert "s1     19 x 25 x 31" in run.stdout


def test_a_group_inside_the_n5_tree(n5: Path) -> None:
    info = info_json(str(n5 / "labels"))
    assert set(by_path(info)) == {"labels/mito_pred", "labels/mito_seg"}


def level_files(array_dir: Path) -> tuple[int, int]:
    """(files, bytes) under an array directory, counted with os.walk."""
    count = total = 0
    for dirpath, _dirs, files in os.walk(array_dir):
        for name in files:
            count += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return count, total


@pytest.mark.parametrize(
    ("version", "extra"), [("0.4", []), ("0.5", []), ("0.5", ["--shard", "64,64,64"])]
)
def test_zarr_output(
    n5: Path, specs: list[ImageSpec], tmp_path: Path, version: str, extra: list[str]
) -> None:
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest), "--ngff-version", version, *extra).exit_code == 0
    before = snapshot(dest)
    info = info_json(str(dest), "--sizes")
    assert snapshot(dest) == before
    assert info["format"] == f"OME-NGFF {version}"
    images = by_path(info)
    assert set(images) == {spec.path for spec in specs}
    for spec in specs:
        image = images[spec.path]
        assert_levels_match_the_fixture(image, spec)
        assert image["problems"] == []
        assert image["sources"]["scale"]["convention"] == "OME"
        assert str(n5) in image["sources"]["provenance"]["detail"]
        for level in image["levels"]:
            array = zarr.open_array(str(dest / spec.path / level["name"]), mode="r")
            if extra:
                assert tuple(level["shard"]) == tuple(array.shards or ())
                assert tuple(level["chunks"]) == tuple(array.chunks)
            else:
                assert level["shard"] is None
                assert tuple(level["chunks"]) == tuple(array.chunks)
            assert (level["objects"], level["stored_bytes"]) == level_files(
                dest / spec.path / level["name"]
            )
    assert images["labels/mito_seg"]["kind"] == "label"
    group = info_json(str(dest / "labels"))  # a group inside the output
    assert {image["path"] for image in group["images"]} == {"mito_pred", "mito_seg"}
    assert group["problems"] == []
    codec = images["em/fibsem-uint16"]["levels"][0]["codec"]
    assert "gzip level 6" in codec


def test_unfinished_output_is_flagged(n5: Path, tmp_path: Path) -> None:
    """An image whose copy failed is not advertised, and info says the migration is not
    complete."""
    dest = tmp_path / "out.zarr"
    block = n5 / "em/fibsem-uint16/s0/1/1/1"
    block.write_bytes(block.read_bytes()[:20] + b"\x00" * 40)
    assert run_cli("convert", str(n5), str(dest)).exit_code == 1
    run = run_cli("info", str(dest))
    assert run.exit_code == 0, run.stderr
    assert "migration not complete: em/fibsem-uint16" in run.stdout
    assert "em/fibsem-uint16  image" not in run.stdout


def test_conflict_is_flagged_as_the_dry_run_flags_it(n5: Path) -> None:
    group = n5 / "em/fibsem-uint16/attributes.json"
    attrs = json.loads(group.read_text())
    attrs["pixelResolution"]["dimensions"] = [4.0, 4.0, 6.0]
    group.write_text(json.dumps(attrs))
    dry = run_cli("convert", str(n5), "--dry-run")
    conflicts = [line.strip() for line in dry.stdout.splitlines() if "CONFLICT" in line]
    assert conflicts
    run = run_cli("info", str(n5))
    assert run.exit_code == 1
    for line in conflicts:
        assert line in run.stdout
    (error,) = run.stderr.strip().splitlines()
    assert error.startswith("error: CONFLICT")
    assert "em/fibsem-uint16" in error


def one_error_line(*args: str) -> str:
    run = run_cli("info", *args)
    assert run.exit_code == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in run.stderr
    return lines[0]


def test_bad_n5_attributes(n5: Path) -> None:
    path = n5 / "em/fibsem-uint8/s1/attributes.json"
    attrs = json.loads(path.read_text())
    attrs["dimensions"] = "many"
    path.write_text(json.dumps(attrs))
    before = snapshot(n5.parent)
    line = one_error_line(str(n5))
    assert "em/fibsem-uint8/s1/attributes.json" in line
    assert "dimensions" in line
    assert snapshot(n5.parent) == before


def test_bad_zarr_metadata(n5: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    zattrs = dest / "lm/er_palm/.zattrs"
    attrs = json.loads(zattrs.read_text())
    attrs["multiscales"][0]["version"] = "0.3"
    zattrs.write_text(json.dumps(attrs))
    line = one_error_line(str(dest))
    assert "lm/er_palm/.zattrs" in line
    assert "multiscales[0].version" in line
    (dest / "em/fibsem-uint8/.zattrs").write_text("{not json")
    line = one_error_line(str(dest))
    assert "em/fibsem-uint8/.zattrs" in line
    assert "malformed JSON" in line


def test_missing_path(tmp_path: Path) -> None:
    assert "nothing.n5" in one_error_line(str(tmp_path / "nothing.n5"))


# --------------------------------------------------------------------------------------
# S3 (moto's standalone server)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_s3_n5_and_zarr(aws: MotoServer, n5: Path, specs: list[ImageSpec], version: str) -> None:
    client = s3_client(aws.url)
    bucket = f"info-{version.replace('.', '')}"
    client.create_bucket(Bucket=bucket)
    upload_tree(client, n5.parent.parent, bucket, "")
    url = f"s3://{bucket}/{NAME}/{NAME}.n5"
    dest = f"s3://{bucket}/{NAME}/{NAME}.zarr"
    local = info_json(str(n5))
    before = s3_snapshot(client)
    remote = info_json(url, "--sizes")
    assert s3_snapshot(client) == before
    assert remote["format"] == "N5"
    for path, image in by_path(remote).items():
        expected = by_path(local)[path]
        assert [lv["shape"] for lv in image["levels"]] == [lv["shape"] for lv in expected["levels"]]
        assert [lv["scale"] for lv in image["levels"]] == [lv["scale"] for lv in expected["levels"]]
        for level in image["levels"]:
            prefix = f"{NAME}/{NAME}.n5/{path}/{level['name']}/"
            listed = list(keys(client, bucket, prefix))
            assert level["objects"] == len(listed)
            assert level["stored_bytes"] == sum(item["Size"] for item in listed)
    run = run_cli("convert", url, dest, "--ngff-version", version)
    assert run.exit_code == 0, run.stderr
    before = s3_snapshot(client)
    output = info_json(dest)
    assert s3_snapshot(client) == before
    assert output["format"] == f"OME-NGFF {version}"
    for spec in specs:
        assert_levels_match_the_fixture(by_path(output)[spec.path], spec)


def test_an_image_group_is_named_by_its_own_name(n5: Path, tmp_path: Path) -> None:
    """``info`` of an image group itself (not a tree above it): the image is named by the
    last part of the path given, not ``.``."""
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    for path in (dest / "em" / "fibsem-uint16", n5 / "em" / "fibsem-uint16"):
        run = run_cli("info", str(path))
        assert run.exit_code == 0, run.stderr
        headings = [line for line in run.stdout.splitlines() if "  axes (" in line]
        assert len(headings) == 1, run.stdout
        assert headings[0].split("  ")[0] in ("fibsem-uint16", "em/fibsem-uint16"), headings
        assert not headings[0].startswith(".")
