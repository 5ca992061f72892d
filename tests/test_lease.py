"""One writer per destination: the lease of DEST, with real processes, local and on S3.

A second `convert` on a DEST that another run is writing is refused (one line naming the
holder, exit 1) and the first run's output is correct; a lease whose holder is gone (dead
pid, or not renewed past its expiry) is taken over with a message; `--break-lease` forces
it and the run that lost its lease stops before finalizing; the storage primitives the lease
is built on (create-if-absent, replace-if-unchanged) hold on local disks and on a real S3
server; a worker of a superseded run can neither work nor record units for the new run.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from migrate.api import prepare
from migrate.copy import distributed
from migrate.copy.engine import UnitWorker, WorkUnit, run_plan
from migrate.copy.options import EngineOptions
from migrate.dest import lease, records
from migrate.dest.lease import LeaseHeldError, LeaseLostError
from migrate.example.fixture import ImageSpec, write_dataset, write_image
from migrate.storage import LocalStore, S3Options, Store, open_store
from migrate.target.plan import PlanOptions
from tests.helpers import (
    REPO,
    Run,
    chunk_files,
    end,
    freeze_when,
    kill_frozen,
    popen_convert,
    run_cli,
    run_state,
    run_subprocess,
    signal_when,
    thaw,
    unit_records,
)
from tests.s3server import (
    MotoServer,
    keys,
    s3_client,
    upload_tree,
)

SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(96, 128, 128),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)
# One 16³ uint16 block per work unit: 432 units; the first run is frozen after 5 of them.
SLOW = ("--workers", "1", "--unit-mib", "0.0078125", "--no-transplant")
LEASE = Path(".cellmap-migrate") / "lease.json"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    n5 = tmp_path_factory.mktemp("lease") / "jrc_lease" / "jrc_lease.n5"
    write_image(n5, SPEC)
    return n5


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The chunk files of an uninterrupted run alone on its DEST (name → sha256)."""
    dest = tmp_path_factory.mktemp("reference") / "out.zarr"
    run = run_subprocess("convert", str(source), str(dest), *SLOW)
    assert run.exit_code == 0, run.stderr
    return {key: digest for key, (digest, _) in chunk_files(dest).items()}


def start_and_freeze(dest: Path, *args: str, at_least: int = 5) -> subprocess.Popen[str]:
    """Start ``convert *args``; return it frozen (SIGSTOP) once it has recorded ``at_least``
    units: it holds the lease, alive, and can do nothing until the test lets it go on."""
    proc = popen_convert(*args)
    freeze_when(proc, lambda: unit_records(dest) >= at_least, f"{at_least} unit records")
    return proc


