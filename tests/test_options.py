"""Option rules a user meets (issue 18): ``--shard``/``--chunks`` against every level, the
output codec's level and blosc settings, a resumed run with another ``--unit-mib``, and what
a refusal of "other settings" says. Each through the CLI; outputs read back independently
(tests/n5_reader.py for the source, zarr-python for the output)."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migrate.example.fixture import ImageSpec, write_dataset
from tests.conftest import DATA
from tests.helpers import (
    chunk_files,
    end,
    freeze_when,
    kill_frozen,
    output_snapshot,
    popen_convert,
    read_zarr,
    run_cli,
    run_subprocess,
    snapshot,
    unit_records,
)
from tests.n5_reader import read_n5_array


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def same_as_source(n5: Path, dest: Path, specs: list[ImageSpec]) -> None:
    for spec in specs:
        for level in range(spec.levels):
            want = read_n5_array(n5 / spec.path / f"s{level}")
            got = read_zarr(dest / spec.path / f"s{level}")
            np.testing.assert_array_equal(got, want, err_msg=f"{spec.path}/s{level}")


# --------------------------------------------------------------------------------------
# 1. --shard and --chunks: one rule, every level in one message, exit 2 naming the option
# --------------------------------------------------------------------------------------

ODD_BLOCKS = [
    ImageSpec(path="em/fibsem-uint16", shape=(90, 100, 70), block_size=(40, 48, 32), levels=2),
    ImageSpec(path="labels/cells_seg", shape=(45, 50, 35), dtype="uint32",
              block_size=(24, 24, 24), levels=2, content="labels"),
]  # fmt: skip


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two images whose blocks (40×48×32 and 24³) 128 does not divide."""
    return write_dataset(tmp_path_factory.mktemp("odd"), "jrc_odd-1", ODD_BLOCKS)


def dry(n5: Path, *args: str) -> Any:
    return run_cli("convert", str(n5), "--dry-run", "--ngff-version", "0.5", *args)


@pytest.mark.parametrize("shard", ["128,128,128", "256,256,256"])
def test_a_shard_that_is_not_whole_chunks_is_refused_for_every_level_at_once(
    odd: Path, shard: str
) -> None:
    """The issue: 128 was refused naming only s0's attributes.json, 256 (bigger than every
    level) was accepted and cut. Now both follow one rule, and the message names the
    option, lists every level that cannot take the shard and says what works."""
    run = dry(odd, "--shard", shard)
    assert run.exit_code == 2, run.stderr
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: --shard {shard} (z, y, x) is not a whole number of chunks")
    assert "attributes.json" not in line
    assert "em/fibsem-uint16 s0, s1 (chunks 40,48,32)" in line
    assert "labels/cells_seg s0, s1 (chunks 24,24,24)" in line
    assert "a shard must hold a whole number of chunks on every axis, at every level" in line
    fixes = re.findall(r"--(shard|chunks) (\d+,\d+,\d+)", line.split("; use ")[1])
    assert [option for option, _ in fixes] == ["shard", "chunks"]
    for option, value in fixes:  # each fix the message offers works
        fixed = dry(odd, "--shard", value if option == "shard" else shard, f"--{option}", value)
        assert fixed.exit_code == 0, (option, value, fixed.stderr)


def test_a_shard_larger_than_a_level_is_cut_to_it_in_whole_chunks(tmp_path: Path) -> None:
    spec = ImageSpec(path="em/fibsem-uint8", shape=(40, 50, 70), dtype="uint8",
                     block_size=(16, 16, 16), levels=2)  # fmt: skip
    n5 = write_dataset(tmp_path, "jrc_cut-1", [spec])
    run = dry(n5, "--shard", "512,512,512", "--json")
    assert run.exit_code == 0, run.stderr
    levels = run.json["plan"]["images"][0]["levels"]
    # s0 40×50×70 → 48×64×80 (3, 4, 5 chunks); s1 20×25×35 → 32×32×48
    assert [level["shard"] for level in levels] == [[48, 64, 80], [32, 32, 48]]


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (("--chunks", "64,64"), "error: --chunks 64,64 has 2 value(s) for the 3 axes of "),
        (("--shard", "64,64"), "error: --shard 64,64 has 2 value(s) for the 3 axes of "),
        (("--shard", "64,64,64,64"), "error: --shard 64,64,64,64 has 4 value(s) for the 3 axes"),
    ],
)
def test_a_shape_with_another_number_of_axes_is_a_usage_error(
    odd: Path, args: tuple[str, ...], starts: str
) -> None:
    run = dry(odd, *args)
    assert run.exit_code == 2, run.stderr
    (line,) = error_lines(run.stderr)
    assert line.startswith(starts), line
    assert "em/fibsem-uint16, labels/cells_seg" in line
    assert "attributes.json" not in line


