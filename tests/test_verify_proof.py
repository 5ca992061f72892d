"""`verify` is a proof: SRC's own metadata, planned again with the settings DEST records,
every metadata file compared field by field, every image and level present and nothing
else, the voxels compared, and a final line saying what was proven.

Each test breaks a copy of a finished migration the way a user or a fault would and checks
the one line that names the break. The expected values come from the files the test wrote,
never from the code under test.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pty
import shutil
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from migrate.example.fixture import (
    ImageSpec,
    encode_block,
    example_images,
    level_shape,
    write_dataset,
)
from tests.helpers import REPO, run_cli
from tests.s3server import (
    s3_client,
    upload_tree,
)

VERSIONS = ["0.4", "0.5"]
SPECS = example_images("tiny")
NAME = "jrc_example-1"
METADATA = {".zattrs", ".zarray", ".zgroup", "zarr.json"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("src"), NAME, SPECS)


@pytest.fixture(scope="module")
def finished(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished migration of ``source`` per OME-NGFF version (never modified)."""
    out = {}
    for version in VERSIONS:
        dest = tmp_path_factory.mktemp(f"v{version}") / f"{NAME}.zarr"
        run = run_cli("convert", str(source), str(dest), "--ngff-version", version)
        assert run.exit_code == 0, run.stderr
        out[version] = dest
    return out


def copy_of(finished: dict[str, Path], version: str, tmp_path: Path) -> Path:
    dest = tmp_path / f"{NAME}.zarr"
    shutil.copytree(finished[version], dest)
    return dest


def image_doc(dest: Path, image: str, version: str) -> Path:
    return dest / image / (".zattrs" if version == "0.4" else "zarr.json")


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=1))


def multiscale(document: Any, version: str) -> Any:
    return (document if version == "0.4" else document["attributes"]["ome"])["multiscales"][0]


def field(version: str, name: str) -> str:
    """The field path of ``multiscales[0]…`` inside an image group's metadata file."""
    return name if version == "0.4" else f"attributes.ome.{name}"


def verify(source: Path | str, dest: Path | str, *args: str) -> tuple[int, list[str], str]:
    run = run_cli("verify", str(source), str(dest), *args)
    return run.exit_code, run.stdout.splitlines(), run.stderr


def mismatches(lines: list[str]) -> list[str]:
    return [line.removeprefix("MISMATCH ") for line in lines if line.startswith("MISMATCH ")]