def lease_pid(dest: Path) -> int | None:
    """The pid in DEST's lease, None when there is none (or it is being replaced)."""
    try:
        return int(json.loads((dest / LEASE).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def digests(dest: Path) -> dict[str, str]:
    return {key: digest for key, (digest, _) in chunk_files(dest).items()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_lease(dest: Path, **fields: Any) -> None:
    """A lease as another run writes it (the documented lease.json fields)."""
    holder = {
        "run_id": uuid.uuid4().hex,
        "host": "other-host.example",
        "pid": 4242,
        "started": "2026-12-01T08:00:00Z",
        "command": "cellmap-migrate convert /elsewhere/jrc_x.n5",
        "renewed": time.time(),
        "expiry_seconds": 300.0,
        **fields,
    }
    path = dest / LEASE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))


# --------------------------------------------------------------------------------------
# Two writers, real processes
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def recorded(dest: Path) -> bool:
    """At least one unit is recorded at DEST (an observed event)."""
    return unit_records(dest) >= 1


def test_second_convert_is_refused_while_the_first_runs(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    """The issue's break: a default and a ``--codec zstd`` run on one DEST both "completed",
    leaving zstd chunks under a gzip ``.zarray``. Now the second is refused (also with
    --overwrite), and the first finishes with exactly the output of a run alone."""
    dest = tmp_path / "out.zarr"
    first = start_and_freeze(dest, str(source), str(dest), *SLOW)
    try:
        for extra in ((), ("--overwrite",)):
            second = run_subprocess("convert", str(source), str(dest), "--codec", "zstd", *extra)
            assert second.exit_code == 1, second.stderr
            (line,) = error_lines(second.stderr)
            assert "is being written by another run" in line
            assert f"host {socket.gethostname()}, pid {first.pid}, started 20" in line
            assert f"command: cellmap-migrate convert {source} {dest}" in line
            assert "--break-lease" in line
        thaw(first)
        _, err = first.communicate(timeout=300)
    finally:
        end(first)
    assert first.returncode == 0, err
    assert digests(dest) == reference
    zarray = json.loads((dest / SPEC.path / "s0" / ".zarray").read_text())
    assert zarray["compressor"]["id"] == "gzip"
    assert run_subprocess("verify", str(source), str(dest)).exit_code == 0
    assert run_subprocess("status", str(dest)).exit_code == 0
    assert run_state(dest) == []  # the ledger alone is left  # released: nothing but Zarr is left


@pytest.mark.slow
def test_lease_of_a_killed_run_is_taken_over(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    first = start_and_freeze(dest, str(source), str(dest), *SLOW)
    kill_frozen(first)
    left = json.loads((dest / LEASE).read_text())
    assert left["pid"] == first.pid  # SIGKILL leaves the lease behind
    again = run_subprocess("convert", str(source), str(dest), *SLOW)
    assert again.exit_code == 0, again.stderr
    assert (
        f"taking over the lease of {dest} from host {socket.gethostname()}, pid {first.pid}"
        in again.stderr
    )
    assert f"pid {first.pid} is no longer running" in again.stderr
    assert digests(dest) == reference
    assert run_state(dest) == []  # the ledger alone is left


@pytest.mark.slow
def test_ctrl_c_releases_the_lease(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    first = popen_convert(str(source), str(dest), *SLOW)
    try:
        signal_when(
            first,
            lambda: unit_records(dest) >= 5 and (dest / LEASE).is_file(),
            "5 unit records under the lease",
            signal.SIGINT,
        )
        _, err = first.communicate(timeout=120)
    finally:
        end(first)
    assert first.returncode == 130, err
    assert not (dest / LEASE).exists()
    assert unit_records(dest) > 0  # the records stay for the resume


@pytest.mark.slow
def test_break_lease_takes_over_and_the_old_run_stops_before_finalizing(
    source: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    # renewed every second: the first run notices the takeover at its next renewal
    first = start_and_freeze(dest, str(source), str(dest), *SLOW, "--lease-timeout", "10")
    frozen_at = time.monotonic()
    second_proc = popen_convert(str(source), str(dest), *SLOW, "--break-lease")
    try:
        # the second run has taken the lease over; it waits for the first (a live writer on
        # this host) to stop before it writes anything
        deadline = time.monotonic() + 300
        while lease_pid(dest) != second_proc.pid:
            assert second_proc.poll() is None, second_proc.communicate()[1]
            assert time.monotonic() < deadline, "no takeover"
            time.sleep(0.01)
        # frozen for longer than the renewal interval: a renewal is due the moment it goes on
        time.sleep(max(0.0, frozen_at + 1.0 - time.monotonic()))
        thaw(first)
        _, err = first.communicate(timeout=120)
        out, second_err = second_proc.communicate(timeout=300)
    finally:
        end(first)
        end(second_proc)
    second = Run(second_proc.returncode, out, second_err)
    assert second.exit_code == 0, second.stderr
    assert f"taking over the lease of {dest} from host" in second.stderr
    assert "(--break-lease)" in second.stderr
    assert first.returncode == 1, err
    (line,) = error_lines(err)
    assert "lost the lease to another run" in line
    assert "stopped before finalizing" in line
    assert digests(dest) == reference
    assert run_subprocess("verify", str(source), str(dest)).exit_code == 0


# --------------------------------------------------------------------------------------
# Leases of other hosts (written as another run writes them)
# --------------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_dataset(
        tmp_path, "jrc_small-1", [ImageSpec(path="em/fibsem-uint8", shape=(20, 24, 28))]
    )


def test_live_lease_of_another_host_is_refused_until_break_lease(small: Path) -> None:
    dest = small.with_suffix(".zarr")
    write_lease(dest)
    before = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    refused = run_cli("convert", str(small))
    assert refused.exit_code == 1
    (line,) = error_lines(refused.stderr)
    assert (
        f"{dest} is being written by another run (host other-host.example, pid 4242, "
        "started 2026-12-01T08:00:00Z, command: cellmap-migrate convert /elsewhere/jrc_x.n5)"
        in line
    )
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == before
    # the dry run takes no lease but says who holds it
    dry = run_cli("convert", str(small), "--dry-run")
    assert dry.exit_code == 0
    assert "note: DEST is being written right now (host other-host.example, pid 4242" in dry.stderr
    forced = run_cli("convert", str(small), "--break-lease")
    assert forced.exit_code == 0, forced.stderr
    assert "taking over the lease" in forced.stderr
    assert "from host other-host.example, pid 4242" in forced.stderr
    assert run_cli("verify", str(small), str(dest)).exit_code == 0
    assert run_state(dest) == []  # the ledger alone is left


def test_expired_lease_of_another_host_is_taken_over(small: Path) -> None:
    dest = small.with_suffix(".zarr")
    write_lease(dest, renewed=time.time() - 1000, expiry_seconds=300.0)
    run = run_cli("convert", str(small))
    assert run.exit_code == 0, run.stderr
    assert "from host other-host.example, pid 4242" in run.stderr
    assert "not renewed for 1000 s, expiry 300 s" in run.stderr
    assert run_cli("verify", str(small), str(dest)).exit_code == 0


def test_lease_records_who_holds_it(small: Path, tmp_path: Path) -> None:
    """While a run works, DEST/.cellmap-migrate/lease.json names it; seen from the run's
    own progress (a library call, with a hook in the progress reporting)."""
    dest = tmp_path / "seen.zarr"
    seen: list[dict[str, Any]] = []

    class Watch:
        def start(self, *args: Any) -> None:
            seen.append(json.loads((dest / LEASE).read_text()))

        def advance(self, *args: Any) -> None:
            pass

        def message(self, text: str) -> None:
            pass

        def close(self) -> None:
            pass

    prepared = prepare(str(small), str(dest), PlanOptions(), read_only_dest=False)
    with lease.hold(prepared.dest, expiry=60) as held:
        result = run_plan(
            prepared.plan,
            prepared.source,
            prepared.dest,
            EngineOptions(),
            Watch(),
            guard=held.check,
            run_id=held.run_id,
        )
    assert result.complete
    (record,) = seen
    assert record["run_id"] == held.run_id
    assert record["host"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert record["expiry_seconds"] == 60
    assert {"started", "command", "renewed", "renewed_at"} <= set(record)
    assert run_state(dest) == []  # the ledger alone is left


# --------------------------------------------------------------------------------------
# The storage primitives
# --------------------------------------------------------------------------------------


def check_conditional_writes(store: Store) -> None:
    assert store.read_versioned("x/lease.json") is None
    first = store.create_if_absent("x/lease.json", b"one")
    assert first is not None
    assert store.create_if_absent("x/lease.json", b"two") is None
    assert store.read("x/lease.json") == b"one"
    found = store.read_versioned("x/lease.json")
    assert found == (b"one", first)
    second = store.replace_if_unchanged("x/lease.json", b"three", first)
    assert second is not None
    assert second != first
    assert store.replace_if_unchanged("x/lease.json", b"four", first) is None  # stale token
    assert store.read("x/lease.json") == b"three"
    assert not store.delete_if_unchanged("x/lease.json", first)
    assert store.read("x/lease.json") == b"three"
    assert store.delete_if_unchanged("x/lease.json", second)
    assert store.read("x/lease.json") is None


def test_local_conditional_writes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d", read_only=False)
    check_conditional_writes(store)
    assert sorted(p.name for p in (tmp_path / "d").rglob("*")) == []  # lock and folder gone


RACERS = """
import sys
from migrate.storage import LocalStore
store = LocalStore(sys.argv[1], read_only=False)
print("won" if store.create_if_absent("lease.json", sys.argv[2].encode()) else "lost")
"""


def test_local_create_if_absent_has_one_winner_among_processes(tmp_path: Path) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACERS, str(tmp_path / "d"), f"racer-{n}"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for n in range(6)
    ]
    outcomes = [proc.communicate(timeout=60)[0].strip() for proc in racers]
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    winner = outcomes.index("won")
    assert (tmp_path / "d" / "lease.json").read_text() == f"racer-{winner}"


# --------------------------------------------------------------------------------------
# S3 (a real moto server)
# --------------------------------------------------------------------------------------


def done_count(client: Any, bucket: str) -> int:
    """The unit records under s3://BUCKET/out.zarr."""
    return sum(1 for item in keys(client, bucket, "out.zarr/") if "/done/" in item["Key"])


def new_bucket(client: Any) -> str:
    name = f"lease-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return name


def test_s3_conditional_writes(aws: MotoServer) -> None:
    bucket = new_bucket(s3_client(aws.url))
    check_conditional_writes(open_store(f"s3://{bucket}/p", read_only=False))


@pytest.mark.slow
def test_s3_second_convert_is_refused_while_the_first_runs(aws: MotoServer, tmp_path: Path) -> None:
    """Both runs write s3://…/out.zarr; the first (48 units of one block) is frozen (SIGSTOP)
    once it has recorded a unit, so it is surely mid-run, holding the lease, when the second
    starts. The first is then stopped with Ctrl-C (which releases its lease) and a third run
    finishes the job."""
    client = s3_client(aws.url)
    bucket = new_bucket(client)
    spec = ImageSpec(
        path="em/fibsem-uint8", shape=(48, 64, 64), block_size=(16, 16, 16), levels=1,
        content="noise",
    )  # fmt: skip
    write_dataset(tmp_path / "src", "jrc_s3lease-1", [spec], thumbnail=False)
    upload_tree(client, tmp_path / "src", bucket, "")
    src = f"s3://{bucket}/jrc_s3lease-1/jrc_s3lease-1.n5"
    dest = f"s3://{bucket}/out.zarr"
    first = popen_convert(src, dest, "--workers", "1", "--unit-mib", "0.004", "--no-transplant")
    try:
        freeze_when(first, lambda: done_count(client, bucket) > 0, "a done record")
        lease = json.loads(
            client.get_object(Bucket=bucket, Key="out.zarr/.cellmap-migrate/lease.json")[
                "Body"
            ].read()
        )
        assert lease["pid"] == first.pid
        second = run_subprocess("convert", src, dest, "--codec", "zstd", "--overwrite")
        assert second.exit_code == 1, second.stderr
        (line,) = error_lines(second.stderr)
        assert f"{dest} is being written by another run (host " in line
        assert f"pid {first.pid}" in line
        # let it go on; once it has recorded another unit it runs as before: Ctrl-C
        recorded = done_count(client, bucket)
        thaw(first)
        signal_when(
            first, lambda: done_count(client, bucket) > recorded, "another record", signal.SIGINT
        )
        _, err = first.communicate(timeout=180)
    finally:
        end(first)
    assert first.returncode == 130, err
    assert "note:" not in err  # moto does conditional writes: no best-effort fallback
    state = [item["Key"] for item in keys(client, bucket, "out.zarr/.cellmap-migrate/")]
    assert "out.zarr/.cellmap-migrate/lease.json" not in state  # released on Ctrl-C
    third = run_subprocess("convert", src, dest, "--workers", "1", "--unit-mib", "0.004",
                           "--no-transplant")  # fmt: skip
    assert third.exit_code == 0, third.stderr
    assert "taking over" not in third.stderr
    left = [item["Key"] for item in keys(client, bucket, "out.zarr/.cellmap-migrate/")]
    assert [key for key in left if "/.cellmap-migrate/ledger/" not in key] == []
    assert run_subprocess("verify", src, dest).exit_code == 0


def test_s3_live_lease_is_refused_until_break_lease(aws: MotoServer, tmp_path: Path) -> None:
    client = s3_client(aws.url)
    bucket = new_bucket(client)
    n5 = write_dataset(
        tmp_path, "jrc_small-1", [ImageSpec(path="em/fibsem-uint8", shape=(20, 24, 28))]
    )
    dest = f"s3://{bucket}/small.zarr"
    holder = {
        "run_id": "f" * 32, "host": "other-host.example", "pid": 7,
        "started": "2026-12-01T08:00:00Z", "command": "cellmap-migrate convert x",
        "renewed": time.time(), "expiry_seconds": 300.0,
    }  # fmt: skip
    key = "small.zarr/.cellmap-migrate/lease.json"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode())
    refused = run_cli("convert", str(n5), dest)
    assert refused.exit_code == 1
    assert "being written by another run (host other-host.example, pid 7" in refused.stderr
    assert [item["Key"] for item in keys(client, bucket)] == [key]
    forced = run_cli("convert", str(n5), dest, "--break-lease")
    assert forced.exit_code == 0, forced.stderr
    assert "taking over the lease" in forced.stderr
    left = [item["Key"] for item in keys(client, bucket, "small.zarr/.cellmap-migrate/")]
    assert [key for key in left if "/.cellmap-migrate/ledger/" not in key] == []
    assert run_cli("verify", str(n5), dest).exit_code == 0


# --------------------------------------------------------------------------------------
# Workers of a superseded run
# --------------------------------------------------------------------------------------


def test_a_superseded_runs_records_do_not_count_for_the_new_run(small: Path) -> None:
    """Run 1 starts the image; run 2 (here: other settings, --overwrite) deletes it and
    starts it again; then run 1's worker records a unit. Run 2 does not count it: the
    record is under run 1's generation."""
    dest = small.with_suffix(".zarr")
    options = EngineOptions(workers=1)
    one = prepare(str(small), str(dest), PlanOptions(unit_bytes=4096), read_only_dest=False)
    plan = one.plan
    image = plan.images[0]
    fingerprint = plan.image_fingerprint(image)

    class StopError(Exception):
        pass

    class StopAtStart:
        def start(self, *args: Any) -> None:
            raise StopError

        def advance(self, *args: Any) -> None: ...
        def message(self, text: str) -> None: ...
        def close(self) -> None: ...

    with pytest.raises(StopError):  # run 1 has started the image, copied nothing yet
        run_plan(plan, one.source, one.dest, options, StopAtStart(), run_id="run-one")
    assert records.recorded_generation(one.dest, image.dest_path) == "run-one"
    old_worker = UnitWorker(plan, one.source, one.dest, options, ("run-one",))
    # run 2: other settings, --overwrite; interrupted the same way
    two = prepare(
        str(small), str(dest), PlanOptions(unit_bytes=4096, codec="zstd"), read_only_dest=False
    )
    with pytest.raises(StopError):
        run_plan(
            two.plan, two.source, two.dest, EngineOptions(workers=1, overwrite=True),
            StopAtStart(), run_id="run-two",
        )  # fmt: skip
    # run 3: the first settings again, --overwrite: a fresh start of the image
    with pytest.raises(StopError):
        run_plan(
            plan, one.source, one.dest, EngineOptions(workers=1, overwrite=True),
            StopAtStart(), run_id="run-three",
        )  # fmt: skip
    old_worker.copy(WorkUnit(0, 0, 0))  # run 1's worker, still alive, records unit 0
    level = image.levels[0].name
    assert records.done_units(one.dest, fingerprint, image.dest_path, level, "run-one") == {0}
    assert records.done_units(one.dest, fingerprint, image.dest_path, level, "run-three") == set()
    final = run_cli("convert", str(small), str(dest), "--unit-mib", str(4096 / 2**20), "--json")
    assert final.exit_code == 0, final.stderr
    document = json.loads(final.stdout[final.stdout.index("{\n") :])
    assert document["images"][0]["units_skipped"] == 0  # run 1's record did not count
    assert run_cli("verify", str(small), str(dest)).exit_code == 0


def test_a_worker_of_a_run_that_lost_the_lease_refuses_its_task(tmp_path: Path) -> None:
    dest = LocalStore(tmp_path / "out.zarr", read_only=False)
    write_lease(dest.root, run_id="the-new-run")
    distributed.check_lease(dest, "the-new-run")  # the holder's own workers go on
    distributed.check_lease(dest, None)  # a run without a lease (library use) too
    with pytest.raises(LeaseLostError, match=r"no longer holds the lease of DEST \(host "):
        distributed.check_lease(dest, "the-old-run")


# --------------------------------------------------------------------------------------
# S3-compatible servers without conditional writes
# --------------------------------------------------------------------------------------

CONDITIONS = (b"if-match", b"if-none-match")


class WithoutConditionalWrites:
    """An HTTP proxy to the test server that behaves like an S3-compatible server without
    conditional writes: ``refuse`` answers requests carrying If-Match / If-None-Match with
    501 NotImplemented; ``ignore`` drops those headers and forwards the request."""

    def __init__(self, target_port: int, mode: str) -> None:
        import http.client
        import socketserver

        proxy = self
        self.conditional_requests = 0

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                while True:
                    request = self.rfile.readline()
                    if not request.strip():
                        return
                    method, path, _ = request.decode().split(" ", 2)
                    headers: list[tuple[str, str]] = []
                    while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        name, _, value = line.decode().partition(":")
                        headers.append((name.strip(), value.strip()))
                    lengths = [int(v) for n, v in headers if n.lower() == "content-length"]
                    if any(n.lower() == "expect" for n, _ in headers):
                        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = self.rfile.read(lengths[0]) if lengths else b""
                    conditional = [n for n, _ in headers if n.lower().encode() in CONDITIONS]
                    if conditional:
                        proxy.conditional_requests += 1
                    if conditional and mode == "refuse":
                        error = (
                            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented"
                            b"</Code><Message>conditional writes are not implemented</Message>"
                            b"</Error>"
                        )
                        self.wfile.write(
                            b"HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\n"
                            + f"Content-Length: {len(error)}\r\n\r\n".encode()
                            + error
                        )
                        continue
                    kept = {
                        n: v
                        for n, v in headers
                        if n.lower().encode() not in CONDITIONS and n.lower() != "expect"
                    }
                    upstream.request(method, path, body=body, headers=kept)
                    response = upstream.getresponse()
                    data = response.read()
                    head = [f"HTTP/1.1 {response.status} {response.reason}"]
                    for name, value in response.getheaders():
                        if name.lower() not in ("content-length", "transfer-encoding"):
                            head.append(f"{name}: {value}")
                    head.append(f"Content-Length: {len(data)}")
                    self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("refuse", "the S3 server does not support conditional writes (NotImplemented)"),
        ("ignore", "the storage ignores conditional writes"),
    ],
)
def test_s3_without_conditional_writes_the_lease_is_a_best_effort(
    aws: MotoServer, mode: str, why: str
) -> None:
    client = s3_client(aws.url)
    bucket = new_bucket(client)
    proxy = WithoutConditionalWrites(aws.port, mode)
    try:
        url = f"s3://{bucket}/d.zarr"
        store = open_store(url, read_only=False, s3=S3Options(endpoint_url=proxy.url))
        notes: list[str] = []
        held = lease.acquire(store, notice=notes.append)
        assert proxy.conditional_requests > 0  # it was tried, and the server did not do it
        assert notes == [
            f"note: {url}/.cellmap-migrate/lease.json: {why}; the lease is a best effort "
            "(written, read back, compared)"
        ]
        stored = client.get_object(Bucket=bucket, Key="d.zarr/.cellmap-migrate/lease.json")
        assert json.loads(stored["Body"].read())["run_id"] == held.run_id
        other = open_store(url, read_only=False, s3=S3Options(endpoint_url=proxy.url))
        with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
            lease.acquire(other, notice=notes.append)
        held.renew()
        held.check()
        held.release()
        assert list(keys(client, bucket)) == []
        # a stale lease of another host is taken over, and the fallback is noticed there too
        stale = {
            "run_id": "e" * 32, "host": "other-host.example", "pid": 7,
            "started": "2026-12-01T08:00:00Z", "command": "cellmap-migrate convert x",
            "renewed": time.time() - 1000, "expiry_seconds": 300.0,
        }  # fmt: skip
        key = "d.zarr/.cellmap-migrate/lease.json"
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(stale).encode())
        notes.clear()
        taker = lease.acquire(store, notice=notes.append)
        assert any(note.startswith("taking over the lease") for note in notes), notes
        assert any(f"{why}; the lease is a best effort" in note for note in notes), notes
        stored = client.get_object(Bucket=bucket, Key=key)
        assert json.loads(stored["Body"].read())["run_id"] == taker.run_id
        taker.release()
        assert list(keys(client, bucket)) == []
    finally:
        proxy.stop()