def test_a_shard_without_ngff_05_is_a_usage_error(odd: Path) -> None:
    run = run_cli("convert", str(odd), "--dry-run", "--shard", "80,96,64")
    assert run.exit_code == 2, run.stderr
    (line,) = error_lines(run.stderr)
    assert line.startswith("error: --shard 80,96,64: sharding needs --ngff-version 0.5")


def test_help_states_the_shard_rule() -> None:
    run = run_cli("convert", "--help")
    text = " ".join(run.stdout.split())
    assert "a whole number of chunks on every axis, at every level" in text
    assert "a level smaller than the shard gets one shard of its size" in text


# --------------------------------------------------------------------------------------
# 7. The output codec's level, blosc compressor and shuffle
# --------------------------------------------------------------------------------------

CODEC_SPECS = [
    ImageSpec(path="em/fibsem-uint16", shape=(30, 40, 50), block_size=(16, 16, 16), levels=2,
              compression={"type": "gzip", "level": 6}),
    ImageSpec(path="lm/er_palm", shape=(20, 24, 28), dtype="float32", block_size=(16, 16, 16),
              levels=2, content="noise",
              compression={"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}),
]  # fmt: skip


@pytest.fixture(scope="module")
def codecs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzip level 6 image and a blosc lz4 one."""
    return write_dataset(tmp_path_factory.mktemp("codecs"), "jrc_codecs-1", CODEC_SPECS)


def compressors(dest: Path) -> dict[str, Any]:
    """Every level's output codec as Zarr records it (v2 compressor, v3 last codec)."""
    found = {}
    for spec in CODEC_SPECS:
        for level in range(spec.levels):
            path = dest / spec.path / f"s{level}"
            if (path / ".zarray").exists():
                found[f"{spec.path}/s{level}"] = json.loads((path / ".zarray").read_text())[
                    "compressor"
                ]
            else:
                found[f"{spec.path}/s{level}"] = json.loads((path / "zarr.json").read_text())[
                    "codecs"
                ][-1]
    return found


def test_codec_level_applies_to_every_level(codecs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(codecs), str(dest), "--codec", "zstd", "--codec-level", "9")
    assert run.exit_code == 0, run.stderr
    assert set(map(json.dumps, compressors(dest).values())) == {
        json.dumps({"id": "zstd", "level": 9})
    }
    same_as_source(codecs, dest, CODEC_SPECS)
    assert run_cli("verify", str(codecs), str(dest)).exit_code == 0


def test_blosc_settings_apply_to_every_level_v05(codecs: Path, tmp_path: Path) -> None:
    """A blosc lz4 source and a gzip one end alike: the issue's "keeps a source's lz4
    settings for one image and writes zstd 5 for others, with no way to choose"."""
    dest = tmp_path / "out.zarr"
    args = ("--ngff-version", "0.5", "--codec", "blosc", "--blosc-cname", "zstd",
            "--codec-level", "7", "--blosc-shuffle", "bitshuffle")  # fmt: skip
    run = run_cli("convert", str(codecs), str(dest), *args)
    assert run.exit_code == 0, run.stderr
    written = compressors(dest)
    assert {
        (c["name"], c["configuration"]["cname"], c["configuration"]["clevel"],
         c["configuration"]["shuffle"])
        for c in written.values()
    } == {("blosc", "zstd", 7, "bitshuffle")}  # fmt: skip
    same_as_source(codecs, dest, CODEC_SPECS)
    assert run_cli("verify", str(codecs), str(dest)).exit_code == 0


def test_the_dry_run_shows_every_levels_codec_and_how_it_is_made(codecs: Path) -> None:
    run = run_cli("convert", str(codecs), "--dry-run", "--codec", "gzip", "--codec-level", "6")
    assert run.exit_code == 0, run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if " shape " in line}
    # the gzip 6 source is moved as bytes; the blosc one re-encoded, both gzip 6
    assert lines.keys() == {"s0", "s1"}
    em = [line for line in run.stdout.splitlines() if " shape 30x40x50" in line]
    assert len(em) == 1
    assert "gzip level 6, big-endian" in em[0]
    assert "blocks moved as bytes" in em[0]
    lm = [line for line in run.stdout.splitlines() if " shape 20x24x28" in line]
    assert len(lm) == 1
    assert "gzip level 6, little-endian" in lm[0]
    assert "re-encoded as requested (--codec gzip --codec-level 6)" in lm[0]
    other = run_cli("convert", str(codecs), "--dry-run", "--codec", "blosc", "--blosc-shuffle",
                    "noshuffle")  # fmt: skip
    assert other.exit_code == 0, other.stderr
    level_lines = [line for line in other.stdout.splitlines() if " shape " in line]
    assert len(level_lines) == 4
    assert all("blosc zstd level 5 noshuffle, little-endian" in line for line in level_lines)


def test_gzip_levels_write_the_same_bytes_every_time(codecs: Path, tmp_path: Path) -> None:
    """Levels 7–9 go to libdeflate (ISA-L's top level writes CPU-dependent bytes): two runs
    with different thread counts write identical chunks, each a gzip stream of the level."""
    runs = []
    for workers in ("1", "3"):
        dest = tmp_path / f"out-{workers}.zarr"
        run = run_cli("convert", str(codecs), str(dest), "--codec", "gzip", "--codec-level", "9",
                      "--workers", workers)  # fmt: skip
        assert run.exit_code == 0, run.stderr
        runs.append({key: digest for key, (digest, _) in chunk_files(dest).items()})
    assert runs[0] == runs[1]
    chunk = tmp_path / "out-1.zarr" / "lm/er_palm/s0/0/0/0"
    values = np.frombuffer(zlib.decompress(chunk.read_bytes(), wbits=31), dtype="<f4")
    np.testing.assert_array_equal(
        values.reshape(16, 16, 16), read_n5_array(codecs / "lm/er_palm/s0")[:16, :16, :16]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--codec", "zstd", "--codec-level", "30"),
         "error: --codec-level 30: zstd levels are 1–22"),
        (("--codec", "gzip", "--codec-level", "10"),
         "error: --codec-level 10: gzip levels are 0–9"),
        (("--codec", "blosc", "--codec-level", "-1"),
         "error: --codec-level -1: blosc levels are 0–9"),
        (("--codec-level", "5",), "error: --codec-level 5: name the codec it is for"),
        (("--codec", "zstd", "--blosc-cname", "lz4"),
         "error: --blosc-cname lz4: only for --codec blosc, not --codec zstd"),
        (("--blosc-shuffle", "shuffle",), "error: --blosc-shuffle shuffle: name the codec"),
    ],
)  # fmt: skip
def test_codec_option_values_are_checked(codecs: Path, args: tuple[str, ...], message: str) -> None:
    run = run_cli("convert", str(codecs), "--dry-run", *args)
    assert run.exit_code == 2, run.stderr
    (line,) = error_lines(run.stderr)
    assert line.startswith(message), line