# --------------------------------------------------------------------------------------
# SRC: read, not assumed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_missing_source_is_one_clear_error(
    finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    missing = tmp_path / "no" / "such.n5"
    code, out, err = verify(missing, finished[version])
    assert code == 1
    assert not mismatches(out)  # not one "voxels differ" line per box
    assert err.strip().splitlines() == [f"error: {missing}: no such N5 group"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_different_dataset_is_one_clear_error(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    other = write_dataset(tmp_path, "jrc_other-2", SPECS)  # same layout, another dataset
    code, out, err = verify(other, finished[version])
    assert code == 1
    assert not mismatches(out)
    assert err.strip().splitlines() == [
        f"error: {other} is not the source of {finished[version]}: "
        f"its images were migrated from {source}"
    ]


def test_a_moved_copy_of_the_source_is_refused_naming_the_recorded_one(
    source: Path, finished: dict[str, Path], tmp_path: Path
) -> None:
    """Where the source was is part of what DEST records (convert from the copy would
    plan other provenance), so verify names the source DEST was migrated from."""
    moved = tmp_path / "elsewhere" / NAME / f"{NAME}.n5"
    shutil.copytree(source, moved)
    code, out, err = verify(moved, finished["0.4"])
    assert code == 1
    assert not mismatches(out)
    assert err.strip().splitlines() == [
        f"error: {moved} is not the source of {finished['0.4']}: "
        f"its images were migrated from {source}"
    ]


# --------------------------------------------------------------------------------------
# The settings DEST records, and the plan made again with them
# --------------------------------------------------------------------------------------


def test_the_settings_are_recorded_and_verify_plans_with_them(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    args = ["--ngff-version", "0.5", "--codec", "zstd", "--chunks", "8,16,16", "--prefix", "r1"]
    dry = run_cli("convert", str(source), str(dest), *args, "--unit-mib", "0.5", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    run = run_cli("convert", str(source), str(dest), *args, "--unit-mib", "0.5")
    assert run.exit_code == 0, run.stderr
    written = (dest / "r1/em/fibsem-uint16/zarr.json").read_text()
    assert '"settings": {' in written
    # the dry run's diff shows the recorded settings as they are then written
    settings_lines = [line for line in written.splitlines() if "label_patterns" in line]
    assert settings_lines
    assert all(f"+{line}" in dry.stdout for line in settings_lines)
    provenance = json.loads(written)["attributes"]["cellmap-migrate"]
    assert provenance["settings"] == {
        "ngff_version": "0.5",
        "codec": "zstd",
        "codec_level": None,
        "blosc_cname": None,
        "blosc_shuffle": None,
        "chunks": [8, 16, 16],
        "shard": None,
        "prefix": "r1",
        "downsampling": "windowed",
        "trust": None,
        "allow_unknown_units": False,
        "label_patterns": [],
    }  # not the work-unit size (--unit-mib): it changes no output byte (issue 18, item 3)
    code, out, err = verify(source, dest)
    assert code == 0, [*out, err]
    assert out[-1].startswith("verified 5 image(s), 13 level(s)")


def test_missing_recorded_settings_are_one_clear_error(
    source: Path, finished: dict[str, Path], tmp_path: Path
) -> None:
    dest = copy_of(finished, "0.4", tmp_path)
    doc = image_doc(dest, "em/fibsem-uint8", "0.4")
    edit_json(doc, lambda d: d["cellmap-migrate"].pop("settings"))
    code, _out, err = verify(source, dest)
    assert code == 1
    assert err.startswith(f"error: {doc}: cellmap-migrate.settings: missing")
    assert len(err.strip().splitlines()) == 1


def test_parts_migrated_with_different_settings_are_verified_part_by_part(
    source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    for image, codec in (("em/fibsem-uint8", "zstd"), ("lm/er_palm", "keep")):
        run = run_cli("convert", str(source / image), str(dest), "--codec", codec)
        assert run.exit_code == 0, run.stderr
    code, _out, err = verify(source / "em", dest)
    assert code == 1
    assert "were migrated with different settings" not in err  # only em/ is in question
    assert f"{dest}/em/fibsem-uint16: image missing" in err
    code, _out, err = verify(source, dest)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {dest}: its images of {source} were migrated with different settings "
        "(em/fibsem-uint8: codec 'zstd'; lm/er_palm: codec 'keep'); verify each part with "
        "its own SRC"
    ]
    for image in ("em/fibsem-uint8", "lm/er_palm"):
        code, out, err = verify(source / image, dest)
        assert code == 0, [*out, err]
        assert out[-1].startswith("verified 1 image(s)")


def test_an_unfinished_image_is_reported(source: Path, tmp_path: Path) -> None:
    copy = tmp_path / "src" / NAME / f"{NAME}.n5"
    shutil.copytree(source, copy)
    block = copy / "em/fibsem-uint16/s0/1/1/1"
    block.write_bytes(block.read_bytes()[:40])  # a truncated block: its unit cannot be copied
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(copy), str(dest), "--unit-mib", "0.01").exit_code == 1
    code, out, _err = verify(copy, dest)
    assert code == 1
    found = mismatches(out)
    assert f"{dest}/em/fibsem-uint16: migration is not complete" in found
    assert f"{dest}/em/fibsem-uint16/.zattrs: missing (the plan writes it)" in found


# --------------------------------------------------------------------------------------
# Metadata: every document, field by field
# --------------------------------------------------------------------------------------


def _scale(version: str) -> Callable[[Any], None]:
    return lambda d: multiscale(d, version)["datasets"][0]["coordinateTransformations"][0][
        "scale"
    ].__setitem__(0, 5.25)


def _translation(version: str) -> Callable[[Any], None]:
    return lambda d: multiscale(d, version)["datasets"][1]["coordinateTransformations"][1][
        "translation"
    ].__setitem__(2, 7.5)


def _unit(version: str) -> Callable[[Any], None]:
    return lambda d: multiscale(d, version)["axes"][1].__setitem__("unit", "micrometer")


def _drop_level(version: str) -> Callable[[Any], None]:
    return lambda d: multiscale(d, version)["datasets"].pop()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _scale,
            "multiscales[0].datasets[0].coordinateTransformations[0].scale[0] is 5.25, "
            "the plan says 5.24",
        ),
        (
            _translation,
            "multiscales[0].datasets[1].coordinateTransformations[1].translation[2] is 7.5, "
            "the plan says 2.0",
        ),
        (_unit, 'multiscales[0].axes[1].unit is "micrometer", the plan says "nanometer"'),
        (_drop_level, 'multiscales[0].datasets[2] is missing, the plan says {"path":"s2",'),
    ],
    ids=["scale", "translation", "unit", "level-removed-from-multiscales"],
)
def test_a_changed_image_attribute_is_named_by_file_and_field(
    source: Path,
    finished: dict[str, Path],
    tmp_path: Path,
    version: str,
    change: Callable[[str], Callable[[Any], None]],
    expected: str,
) -> None:
    dest = copy_of(finished, version, tmp_path)
    doc = image_doc(dest, "em/fibsem-uint16", version)
    edit_json(doc, change(version))
    code, out, err = verify(source, dest)
    assert code == 1
    wanted = f"{doc}: {field(version, expected)}"
    assert any(line.startswith(wanted) for line in mismatches(out)), out
    assert out[-1].startswith("NOT verified:")
    assert "error: verification failed:" in err


