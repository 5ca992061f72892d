"""`--overwrite` never destroys data cellmap-migrate did not write, and the dry run predicts
every refusal of the real run (same message, non-zero exit).

A DEST (or an image path under it) holding N5 data or files the tool did not write is
refused with and without `--overwrite`, naming what is there and never suggesting
`--overwrite`; an unrelated non-empty folder needs `--into-existing`; a DEST that is a
file is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.example.fixture import ImageSpec, write_dataset
from tests.helpers import output_snapshot, run_cli, snapshot

SPECS = [
    ImageSpec(path="em/fibsem-uint16", shape=(20, 24, 28), dtype="uint16", levels=2),
    ImageSpec(path="labels/mito_seg", shape=(20, 24, 28), dtype="uint64", content="labels"),
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "A", "jrc_a", SPECS)


def refused(*args: str) -> str:
    """Run ``convert *args``, expect exit 1; the one error line."""
    run = run_cli("convert", *args)
    assert run.exit_code == 1, (run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def refused_alike(*args: str) -> str:
    """The real run and its dry run are refused with the same line; the line."""
    real = refused(*args)
    assert refused(*args, "--dry-run") == real
    return real


def test_an_n5_tree_as_dest_is_never_replaced(source: Path, tmp_path: Path) -> None:
    """The issue's data loss: `convert A/jrc_a.n5 B/jrc_b.n5` (two sources meant) was refused
    with a hint to use --overwrite, and following it replaced B's N5 arrays with Zarr."""
    other = write_dataset(tmp_path / "B", "jrc_b", SPECS)
    before = snapshot(other)
    for extra in ((), ("--overwrite",), ("--overwrite", "--into-existing")):
        line = refused_alike(str(source), str(other), *extra)
        assert f"{other} holds N5 data ({'attributes.json'}" in line
        assert "not written by cellmap-migrate" in line
        assert "--overwrite" not in line
    assert snapshot(other) == before
    assert (other / "em/fibsem-uint16/s0/attributes.json").is_file()


def test_n5_data_at_an_image_path_is_never_replaced(source: Path, tmp_path: Path) -> None:
    """DEST itself is not N5, but the path one image would be written to holds an N5
    group: refused with and without --overwrite, naming the N5 file."""
    dest = tmp_path / "mixed"
    n5_image = write_dataset(tmp_path / "B", "jrc_b", SPECS[:1]) / "em"
    (dest / "em").parent.mkdir(parents=True)
    n5_image.rename(dest / "em")
    before = output_snapshot(dest)
    for extra in ((), ("--overwrite",)):
        line = refused_alike(str(source), str(dest), "--into-existing", *extra)
        assert (f"{dest}/em/fibsem-uint16 holds N5 data (em/fibsem-uint16/attributes.json") in line
        assert "--overwrite" not in line
    assert output_snapshot(dest) == before


