"""Complete means complete: a DEST-level completion mark written last, unit records tied to
the source as it was, no temporary files of dead writers left behind, deterministic bytes.

Every kill here is a real SIGKILL of a real ``python -m migrate`` process.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migrate.example.fixture import (
    ImageSpec,
    block_path,
    encode_block,
    example_images,
    write_dataset,
    write_image,
)
from tests.helpers import (
    REPO,
    chunk_files,
    end,
    freeze_when,
    kill_frozen,
    popen_convert,
    run_state,
    run_subprocess,
    snapshot,
    unit_records,
)

KILL_AT_WRITE = """
import os, signal, sys
from migrate.storage import local
target = sys.argv[1]
original = local.LocalStore.write
def write(self, key, data):
    if key == target:
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, key, data)
local.LocalStore.write = write
from migrate.cli import cli
cli(sys.argv[2:], prog_name="cellmap-migrate")
"""
"""Runs the CLI and SIGKILLs itself at the moment it would write the object ``argv[1]``."""

STUCK_WRITER = """
import os, sys, time
from migrate.storage import LocalStore
def stuck(src, dst):
    print("writing", flush=True)
    time.sleep(3600)
os.replace = stuck
LocalStore(sys.argv[1], read_only=False).write(sys.argv[2], b"partial")
"""
"""A writer that stops for good after its temporary file is written, before the rename."""


def run_killed_at(key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILL_AT_WRITE, key, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def has_records(dest: Path, at_least: int) -> bool:
    return unit_records(dest) >= at_least


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------
# 1. The completion mark
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("last", ["labels/.zattrs", ".zattrs"])
def test_a_run_killed_before_its_last_document_is_not_complete(tmp_path: Path, last: str) -> None:
    n5 = write_dataset(tmp_path, "jrc_mark-1", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    killed = run_killed_at(last, "convert", str(n5))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (dest / last).exists()
    # every image was finalized (its own mark is there) before the kill
    for image in ("em/fibsem-uint16", "labels/mito_seg", "lm/er_palm"):
        attrs = json.loads((dest / image / ".zattrs").read_text())
        assert attrs["cellmap-migrate"]["fingerprint"]
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1, status.stdout
    assert "INCOMPLETE" in status.stdout
    assert "completion mark" in status.stdout
    again = run_subprocess("convert", str(n5))
    assert again.exit_code == 0, again.stderr
    status = run_subprocess("status", str(dest), "--json")
    assert status.exit_code == 0, status.stdout
    assert all(image["complete"] for image in status.json)
    mark = json.loads((dest / ".zattrs").read_text())["cellmap-migrate"]["complete"]
    assert set(mark) == {image["image"] for image in status.json}


def test_the_dry_run_shows_the_completion_mark_byte_for_byte(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_mark-2", example_images("tiny"))
    dry = run_subprocess("convert", str(n5), "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    lines = dry.stdout.splitlines()
    start = lines.index("+++ b/.zattrs")
    shown = []
    for line in lines[start + 2 :]:
        if not line.startswith("+") or line.startswith("+++"):
            break
        shown.append(line[1:])
    assert run_subprocess("convert", str(n5)).exit_code == 0
    written = (n5.with_suffix(".zarr") / ".zattrs").read_text()
    assert "\n".join(shown) + "\n" == written
    assert '"complete"' in written


def test_an_image_the_mark_lists_but_dest_lacks_is_reported(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_mark-3", example_images("tiny"))
    dest = n5.with_suffix(".zarr")
    assert run_subprocess("convert", str(n5)).exit_code == 0
    (dest / "lm/er_palm/.zattrs").unlink()  # the image no longer advertises itself
    status = run_subprocess("status", str(dest))
    assert status.exit_code == 1
    assert "lm/er_palm: INCOMPLETE (listed as complete" in status.stdout


# --------------------------------------------------------------------------------------
# 2. Unit records are tied to the source blocks they were copied from
# --------------------------------------------------------------------------------------


def rewrite_block(array: Path, position: tuple[int, ...], seed: int) -> None:
    """Replace the block at C-order ``position`` with other values (same shape)."""
    attrs = json.loads((array / "attributes.json").read_text())
    path = block_path(array, position)
    header = path.read_bytes()[:16]
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)]
    values = np.random.default_rng(seed).integers(1, 60000, size=dims[::-1], dtype="uint16")
    time.sleep(0.01)  # a later modification time even on a coarse clock
    path.write_bytes(encode_block(values, attrs["compression"]))


def test_a_changed_source_block_is_copied_again_on_resume(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path / "a", "jrc_sig-1", example_images("tiny"))
    dest = tmp_path / "out.zarr"
    s0 = n5 / "em/fibsem-uint16/s0"
    corrupt = block_path(s0, (1, 1, 1))
    original = corrupt.read_bytes()
    corrupt.write_bytes(original[:20] + bytes(b ^ 0x5A for b in original[20:60]) + original[60:])
    args = ("--unit-mib", "0.01")
    partial = run_subprocess("convert", str(n5), str(dest), *args)
    assert partial.exit_code == 1  # everything but the corrupt block's unit is recorded
    copied = dest / "em/fibsem-uint16/s0/0/0/0"
    assert copied.exists()
    rewrite_block(s0, (0, 0, 0), seed=5)  # a copied block changes
    block_path(s0, (0, 1, 0)).unlink()  # another one becomes all zero (absent)
    corrupt.write_bytes(original)
    resumed = run_subprocess("convert", str(n5), str(dest), *args)
    assert resumed.exit_code == 0, resumed.stderr
    output = resumed.stdout + resumed.stderr
    assert "2 unit(s) redone: their source changed since they were copied" in output
    fresh = tmp_path / "fresh.zarr"
    assert run_subprocess("convert", str(n5), str(fresh), *args).exit_code == 0
    digests = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert digests == {key: digest for key, (digest, _) in chunk_files(fresh).items()}
    assert not (dest / "em/fibsem-uint16/s0/0/1/0").exists()


def test_unit_records_hold_the_signature_of_their_source_blocks(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path / "a", "jrc_sig-2", example_images("tiny"))
    dest = tmp_path / "out.zarr"
    proc = popen_convert(str(n5), str(dest), "--unit-mib", "0.01", "--workers", "1")
    try:
        freeze_when(proc, lambda: unit_records(dest) >= 3, "3 unit records")
        kill_frozen(proc)
    finally:
        end(proc)
    records = [p for p in (dest / ".cellmap-migrate").rglob("*") if p.name.isdigit()]
    assert len(records) >= 3
    for record in records:
        # the record also holds the unit's ledger entries (issue 22): the signature is a field
        signature = json.loads(record.read_text())["signature"]
        count, _, digest = signature.partition(":")
        assert count.isdigit(), record.read_text()
        assert len(digest) == 16, record.read_text()


# --------------------------------------------------------------------------------------
# 3. Temporary files of dead writers
# --------------------------------------------------------------------------------------

KILL_SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(96, 128, 128),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)
KILL_ARGS = ("--workers", "2", "--unit-mib", "0.0078125")


def start_stuck_writer(dest: Path, key: str) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", STUCK_WRITER, str(dest), key],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    return writer


LOCK_HOLDER = """
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
# a whole-file write lock on the open file description, as TensorStore's file kvstore takes
# on Linux while it writes a key's new value into <key>.__lock
fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
time.sleep(600)
"""


def start_lock_holder(path: Path) -> subprocess.Popen[str]:
    """A real process holding TensorStore's kind of lock on ``path`` until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def tensorstore_locks(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.__lock"))


