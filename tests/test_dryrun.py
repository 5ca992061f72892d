"""`convert --dry-run`: the plan, the metadata diff, and that it writes nothing anywhere."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from migrate.example.fixture import ImageSpec, example_images, write_dataset, write_image
from tests.conftest import HELA_GROUP, HELA_S0, NGFF_PUBLISHED, load_reference
from tests.helpers import run_cli, snapshot


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A tiny realistic dataset; returns its ``.n5`` root."""
    return write_dataset(tmp_path, "jrc_example-1", example_images("tiny"))


def hela_tree(tmp_path: Path, group_attrs: dict[str, Any] | None = None) -> Path:
    """The published hela-2 fibsem-uint16 metadata over tiny arrays (no blocks: all zero)."""
    group = group_attrs if group_attrs is not None else load_reference(HELA_GROUP)
    s0 = load_reference(HELA_S0)
    n5 = tmp_path / "jrc_hela-2" / "jrc_hela-2.n5"
    image = n5 / "em" / "fibsem-uint16"
    image.mkdir(parents=True)
    (n5 / "attributes.json").write_text('{"n5": "2.5.0"}')
    (n5 / "em" / "attributes.json").write_text("{}")
    (image / "attributes.json").write_text(json.dumps(group))
    datasets = load_reference(HELA_GROUP)["multiscales"][0]["datasets"]
    for level, dataset in enumerate(datasets):
        attrs = copy.deepcopy(s0)
        attrs["dimensions"] = [math.ceil(n / 2**level) for n in (96, 40, 70)]
        attrs["transform"] = dataset["transform"]
        attrs["pixelResolution"]["dimensions"] = [4.0 * 2**level, 4.0 * 2**level, 5.24 * 2**level]
        (image / f"s{level}").mkdir()
        (image / f"s{level}" / "attributes.json").write_text(json.dumps(attrs))
    return n5


def test_hela_metadata_matches_what_cellmap_publishes(tmp_path: Path) -> None:
    n5 = hela_tree(tmp_path)
    run = run_cli("convert", str(n5), "--dry-run", "--json", "--prefix", "recon-1")
    assert run.exit_code == 0, run.stderr
    image = run.json["plan"]["images"][0]
    assert image["dest_path"] == "recon-1/em/fibsem-uint16"
    written = image["attributes"]["multiscales"][0]
    published = load_reference(NGFF_PUBLISHED)["multiscales"][0]
    assert written["version"] == published["version"] == "0.4"
    assert written["axes"] == published["axes"]
    # Cellmap publishes a multiscale-level identity scale; it says nothing, and ngff-zarr's
    # validator refuses it, so it is left out (issue 18, item 6)
    assert published["coordinateTransformations"] == [{"type": "scale", "scale": [1.0] * 3}]
    assert "coordinateTransformations" not in written
    assert written["datasets"][:2] == published["datasets"]
    # Floating-point noise is kept as published, not rounded.
    assert written["datasets"][4]["coordinateTransformations"][1]["translation"] == [
        39.300000000000004,
        30.0,
        30.0,
    ]
    # The source attributes are kept verbatim under one namespaced key.
    assert image["attributes"]["cellmap-migrate"]["source_attributes"] == load_reference(HELA_GROUP)