@pytest.mark.parametrize("version", VERSIONS)
def test_a_changed_array_codec_is_named(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    """The chunks still decode (gzip ignores the level), so only the metadata tells."""
    dest = copy_of(finished, version, tmp_path)
    if version == "0.4":
        doc = dest / "em/fibsem-uint8/s0/.zarray"
        edit_json(doc, lambda d: d["compressor"].__setitem__("level", 5))
        expected = "compressor.level is 5, the plan says 6"
    else:
        doc = dest / "em/fibsem-uint8/s0/zarr.json"
        edit_json(doc, lambda d: d["codecs"][1]["configuration"].__setitem__("level", 5))
        expected = "codecs[1].configuration.level is 5, the plan says 6"
    code, out, _err = verify(source, dest)
    assert code == 1
    assert f"{doc}: {expected}" in mismatches(out)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_deleted_image_metadata_file_is_reported_not_skipped(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    dest = copy_of(finished, version, tmp_path)
    doc = image_doc(dest, "em/fibsem-uint8", version)
    doc.unlink()
    code, out, _err = verify(source, dest)
    assert code == 1
    assert f"{doc}: missing (the plan writes it)" in mismatches(out)
    assert not any(line.startswith("verified") for line in out)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_changed_labels_listing_is_reported(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    dest = copy_of(finished, version, tmp_path)
    doc = dest / "labels" / (".zattrs" if version == "0.4" else "zarr.json")

    def add_ghost(d: Any) -> None:
        (d if version == "0.4" else d["attributes"]["ome"])["labels"].append("ghost_seg")

    edit_json(doc, add_ghost)
    code, out, _err = verify(source, dest)
    assert code == 1
    assert f"{dest}/labels: labels lists 'ghost_seg', but there is no such label image" in (
        mismatches(out)
    )


# --------------------------------------------------------------------------------------
# Every image and level there, and nothing else
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_missing_image_and_a_missing_level_are_errors(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    dest = copy_of(finished, version, tmp_path)
    shutil.rmtree(dest / "lm/er_palm")
    shutil.rmtree(dest / "em/fibsem-uint16/s2")
    code, out, _err = verify(source, dest)
    assert code == 1
    found = mismatches(out)
    assert f"{dest}/lm/er_palm: image missing (the plan migrates {source}/lm/er_palm there)" in (
        found
    )
    assert (
        f"{dest}/em/fibsem-uint16/s2: level missing (the plan migrates "
        f"{source}/em/fibsem-uint16/s2 there)" in found
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_an_extra_level_image_and_file_are_reported(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    dest = copy_of(finished, version, tmp_path)
    shutil.copytree(dest / "em/fibsem-uint16/s2", dest / "em/fibsem-uint16/s3")
    shutil.copytree(dest / "em/fibsem-uint8", dest / "em/fibsem-copy")
    (dest / "lm/er_palm/notes.txt").write_text("mine")
    code, out, _err = verify(source, dest)
    assert code == 1
    found = mismatches(out)
    assert f"{dest}/em/fibsem-uint16/s3: a Zarr array that the plan does not account for" in (found)
    assert (
        f"{dest}/em/fibsem-copy: an image (migrated from {source}/em/fibsem-uint8) that the "
        "plan does not account for" in found
    )
    assert f"{dest}/lm/er_palm/notes.txt: a file the plan does not account for" in found


@pytest.mark.parametrize("version", VERSIONS)
def test_a_key_outside_the_chunk_grid_is_reported(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    dest = copy_of(finished, version, tmp_path)
    level = dest / "em/fibsem-uint16/s0"
    stray = Path("99/0/0") if version == "0.4" else Path("c/99/0/0")
    (level / stray).parent.mkdir(parents=True)
    (level / stray).write_bytes(b"x")
    code, out, _err = verify(source, dest)
    assert code == 1
    assert (
        f"{level}: 1 key(s) that are not chunks of the plan's grid (first: {stray.as_posix()})"
        in mismatches(out)
    )


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("chunk", ["0/0/00", "0/0/+1", "0/0/ 1", "0/0/1 ", "0.0.0", "0/0/9/9"])
def test_a_key_that_is_not_a_canonical_chunk_key_is_reported(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str, chunk: str
) -> None:
    """``int()`` reads ``00``, ``+1`` and `` 1`` as chunk indices; no Zarr reader does, so
    such a key is no chunk of the grid, and nothing a clean tree holds."""
    dest = copy_of(finished, version, tmp_path)
    level = dest / "em/fibsem-uint16/s0"
    stray = chunk if version == "0.4" else f"c/{chunk}"
    (level / stray).parent.mkdir(parents=True, exist_ok=True)
    (level / stray).write_bytes((level / ("0/0/0" if version == "0.4" else "c/0/0/0")).read_bytes())
    code, out, _err = verify(source, dest)
    assert code == 1
    assert mismatches(out) == [
        f"{level}: 1 key(s) that are not chunks of the plan's grid (first: {stray})"
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_file_beside_the_images_fails_the_proof(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    """The README promises no extra file in the migrated tree: one at DEST's root or in a
    group between the images is a failure, not a note (a user deleting the N5 on this
    proof wants a clean tree)."""
    dest = copy_of(finished, version, tmp_path)
    (dest / "notes.txt").write_text("mine")
    (dest / "em" / "scratch").mkdir()
    code, out, err = verify(source, dest)
    assert code == 1
    outside = "that the plan does not account for, outside every image"
    assert sorted(mismatches(out)) == [
        f"{dest}/em/scratch: a folder (not Zarr) {outside} (there before a convert "
        "--into-existing? then verify --into-existing)",
        f"{dest}/notes.txt: a file {outside} (there before a convert --into-existing? then "
        "verify --into-existing)",
    ]
    assert "note:" not in err


@pytest.mark.parametrize("version", VERSIONS)
def test_a_lease_left_at_dest_fails_the_proof(
    source: Path, finished: dict[str, Path], tmp_path: Path, version: str
) -> None:
    """A lease at DEST means a convert is writing it, or died before it finished: what
    verify read may be changing under it, so it says so and does not say OK."""
    dest = copy_of(finished, version, tmp_path)
    lease = dest / ".cellmap-migrate" / "lease.json"
    lease.parent.mkdir(exist_ok=True)  # the ledger's folder is already there
    holder = {
        "run_id": "r1", "host": "node7", "pid": 4242, "started": "2026-12-03T10:00:00Z",
        "command": "cellmap-migrate convert x.n5", "renewed": 1.0, "expiry_seconds": 300,
    }  # fmt: skip
    lease.write_text(json.dumps(holder))
    code, out, _err = verify(source, dest)
    assert code == 1
    assert mismatches(out) == [
        f"{lease}: a convert holds DEST's lease (host node7, pid 4242, started "
        "2026-12-03T10:00:00Z, command: cellmap-migrate convert x.n5): it may still be "
        "writing, or it died before it finished; wait for it to end, or run it again"
    ]


# --------------------------------------------------------------------------------------
# What was proven, and progress while it runs
# --------------------------------------------------------------------------------------


def _voxels() -> int:
    return sum(
        math.prod(level_shape(spec, level)) for spec in SPECS for level in range(spec.levels)
    )


def _metadata_files(dest: Path) -> int:
    return sum(1 for path in dest.rglob("*") if path.name in METADATA)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_final_line_says_what_was_proven(
    source: Path, finished: dict[str, Path], version: str
) -> None:
    code, out, err = verify(source, finished[version])
    assert code == 0, [*out, err]
    levels = sum(spec.levels for spec in SPECS)
    assert out[-1].startswith(
        f"verified {len(SPECS)} image(s), {levels} level(s), all {_voxels():,} voxels compared ("
    )
    assert out[-1].endswith(
        f"equal), {_metadata_files(finished[version])} metadata file(s) equal to the plan: OK"
    )


def test_a_sample_says_how_many_chunks_of_how_many(source: Path, finished: dict[str, Path]) -> None:
    code, out, _err = verify(source, finished["0.4"], "--sample", "0.25", "--seed", "3")
    assert code == 0
    # every level's chunks are the source blocks here: count them from the specs
    total = 0
    for spec in SPECS:
        for level in range(spec.levels):
            block = spec.block_size if isinstance(spec.block_size[0], int) else None
            blocks: Any = block or spec.block_size[min(level, len(spec.block_size) - 1)]
            shape = level_shape(spec, level)
            total += math.prod(-(-n // b) for n, b in zip(shape, blocks, strict=True))
    assert " chunks sampled (" in out[-1]
    sampled = int(out[-1].split("level(s), ")[1].split(" of ")[0])
    assert f"{sampled} of {total} chunks sampled" in out[-1]
    assert 0 < sampled < total


def test_progress_is_drawn_on_a_terminal(source: Path, finished: dict[str, Path]) -> None:
    """A real process whose stderr is a terminal draws progress bars while it compares."""
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate", "verify", str(source), str(finished["0.5"])],
        stdout=subprocess.PIPE,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env=env,
    )
    os.close(secondary)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(primary)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, stdout.decode() + terminal
    for spec in SPECS:
        assert spec.path in terminal
    assert "units" in terminal
    assert stdout.decode().splitlines()[-1].startswith("verified 5 image(s)")


# --------------------------------------------------------------------------------------
# On S3: the same proof through listings and reads of a bucket
# --------------------------------------------------------------------------------------


def test_a_broken_migration_in_a_bucket_is_found(source: Path, aws: Any) -> None:
    client = s3_client(aws.url)
    client.create_bucket(Bucket="data")
    upload_tree(client, source.parent, "data", NAME)
    src, dest = f"s3://data/{NAME}/{NAME}.n5", f"s3://data/{NAME}/{NAME}.zarr"
    run = run_cli("convert", src, "--ngff-version", "0.5", "--shard", "32,32,32")
    assert run.exit_code == 0, run.stderr
    code, out, err = verify(src, dest)
    assert code == 0, [*out, err]
    assert out[-1].startswith("verified 5 image(s), 13 level(s), all ")
    key = f"{NAME}/{NAME}.zarr/em/fibsem-uint16/zarr.json"
    document = json.loads(client.get_object(Bucket="data", Key=key)["Body"].read())
    multiscale(document, "0.5")["datasets"][0]["coordinateTransformations"][0]["scale"][0] = 5.25
    client.put_object(Bucket="data", Key=key, Body=json.dumps(document).encode())
    stray = f"{NAME}/{NAME}.zarr/labels/mito_seg/s1/c/0/0/7"
    client.put_object(Bucket="data", Key=stray, Body=b"x")
    code, out, _err = verify(src, dest)
    assert code == 1
    assert mismatches(out) == [
        f"s3://data/{key}: attributes.ome.multiscales[0].datasets[0]"
        ".coordinateTransformations[0].scale[0] is 5.25, the plan says 5.24",
        f"{dest}/labels/mito_seg/s1: 1 key(s) that are not chunks of the plan's grid "
        "(first: c/0/0/7)",
    ]


# --------------------------------------------------------------------------------------
# Voxels: bit for bit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_float_voxels_are_compared_bit_for_bit(tmp_path: Path, version: str) -> None:
    """NaN voxels copied as they are verify (float equality calls NaN unequal to itself),
    and a ``-0.0`` that became ``+0.0`` at DEST does not (float equality calls them equal)."""
    spec = ImageSpec(
        path="em/fibsem-float32", shape=(20, 24, 28), dtype="float32",
        block_size=(16, 16, 16), levels=1, content="noise", seed=5,
    )  # fmt: skip
    n5 = write_dataset(tmp_path / "src", NAME, [spec])
    values = np.ones((16, 16, 16), dtype=np.float32)
    values[0, 0, :5] = np.nan
    values[1, 2, 3] = -0.0
    block = n5 / spec.path / "s0" / "0" / "0" / "0"
    block.write_bytes(encode_block(values, spec.compression))
    dest = tmp_path / f"{NAME}.zarr"
    run = run_cli("convert", str(n5), str(dest), "--ngff-version", version)
    assert run.exit_code == 0, run.stderr
    code, out, err = verify(n5, dest)
    assert code == 0, [*out, err]
    level = zarr.open_array(str(dest / spec.path / "s0"), mode="r+")
    assert np.signbit(level[1, 2, 3])  # the copy kept the sign
    level[1, 2, 3] = 0.0
    code, out, _err = verify(n5, dest)
    assert code == 1
    assert f"{spec.path}/s0: 1 voxel(s) differ in box [1:2, 2:3, 3:4] (z, y, x order)" in (
        mismatches(out)
    )


# --------------------------------------------------------------------------------------
# Chunks: each one whole stream of its codec
# --------------------------------------------------------------------------------------


def _cut(count: int) -> Callable[[bytes], bytes]:
    return lambda data: data[:-count]


def _appended(data: bytes) -> bytes:
    return data + b"\x00\x01\x02"


def _inner_appended(data: bytes) -> bytes:
    """A shard whose first inner chunk has three bytes more, its index updated to match
    (offsets, sizes and crc32c), as a writer that appended to the chunk would leave it."""
    import struct

    import google_crc32c

    inner = 8  # (32/16)^3 inner chunks per shard
    index = data[-(16 * inner + 4) :]
    entries = list(struct.unpack(f"<{2 * inner}Q", index[:-4]))
    payloads = [data[entries[2 * i] : entries[2 * i] + entries[2 * i + 1]] for i in range(inner)]
    payloads[0] = _appended(payloads[0])
    offset, fixed = 0, []
    for payload in payloads:
        fixed += [offset, len(payload)]
        offset += len(payload)
    table = struct.pack(f"<{2 * inner}Q", *fixed)
    return b"".join(payloads) + table + struct.pack("<I", google_crc32c.value(table))


STREAM_CASES = {
    # name: (N5 gzip useZlib, convert options, chunk key at s0, damage, the line's start)
    **{
        f"0.4-gzip-cut-{n}": (False, (), "0/0/0", _cut(n), "not a whole gzip stream")
        for n in (1, 4, 8, 9)
    },
    **{
        f"0.4-zlib-cut-{n}": (True, (), "0/0/0", _cut(n), "not a whole zlib stream")
        for n in (1, 4)
    },
    "0.4-gzip-edge-chunk-cut-4": (False, (), "2/2/2", _cut(4), "not a whole gzip stream"),
    "0.5-gzip-appended": (
        False, ("--ngff-version", "0.5"), "c/0/0/0", _appended,
        "not a whole gzip stream: it does not end with the trailer of the chunk's size",
    ),
    "0.5-zstd-appended": (
        False, ("--ngff-version", "0.5", "--codec", "zstd"), "c/0/0/0", _appended,
        "3 byte(s) after the end of the zstd frame",
    ),
    "0.5-sharded-inner-appended": (
        False, ("--ngff-version", "0.5", "--shard", "32,32,32"), "c/0/0/0", _inner_appended,
        "inner chunk 0: not a whole gzip stream: it does not end with the trailer",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_a_chunk_that_is_not_one_whole_stream_is_reported(tmp_path: Path, case: str) -> None:
    """Damage TensorStore reads past (a gzip or zlib chunk of Zarr v2 with its trailer cut
    off; bytes after the end of a v3 gzip or zstd chunk, or of an inner chunk of a shard)
    but zarr-python refuses: verify reads every chunk's bytes and names the chunk."""
    use_zlib, options, key, damage, reason = STREAM_CASES[case]
    spec = ImageSpec(
        path="em/fibsem-uint16", shape=(40, 40, 40), block_size=(16, 16, 16), levels=1,
        compression={"type": "gzip", "level": 6, "useZlib": use_zlib},
    )  # fmt: skip
    n5 = write_dataset(tmp_path / "src", NAME, [spec])
    dest = tmp_path / f"{NAME}.zarr"
    run = run_cli("convert", str(n5), str(dest), *options)
    assert run.exit_code == 0, run.stderr
    assert verify(n5, dest)[0] == 0
    chunk = dest / spec.path / "s0" / key
    chunk.write_bytes(damage(chunk.read_bytes()))
    # zarr-python refuses it (gzip: EOFError or BadGzipFile, zlib: zlib.error, zstd:
    # RuntimeError), though TensorStore reads it
    with pytest.raises((EOFError, OSError, RuntimeError, zlib.error)):
        zarr.open_array(str(dest / spec.path / "s0"), mode="r")[...]
    code, out, _err = verify(n5, dest)
    assert code == 1
    assert [line for line in mismatches(out) if line.startswith(f"{chunk}: {reason}")], out


def test_a_sample_checks_the_chunks_it_samples(
    source: Path, finished: dict[str, Path], tmp_path: Path
) -> None:
    """With --sample, each sampled chunk is read as bytes and checked too (here the sample
    takes every chunk of s0: 0.99 of 48 rounds to 48)."""
    dest = copy_of(finished, "0.4", tmp_path)
    chunk = dest / "em/fibsem-uint16/s0/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:-4])
    code, out, _err = verify(source, dest, "--sample", "0.99", "--seed", "1")
    assert code == 1
    assert [line for line in mismatches(out) if line.startswith(f"{chunk}: not a whole gzip")]
    assert " chunks sampled (" in out[-1]


def test_an_edge_chunk_padded_with_other_values_than_zero_is_whole(tmp_path: Path) -> None:
    """An edge chunk's padding beyond the array is checked as zeros first (what writers pad
    with); a whole stream padded otherwise is decoded and passes."""
    spec = ImageSpec(path="em/fibsem-uint16", shape=(40, 40, 40), block_size=(16, 16, 16), levels=1)
    n5 = write_dataset(tmp_path / "src", NAME, [spec])
    dest = tmp_path / f"{NAME}.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    chunk = dest / spec.path / "s0" / "2" / "2" / "2"  # voxels 32:48 of 40 on every axis
    values = np.frombuffer(gzip.decompress(chunk.read_bytes()), dtype=">u2").reshape(16, 16, 16)
    padded = values.copy()
    padded[8:, :, :] = 7  # beyond the array: no reader returns these
    chunk.write_bytes(gzip.compress(padded.tobytes()))
    code, out, err = verify(n5, dest)
    assert code == 0, [*out, err]
