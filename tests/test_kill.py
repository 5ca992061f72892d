"""A `convert` killed at any instant and started again finishes, bit-identical to an
uninterrupted run; a finished run started again writes nothing."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from migrate.example.fixture import ImageSpec, write_image
from tests.helpers import chunk_files, popen_convert, run_subprocess, unit_records

SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(200, 256, 250),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)
# One 16³ uint16 block per work unit: ~3,700 units, several seconds of copying.
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


def start_and_wait(source: Path, dest: Path, at_least: int) -> tuple[subprocess.Popen[str], int]:
    proc = popen_convert(str(source), str(dest), *ARGS)
    deadline = time.monotonic() + 60
    while unit_records(dest) < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc, unit_records(dest)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    rng = random.Random(20261123)
    seen = 0
    for _attempt in range(3):
        proc, _ = start_and_wait(source, dest, seen + 1)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            proc.communicate()
            pytest.fail("the run finished before it could be killed: make the fixture bigger")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        now = unit_records(dest)
        assert now >= seen, "records were lost"
        seen = now
        # killed mid-run: the image is not advertised as complete
        assert not (dest / SPEC.path / ".zattrs").exists()
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1
    assert "INCOMPLETE" in status.stdout
    final = run_subprocess("convert", str(source), str(dest), *ARGS)
    assert final.exit_code == 0, final.stderr
    # every unit recorded before the kills was skipped, not redone
    assert "partial" in final.stdout
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
    proc, _ = start_and_wait(source, dest, 5)
    if proc.poll() is not None:
        proc.communicate()
        pytest.fail("the run finished before it could be interrupted: make the fixture bigger")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    final = run_subprocess("convert", str(source), str(dest), *ARGS)
    assert final.exit_code == 0, final.stderr
    assert {key: digest for key, (digest, _) in chunk_files(dest).items()} == reference