def test_foreign_files_at_an_image_path_survive_overwrite(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    precious = dest / "em" / "fibsem-uint16" / "notes.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("mine")
    for extra in ((), ("--overwrite",)):
        line = refused_alike(str(source), str(dest), "--into-existing", *extra)
        assert (
            f"{dest}/em/fibsem-uint16 holds files cellmap-migrate did not write "
            "(em/fibsem-uint16/notes.txt)"
        ) in line
        assert "--overwrite" not in line
    assert precious.read_text() == "mine"


def test_overwrite_keeps_foreign_files_inside_output_made_with_other_settings(
    source: Path, tmp_path: Path
) -> None:
    """A finished image with a user's file added inside it: --overwrite would delete the
    file with the image, so the run is refused and names the file."""
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    (dest / "em/fibsem-uint16/s0/README").write_text("about s0")
    (dest / "em/fibsem-uint16/extra.json").write_text("{}")
    before = output_snapshot(dest)
    for extra in ((), ("--overwrite",)):
        line = refused_alike(str(source), str(dest), "--codec", "zstd", *extra)
        assert "holds cellmap-migrate output made with other settings and files " in line
        assert "em/fibsem-uint16/extra.json" in line
        assert "em/fibsem-uint16/s0/README" in line
        assert "--overwrite" not in line
    assert output_snapshot(dest) == before
    # without the foreign files, --overwrite replaces the output
    (dest / "em/fibsem-uint16/s0/README").unlink()
    (dest / "em/fibsem-uint16/extra.json").unlink()
    run = run_cli("convert", str(source), str(dest), "--codec", "zstd", "--overwrite")
    assert run.exit_code == 0, run.stderr
    assert run_cli("verify", str(source), str(dest)).exit_code == 0


def test_other_settings_are_predicted_by_the_dry_run(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    line = refused_alike(str(source), str(dest), "--codec", "zstd")
    assert "was written with other settings" in line
    assert line.endswith("; use --overwrite to replace it")
    dry = run_cli("convert", str(source), str(dest), "--codec", "zstd", "--overwrite", "--dry-run")
    assert dry.exit_code == 0, dry.stderr


def test_unrelated_non_empty_folder_needs_into_existing(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "thesis"
    dest.mkdir()
    (dest / "thesis.tex").write_text("\\documentclass{article}")
    (dest / "figures").mkdir()
    before = output_snapshot(dest)
    line = refused_alike(str(source), str(dest))
    assert line == (
        f"error: {dest} is a non-empty folder of files not written by cellmap-migrate "
        "(figures/, thesis.tex); give a new or empty DEST, or --into-existing to write the "
        "Zarr output beside them"
    )
    assert output_snapshot(dest) == before
    run = run_cli("convert", str(source), str(dest), "--into-existing")
    assert run.exit_code == 0, run.stderr
    assert (dest / "thesis.tex").read_text() == "\\documentclass{article}"
    # verify proves a clean tree: the user's files fail it, unless it is told they are theirs
    proof = run_cli("verify", str(source), str(dest))
    assert proof.exit_code == 1
    outside = "that the plan does not account for, outside every image"
    assert f"MISMATCH {dest}/thesis.tex: a file {outside}" in proof.stdout
    assert f"MISMATCH {dest}/figures: a folder (not Zarr) {outside}" in proof.stdout
    told = run_cli("verify", str(source), str(dest), "--into-existing")
    assert told.exit_code == 0, told.stdout + told.stderr
    assert f"note: {dest}/thesis.tex: a file beside the migration" in told.stderr
    # now DEST holds cellmap-migrate output: later runs need no flag
    again = run_cli("convert", str(source), str(dest))
    assert again.exit_code == 0, again.stderr
    assert "already complete" in again.stdout


def test_an_empty_folder_is_a_fine_dest(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    assert run_cli("convert", str(source), str(dest), "--dry-run").exit_code == 0
    assert run_cli("convert", str(source), str(dest)).exit_code == 0


def test_a_file_as_dest_is_refused(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    dest.write_text("not a folder")
    line = refused_alike(str(source), str(dest))
    assert line == f"error: {dest}: DEST is a file, not a folder; choose another"
    assert dest.read_text() == "not a folder"


# --------------------------------------------------------------------------------------
# "Written by us" is exactly our names (issue 19, item 4)
# --------------------------------------------------------------------------------------

PLANTED = {
    "em/fibsem-uint16/.analysis-results.tmp": "a user's results",
    "em/fibsem-uint16/s0/.important.tmp": "important",
    "em/fibsem-uint16/s0/0/0/99": "outside the chunk grid",
    "em/fibsem-uint16/s0/0/0/00": "not a canonical chunk key",
}


def test_overwrite_keeps_files_that_only_look_like_ours(source: Path, tmp_path: Path) -> None:
    """On a complete DEST, ``--overwrite --codec zstd`` deleted all four of these (they
    matched ``.*.tmp`` and ``\\d+(/\\d+)*``). None is a name cellmap-migrate writes: the run
    is refused, naming each, and each is kept."""
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    for key, text in PLANTED.items():
        (dest / key).write_text(text)
    before = output_snapshot(dest)
    for extra in ((), ("--overwrite",)):
        line = refused_alike(str(source), str(dest), "--codec", "zstd", *extra)
        assert "holds cellmap-migrate output made with other settings and files " in line
        for key in PLANTED:
            assert key in line
    assert output_snapshot(dest) == before
    for key, text in PLANTED.items():
        assert (dest / key).read_text() == text


def test_overwrite_removes_what_is_ours_only(source: Path, tmp_path: Path) -> None:
    """What cellmap-migrate does write goes with the image it replaces: the temporary file
    of one of its writers (``.<chunk>.<host>-<pid>-<start>-<thread>.tmp``) and chunk keys
    of its grid."""
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    chunk_dir = dest / "em/fibsem-uint16/s0/0/0"
    (chunk_dir / ".0.otherhost-4242-123-77.tmp").write_bytes(b"half a chunk")
    assert (chunk_dir / "0").is_file()  # a chunk key of the recorded grid
    run = run_cli("convert", str(source), str(dest), "--codec", "zstd", "--overwrite")
    assert run.exit_code == 0, run.stderr
    assert not (chunk_dir / ".0.otherhost-4242-123-77.tmp").exists()
    assert run_cli("verify", str(source), str(dest)).exit_code == 0


# --------------------------------------------------------------------------------------
# One <dataset>.zarr per dataset (issue 18, item 2)
# --------------------------------------------------------------------------------------


def test_a_dest_holding_other_datasets_output_is_refused(source: Path, tmp_path: Path) -> None:
    """``convert x.n5 /data/out`` where /data/out holds another dataset's output was
    accepted, mixing the datasets. Now it is refused like any foreign folder, naming the
    other dataset's images (the dry run says so too); ``--into-existing`` writes beside
    them."""
    dest = tmp_path / "out"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    other = write_dataset(
        tmp_path / "B", "jrc_b", [ImageSpec(path="lm/er_palm", shape=(8, 12, 16), levels=1)]
    )
    before = output_snapshot(dest)
    line = refused_alike(str(other), str(dest))
    assert f"{dest} holds cellmap-migrate output of other datasets (" in line
    assert "em/fibsem-uint16 (of jrc_a)" in line
    assert "labels/mito_seg (of jrc_a)" in line
    assert "--into-existing" in line
    assert output_snapshot(dest) == before
    beside = run_cli("convert", str(other), str(dest), "--into-existing")
    assert beside.exit_code == 0, beside.stderr
    status = run_cli("status", str(dest))
    assert status.exit_code == 0, status.stdout
    assert "lm/er_palm: complete" in status.stdout
    assert "em/fibsem-uint16: complete" in status.stdout


def test_another_datasets_image_is_never_replaced(source: Path, tmp_path: Path) -> None:
    """The same image path in another dataset: refused even with --overwrite and
    --into-existing (it would replace jrc_a's image with jrc_b's)."""
    dest = tmp_path / "out"
    assert run_cli("convert", str(source), str(dest)).exit_code == 0
    other = write_dataset(tmp_path / "B", "jrc_b", SPECS[:1])
    before = output_snapshot(dest)
    for extra in ((), ("--overwrite",), ("--overwrite", "--into-existing")):
        line = refused_alike(str(other), str(dest), *extra)
        assert "holds cellmap-migrate output of other datasets at the paths" in line
        assert "em/fibsem-uint16 (of jrc_a)" in line
    assert output_snapshot(dest) == before


def test_images_of_one_dataset_share_its_zarr(source: Path, tmp_path: Path) -> None:
    """Two converts of parts of the same dataset into one DEST: no refusal."""
    dest = tmp_path / "jrc_a.zarr"
    for part in ("em/fibsem-uint16", "labels/mito_seg"):
        run = run_cli("convert", str(source / part), str(dest))
        assert run.exit_code == 0, run.stderr
    assert run_cli("verify", str(source / "em/fibsem-uint16"), str(dest)).exit_code == 0