@pytest.mark.slow
def test_resume_removes_the_temporary_files_of_killed_writers(tmp_path: Path) -> None:
    n5 = tmp_path / "jrc_tmp" / "jrc_tmp.n5"
    write_image(n5, KILL_SPEC)
    reference = tmp_path / "reference.zarr"
    assert run_subprocess("convert", str(n5), str(reference), *KILL_ARGS).exit_code == 0
    dest = tmp_path / "out.zarr"
    rng = random.Random(20261201)
    for _ in range(6):  # each run killed at a random point of its progress, 432 units in all
        proc = popen_convert(str(n5), str(dest), *KILL_ARGS)
        at_least = unit_records(dest) + rng.randint(1, 20)
        try:
            freeze_when(proc, functools.partial(has_records, dest, at_least), "unit records")
            kill_frozen(proc)
        finally:
            end(proc)
    # one writer killed for sure between writing its temporary file and renaming it
    dead = start_stuck_writer(dest, "em/fibsem-uint16/s0/0/0/99")
    dead.send_signal(signal.SIGKILL)
    dead.communicate()
    # TensorStore's lock file of a writer killed mid-write (--no-transplant, --chunks): no
    # process holds its lock
    (dest / "em/fibsem-uint16/s0/0/0/1.__lock").write_bytes(b"half a chunk")
    # and one that still runs: its file is not ours to remove
    live = start_stuck_writer(dest, "em/fibsem-uint16/s1/0/0/98")
    live_lock = start_lock_holder(dest / "em/fibsem-uint16/s1/0/0/1.__lock")
    try:
        live_files = {p.name for p in temporaries(dest / "em/fibsem-uint16/s1/0/0")}
        assert any(p.parent.name == "0" for p in temporaries(dest / "em/fibsem-uint16/s0/0"))
        final = run_subprocess("convert", str(n5), str(dest), *KILL_ARGS)
        assert final.exit_code == 0, final.stderr
        assert {p.name for p in temporaries(dest)} == live_files
        assert tensorstore_locks(dest) == [dest / "em/fibsem-uint16/s1/0/0/1.__lock"]
    finally:
        for process in (live, live_lock):
            process.kill()
            process.communicate()
    for path in temporaries(dest) + tensorstore_locks(dest):
        path.unlink()  # the live writers', now dead too
    got = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert got == {key: digest for key, (digest, _) in chunk_files(reference).items()}
    assert run_state(dest) == []  # the ledger alone is left


