"""`bulk convert|status|verify` over a root of Cellmap datasets (`<dataset>/<dataset>.n5`):
selection, the dry-run survey, failure isolation, resume, S3 in place, a Dask cluster.

Every output is read back with independent readers (tests/n5_reader.py for the source,
zarr-python for the output) and compared voxel for voxel.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migrate.example.fixture import ImageSpec, write_dataset
from tests.helpers import (
    REPO,
    chunk_files,
    corrupt,
    end,
    freeze_when,
    kill_frozen,
    output_snapshot,
    read_zarr,
    run_cli,
    run_subprocess,
    signal_when,
    snapshot,
    start_cli,
)
from tests.n5_reader import read_n5_array

TINY: dict[str, Any] = {"shape": (20, 23, 26), "block_size": (8, 8, 8), "levels": 2}
"""Small enough to be quick, big enough for several blocks and truncated edges."""

GOOD: dict[str, list[ImageSpec]] = {
    "jrc_alpha-1": [
        ImageSpec(path="em/fibsem-uint16", **TINY, compression={"type": "gzip", "level": -1}),
    ],
    "jrc_beta-2": [
        ImageSpec(
            path="em/fibsem-uint8",
            dtype="uint8",
            edge_blocks="full",
            **TINY,
            compression={"type": "gzip", "level": 4, "useZlib": True},
        ),
    ],
    "aic_gamma-3": [
        ImageSpec(
            path="lm/er_palm",
            dtype="float32",
            shape=(13, 19, 20),
            block_size=(8, 8, 8),
            levels=2,
            metadata="cosem",
            cosem_order="F",
            content="noise",
            compression={"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
        ),
    ],
    "jrc_delta-4": [
        ImageSpec(
            path="labels/mito_seg",
            dtype="uint64",
            content="labels",
            shape=(19, 25, 31),
            block_size=((16, 16, 16), (8, 8, 8)),
            levels=2,
            downsampling="subsample",
            compression={"type": "zstd", "level": 3},
        ),
    ],
    "jrc_epsilon-5": [
        ImageSpec(
            path="lm/deconv",
            dtype="float64",
            shape=(12, 17, 19),
            block_size=(8, 8, 8),
            levels=2,
            metadata="neuroglancer",
            compression={"type": "xz", "preset": 1},
        ),
        ImageSpec(
            path="em/raw-int16",
            dtype="int16",
            shape=(20, 21, 22),
            block_size=(8, 16, 16),
            levels=2,
            compression={"type": "raw"},
        ),
    ],
    "jrc_zeta-6": [
        ImageSpec(
            path="lm/b2",
            dtype="uint32",
            shape=(12, 17, 19),
            block_size=(8, 8, 8),
            levels=1,
            compression={"type": "bzip2", "blockSize": 9},
            content="sparse",
        ),
    ],
}
CORRUPT = "jrc_corrupt-7"
REFUSED = "jrc_refused-8"
BAD_BLOCK = "em/fibsem-uint16/s0/1/1/1"


def write_root(root: Path, names: dict[str, list[ImageSpec]] = GOOD) -> Path:
    for name, specs in names.items():
        write_dataset(root, name, specs)
    return root


def same_as_source(n5: Path, zarr_root: Path, specs: list[ImageSpec]) -> None:
    """Every level of every image at DEST equals the source, read independently."""
    for spec in specs:
        for level in range(spec.levels):
            expected = read_n5_array(n5 / spec.path / f"s{level}")
            got = read_zarr(zarr_root / spec.path / f"s{level}")
            assert got.dtype == expected.dtype, f"{zarr_root}/{spec.path}/s{level}"
            np.testing.assert_array_equal(got, expected, err_msg=f"{zarr_root}/{spec.path}")


def summary_of(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value


# --------------------------------------------------------------------------------------
# Failure isolation and resume
# --------------------------------------------------------------------------------------


def test_one_corrupt_and_one_refused_dataset_the_others_migrate(tmp_path: Path) -> None:
    root = write_root(tmp_path / "root")
    spec = ImageSpec(path="em/fibsem-uint16", **TINY)
    n5 = write_dataset(root, CORRUPT, [spec])
    original = corrupt(n5 / BAD_BLOCK)
    refused = ImageSpec(path="em/fibsem-uint16", **TINY, unit="furlong")
    write_dataset(root, REFUSED, [refused])
    (root / "jrc_no-n5").mkdir()  # a dataset without an N5 root
    (root / "jrc_no-n5" / "thumbnail.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    summary = tmp_path / "summary.json"

    run = run_cli("bulk", "convert", str(root), "--summary", str(summary), "--unit-mib", "0.01")
    assert run.exit_code == 1
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 dataset(s) failed")
    assert CORRUPT in error
    assert BAD_BLOCK in error
    assert REFUSED in error
    assert "unknown unit 'furlong'" in error
    assert "Traceback" not in run.stderr
    assert "skipped jrc_no-n5" in run.stderr
    assert "no N5 root" in run.stderr
    for name, specs in GOOD.items():
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", specs)
    # the corrupt dataset is not advertised as complete; the refused one wrote nothing
    assert not (root / CORRUPT / f"{CORRUPT}.zarr" / spec.path / ".zattrs").exists()
    assert not (root / REFUSED / f"{REFUSED}.zarr").exists()
    written = summary_of(summary)
    states = {name: entry["state"] for name, entry in written["datasets"].items()}
    assert states == {**dict.fromkeys(GOOD, "complete"), CORRUPT: "failed", REFUSED: "failed"}
    assert "jrc_no-n5" in written["skipped"]
    verify = run_cli("bulk", "verify", str(root), "--exclude", "jrc_[cr]*", "--json")
    assert verify.exit_code == 0, verify.stderr
    assert {d["state"] for d in verify.json["datasets"].values()} == {"verified"}
    assert run_cli("bulk", "status", str(root)).exit_code == 1  # two are not complete

    # fix both, run the same command again: only those two are migrated
    (n5 / BAD_BLOCK).write_bytes(original)
    write_dataset(root, REFUSED, [ImageSpec(path="em/fibsem-uint16", **TINY)], overwrite=True)
    before = {name: output_snapshot(root / name / f"{name}.zarr") for name in GOOD}
    again = run_cli("bulk", "convert", str(root), "--summary", str(summary), "--unit-mib", "0.01")
    assert again.exit_code == 0, again.stderr
    for name in GOOD:  # not one file of the finished datasets was written again
        assert output_snapshot(root / name / f"{name}.zarr") == before[name], name
    rerun = summary_of(summary)
    rows = rerun["datasets"]
    copied = {name: entry["units_copied"] for name, entry in rows.items()}
    assert rerun["storage"]["objects_written"] > 0
    assert {name for name, count in copied.items() if count} == {CORRUPT, REFUSED}
    assert copied[CORRUPT] == 1  # only the unit of the corrupt block was left
    for name, specs in {CORRUPT: [spec], REFUSED: [spec]}.items():
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", specs)
    assert run_cli("bulk", "status", str(root)).exit_code == 0
    verify = run_cli("bulk", "verify", str(root))
    assert verify.exit_code == 0, verify.stderr
    assert "verified 1 image(s), 2 level(s), all" in verify.stdout


def test_fail_fast_starts_no_further_dataset(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dataset(root, "jrc_a-1", [ImageSpec(path="em/x", **TINY, unit="furlong")])
    for name in ("jrc_b-1", "jrc_c-1", "jrc_d-1", "jrc_e-1", "jrc_f-1", "jrc_g-1", "jrc_h-1"):
        write_dataset(root, name, [ImageSpec(path="em/x", **TINY)])
    run = run_cli(
        "bulk", "convert", str(root), "--fail-fast", "--summary", str(tmp_path / "s.json"),
        "--workers", "1", "--json",
    )  # fmt: skip
    assert run.exit_code == 1
    states = {name: row["state"] for name, row in run.json["datasets"].items()}
    assert states["jrc_a-1"] == "failed"
    # one worker: four datasets in flight (a to d); a fails while the others copy, so the
    # last ones are never started
    assert states["jrc_h-1"] == "not run"
    assert not (root / "jrc_h-1" / "jrc_h-1.zarr").exists()
    assert "jrc_h-1 (--fail-fast)" in run.stderr


# --------------------------------------------------------------------------------------
# Selection, the survey
# --------------------------------------------------------------------------------------


def test_include_exclude_and_a_datasets_file(tmp_path: Path) -> None:
    root = write_root(tmp_path / "root")
    (root / "jrc_no-n5").mkdir()
    (root / "notes.txt").write_text("not a dataset")
    write_dataset(root, "OddName", [ImageSpec(path="em/x", **TINY)])

    def selected(*args: str) -> tuple[list[str], dict[str, str], Any]:
        run = run_cli("bulk", "convert", str(root), "--dry-run", "--json", *args)
        assert run.exit_code == 0, run.stderr
        doc = run.json
        return [row["name"] for row in doc["datasets"]], doc["skipped"], doc["warnings"]

    names, skipped, warnings = selected()
    assert names == sorted([*GOOD, "OddName"])
    assert list(skipped) == ["jrc_no-n5"]
    assert warnings == ["OddName: the name does not follow <institute>_<id> (e.g. jrc_hela-2)"]
    names, skipped, _ = selected("--include", "jrc_*", "--exclude", "*-5", "--exclude", "*-6")
    assert names == ["jrc_alpha-1", "jrc_beta-2", "jrc_delta-4"]
    assert list(skipped) == ["jrc_no-n5"]
    listing = tmp_path / "datasets.txt"
    listing.write_text("# the ones to do first\njrc_zeta-6\n\naic_gamma-3  # LM\njrc_missing\n")
    names, skipped, _ = selected("--datasets", str(listing))
    assert names == ["jrc_zeta-6", "aic_gamma-3"]  # in the file's order
    assert "no such dataset" in skipped["jrc_missing"]
    names, _, _ = selected("--datasets", str(listing), "--exclude", "aic_*")
    assert names == ["jrc_zeta-6"]


def test_dry_run_writes_nothing_and_surveys_each_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_root(tmp_path / "root")
    mirror = tmp_path / "mirror"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    # one dataset already migrated to the mirror: the survey says complete for it
    done = run_cli("bulk", "convert", str(root), str(mirror), "--include", "jrc_alpha-1",
                   "--summary", str(tmp_path / "s.json"))  # fmt: skip
    assert done.exit_code == 0, done.stderr
    before = (snapshot(root), snapshot(mirror), snapshot(work))
    run = run_cli("bulk", "convert", str(root), str(mirror), "--dry-run", "--json")
    assert run.exit_code == 0, run.stderr
    assert (snapshot(root), snapshot(mirror), snapshot(work)) == before
    rows = {row["name"]: row for row in run.json["datasets"]}
    assert rows["jrc_alpha-1"]["state"] == "complete"
    assert rows["jrc_alpha-1"]["objects_to_write"] == 0
    assert {rows[name]["state"] for name in GOOD if name != "jrc_alpha-1"} == {"new"}
    epsilon = rows["jrc_epsilon-5"]
    assert epsilon["images"] == 2
    assert epsilon["levels"] == 4
    n5 = root / "jrc_epsilon-5" / "jrc_epsilon-5.n5"
    assert epsilon["voxels"] == sum(
        read_n5_array(n5 / s.path / f"s{n}").size
        for s in GOOD["jrc_epsilon-5"]
        for n in range(s.levels)
    )
    assert epsilon["conventions"] == ["cosem", "neuroglancer"]
    assert rows["aic_gamma-3"]["conventions"] == ["cosem"]
    # Neuroglancer-only metadata: the translations follow a rule, which the survey says
    assert any("translation is a guess" in p for p in epsilon["problems"])
    assert rows["jrc_beta-2"]["objects_to_write"] > 0
    totals = run.json["totals"]
    assert totals["datasets"] == len(GOOD)
    assert totals["voxels"] == sum(row["voxels"] for row in rows.values())
    text = run_cli("bulk", "convert", str(root), str(mirror), "--dry-run")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[-1].startswith("  jrc_epsilon-5: lm/deconv: translation")
    assert (snapshot(root), snapshot(mirror), snapshot(work)) == before


def test_dry_run_predicts_a_refusal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dataset(root, REFUSED, [ImageSpec(path="em/x", **TINY, unit="furlong")])
    write_dataset(root, "jrc_fine-1", [ImageSpec(path="em/x", **TINY)])
    before = snapshot(root)
    run = run_cli("bulk", "convert", str(root), "--dry-run")
    assert run.exit_code == 1
    assert f"{REFUSED}: REFUSED:" in run.stdout
    assert "unknown unit 'furlong'" in run.stdout
    assert run.stderr.strip().splitlines()[-1].startswith("error: 1 dataset(s) would be refused")
    assert snapshot(root) == before


def test_mirror_layout_prefix_and_default_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_root(tmp_path / "root", {"jrc_alpha-1": GOOD["jrc_alpha-1"]})
    mirror = tmp_path / "mirror"
    monkeypatch.chdir(tmp_path)
    run = run_cli("bulk", "convert", str(root), str(mirror), "--prefix", "recon-1")
    assert run.exit_code == 0, run.stderr
    (summary,) = tmp_path.glob("cellmap-bulk-*.json")  # the default: here, timestamped
    assert summary_of(summary)["datasets"]["jrc_alpha-1"]["state"] == "complete"
    out = mirror / "jrc_alpha-1" / "jrc_alpha-1.zarr" / "recon-1"
    same_as_source(root / "jrc_alpha-1" / "jrc_alpha-1.n5", out, GOOD["jrc_alpha-1"])
    assert not (root / "jrc_alpha-1" / "jrc_alpha-1.zarr").exists()


# --------------------------------------------------------------------------------------
# Killed at random instants
# --------------------------------------------------------------------------------------

KILL_SPEC = ImageSpec(
    path="em/fibsem-uint16", shape=(96, 96, 128), block_size=(16, 16, 16), levels=2,
    content="noise",
)  # fmt: skip
KILL_NAMES = ("jrc_k-1", "jrc_k-2", "jrc_k-3", "jrc_k-4")
KILL_ARGS = ("--workers", "1", "--unit-mib", "0.0078125", "--no-transplant")


def chunks_written(root: Path) -> int:
    """Chunk files under every output (they only ever grow; unit records are deleted).
    Walks without stat calls: files come and go while the run writes."""
    count = 0
    for name in KILL_NAMES:
        for directory, subdirs, files in os.walk(root / name / f"{name}.zarr"):
            subdirs[:] = [d for d in subdirs if d != ".cellmap-migrate"]
            count += sum(1 for f in files if f[0].isdigit() and not f.endswith(".tmp"))
            del directory
    return count


def has_chunks(root: Path, at_least: int) -> bool:
    return chunks_written(root) >= at_least


def outputs(root: Path) -> dict[str, dict[str, str]]:
    return {
        name: {k: d for k, (d, _) in chunk_files(root / name / f"{name}.zarr").items()}
        for name in KILL_NAMES
    }


@pytest.mark.slow
def test_sigkill_at_random_instants_then_the_same_command(tmp_path: Path) -> None:
    reference_root = tmp_path / "reference"
    root = tmp_path / "root"
    for name in KILL_NAMES:
        write_dataset(reference_root, name, [KILL_SPEC])
        write_dataset(root, name, [KILL_SPEC])
    summary = tmp_path / "summary.json"
    command = ["bulk", "convert", str(root), *KILL_ARGS, "--summary", str(summary)]
    uninterrupted = run_subprocess("bulk", "convert", str(reference_root), *KILL_ARGS,
                                   "--summary", str(tmp_path / "reference.json"))  # fmt: skip
    assert uninterrupted.exit_code == 0, uninterrupted.stderr
    reference = outputs(reference_root)
    rng = random.Random(20261201)
    seen = 0
    for _attempt in range(3):  # each run frozen at a random point of its progress, then killed
        proc = start_cli(*command)
        at_least = seen + rng.randint(1, 60)
        try:
            freeze_when(proc, functools.partial(has_chunks, root, at_least), "chunks written")
            frozen = chunks_written(root)
            kill_frozen(proc)
        finally:
            end(proc)
        now = chunks_written(root)
        assert now == frozen >= seen
        seen = now
        if summary.exists():  # rewritten atomically: never a torn file
            summary_of(summary)
    # Ctrl-C: one line, exit 130, and the run can be resumed like the killed ones
    proc = start_cli(*command)
    try:
        signal_when(proc, lambda: chunks_written(root) > seen, "a chunk written", signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        end(proc)
    assert proc.returncode == 130, stderr
    assert "interrupted; run the same command again" in stderr
    assert "Traceback" not in stderr
    final = run_subprocess("bulk", "convert", str(root), *KILL_ARGS, "--summary", str(summary))
    assert final.exit_code == 0, final.stderr
    resumed = outputs(root)
    differ = {
        name: sorted(k for k in {*resumed[name], *reference[name]}
                     if resumed[name].get(k) != reference[name].get(k))[:5]
        for name in KILL_NAMES
    }  # fmt: skip
    assert resumed == reference, f"resumed output differs from an uninterrupted run: {differ}"
    assert sum(row["units_skipped"] for row in summary_of(summary)["datasets"].values()) > 0
    for name in KILL_NAMES:
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", [KILL_SPEC])


# --------------------------------------------------------------------------------------
# One pool for the units of several datasets
# --------------------------------------------------------------------------------------


def test_units_of_several_datasets_share_one_bounded_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three datasets, two copy threads: every unit is copied on one of the same two
    threads, units of different datasets are in flight together, never more than the
    pool's window of units at once."""
    from migrate.bulk.run import BulkOptions, convert_datasets
    from migrate.bulk.select import select_datasets
    from migrate.copy import engine
    from migrate.copy.options import EngineOptions
    from migrate.storage import open_store
    from migrate.target.plan import PlanOptions

    root = tmp_path / "root"
    for index in range(3):
        write_dataset(root, f"jrc_p-{index}", [ImageSpec(path="em/x", **TINY, seed=index)])
    lock = threading.Lock()
    threads: set[str] = set()
    active: dict[str, int] = {}
    most = [0, 0]  # units in flight at once; datasets with a unit in flight at once
    first: list[str] = []  # the dataset of the first unit copied
    another_started = threading.Event()
    original = engine.UnitWorker.copy

    def copy(self: engine.UnitWorker, task: engine.WorkUnit) -> int:
        name = self.plan.dest
        with lock:
            threads.add(threading.current_thread().name)
            active[name] = active.get(name, 0) + 1
            most[0] = max(most[0], sum(active.values()))
            most[1] = max(most[1], sum(1 for n in active.values() if n))
            waits = not first
            if waits:
                first.append(name)
            elif name != first[0]:
                another_started.set()
        try:
            # the very first unit stays in flight until a unit of another dataset starts:
            # the other thread must get there on its own, however fast or slow the machine
            if waits:
                assert another_started.wait(120), "no unit of another dataset ever started"
            return original(self, task)
        finally:
            with lock:
                active[name] -= 1

    monkeypatch.setattr(engine.UnitWorker, "copy", copy)
    store = open_store(str(root), read_only=False)
    selection = select_datasets(store, store)
    options = BulkOptions(PlanOptions(unit_bytes=2048), EngineOptions(workers=2), in_flight=3)
    outcomes = convert_datasets(selection.datasets, options)
    assert [o.state for o in outcomes] == ["complete"] * 3
    assert len(threads) <= 2
    assert all(name.startswith("copy") for name in threads)
    assert most[0] <= 4  # the shared window: 2 × workers units across all datasets
    assert most[1] >= 2  # units of two datasets were in flight together
    for index in range(3):
        name = f"jrc_p-{index}"
        spec = ImageSpec(path="em/x", **TINY, seed=index)
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", [spec])


