"""Watching a run: timestamped progress lines with ETAs off a terminal, the overall bar on a
real pseudo-terminal, the ``--log-file`` JSON lines, storage retries shown as they happen
(through a proxy that cuts the connections to moto's S3 server), and the stored bytes and
objects in the summary. Every run is a real ``python -m migrate`` process unless it only
renders.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.cli.progress import BarProgress, LineProgress, Watch
from migrate.example.fixture import example_images, write_dataset
from migrate.storage import S3Options, open_store
from tests.helpers import REPO, run_cli, run_subprocess
from tests.s3server import (
    MotoServer,
    TcpProxy,
    keys,
    s3_client,
)

NAME = "jrc_watch-1"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture
def n5(tmp_path: Path) -> Path:
    return write_dataset(tmp_path, NAME, example_images("tiny"))


def log_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_under(root: Path, *, skip_attributes: bool = False) -> tuple[int, int]:
    """(files, bytes) under ``root``, by os.walk."""
    count = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if skip_attributes and name == "attributes.json":
                continue
            count += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return count, total


def test_lines_off_a_terminal_and_the_log_file(n5: Path, tmp_path: Path) -> None:
    """stderr is a pipe: every progress line starts with an ISO timestamp and carries an ETA;
    the log file holds the run as JSON lines, errors included."""
    block = n5 / "em/fibsem-uint16/s0/1/1/1"
    block.write_bytes(block.read_bytes()[:20] + b"\x00" * 40)  # one unit fails
    log = tmp_path / "run.jsonl"
    run = run_subprocess("convert", str(n5), "--unit-mib", "0.01", "--log-file", str(log))
    assert run.exit_code == 1
    progress = [line for line in run.stderr.splitlines() if re.match(STAMP + " ", line)]
    kinds = {line.split(" ")[1] for line in progress}
    assert {"start", "progress", "done", "overall"} <= kinds
    for line in progress:
        if line.split(" ")[1] in ("progress", "done", "overall"):
            assert re.search(r", ETA (\d+s|\d+m\d\ds|\d+h\d\dm)$", line), line
    assert any(line.split(" ")[1:3] == ["overall", "all"] for line in progress)
    assert any(re.match(STAMP + " error: .*em/fibsem-uint16/s0/1/1/1", line) for line in progress)
    assert run.stderr.strip().splitlines()[-1].startswith("error: 1 work unit(s) failed")

    events = log_events(log)
    assert all(re.fullmatch(STAMP, event["time"]) for event in events)
    names = [event["event"] for event in events]
    assert names[0] == "run"
    assert names[1] == "plan"
    assert {"start", "progress", "done", "overall", "error", "summary"} <= set(names)
    plan = events[1]
    assert {image["image"] for image in plan["images"]} == {
        spec.path for spec in example_images("tiny")
    }
    unit_errors = [e for e in events if e["event"] == "error" and "s0/1/1/1" in e["text"]]
    assert unit_errors
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["complete"] is False
    assert summary["storage"]["objects_written"] > 0
    assert events[-1]["event"] == "error"
    assert "work unit(s) failed" in events[-1]["text"]
    done = [e for e in events if e["event"] == "done"]
    assert all(e["eta_s"] == 0 for e in done)


def test_verify_log_file(n5: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    assert run_cli("convert", str(n5), str(dest)).exit_code == 0
    log = tmp_path / "verify.jsonl"
    run = run_subprocess("verify", str(n5), str(dest), "--log-file", str(log))
    assert run.exit_code == 0, run.stderr
    events = log_events(log)
    assert events[0]["event"] == "run"
    assert events[0]["command"] == "verify"
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["images"] == 5
    assert summary["problems"] == []


@pytest.mark.parametrize("copy", ["blocks", "kernel", "tensorstore"])
def test_summary_counts_stored_bytes_and_objects(n5: Path, tmp_path: Path, copy: str) -> None:
    """The summary counts what moved on storage (compressed), not only voxel bytes, on every
    copy path: our block I/O, file-to-file copies in the kernel, TensorStore's kvstore."""
    dest = tmp_path / "out.zarr"
    extra = {"blocks": [], "kernel": ["--skip-decode-check"], "tensorstore": ["--no-transplant"]}[
        copy
    ]
    run = run_cli("convert", str(n5), str(dest), "--json", *extra)
    assert run.exit_code == 0, run.stderr
    storage = run.json["storage"]
    files, stored = files_under(dest)
    _blocks, block_bytes = files_under(n5, skip_attributes=True)
    voxels = sum(image["bytes_read"] for image in run.json["images"])
    assert storage["objects_written"] >= files
    assert storage["bytes_written"] >= stored
    assert storage["bytes_read"] >= block_bytes
    assert stored < voxels  # gzip: what is stored is not the voxel count
    again = run_cli("convert", str(n5), str(dest), *extra)
    assert again.exit_code == 0, again.stderr
    assert "on storage: " in again.stdout
    assert re.search(r"on storage: [\d.]+ MB read, 0\.0 MB written in 0 object\(s\)", again.stdout)


