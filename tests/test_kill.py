"""A `convert` killed at any instant and started again finishes, bit-identical to an
uninterrupted run; a finished run started again writes nothing.

Each run is stopped at an observed point of its progress (a number of unit records at DEST,
drawn at random), frozen there and then killed: the same on a fast or a slow machine."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from subprocess import Popen

import pytest

from migrate.example.fixture import ImageSpec, write_image
from tests.helpers import (
    chunk_files,
    end,
    freeze_when,
    kill_frozen,
    popen_convert,
    run_subprocess,
    signal_when,
    unit_records,
)

SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(96, 128, 128),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)
# One 16³ uint16 block per work unit: 432 units; the runs are stopped within the first 80.
ARGS = ("--workers", "1", "--unit-mib", "0.0078125", "--no-transplant")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    n5 = tmp_path_factory.mktemp("kill") / "jrc_kill" / "jrc_kill.n5"
    write_image(n5, SPEC)
    return n5


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The chunk files of an uninterrupted run (name → sha256)."""
    dest = tmp_path_factory.mktemp("reference") / "out.zarr"
    run = run_subprocess("convert", str(source), str(dest), *ARGS)
    assert run.exit_code == 0, run.stderr
    return {key: digest for key, (digest, _) in chunk_files(dest).items()}


def start_and_freeze(source: Path, dest: Path, at_least: int) -> Popen[str]:
    """Start the run and freeze it once DEST holds ``at_least`` unit records."""
    proc = popen_convert(str(source), str(dest), *ARGS)
    freeze_when(proc, lambda: unit_records(dest) >= at_least, f"{at_least} unit records")
    return proc


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    rng = random.Random(20261123)
    seen = 0
    for _attempt in range(3):
        proc = start_and_freeze(source, dest, seen + rng.randint(1, 25))
        frozen = unit_records(dest)
        kill_frozen(proc)
        now = unit_records(dest)
        assert now == frozen >= seen, "records were lost"
        seen = now
        # killed mid-run: the image is not advertised as complete
        assert not (dest / SPEC.path / ".zattrs").exists()
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1
    assert "INCOMPLETE" in status.stdout
    final = run_subprocess("convert", str(source), str(dest), *ARGS, "--json")
    assert final.exit_code == 0, final.stderr
    # every unit recorded before the kills was skipped, not redone
    (image,) = final.json["images"]
    assert image["state_before"] == "partial"
    assert image["units_skipped"] == seen
    assert image["units_copied"] == image["units_total"] - seen
    got = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert got == reference, "resumed output differs from an uninterrupted run"
    assert run_subprocess("verify", str(source), str(dest)).exit_code == 0
    # a finished migration started again does no chunk I/O
    before = chunk_files(dest)
    again = run_subprocess("convert", str(source), str(dest), *ARGS)
    assert again.exit_code == 0
    assert "already complete" in again.stdout
    assert chunk_files(dest) == before


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    proc = popen_convert(str(source), str(dest), *ARGS)
    try:
        signal_when(proc, lambda: unit_records(dest) >= 5, "5 unit records", signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        end(proc)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    final = run_subprocess("convert", str(source), str(dest), *ARGS)
    assert final.exit_code == 0, final.stderr
    assert {key: digest for key, (digest, _) in chunk_files(dest).items()} == reference