# --------------------------------------------------------------------------------------
# In place on S3 (moto's server)
# --------------------------------------------------------------------------------------


@pytest.fixture
def s3(aws: Any) -> Any:
    """A boto3 client of the test server (``aws`` puts fake credentials and the server in
    the environment, inherited by subprocesses)."""
    from tests.s3server import s3_client

    return s3_client(aws.url)


S3_SET = ("jrc_alpha-1", "aic_gamma-3", "jrc_delta-4")


def test_in_place_on_s3(s3: Any, tmp_path: Path) -> None:
    from tests.s3server import download_prefix, snapshot, upload_tree

    root = write_root(tmp_path / "root", {name: GOOD[name] for name in S3_SET})
    (root / "jrc_no-n5").mkdir()
    (root / "jrc_no-n5" / "thumbnail.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    s3.create_bucket(Bucket="cellmap")
    upload_tree(s3, root, "cellmap", "")
    before = snapshot(s3)
    survey = run_cli("bulk", "convert", "s3://cellmap", "--dry-run", "--json")
    assert survey.exit_code == 0, survey.stderr
    assert [row["name"] for row in survey.json["datasets"]] == sorted(S3_SET)
    assert snapshot(s3) == before  # the dry run wrote nothing
    run = run_cli("bulk", "convert", "s3://cellmap", "--summary", str(tmp_path / "s.json"))
    assert run.exit_code == 0, run.stderr
    after = snapshot(s3)
    # every object that was there is unchanged (same keys, same ETags), nothing else but
    # each <dataset>.zarr beside its .n5 was added
    assert {key: etag for key, etag in after.items() if key in before} == before
    added = {key for _bucket, key in set(after) - set(before)}
    assert {key.split("/", 2)[1] for key in added} == {f"{name}.zarr" for name in S3_SET}
    assert all(key.split("/")[0] + ".zarr" == key.split("/")[1] for key in added)
    for name in S3_SET:
        local = tmp_path / "zarr" / name
        assert download_prefix(s3, "cellmap", f"{name}/{name}.zarr", local) > 0
        same_as_source(root / name / f"{name}.n5", local, GOOD[name])
    verify = run_cli("bulk", "verify", "s3://cellmap", "--workers", "2", "--json")
    assert verify.exit_code == 0, verify.stderr
    assert set(verify.json["datasets"]) == set(S3_SET)
    status = run_cli("bulk", "status", "s3://cellmap")
    assert status.exit_code == 0, status.stderr
    # verify wrote each dataset's certificate (issue 22), and nothing else; status only read
    certificates = {("cellmap", f"{name}/{name}.zarr/.cellmap-migrate/certificate.json")
                    for name in S3_SET}  # fmt: skip
    final = snapshot(s3)
    assert certificates <= set(final)
    assert {key: etag for key, etag in final.items() if key not in certificates} == after


# --------------------------------------------------------------------------------------
# A real Dask cluster (scheduler and worker processes)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_on_a_dask_cluster(tmp_path: Path) -> None:
    from tests.test_distributed import Cluster

    root = write_root(tmp_path / "root", {name: GOOD[name] for name in S3_SET})
    cluster = Cluster(tmp_path / "dask", workers=2)
    (tmp_path / "dask").mkdir()
    try:
        cluster.start()
        run = run_cli(
            "bulk", "convert", str(root), "--scheduler", cluster.address, "--unit-mib", "0.01",
            "--summary", str(tmp_path / "s.json"),
        )  # fmt: skip
    finally:
        cluster.stop()
    assert run.exit_code == 0, run.stderr
    # every dataset's units went to the same scheduler, which ran them on its workers
    lines = [line for line in run.stderr.splitlines() if "dask: scheduler" in line]
    assert len(lines) == len(S3_SET)
    assert all(f"dask: scheduler {cluster.address}, 2 worker(s)" in line for line in lines)
    for name in S3_SET:
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", GOOD[name])


@pytest.mark.slow
def test_cluster_local_is_one_cluster_for_the_whole_run(tmp_path: Path) -> None:
    root = write_root(tmp_path / "root", {name: GOOD[name] for name in S3_SET})
    run = run_cli(
        "bulk", "convert", str(root), "--cluster", "local", "--workers", "2",
        "--unit-mib", "0.01", "--summary", str(tmp_path / "s.json"),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "dask: scheduler" in line]
    assert len(lines) == len(S3_SET)
    schedulers = {line.split("dask: scheduler ", 1)[1].split(",", 1)[0] for line in lines}
    assert len(schedulers) == 1, schedulers  # started once, used by every dataset
    for name in S3_SET:
        same_as_source(root / name / f"{name}.n5", root / name / f"{name}.zarr", GOOD[name])


def test_stores_with_the_same_s3_settings_share_one_client(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk run opens stores for hundreds of datasets: they share one boto3 client per
    settings instead of building one each; other settings get their own."""
    from migrate.storage import S3Options, S3Store

    a = S3Store("s3://cellmap-a/jrc_a-1/jrc_a-1.n5", read_only=True)
    b = S3Store("s3://cellmap-b/jrc_b-1/jrc_b-1.zarr", read_only=True)
    other = S3Store("s3://cellmap-a/x", read_only=True, options=S3Options(anon=True))
    assert a.client is b.client
    assert other.client is not a.client
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOTHERKEYID0000000")  # other keys: another
    assert S3Store("s3://cellmap-a/y", read_only=True).client is not a.client


# --------------------------------------------------------------------------------------
# Progress across datasets
# --------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_and_bars_across_datasets() -> None:
    from migrate.bulk.summary import DatasetOutcome
    from migrate.cli.bulk_progress import BulkProgress

    def feed(progress: BulkProgress) -> None:
        for name in ("jrc_a-1", "jrc_b-1"):
            engine_side = progress.for_dataset(name)
            engine_side.start("em/x", 4, 4000, 0, 0)
            engine_side.advance("em/x", 2, 2000)
            engine_side.close()  # the end of one dataset's copy phase: the display goes on
            engine_side.advance("em/x", 2, 2000)
            progress.finished(DatasetOutcome(name, "src", "dest", state="complete"))

    lines = io.StringIO()
    feed(BulkProgress(2, as_json=True, stream=lines))
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [(e["dataset"], e["datasets_done"], e["datasets"]) for e in events] == [
        ("jrc_a-1", 1, 2),
        ("jrc_b-1", 2, 2),
    ]
    assert events[-1]["eta_s"] == 0.0  # every byte of the started datasets is copied
    screen = Terminal()
    bars = BulkProgress(2, stream=screen)
    feed(bars)
    bars.close()
    assert "all datasets" in screen.getvalue()
    assert "2/2 datasets" in screen.getvalue()


def test_bulk_verify_names_every_doubt(tmp_path: Path) -> None:
    """A flipped voxel in one dataset and a dataset never migrated: verify exits non-zero
    naming both, and says what it proved for the good one."""
    import zarr

    names = {name: GOOD[name] for name in ("jrc_alpha-1", "jrc_beta-2", "jrc_zeta-6")}
    root = write_root(tmp_path / "root", names)
    run = run_cli("bulk", "convert", str(root), "--exclude", "jrc_zeta-6",
                  "--summary", str(tmp_path / "s.json"))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    level = zarr.open_array(str(root / "jrc_beta-2/jrc_beta-2.zarr/em/fibsem-uint8/s0"), mode="r+")
    voxel = np.asarray(level[3:4, 4:5, 5:6])
    level[3:4, 4:5, 5:6] = voxel ^ np.uint8(0xFF)
    verify = run_cli("bulk", "verify", str(root), "--json")
    assert verify.exit_code == 1
    rows = verify.json["datasets"]
    assert rows["jrc_alpha-1"]["state"] == "verified"
    assert rows["jrc_alpha-1"]["detail"].startswith("verified 1 image(s), 2 level(s), all")
    assert rows["jrc_beta-2"]["state"] == "MISMATCH"
    assert any("1 voxel(s) differ" in p for p in rows["jrc_beta-2"]["failures"])
    assert rows["jrc_zeta-6"]["state"] == "NOT PROVEN"
    error = verify.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 dataset(s) not proven")
    assert "jrc_beta-2" in error
    assert "jrc_zeta-6" in error
    sampled = run_cli("bulk", "verify", str(root), "--include", "jrc_alpha-1", "--sample", "0.5")
    assert sampled.exit_code == 0, sampled.stderr
    assert "sampled" in sampled.stdout
    assert " chunks sampled (" in sampled.stdout


def test_report_per_dataset_and_an_index(tmp_path: Path) -> None:
    root = write_root(tmp_path / "root", {n: GOOD[n] for n in ("jrc_alpha-1", "jrc_beta-2")})
    write_dataset(root, REFUSED, [ImageSpec(path="em/x", **TINY, unit="furlong")])
    reports = tmp_path / "reports"
    log = tmp_path / "events.jsonl"
    run = run_cli("bulk", "convert", str(root), "--report", str(reports), "--log-file", str(log),
                  "--summary", str(tmp_path / "s.json"))  # fmt: skip
    assert run.exit_code == 1  # the refused one
    index = (reports / "index.html").read_text()
    for name in ("jrc_alpha-1", "jrc_beta-2"):
        assert (reports / name / "index.html").is_file()
        assert f'href="{name}/index.html"' in index
    assert REFUSED in index
    assert not (reports / REFUSED).exists()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    finished = {e["name"]: e["state"] for e in events if e.get("event") == "dataset"}
    assert finished == {"jrc_alpha-1": "complete", "jrc_beta-2": "complete", REFUSED: "failed"}


def test_a_dataset_another_run_is_writing_is_refused_the_others_go_on(tmp_path: Path) -> None:
    """The lease of each dataset's DEST is taken as `convert` takes it: a dataset whose DEST
    another live run holds fails with the holder named; the dry run says so; the others
    migrate; once the other run is gone, the same command finishes it."""
    from migrate.dest import lease
    from migrate.storage import open_store

    names = {n: GOOD[n] for n in ("jrc_alpha-1", "jrc_beta-2")}
    root = write_root(tmp_path / "root", names)
    busy = root / "jrc_beta-2" / "jrc_beta-2.zarr"
    held = lease.acquire(open_store(str(busy), read_only=False), notice=lambda _text: None)
    try:
        survey = run_cli("bulk", "convert", str(root), "--dry-run", "--json")
        rows = {row["name"]: row for row in survey.json["datasets"]}
        assert any("being written right now" in p for p in rows["jrc_beta-2"]["problems"])
        run = run_subprocess("bulk", "convert", str(root), "--summary", str(tmp_path / "s.json"))
        assert run.exit_code == 1
        error = run.stderr.strip().splitlines()[-1]
        assert "1 dataset(s) failed: jrc_beta-2" in error
        assert "is being written by another run" in error
        alpha = root / "jrc_alpha-1"
        same_as_source(alpha / "jrc_alpha-1.n5", alpha / "jrc_alpha-1.zarr", names["jrc_alpha-1"])
    finally:
        held.release()
    again = run_subprocess("bulk", "convert", str(root), "--summary", str(tmp_path / "s.json"))
    assert again.exit_code == 0, again.stderr
    beta = root / "jrc_beta-2"
    same_as_source(beta / "jrc_beta-2.n5", busy, names["jrc_beta-2"])


def test_a_root_without_datasets_is_an_error(tmp_path: Path) -> None:
    """A wrong ROOT (or a filter that matches nothing) is one error line and exit 1, for
    convert, status and verify alike, and nothing is written."""
    root = tmp_path / "root"
    (root / "notes").mkdir(parents=True)
    for command in ("convert", "status", "verify"):
        run = run_cli("bulk", command, str(root))
        assert run.exit_code == 1, (command, run.stdout, run.stderr)
        assert (
            f"error: {root}: no dataset selected (a dataset is <dataset>/<dataset>.n5 and/or "
            "<dataset>/neuroglancer/<group>/<name>.precomputed); skipped for want of either: "
            "notes"
        ) in run.stderr
    assert sorted(p.name for p in root.iterdir()) == ["notes"]


STARTUP_PROBE = """
import atexit, runpy, sys
heavy = ("zarr", "tensorstore", "numcodecs", "ome_zarr_models", "dask")
atexit.register(lambda: print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr))
sys.argv = ["cellmap-migrate", *sys.argv[1:]]
runpy.run_module("migrate", run_name="__main__")
"""


def test_bulk_convert_loads_no_more_libraries_than_convert(tmp_path: Path) -> None:
    """A bulk run pays the CLI's start-up once, but it must not be a heavier start-up than
    one ``convert``'s: zarr-python alone (which only ``verify`` uses) costs ~0.4 s."""
    loaded = {}
    for name in ("convert", "bulk"):
        root = write_root(tmp_path / name, {"jrc_probe-1": GOOD["jrc_alpha-1"]})
        args = ["bulk", "convert", str(root), "--summary", str(tmp_path / "summary.json")]
        if name == "convert":
            args = ["convert", str(root / "jrc_probe-1" / "jrc_probe-1.n5")]
        done = subprocess.run(
            [sys.executable, "-c", STARTUP_PROBE, *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (root / "jrc_probe-1" / "jrc_probe-1.zarr" / "zarr.json").exists() or (
            root / "jrc_probe-1" / "jrc_probe-1.zarr" / ".zgroup"
        ).exists()
        loaded[name] = done.stderr.strip().splitlines()[-1]
    assert loaded["bulk"] == loaded["convert"] == "[]"


def test_summary_file_is_json_a_dataset_a_line_and_current_after_each(tmp_path: Path) -> None:
    """The summary is rewritten as each dataset finishes; whatever the names and failure
    texts hold, the file parses (with the standard library's decoder) to the document, one
    dataset per line."""
    from migrate.bulk.summary import DatasetOutcome, Summary

    path = tmp_path / "summary.json"
    summary = Summary("convert", "/data", "/data", path)
    names = ['jrc_quote"d-1', "jrc_ünïcode-2", "jrc_plain-3"]
    outcomes = []
    for i, name in enumerate(names):
        outcome = DatasetOutcome(name, f"/data/{name}", f"/data/{name}.zarr", state="complete")
        if i == 1:
            outcome.state, outcome.failures = "failed", ["bad block\nline two: \\ \t end"]
        outcomes.append(outcome)
        summary.add(outcome)
        on_disk = json.loads(path.read_text())
        assert list(on_disk["datasets"]) == names[: i + 1]
        assert on_disk["datasets"][name]["failures"] == outcome.failures
        lines = path.read_text().splitlines()
        assert sum(1 for line in lines if line.startswith("    ")) == i + 1
    assert json.loads(path.read_text())["totals"]["failed"] == ["jrc_ünïcode-2"]
    document = summary.finish(outcomes, storage={"bytes_read": 1})
    assert json.loads(path.read_text()) == document
    assert document["totals"]["by_state"] == {"complete": 2, "failed": 1}
