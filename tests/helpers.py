"""Helpers for end-to-end tests: run the CLI, snapshot trees, read outputs independently."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from migrate.cli import cli

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str) -> Run:
    """Run ``cellmap-migrate ARGS`` in-process."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def run_subprocess(*args: str, timeout: float = 300) -> Run:
    """Run ``python -m migrate ARGS`` as a real process."""
    proc = subprocess.run(
        [sys.executable, "-m", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start_cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``python -m migrate ARGS`` as a real process in a process group of its own, so
    that a test can freeze, signal or kill it and everything it started at once (see
    :func:`freeze_when`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "migrate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
        **kwargs,
    )


def popen_convert(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return start_cli("convert", *args, **kwargs)


# --------------------------------------------------------------------------------------
# Stopping a run mid-way, on any machine
# --------------------------------------------------------------------------------------
#
# A kill or race test must act while the run is surely mid-way, however fast or slow the
# machine: it waits for an observed event (unit records at DEST, a line of output) that
# comes well before the end, then acts at once, with no fixed delay and no image "big
# enough to still be running":
#
# - SIGKILL, or another process run against the one under test: freeze its whole process
#   group first (SIGSTOP: every thread stops where it is, nothing more is written), look at
#   what it left, then kill it (or let it go on);
# - SIGINT, SIGTERM: send the signal right away to the running process. Not to a frozen
#   one: a signal sent to a stopped process goes to whichever of its threads wakes first,
#   while a running process takes it in its main thread, where Python handles it (as it
#   does a real Ctrl-C or a batch scheduler's SIGTERM).


def _wait_for(
    proc: subprocess.Popen[Any], happened: Callable[[], bool], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not happened():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            end(proc)
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.002)


def freeze_when(
    proc: subprocess.Popen[Any], happened: Callable[[], bool], what: str, timeout: float = 300
) -> None:
    """Wait until ``happened()`` (an observed event, described by ``what``), then freeze
    ``proc``'s process group with SIGSTOP and return once it is stopped. Fails the test when
    the process ends before the event (choose an event that comes well before the end) or
    when the event does not come within ``timeout`` seconds."""
    _wait_for(proc, happened, what, timeout)
    os.killpg(proc.pid, signal.SIGSTOP)
    # WNOWAIT: only look; an exit stays for Popen to collect
    info = os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
    if info is None or info.si_code != os.CLD_STOPPED:
        _, err = proc.communicate()
        pytest.fail(f"the process ended (exit {proc.returncode}) right after {what}: {err}")


def signal_when(
    proc: subprocess.Popen[Any],
    happened: Callable[[], bool],
    what: str,
    signum: int,
    timeout: float = 300,
) -> None:
    """Wait until ``happened()``, then send ``signum`` to ``proc``'s process group at once
    (as a terminal sends Ctrl-C's SIGINT). Fails the test like :func:`freeze_when`."""
    _wait_for(proc, happened, what, timeout)
    os.killpg(proc.pid, signum)


def thaw(proc: subprocess.Popen[Any]) -> None:
    """Let a frozen process group go on."""
    os.killpg(proc.pid, signal.SIGCONT)


def kill_frozen(proc: subprocess.Popen[Any]) -> str:
    """SIGKILL the frozen process group and collect the process; returns its stderr."""
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    return str(err)


def end(proc: subprocess.Popen[Any]) -> None:
    """Make sure a test's process (and its group) is gone: for ``finally`` blocks."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` → (sha256 of its bytes, mtime in ns); directories too."""
    result: dict[str, tuple[str, int]] = {}
    if not root.exists():
        return result
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[path.relative_to(root).as_posix()] = (digest, stat.st_mtime_ns)
    return result


def output_snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """:func:`snapshot` of a DEST without the state folder's own directory entry, whose
    modification time every run changes (its lease comes and goes there); every file in
    it, the ledger's included, is still compared."""
    return {key: value for key, value in snapshot(root).items() if key != ".cellmap-migrate"}


def chunk_files(root: Path) -> dict[str, tuple[str, int]]:
    """Chunk files of a Zarr tree (everything but metadata and resume records)."""
    skip = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
    return {
        key: value
        for key, value in snapshot(root).items()
        if value[0] != "dir"
        and Path(key).name not in skip
        and not key.startswith(".cellmap-migrate")
    }


def read_zarr(path: Path) -> np.ndarray[Any, Any]:
    """A whole Zarr array (v2 or v3) read by zarr-python, as a native-endian array."""
    array = zarr.open_array(str(path), mode="r")
    data = np.asarray(array[...])
    return data.astype(data.dtype.newbyteorder("="))


def run_state(dest: Path) -> list[str]:
    """What DEST's state folder holds besides what a finished DEST keeps there (the ledger
    and the certificate): a lease, resume records. Empty for a finished DEST."""
    state = dest / ".cellmap-migrate"
    if not state.exists():
        return []
    return sorted(
        path.relative_to(state).as_posix()
        for path in state.rglob("*")
        if path.is_file()
        and path.relative_to(state).parts[0] != "ledger"
        and path.name != "certificate.json"
    )


def unit_records(dest: Path) -> int:
    """How many work-unit records (files named by unit number) DEST's state folder holds.
    Walks without a stat call per file (records come and go while a run writes), so it is
    cheap enough to poll."""
    return sum(
        1 for _, _, files in os.walk(dest / ".cellmap-migrate") for name in files if name.isdigit()
    )


def corrupt(block: Path) -> bytes:
    """Flip bytes 20–59 of a block file (its compressed payload); returns the original."""
    original = block.read_bytes()
    broken = bytearray(original)
    for i in range(20, min(len(broken), 60)):
        broken[i] ^= 0x5A
    block.write_bytes(bytes(broken))
    return original
