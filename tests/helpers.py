"""Helpers for end-to-end tests: run the CLI, snapshot trees, read outputs independently."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


def popen_convert(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrate", "convert", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        **kwargs,
    )


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
    """How many work-unit records (files named by unit number) DEST's state folder holds."""
    state = dest / ".cellmap-migrate"
    return sum(1 for p in state.rglob("*") if p.is_file() and p.name.isdigit())


def corrupt(block: Path) -> bytes:
    """Flip bytes 20–59 of a block file (its compressed payload); returns the original."""
    original = block.read_bytes()
    broken = bytearray(original)
    for i in range(20, min(len(broken), 60)):
        broken[i] ^= 0x5A
    block.write_bytes(bytes(broken))
    return original