# --------------------------------------------------------------------------------------
# Retries, through a proxy that refuses connections
# --------------------------------------------------------------------------------------


def done_records(client: Any, bucket: str, prefix: str) -> int:
    """Finished-unit records at ``s3://bucket/prefix`` (read with the tests' own client)."""
    return sum(
        1 for item in keys(client, bucket, f"{prefix}/.cellmap-migrate/") if "/done/" in item["Key"]
    )


def test_a_retry_is_shown_as_it_happens(aws: MotoServer, n5: Path, tmp_path: Path) -> None:
    """The storage answered, then goes away mid-run (the run frozen at its first finished
    unit, the proxy cut, the run let go): each failed request is shown as it is retried,
    in whole timestamped lines whatever threads print them, and logged; when the storage
    comes back the run finishes."""
    client = s3_client(aws.url)
    client.create_bucket(Bucket="watch-retry")
    proxy = TcpProxy(aws.port)
    log = tmp_path / "run.jsonl"
    dest = "s3://watch-retry/out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate", "convert", str(n5), dest,
         "--endpoint-url", proxy.url, "--log-file", str(log),
         "--unit-mib", "0.004", "--no-transplant", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while done_records(client, "watch-retry", "out.zarr") == 0:
            assert proc.poll() is None, proc.communicate()  # the tiny run has over 100 units
            assert time.monotonic() < deadline, "no finished unit recorded at DEST"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)  # mid-run, the storage has answered
        proxy.cut()
        os.kill(proc.pid, signal.SIGCONT)
        for line in proc.stderr:  # the retry line arrives while the request is still failing
            seen.append(line)
            if " retrying s3://watch-retry/out.zarr" in line:
                break
        proxy.restore()
        _out, rest = proc.communicate(timeout=120)
    finally:
        proxy.cut()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, "".join(seen) + rest
    retry = seen[-1].strip()
    assert re.match(
        STAMP + r" retrying s3://watch-retry/out\.zarr/\S+: .+ \(attempt 1/10\)$", retry
    ), retry
    for line in "".join(seen).splitlines() + rest.splitlines():
        assert len(re.findall(STAMP, line)) <= 1, line  # no two lines glued together
    retries = [e for e in log_events(log) if e["event"] == "retry" and e["client"] == "boto3"]
    assert retries
    assert retries[0]["attempt"] == 1
    assert retries[0]["max_attempts"] == 10
    assert retries[0]["where"].startswith("s3://watch-retry/out.zarr/")
    assert retries[0]["text"] in retry
    assert any(item["Key"].endswith(".zattrs") for item in keys(client, "watch-retry"))


GLUE = """
import sys, threading
sys.setswitchinterval(1e-6)  # threads take turns as often as they can
from migrate.cli.progress import Watch
from migrate.storage import retries

def fail(n):
    for attempt in range(1, 201):
        retries.notify(retries.Retry(f"s3://b/k{n}", "cannot connect", attempt, 10, 1.0))

with Watch("test", as_json=False, log_file=None):
    threads = [threading.Thread(target=fail, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


def test_retry_lines_from_many_threads_stay_whole_lines() -> None:
    """Eight threads announce 200 retries each at once, before any progress display exists
    (as discovery's 32 requests in flight do when the storage goes away), to a pipe: every
    line of stderr is one whole retry line."""
    run = subprocess.run(
        [sys.executable, "-c", GLUE], capture_output=True, text=True, cwd=REPO, timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    line = STAMP + r" retrying s3://b/k\d: cannot connect \(attempt \d+/10\)"
    broken = [text for text in lines if not re.fullmatch(line, text)]
    assert broken == []
    assert len(lines) == 8 * 200


def test_tensorstore_retries_are_shown(aws: MotoServer, tmp_path: Path) -> None:
    """TensorStore says nothing about a retry; its counter, polled, is shown and logged."""
    import tensorstore as ts

    s3_client(aws.url).create_bucket(Bucket="watch-ts")
    proxy = TcpProxy(aws.port)
    store = open_store("s3://watch-ts/p", read_only=False, s3=S3Options(endpoint_url=proxy.url))
    kvstore = ts.KvStore.open(store.kvstore_spec("")).result()
    log = tmp_path / "ts.jsonl"
    try:
        with Watch("test", as_json=True, log_file=str(log)) as watch:
            watch.watch_tensorstore(every=0.1)
            proxy.cut()  # the first attempt fails; the storage comes back a little later
            threading.Timer(1.5, proxy.restore).start()
            kvstore.write("chunk", b"x" * 100).result()
    finally:
        proxy.cut()
    shown = [e for e in log_events(log) if e["event"] == "retry"]
    assert shown
    assert {e["client"] for e in shown} == {"tensorstore"}
    assert sum(e["retries"] for e in shown) >= 1
    assert "it does not say which or why" in shown[0]["text"]


# --------------------------------------------------------------------------------------
# Bars
# --------------------------------------------------------------------------------------


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_overall_bar_on_a_pseudo_terminal(n5: Path) -> None:
    """stderr is a terminal: rich draws one bar for the whole run above the image bars."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 180, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "180", "LINES": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate", "convert", str(n5), "--unit-mib", "0.01"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=REPO, env=env,
    )  # fmt: skip
    os.close(slave)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(read_all(master)))
    reader.start()
    stdout, _ = proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    assert proc.returncode == 0
    screen = ANSI.sub("", b"".join(output).decode("utf-8", "replace")).replace("\r", "\n")
    lines = [line.strip() for line in screen.splitlines() if line.strip()]
    last = max(i for i, line in enumerate(lines) if line.startswith("all images"))
    overall = lines[last]
    units = re.search(r"(\d+)/(\d+) units", overall)
    assert units is not None, overall
    assert units.group(1) == units.group(2)
    assert "ETA" in overall
    below = lines[last + 1 : last + 6]
    assert [line.split()[0] for line in below] == [
        "em/fibsem-uint16", "em/fibsem-uint8", "labels/mito_pred", "labels/mito_seg", "lm/er_palm",
    ]  # fmt: skip
    assert "complete" in stdout.decode()