def test_an_unknown_blosc_compressor_is_a_usage_error(codecs: Path) -> None:
    run = run_cli("convert", str(codecs), "--dry-run", "--codec", "blosc", "--blosc-cname", "xz")
    assert run.exit_code == 2
    assert "Invalid value for '--blosc-cname'" in run.stderr


# --------------------------------------------------------------------------------------
# 3. --unit-mib is not part of the output's identity; refusals name the settings
# --------------------------------------------------------------------------------------

UNITS = ImageSpec(path="em/fibsem-uint8", shape=(48, 64, 64), dtype="uint8",
                  block_size=(16, 16, 16), levels=2, content="noise")  # fmt: skip
"""With --unit-mib 0.004 each 16³ uint8 block is a unit: 48 + 8 units."""
ONE_BLOCK = ("--unit-mib", "0.004", "--workers", "1", "--no-transplant")


def test_a_run_resumed_with_another_unit_size_redoes_only_what_is_missing(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path / "src", "jrc_units-1", [UNITS])
    reference = tmp_path / "reference.zarr"
    assert run_cli("convert", str(n5), str(reference), "--unit-mib", "64").exit_code == 0
    dest = tmp_path / "out.zarr"
    proc = popen_convert(str(n5), str(dest), *ONE_BLOCK)
    try:
        freeze_when(proc, lambda: unit_records(dest) >= 5, "5 unit records")
        recorded = unit_records(dest)
        kill_frozen(proc)
    finally:
        end(proc)
    resumed = run_subprocess("convert", str(n5), str(dest), "--unit-mib", "4", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    (image,) = resumed.json["images"]
    assert image["state_before"] == "partial"
    assert image["units_skipped"] == recorded  # every recorded unit kept, in its own units
    assert image["units_copied"] == 56 - recorded
    assert "goes on with the work units it was started with" in resumed.stderr
    same_as_source(n5, dest, [UNITS])
    digests = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert digests == {key: digest for key, (digest, _) in chunk_files(reference).items()}
    assert (dest / "em/fibsem-uint8/.zattrs").read_text().replace(str(dest), "") == (
        reference / "em/fibsem-uint8/.zattrs"
    ).read_text().replace(str(reference), "")
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0


def test_a_finished_output_is_complete_whatever_the_unit_size(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_units-2", [UNITS])
    assert run_cli("convert", str(n5), "--unit-mib", "0.004").exit_code == 0
    before = output_snapshot(n5.with_suffix(".zarr"))
    again = run_cli("convert", str(n5), "--unit-mib", "16")
    assert again.exit_code == 0, again.stderr
    assert "already complete" in again.stdout
    assert output_snapshot(n5.with_suffix(".zarr")) == before


def test_a_refusal_names_the_settings_old_and_new_and_how_to_go_on(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_settings-1", [UNITS])
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    run = run_cli("convert", str(n5), "--codec", "zstd", "--codec-level", "5")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert "em/fibsem-uint8 was written with other settings: --codec keep → --codec zstd, " in line
    assert "no --codec-level → --codec-level 5" in line
    assert "the same command with --codec keep and without --codec-level goes on with it" in line
    assert line.endswith("; use --overwrite to replace it")
    # a partial image: its settings are in its resume record
    partial = tmp_path / "partial.zarr"
    proc = popen_convert(str(n5), str(partial), *ONE_BLOCK, "--chunks", "16,16,32")
    try:
        freeze_when(proc, lambda: unit_records(partial) >= 2, "2 unit records")
        kill_frozen(proc)
    finally:
        end(proc)
    run = run_cli("convert", str(n5), str(partial), "--ngff-version", "0.4")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert "was written with other settings: --chunks 16,16,32 → no --chunks" in line
    assert "the same command with --chunks 16,16,32 goes on with it" in line
    assert dest.exists()


def test_the_same_settings_over_other_source_metadata_names_the_field(tmp_path: Path) -> None:
    spec = ImageSpec(path="em/fibsem-uint8", shape=(20, 24, 28), dtype="uint8", levels=2,
                     metadata="cosem")  # fmt: skip
    n5 = write_dataset(tmp_path, "jrc_settings-2", [spec])
    assert run_cli("convert", str(n5), "--ngff-version", "0.5").exit_code == 0
    group_file, array_file = (
        n5 / spec.path / "attributes.json",
        n5 / spec.path / "s0/attributes.json",
    )
    group, array = json.loads(group_file.read_text()), json.loads(array_file.read_text())
    group["multiscales"][0]["datasets"][0]["transform"]["scale"][0] = 5.25  # z, was 5.24
    array["transform"]["scale"][0] = 5.25
    group_file.write_text(json.dumps(group))
    array_file.write_text(json.dumps(array))
    run = run_cli("convert", str(n5), "--ngff-version", "0.5")
    assert run.exit_code == 1
    (line,) = error_lines(run.stderr)
    assert "was written from other source metadata or by another version" in line
    assert (
        "multiscales[0].datasets[0].coordinateTransformations[0].scale[0] is 5.24, "
        "the plan says 5.25"
    ) in line


def test_output_of_an_earlier_version_is_named_as_such_and_kept(tmp_path: Path) -> None:
    """The output an earlier cellmap-migrate wrote (tests/data/earlier-version: its two
    metadata documents that differ from this version's; the chunks are the same bytes)
    cannot be resumed or verified by this version: ``convert`` and ``verify`` each say so in
    one line naming the file, say what to do, and change nothing; ``--overwrite`` does it."""
    spec = ImageSpec(path="em/x", shape=(8, 8, 8), dtype="uint8", levels=1)
    n5 = write_dataset(tmp_path, "jrc_old-1", [spec])
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    earlier = DATA / "earlier-version"
    shutil.rmtree(dest / ".cellmap-migrate")  # that version kept no ledger
    (dest / ".zattrs").write_text((earlier / "root.zattrs").read_text())
    image_attrs = dest / spec.path / ".zattrs"
    image_attrs.write_text((earlier / "em-x.zattrs").read_text().replace("{SOURCE}", str(n5)))
    before = snapshot(dest)
    for command in ("convert", "verify"):
        run = run_cli(command, str(n5), str(dest))
        assert run.exit_code == 1, run.stdout
        (line,) = error_lines(run.stderr)
        assert "earlier cellmap-migrate" in line
        assert "--overwrite" in line
        assert "--unit-mib" not in line  # no setting resumes it
        assert str(dest / spec.path) in line
    assert snapshot(dest) == before
    again = run_cli("convert", str(n5), str(dest), "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0