# --------------------------------------------------------------------------------------
# 4. The same migration, the same bytes
# --------------------------------------------------------------------------------------


def all_bytes(root: Path) -> dict[str, str]:
    """Every file of an output (the Zarr), by digest; not the ledger, which records each
    run's own modification times and run id."""
    return {
        key: digest
        for key, (digest, _) in snapshot(root).items()
        if digest != "dir" and not key.startswith(".cellmap-migrate/")
    }


@pytest.mark.slow
def test_repeated_sharded_migrations_under_load_are_bit_identical(tmp_path: Path) -> None:
    spec = ImageSpec(
        path="em/fibsem-uint16",
        shape=(100, 150, 165),  # truncated edge blocks on every axis
        block_size=(32, 32, 32),
        levels=2,
        compression={"type": "gzip", "level": -1},
        content="gradient",
        seed=11,
    )
    n5 = tmp_path / "jrc_det" / "jrc_det.n5"
    write_image(n5, spec)
    args = ("--ngff-version", "0.5", "--shard", "64,64,64", "--workers", "6")
    runs: list[dict[str, str]] = []
    for batch in range(3):  # two at a time, 6 threads each, on a shared machine
        procs: list[tuple[Path, Any]] = []
        for k in range(2):
            dest = tmp_path / f"out-{batch}-{k}.zarr"
            procs.append((dest, popen_convert(str(n5), str(dest), *args)))
        for dest, proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
            runs.append(all_bytes(dest))
    assert len(runs[0]) > 10
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        differ = sorted(key for key in other if other[key] != runs[0][key])
        assert not differ, f"bytes differ between identical runs: {differ[:5]}"


def test_temporary_names_say_who_writes_them(tmp_path: Path) -> None:
    from migrate.storage import LocalStore, temporary_name, writer_alive

    mine = temporary_name("0")
    assert writer_alive(mine)
    assert str(os.getpid()) in mine
    writer = start_stuck_writer(tmp_path, "a/b")
    (name,) = [p.name for p in temporaries(tmp_path)]
    assert writer_alive(name)
    writer.kill()
    writer.communicate()
    assert not writer_alive(name)
    assert writer_alive(".0.otherhost-1-1-1.tmp")  # another host: cannot tell, keep it
    store = LocalStore(tmp_path, read_only=False)
    assert store.remove_dead_temporaries("") == 1
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------------------
# 2 on S3: the signature comes from the listing (size and ETag), no request per block
# --------------------------------------------------------------------------------------


@pytest.fixture
def s3_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.s3server import CLEARED_AWS_VARIABLES, MotoServer, fake_aws_environment, s3_client

    server = MotoServer()
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    for name in CLEARED_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in fake_aws_environment(server.url, home).items():
        monkeypatch.setenv(name, value)
    yield s3_client(server.url)
    server.stop()


def test_on_s3_a_changed_source_object_is_copied_again_on_resume(
    s3_env: Any, tmp_path: Path
) -> None:
    from tests.helpers import run_cli
    from tests.s3server import upload_tree

    client = s3_env
    images = [s for s in example_images("tiny") if s.path == "em/fibsem-uint16"]
    n5 = write_dataset(tmp_path / "data", "jrc_s3sig-1", images)
    s0 = n5 / "em/fibsem-uint16/s0"
    corrupt = block_path(s0, (1, 1, 1))
    original = corrupt.read_bytes()
    corrupt.write_bytes(original[:20] + bytes(b ^ 0x5A for b in original[20:60]) + original[60:])
    client.create_bucket(Bucket="src")
    upload_tree(client, tmp_path / "data", "src", "")
    url = "s3://src/jrc_s3sig-1/jrc_s3sig-1.n5"
    dest = tmp_path / "out.zarr"
    args = ("--unit-mib", "0.01")
    assert run_cli("convert", url, str(dest), *args).exit_code == 1
    rewrite_block(s0, (0, 0, 0), seed=7)
    changed = block_path(s0, (0, 0, 0)).read_bytes()
    client.put_object(
        Bucket="src", Key="jrc_s3sig-1/jrc_s3sig-1.n5/em/fibsem-uint16/s0/0/0/0", Body=changed
    )
    client.put_object(
        Bucket="src", Key="jrc_s3sig-1/jrc_s3sig-1.n5/em/fibsem-uint16/s0/1/1/1", Body=original
    )
    resumed = run_cli("convert", url, str(dest), *args)
    assert resumed.exit_code == 0, resumed.stderr
    assert "1 unit(s) redone: their source changed" in resumed.stdout + resumed.stderr
    fresh = tmp_path / "fresh.zarr"
    corrupt.write_bytes(original)
    assert run_cli("convert", str(n5), str(fresh), *args).exit_code == 0
    digests = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    assert digests == {key: digest for key, (digest, _) in chunk_files(fresh).items()}