def test_dry_run_writes_nothing_and_diffs_every_image(dataset: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    run = run_cli("convert", str(dataset), "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert snapshot(tmp_path) == before
    for image in (
        "em/fibsem-uint16",
        "em/fibsem-uint8",
        "lm/er_palm",
        "labels/mito_seg",
        "labels/mito_pred",
    ):
        assert f"+++ b/{image}/.zattrs" in run.stdout
        assert f"+++ b/{image}/s0/.zarray" in run.stdout
    assert "--- /dev/null" in run.stdout
    assert '+{"labels": ["mito_seg"]}' in run.stdout


def test_dry_run_json_is_stable_and_complete(dataset: Path) -> None:
    first = run_cli("convert", str(dataset), "--dry-run", "--json", "--ngff-version", "0.5")
    second = run_cli("convert", str(dataset), "--dry-run", "--json", "--ngff-version", "0.5")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
    document = first.json
    assert len(document["fingerprint"]) == 16
    assert {i["dest_path"] for i in document["plan"]["images"]} == {
        "em/fibsem-uint16",
        "em/fibsem-uint8",
        "lm/er_palm",
        "labels/mito_seg",
        "labels/mito_pred",
    }
    kinds = {i["dest_path"]: i["kind"] for i in document["plan"]["images"]}
    assert kinds["labels/mito_seg"] == "label"
    assert kinds["labels/mito_pred"] == "image"  # predictions stay images
    assert "+++ b/em/fibsem-uint16/zarr.json" in document["diff"]


def test_rerun_after_finished_migration_shows_no_changes(dataset: Path) -> None:
    assert run_cli("convert", str(dataset)).exit_code == 0
    run = run_cli("convert", str(dataset), "--dry-run")
    assert run.exit_code == 0
    assert "metadata: no changes" in run.stdout


def test_dry_run_of_changed_settings_diffs_against_dest(dataset: Path) -> None:
    assert run_cli("convert", str(dataset)).exit_code == 0
    run = run_cli("convert", str(dataset), "--dry-run", "--codec", "zstd")
    assert '-  "compressor": {"id": "gzip", "level": 6},' in run.stdout
    assert '+  "compressor": {"id": "zstd", "level": 3},' in run.stdout
    # the dry run predicts the refusal of the real run (tests/test_dest_safety.py)
    assert run.exit_code == 1
    assert "written with other settings" in run.stderr
    assert (
        run_cli("convert", str(dataset), "--dry-run", "--codec", "zstd", "--overwrite").exit_code
        == 0
    )


@pytest.mark.parametrize(
    ("options", "kept", "re_encoded"),
    [
        ((), "blocks moved as bytes", None),
        (("--codec", "zstd"), "blocks moved as bytes", "block by block"),
        (("--chunks", "8,8,8"), "through TensorStore", None),
        (("--no-transplant",), "through TensorStore", None),
    ],
)
def test_dry_run_says_how_each_level_is_copied(
    dataset: Path, options: tuple[str, ...], kept: str, re_encoded: str | None
) -> None:
    """Each level line ends with how its chunks will be made: levels that keep their codec
    (the zstd source keeps it under ``--codec zstd``) and those re-encoded."""
    run = run_cli("convert", str(dataset), "--dry-run", *options)
    assert run.exit_code == 0, run.stderr
    level_lines = [line for line in run.stdout.splitlines() if " unit(s)" in line]
    assert len(level_lines) == sum(spec.levels for spec in example_images("tiny"))
    for line in level_lines:
        expected = kept if "[kept from source" in line else re_encoded
        assert expected is not None, line
        assert f"; {expected}]" in line, line
    if re_encoded is not None:
        assert any(f"; {re_encoded}]" in line for line in level_lines)


def test_subgroup_source_converts_one_image_and_keeps_inner_paths(dataset: Path) -> None:
    run = run_cli("convert", str(dataset / "em" / "fibsem-uint16"), "--dry-run", "--json")
    assert run.exit_code == 0, run.stderr
    plan = run.json["plan"]
    assert [i["dest_path"] for i in plan["images"]] == ["em/fibsem-uint16"]
    assert plan["dest"] == str(dataset.with_suffix(".zarr"))
    assert plan["images"][0]["levels"][2]["dest_path"] == "em/fibsem-uint16/s2"


def test_levels_sort_numerically_past_s9(tmp_path: Path) -> None:
    n5 = tmp_path / "jrc_deep" / "jrc_deep.n5"
    write_image(
        n5,
        ImageSpec(
            path="em/fibsem-uint8",
            shape=(8, 4096, 4096),
            dtype="uint8",
            levels=12,
            factors=(1, 2, 2),
            block_size=(8, 64, 64),
            voxel_size=(8.0, 4.0, 4.0),
            content="sparse",
        ),
    )
    run = run_cli("convert", str(n5), "--dry-run", "--json")
    assert run.exit_code == 0, run.stderr
    datasets = run.json["plan"]["images"][0]["attributes"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == [f"s{i}" for i in range(12)]
    assert datasets[10]["coordinateTransformations"][0]["scale"] == [8.0, 4096.0, 4096.0]


def test_orphan_arrays_are_reported(dataset: Path) -> None:
    stray = dataset / "em" / "stray"
    stray.mkdir()
    (stray / "attributes.json").write_text(
        json.dumps(
            {
                "dimensions": [4, 4],
                "blockSize": [4, 4],
                "dataType": "uint8",
                "compression": {"type": "raw"},
            }
        )
    )
    run = run_cli("convert", str(dataset), "--dry-run")
    assert run.exit_code == 0
    assert "not part of any multiscale image (skipped): em/stray" in run.stdout


# --- bad input: one line naming the file and the field, non-zero exit, nothing written ------


def one_error_line(dataset_parent: Path, *args: str) -> str:
    before = snapshot(dataset_parent)
    run = run_cli(*args)
    assert run.exit_code != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    assert snapshot(dataset_parent) == before
    return lines[0]


def test_missing_level_attributes(dataset: Path) -> None:
    (dataset / "em/fibsem-uint16/s1/attributes.json").unlink()
    line = one_error_line(dataset.parent, "convert", str(dataset))
    assert "em/fibsem-uint16/s1/attributes.json" in line
    assert "missing" in line


def test_malformed_json(dataset: Path) -> None:
    (dataset / "em/fibsem-uint16/attributes.json").write_text('{"multiscales": [')
    line = one_error_line(dataset.parent, "convert", str(dataset), "--dry-run")
    assert "em/fibsem-uint16/attributes.json" in line
    assert "malformed JSON" in line


def test_level_missing_from_the_middle(dataset: Path) -> None:
    level = dataset / "em/fibsem-uint16/s1"
    level.rename(level.with_name("old-s1"))
    line = one_error_line(dataset.parent, "convert", str(dataset / "em/fibsem-uint16"))
    assert "em/fibsem-uint16" in line
    assert "s1" in line


def test_mismatched_ndim(dataset: Path) -> None:
    path = dataset / "em/fibsem-uint8/s2/attributes.json"
    attrs = json.loads(path.read_text())
    attrs["dimensions"] = attrs["dimensions"][:2]
    attrs["blockSize"] = attrs["blockSize"][:2]
    path.write_text(json.dumps(attrs))
    line = one_error_line(dataset.parent, "convert", str(dataset), "--dry-run")
    assert "em/fibsem-uint8/s2/attributes.json" in line
    assert "dimensions" in line


def test_unknown_unit(dataset: Path) -> None:
    path = dataset / "lm/er_palm/attributes.json"
    path.write_text(path.read_text().replace('"nm"', '"furlong"'))
    for name in ("s0", "s1"):
        level = dataset / "lm/er_palm" / name / "attributes.json"
        level.write_text(level.read_text().replace('"nm"', '"furlong"'))
    line = one_error_line(dataset.parent, "convert", str(dataset), "--dry-run")
    assert "lm/er_palm" in line
    assert "units" in line
    assert "furlong" in line
    run = run_cli("convert", str(dataset), "--dry-run", "--json", "--allow-unknown-units")
    assert run.exit_code == 0, run.stderr


def test_conflicting_conventions_need_trust(tmp_path: Path) -> None:
    group = load_reference(HELA_GROUP)
    group["pixelResolution"]["dimensions"] = [4.0, 4.0, 6.0]  # Neuroglancer now says 6 nm in z
    n5 = hela_tree(tmp_path, group)
    line = one_error_line(tmp_path, "convert", str(n5))
    assert "conflict" in line
    assert "--trust" in line
    assert "em/fibsem-uint16/attributes.json" in line
    trusted = run_cli("convert", str(n5), "--dry-run", "--json", "--trust", "cosem")
    assert trusted.exit_code == 0, trusted.stderr
    scale = trusted.json["plan"]["images"][0]["attributes"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [5.24, 4.0, 4.0]
    other = run_cli("convert", str(n5), "--dry-run", "--json", "--trust", "neuroglancer")
    scale = other.json["plan"]["images"][0]["attributes"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [6.0, 4.0, 4.0]


def test_cosem_levels_disagreeing_on_units_is_worded_as_inside_cosem(tmp_path: Path) -> None:
    """A COSEM-only image whose s1 says micrometers: the refusal names both levels' fields and
    values, and does not blame a Neuroglancer convention the source does not have."""
    n5 = hela_tree(tmp_path)
    image = n5 / "em" / "fibsem-uint16"
    group = {"multiscales": load_reference(HELA_GROUP)["multiscales"]}
    group["multiscales"][0]["datasets"][1]["transform"]["units"] = ["um", "um", "um"]
    (image / "attributes.json").write_text(json.dumps(group))
    for level, dataset in enumerate(group["multiscales"][0]["datasets"]):
        path = image / f"s{level}" / "attributes.json"
        attrs = json.loads(path.read_text())
        del attrs["pixelResolution"]  # COSEM only: no Neuroglancer metadata anywhere
        attrs["transform"] = dataset["transform"]  # the array agrees with the group entry
        path.write_text(json.dumps(attrs))
    line = one_error_line(tmp_path, "convert", str(n5))
    assert "Neuroglancer" not in line
    assert "inside the COSEM metadata" in line
    where = "em/fibsem-uint16/attributes.json multiscales[0].datasets"
    assert f"{where}[1].transform.units is ['micrometer', 'micrometer', 'micrometer']" in line
    assert f"{where}[0].transform.units is ['nanometer', 'nanometer', 'nanometer']" in line
    assert "--trust" in line


def test_dest_inside_source_is_refused(dataset: Path) -> None:
    line = one_error_line(dataset.parent, "convert", str(dataset), str(dataset / "out.zarr"))
    assert "inside the source" in line


def test_missing_source(tmp_path: Path) -> None:
    line = one_error_line(tmp_path, "convert", str(tmp_path / "nope.n5"), "--dry-run")
    assert "nope.n5" in line


def test_plan_only_is_the_plan_one_line_per_level(tmp_path: Path) -> None:
    """``--plan-only``: a dry run that prints the plan without the metadata diff, one line
    per level with its shape, chunks, codec, copy path, scale and translation; the numbers
    are those Cellmap publishes for hela-2 (the reference .zattrs), not recomputed here."""
    n5 = hela_tree(tmp_path)
    before = snapshot(tmp_path)
    run = run_cli("convert", str(n5), "--plan-only", "--prefix", "recon-1")
    assert run.exit_code == 0, run.stderr
    assert snapshot(tmp_path) == before  # a dry run: nothing written
    lines = run.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("+++", "---", "@@"))]  # no diff
    header = re.split(r"\s{2,}", next(line for line in lines if line.startswith("image ")))
    assert header == ["image", "level", "shape", "chunks", "dtype", "codec", "copy path",
                      "scale", "translation", "unit"]  # fmt: skip
    rows = [
        dict(zip(header, re.split(r"\s{2,}", line), strict=True))
        for line in lines
        if line.startswith("recon-1/em/fibsem-uint16 ")
    ]
    levels = len(load_reference(HELA_GROUP)["multiscales"][0]["datasets"])
    assert [row["level"] for row in rows] == [f"s{i}" for i in range(levels)]
    assert len(lines) == 5 + levels  # source, dest, summary, a blank line, the header
    assert rows[0]["shape"] == "70x40x96"  # the tree's s0: dimensions [96, 40, 70] (x, y, z)
    assert rows[0]["dtype"] == "uint16"
    assert rows[0]["unit"] == "nanometer"
    published = load_reference(NGFF_PUBLISHED)["multiscales"][0]["datasets"]
    for row, dataset in zip(rows, published, strict=False):
        scale, translation = (t[t["type"]] for t in dataset["coordinateTransformations"])
        assert row["scale"] == ", ".join(f"{v:g}" for v in scale)
        assert row["translation"] == ", ".join(f"{v:g}" for v in translation)
    full = run_cli("convert", str(n5), "--dry-run", "--prefix", "recon-1")
    assert "+++ b/recon-1/em/fibsem-uint16/.zattrs" in full.stdout  # the dry run keeps the diff
    assert len(full.stdout.splitlines()) > 4 * len(lines)


def test_plan_only_json_has_every_level_unrounded(tmp_path: Path) -> None:
    n5 = hela_tree(tmp_path)
    run = run_cli("convert", str(n5), "--plan-only", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json
    assert set(document) == {"fingerprint", "levels"}  # no diff
    levels = document["levels"]
    assert [level["level"] for level in levels] == [f"s{i}" for i in range(len(levels))]
    assert levels[0]["scale"] == [5.24, 4.0, 4.0]
    assert levels[4]["translation"] == [39.300000000000004, 30.0, 30.0]  # as published
    assert levels[0]["copy_path"] in ("blocks moved as bytes", "block by block")
    assert levels[0]["shard"] is None


def test_bulk_survey_has_no_plan_only(tmp_path: Path) -> None:
    """The bulk survey is already the short form (a line per dataset): ``--plan-only`` is
    a usage error there, not thousands of level lines of a whole bucket."""
    hela_tree(tmp_path)
    run = run_cli("bulk", "convert", str(tmp_path), "--dry-run", "--plan-only")
    assert run.exit_code == 2
    assert "--plan-only" in run.stderr