def test_images_waiting_their_turn_say_queued() -> None:
    bars = BarProgress()
    try:
        bars.start("em/a", 4, 4000, 0, 0)
        bars.start("em/b", 4, 4000, 0, 0)
        bars.advance("em/a", 1, 1000)
        console_file = io.StringIO()
        from rich.console import Console

        console = Console(file=console_file, width=160, color_system=None)
        console.print(bars.bars.get_renderable())
    finally:
        bars.close()
    lines = console_file.getvalue().splitlines()
    assert lines[0].startswith("all images")
    assert "1/8 units" in lines[0]
    (a,) = [line for line in lines if line.startswith("em/a")]
    (b,) = [line for line in lines if line.startswith("em/b")]
    assert "queued" in b
    assert "?" not in b
    assert "queued" not in a


# --------------------------------------------------------------------------------------
# Rates: shown only once they mean something
# --------------------------------------------------------------------------------------


def test_a_rate_is_shown_once_measured_over_a_second_and_a_megabyte() -> None:
    """Measured from the first unit: 2 MB in 0.5 s is not shown, 4 MB in 2 s is (2.0 MB/s);
    a slow trickle of 0.2 MB over 5 s is not (too few bytes to say anything)."""
    now = [100.0]
    out = io.StringIO()
    lines = LineProgress(out, interval=0.0, clock=lambda: now[0])
    lines.start("em/a", 10, 10_000_000, 0, 0)
    lines.start("em/b", 4, 400_000, 0, 0)
    lines.advance("em/a", 1, 1_000_000)
    now[0] = 100.5
    lines.advance("em/a", 1, 2_000_000)
    now[0] = 102.0
    lines.advance("em/a", 1, 2_000_000)
    lines.advance("em/b", 1, 100_000)
    now[0] = 107.0
    lines.advance("em/b", 1, 100_000)
    shown = [line for line in out.getvalue().splitlines() if " progress em/" in line]
    assert [" MB/s" in line for line in shown] == [False, False, True, False, False]
    assert ", 2.0 MB/s, ETA " in shown[2]
    assert re.search(r"0\.2/0\.4 MB \(50 %\), ETA \S+$", shown[4]), shown[4]


def test_a_tiny_run_shows_no_rate(n5: Path, tmp_path: Path) -> None:
    """0.7 MB of voxels: no line and no summary carries a rate (it would be thousands of
    MB/s: a few units finishing within milliseconds)."""
    run = run_subprocess("convert", str(n5), str(tmp_path / "out.zarr"), "--unit-mib", "0.01")
    assert run.exit_code == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if re.match(STAMP + " ", line)]
    assert {line.split(" ")[1] for line in progress} >= {"progress", "done", "overall"}
    assert "MB/s" not in run.stderr
    assert "MB/s" not in run.stdout
    assert re.search(r"MB of voxels in [\d.]+ s -> ", run.stdout), run.stdout


def test_bars_show_no_speed_before_it_means_anything() -> None:
    bars = BarProgress()
    try:
        bars.start("em/a", 4, 4000, 0, 0)
        bars.advance("em/a", 1, 1000)
        bars.advance("em/a", 1, 1000)
        console_file = io.StringIO()
        from rich.console import Console

        console = Console(file=console_file, width=160, color_system=None)
        console.print(bars.bars.get_renderable())
    finally:
        bars.close()
    (line,) = [line for line in console_file.getvalue().splitlines() if line.startswith("em/a")]
    assert "2/4 units" in line
    assert "/s" not in line, line