@pytest.mark.slow
def test_dask_workers_of_a_run_that_lost_its_lease_stop(tmp_path: Path, small: Path) -> None:
    """Real scheduler and worker processes: the coordinator's lease at DEST is taken over by
    another run (what that run's --break-lease does); the workers check the lease before
    each task, so the run stops with one error and records nothing."""
    from migrate.copy.distributed import DaskExecutor
    from tests.test_distributed import Cluster

    dest = tmp_path / "out.zarr"
    prepared = prepare(str(small), str(dest), PlanOptions(unit_bytes=4096), read_only_dest=False)
    cluster = Cluster(tmp_path / "dask", workers=1)
    (tmp_path / "dask").mkdir()
    try:
        cluster.start()
        with lease.hold(prepared.dest, expiry=60) as held, cluster.client() as client:
            write_lease(dest, run_id="the-run-that-broke-the-lease")
            with pytest.raises(LeaseLostError, match="no longer holds the lease of DEST"):
                run_plan(
                    prepared.plan,
                    prepared.source,
                    prepared.dest,
                    EngineOptions(workers=1),
                    None,
                    DaskExecutor(client, retries=0),
                    run_id=held.run_id,
                )
    finally:
        cluster.stop()
    assert unit_records(dest) == 0
    assert json.loads((dest / LEASE).read_text())["run_id"] == "the-run-that-broke-the-lease"


