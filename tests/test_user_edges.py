"""Small things a user hit: option values, relative paths, error locations, SIGTERM, warnings
of the real run, and source metadata parsed strictly (dangling block links, numbers given as
strings, NaN). Each is run through the CLI, most as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from migrate.example.fixture import ImageSpec, write_image
from migrate.source.discover import split_n5_url
from tests.helpers import (
    REPO,
    end,
    popen_convert,
    run_cli,
    run_subprocess,
    signal_when,
    unit_records,
)
from tests.n5_reader import read_n5_array

SMALL = ImageSpec(
    path="em/fibsem-uint8",
    shape=(20, 24, 28),
    dtype="uint8",
    block_size=(8, 8, 8),
    levels=2,
    content="noise",
)


@pytest.fixture
def n5(tmp_path: Path) -> Path:
    """A fresh small ``jrc_edge-1.n5`` with one two-level image (each test may change it)."""
    root = tmp_path / "jrc_edge-1" / "jrc_edge-1.n5"
    write_image(root, SMALL)
    return root


def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m migrate ARGS`` as a real process in the directory ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "migrate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_same_data(n5_image: Path, zarr_image: Path, levels: int) -> None:
    """Every level of the output equals the source, read by independent readers."""
    for level in range(levels):
        expected = read_n5_array(n5_image / f"s{level}")
        output = np.asarray(zarr.open_array(str(zarr_image / f"s{level}"), mode="r")[...])
        np.testing.assert_array_equal(output, expected, err_msg=f"s{level}")


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--chunks", "--shard"])
@pytest.mark.parametrize("value", ["0,64,64", "-1", "a,b,c", "", "64,,64"])
def test_bad_shapes_are_usage_errors(n5: Path, option: str, value: str) -> None:
    run = run_cli("convert", str(n5), "--dry-run", "--ngff-version", "0.5", option, value)
    assert run.exit_code == 2, run.stderr
    assert f"Invalid value for '{option}'" in run.stderr
    assert "internal error" not in run.stderr


def test_debug_works_after_the_subcommand(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such.n5")
    for args in (
        ("convert", missing, "--debug"),
        ("--debug", "convert", missing),
        ("status", missing, "--debug"),
        ("verify", missing, str(tmp_path / "x.zarr"), "--debug"),
    ):
        run = run_subprocess(*args)
        assert run.exit_code == 1, (args, run.stderr)
        assert "Traceback (most recent call last)" in run.stderr, (args, run.stderr)
    plain = run_subprocess("convert", missing)
    assert plain.exit_code == 1
    assert "Traceback" not in plain.stderr
    assert len(error_lines(plain.stderr)) == 1


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


def test_n5_urls_are_normalized_before_splitting() -> None:
    assert split_n5_url("/d/x.n5/em/..") == ("/d/x.n5", "")
    assert split_n5_url("/d/x.n5/./em//fibsem-uint8/") == ("/d/x.n5", "em/fibsem-uint8")
    assert split_n5_url("s3://bkt/d/x.n5/em/../em/") == ("s3://bkt/d/x.n5", "em")
    assert split_n5_url("s3://bkt/../x.n5") == ("s3://bkt/x.n5", "")


def test_parent_directory_as_src_plans_the_same_images(n5: Path) -> None:
    """``cd x.n5/em && cellmap-migrate convert ..``: the images are named as from the root,
    the plan (its fingerprint) is the same, and verify with relative paths passes."""
    inside = n5 / "em"
    absolute = run_in(REPO, "convert", str(n5), "--dry-run", "--json")
    assert absolute.returncode == 0, absolute.stderr
    relative = run_in(inside, "convert", "..", "--dry-run", "--json")
    assert relative.returncode == 0, relative.stderr
    plan = json.loads(relative.stdout)
    assert [image["dest_path"] for image in plan["plan"]["images"]] == ["em/fibsem-uint8"]
    assert plan["plan"]["source"] == str(n5)
    assert plan["fingerprint"] == json.loads(absolute.stdout)["fingerprint"]
    converted = run_in(inside, "convert", "..")
    assert converted.returncode == 0, converted.stderr
    dest = n5.with_suffix(".zarr")
    assert (dest / "em" / "fibsem-uint8" / ".zattrs").is_file()
    verified = run_in(inside, "verify", "..", "../../jrc_edge-1.zarr")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert_same_data(n5 / SMALL.path, dest / SMALL.path, levels=2)


def test_error_messages_keep_the_leading_slash(tmp_path: Path) -> None:
    plain = tmp_path / "bad" / "plain"
    plain.mkdir(parents=True)
    (plain / "attributes.json").write_text('{"n5": "2.0.0"}')
    run = run_cli("convert", str(plain), str(tmp_path / "out.zarr"))
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {plain}: no multiscale image"), line


# --------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------

MANY_UNITS = ImageSpec(
    path="em/fibsem-uint16",
    shape=(96, 128, 128),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=1,
    content="noise",
)
ONE_BLOCK_UNITS = ("--workers", "1", "--unit-mib", "0.0078125", "--no-transplant")
"""One 16³ uint16 block per work unit: 384 units."""


def test_sigterm_stops_like_ctrl_c_and_resumes(tmp_path: Path) -> None:
    """What a batch scheduler sends at a time limit: one line, exit 143 (128 + SIGTERM), the
    finished units recorded; the same command finishes the job and the output equals the
    source."""
    n5 = tmp_path / "jrc_term-1" / "jrc_term-1.n5"
    write_image(n5, MANY_UNITS)
    dest = tmp_path / "out.zarr"
    proc = popen_convert(str(n5), str(dest), *ONE_BLOCK_UNITS)
    try:
        signal_when(proc, lambda: unit_records(dest) >= 5, "5 unit records", signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        end(proc)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "terminated (SIGTERM)" in line
    assert "run the same command again" in line
    recorded = unit_records(dest)
    assert recorded >= 5
    assert not (dest / MANY_UNITS.path / ".zattrs").exists()  # not advertised as complete
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1
    assert "INCOMPLETE" in status.stdout
    final = run_subprocess("convert", str(n5), str(dest), *ONE_BLOCK_UNITS, "--json")
    assert final.exit_code == 0, final.stderr
    (image,) = final.json["images"]
    assert image["units_skipped"] >= recorded
    assert image["units_copied"] + image["units_skipped"] == image["units_total"] == 384
    assert_same_data(n5 / MANY_UNITS.path, dest / MANY_UNITS.path, levels=1)


# --------------------------------------------------------------------------------------
# Warnings of the real run
# --------------------------------------------------------------------------------------


def test_a_level_larger_than_s0_warns_in_the_real_run_too(n5: Path, tmp_path: Path) -> None:
    attributes = n5 / SMALL.path / "s1" / "attributes.json"
    attrs = json.loads(attributes.read_text())
    attrs["dimensions"] = [40, 30, 30]  # F order; s0 is 28 x 24 x 20
    attributes.write_text(json.dumps(attrs))
    expected = "s1 shape [30, 30, 40] does not fit its downsampling factor"
    dry = run_cli("convert", str(n5), str(tmp_path / "a.zarr"), "--dry-run")
    assert expected in dry.stdout
    real = run_cli("convert", str(n5), str(tmp_path / "a.zarr"))
    assert real.exit_code == 0, real.stderr
    assert any("warning: " in line and expected in line for line in real.stderr.splitlines())
    as_json = run_cli("convert", str(n5), str(tmp_path / "b.zarr"), "--json")
    assert as_json.exit_code == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stderr.splitlines()]
    warnings = [event for event in events if event["event"] == "warning"]
    assert [event["image"] for event in warnings] == [SMALL.path]
    assert expected in warnings[0]["message"]


# --------------------------------------------------------------------------------------
# Source metadata and blocks, strictly
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        (),
        ("--no-transplant",),
        ("--skip-decode-check",),
        ("--ngff-version", "0.5"),
        ("--ngff-version", "0.5", "--shard", "16,16,16", "--skip-decode-check"),
    ],
    ids=["transplant", "tensorstore", "file-to-file", "v0.5", "v0.5-shards-file-to-file"],
)
def test_a_dangling_block_link_is_an_error_naming_it(
    n5: Path, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    block = n5 / SMALL.path / "s0" / "1" / "1" / "1"
    block.unlink()
    block.symlink_to(tmp_path / "gone" / "1")
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), *flags)
    assert run.exit_code == 1, run.stdout + run.stderr
    assert f"{block}: a symbolic link to {tmp_path / 'gone' / '1'}, which does not exist" in (
        run.stderr
    )
    status = run_cli("status", str(dest), "--json")
    assert {image["image"]: image["complete"] for image in status.json} == {SMALL.path: False}


def test_a_dangling_link_alone_in_its_unit_is_not_taken_for_an_empty_block(
    n5: Path, tmp_path: Path
) -> None:
    """Units of one block each: the unit whose only block is a link to nothing is not
    skipped as all zero (units without stored blocks are), it fails naming the link."""
    block = n5 / SMALL.path / "s0" / "1" / "1" / "1"
    block.unlink()
    block.symlink_to(tmp_path / "gone" / "1")
    dest = tmp_path / "out.zarr"
    one_block = str(8**3 / 2**20)  # one 8³ uint8 block
    run = run_cli("convert", str(n5), str(dest), "--unit-mib", one_block)
    assert run.exit_code == 1, run.stdout + run.stderr
    assert f"{block}: a symbolic link to {tmp_path / 'gone' / '1'}, which does not exist" in (
        run.stderr
    )


def test_a_dangling_attributes_link_is_an_error(n5: Path, tmp_path: Path) -> None:
    attributes = n5 / SMALL.path / "s1" / "attributes.json"
    attributes.unlink()
    attributes.symlink_to(tmp_path / "nowhere.json")
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert f"{attributes}: a symbolic link to {tmp_path / 'nowhere.json'}" in line


def edit_json(path: Path, text_from: str, text_to: str) -> None:
    text = path.read_text()
    assert text_from in text
    path.write_text(text.replace(text_from, text_to, 1))


def test_a_scale_given_as_a_string_is_an_error(n5: Path, tmp_path: Path) -> None:
    attributes = n5 / SMALL.path / "s0" / "attributes.json"
    transform = json.loads(attributes.read_text())["transform"]
    scale = transform["scale"]
    transform["scale"] = [scale[0], scale[1], "5.24"]
    attrs = json.loads(attributes.read_text())
    attrs["transform"] = transform
    attributes.write_text(json.dumps(attrs))
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {attributes}: transform.scale[2]: "), line
    assert "'5.24'" in line


def test_a_pixel_resolution_given_as_a_string_is_an_error(n5: Path, tmp_path: Path) -> None:
    attributes = n5 / SMALL.path / "attributes.json"
    attrs = json.loads(attributes.read_text())
    attrs["pixelResolution"]["dimensions"][0] = "4"
    attributes.write_text(json.dumps(attrs))
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {attributes}: pixelResolution.dimensions[0]: "), line


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("s0", "blockSize", "8"),
        ("s0", "dimensions", True),
        ("", "scales", "2"),
    ],
)
def test_an_integer_given_as_a_string_or_boolean_is_an_error(
    n5: Path, tmp_path: Path, where: str, field: str, value: object
) -> None:
    attributes = n5 / SMALL.path / where / "attributes.json"
    attrs = json.loads(attributes.read_text())
    if field == "scales":
        attrs[field][1][0] = value
    else:
        attrs[field][0] = value
    attributes.write_text(json.dumps(attrs))
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"), "--dry-run")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {attributes}: {field}"), line
    assert repr(value) in line, line


def test_nan_in_an_extra_key_is_an_error(n5: Path, tmp_path: Path) -> None:
    """Python's json reads NaN, JSON has none: the value could only be written back as null
    (changed) or as invalid JSON, so the file and the field are named instead."""
    attributes = n5 / SMALL.path / "s0" / "attributes.json"
    text = attributes.read_text().rstrip()
    assert text.endswith("}")
    attributes.write_text(text[:-1] + ', "acquisition": {"dwell": [1.0, NaN]}}')
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"))
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {attributes}: acquisition.dwell[1]: NaN is not a JSON"), line
    assert not (tmp_path / "out.zarr").exists()


def option_help(command: str, option: str) -> str:
    """The help text of ``option`` in ``COMMAND --help`` (its lines up to the next option)."""
    run = run_cli(*command.split(), "--help")
    assert run.exit_code == 0
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    text = [lines[start].strip()]
    for line in lines[start + 1 :]:
        if line.strip().startswith("-") or not line.strip():
            break
        text.append(line.strip())
    return " ".join(text)


def test_ngff_version_says_what_each_version_is() -> None:
    text = option_help("convert", "--ngff-version")
    assert "Zarr v2" in text, text
    assert "Zarr v3" in text, text
    assert "--shard" in text, text


def test_status_help_names_what_status_prints(n5: Path, tmp_path: Path) -> None:
    """``status --help`` says it prints units and MB, and it does."""
    text = " ".join(run_cli("status", "--help").stdout.split())
    assert "work units done / total" in text, text
    assert "MB of voxels done / total" in text, text
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    status = run_cli("status", str(dest))
    assert status.exit_code == 0, status.stderr
    levels = [line for line in status.stdout.splitlines() if line.startswith("  ")]
    assert levels, status.stdout
    assert all(line.endswith(" MB") for line in levels), status.stdout