# --------------------------------------------------------------------------------------
# --break-lease against a writer that is still alive (issue 19, item 3)
# --------------------------------------------------------------------------------------

SMALL_SLOW_SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(64, 96, 96),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)


def lease_run_id(dest: Path) -> str | None:
    try:
        return str(json.loads((dest / LEASE).read_text())["run_id"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_break_lease_against_a_live_writer_never_completes_with_its_chunks(
    tmp_path: Path,
) -> None:
    """The issue's corruption: a live writer (default gzip) is frozen after its first
    recorded unit, ``--break-lease --overwrite --codec zstd`` takes DEST over, the writer
    is resumed. Before, the old writer went on writing gzip chunks until its next renewal
    (30 s) while the breaker wrote zstd ones and called DEST complete: ``verify`` failed
    with ``ZSTD_decompressStream() failed``. Now DEST ends complete and verifiable, or
    not complete; repeated, since where the writer is frozen varies."""
    n5 = tmp_path / "jrc_break" / "jrc_break.n5"
    write_image(n5, SMALL_SLOW_SPEC)
    outcomes = []
    for trial in range(3):
        dest = tmp_path / f"out{trial}.zarr"
        writer = popen_convert(str(n5), str(dest), *SLOW)
        breaker: subprocess.Popen[str] | None = None
        try:
            freeze_when(writer, functools.partial(recorded, dest), "the writer's first unit record")
            frozen = lease_run_id(dest)
            assert frozen is not None
            breaker = popen_convert(
                str(n5), str(dest), "--break-lease", "--overwrite", "--codec", "zstd"
            )
            while lease_run_id(dest) in (frozen, None) and breaker.poll() is None:
                time.sleep(0.01)  # the breaker has taken the lease (or ended)
            thaw(writer)
            _, broke_err = breaker.communicate(timeout=600)
            _, writer_err = writer.communicate(timeout=600)
        finally:
            for proc in (writer, breaker):
                if proc is not None and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                    proc.communicate()
        status = run_subprocess("status", str(dest))
        if status.exit_code == 0:  # said complete: then it must be right, chunk by chunk
            verified = run_subprocess("verify", str(n5), str(dest))
            assert verified.exit_code == 0, (broke_err, verified.stdout, verified.stderr)
            zarray = json.loads((dest / SPEC.path / "s0" / ".zarray").read_text())
            assert zarray["compressor"]["id"] == "zstd"
            outcomes.append("complete and verified")
        else:
            assert breaker.returncode != 0, broke_err
            outcomes.append("not complete")
        # the writer whose lease was broken stopped, and finalized nothing
        assert writer.returncode == 1, writer_err
        assert "lost the lease to another run" in writer_err
    # here the breaker waits for the writer (same host) and finishes the job every time
    assert outcomes == ["complete and verified"] * 3, outcomes


@pytest.mark.parametrize(
    ("renewed", "why"),
    [
        (float("nan"), "its renewal time or expiry is not a number"),
        ("yesterday", "its renewal time or expiry is not a number"),
        (time.time() + 10**6, "s in the future by this host's clock"),
    ],
)
def test_a_lease_with_an_impossible_renewal_time_is_stale(
    small: Path, renewed: Any, why: str
) -> None:
    """Not "expires in 0 s" forever (a NaN), nor "unreadable" (a string), nor held for
    eleven days (a renewal in the future): taken over, saying why."""
    dest = small.with_suffix(".zarr")
    write_lease(dest, renewed=renewed)
    run = run_cli("convert", str(small))
    assert run.exit_code == 0, run.stderr
    assert f"taking over the lease of {dest} from host other-host.example, pid 4242" in run.stderr
    assert why in run.stderr
    assert run_cli("verify", str(small), str(dest)).exit_code == 0


def test_a_held_lock_file_is_reported_not_waited_on(small: Path) -> None:
    """A process holding ``lease.json.lock`` (frozen in the middle of a conditional write)
    made every later run wait silently, forever. Now the run stops with one line naming
    the lock file and its holder."""
    import fcntl

    dest = small.with_suffix(".zarr")
    lock = dest / ".cellmap-migrate" / "lease.json.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = run_subprocess("convert", str(small), timeout=120)
    assert run.exit_code == 1, run.stderr
    (line,) = error_lines(run.stderr)
    assert f"{lock}: held by pid {os.getpid()} for more than" in line
    assert not (dest / "em").exists()


def test_records_of_a_broken_lease_on_another_host_do_not_count(small: Path) -> None:
    """``--break-lease`` of a live lease held on another host: that run cannot be watched
    and may still write, so the units it recorded are not counted; the images start
    again."""
    dest = small.with_suffix(".zarr")
    first = prepare(str(small), str(dest), PlanOptions(unit_bytes=4096), read_only_dest=False)

    class StopError(Exception):
        pass

    class StopAfterOne:
        def start(self, *args: Any) -> None: ...
        def advance(self, *args: Any) -> None:
            raise StopError

        def message(self, text: str) -> None: ...
        def close(self) -> None: ...

    with pytest.raises(StopError):  # one unit recorded, then the run is gone
        run_plan(
            first.plan, first.source, first.dest, EngineOptions(workers=1), StopAfterOne(),
            run_id="the-other-hosts-run",
        )  # fmt: skip
    assert unit_records(dest) >= 1
    write_lease(dest, run_id="the-other-hosts-run")  # live, on another host
    run = run_cli(
        "convert", str(small), str(dest), "--unit-mib", str(4096 / 2**20), "--break-lease",
        "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "the records of the run whose lease was broken (host other-host.example" in run.stderr
    document = json.loads(run.stdout[run.stdout.index("{\n") :])
    assert document["images"][0]["units_skipped"] == 0
    assert run_cli("verify", str(small), str(dest)).exit_code == 0
