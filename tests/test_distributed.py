"""The same migration on a Dask distributed cluster: real ``dask scheduler`` and ``dask
worker`` processes on 127.0.0.1, started and stopped here; worker and cluster deaths; a
destination finished half on the cluster and half by the embedded engine."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Client

from migrate.api import prepare
from migrate.check.status import status
from migrate.check.verify import verify
from migrate.copy.distributed import (
    ClusterOptions,
    DaskExecutor,
    golden_order,
    jobqueue_cluster,
    make_batches,
)
from migrate.copy.engine import LevelWork, RunResult, run_plan
from migrate.copy.options import EngineOptions
from migrate.errors import ClusterError, MigrationError, StoreError
from migrate.example.fixture import ImageSpec, example_images, write_dataset
from migrate.storage import LocalStore, S3Options
from migrate.target.plan import PlanOptions
from schemas.plan import Plan
from tests.helpers import read_zarr, run_cli
from tests.n5_reader import read_n5_array
from tests.s3server import (
    CLEARED_AWS_VARIABLES,
    REGION,
    SECRETS,
    MotoServer,
    download_prefix,
    fake_aws_environment,
    s3_client,
)

REPO = Path(__file__).resolve().parents[1]
UNIT_BYTES = 64 * 2**10  # one 32³ uint16 block per work unit: many small tasks
BIG = ImageSpec(
    path="em/tem-uint16",
    shape=(64, 128, 128),
    dtype="uint16",
    block_size=(32, 32, 32),
    levels=2,
    content="gradient",
    seed=7,
)


# --------------------------------------------------------------------------------------
# Real scheduler and worker processes
# --------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A ``dask scheduler`` and a ``dask worker`` (with nannies) running as subprocesses."""

    directory: Path
    workers: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    address: str = ""

    @property
    def scheduler_file(self) -> Path:
        return self.directory / "scheduler.json"

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,  # its own process group: nanny and worker die together
            )
        )
        log.close()

    def start(self) -> Cluster:
        self._spawn(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(self.scheduler_file),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but let it land
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        self._spawn(
            "worker",
            "distributed.cli.dask_worker",
            "--scheduler-file", str(self.scheduler_file),
            "--host", "127.0.0.1", "--nworkers", str(self.workers), "--nthreads", "1",
            "--no-dashboard", "--local-directory", str(self.directory / "work"),
        )  # fmt: skip
        with self.client() as client:
            client.wait_for_workers(self.workers, timeout=60)
        return self

    def client(self) -> Client:
        return Client(self.address, set_as_default=False, timeout=30)

    def kill(self) -> None:
        """SIGKILL every process of the cluster at once (a whole-cluster loss)."""
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes:
            proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One scheduler and two single-threaded worker processes, shared by this module."""
    running = Cluster(tmp_path_factory.mktemp("dask"), workers=2)
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny example dataset plus one image of 36 single-block work units."""
    return write_dataset(
        tmp_path_factory.mktemp("src"), "jrc_dask-1", [*example_images("tiny"), BIG]
    )


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


class Hook:
    """A Progress that records what it is told and calls ``action`` once, after ``after``
    units were reported copied."""

    def __init__(self, after: int = -1, action: Callable[[], None] | None = None) -> None:
        self.after = after
        self.action = action
        self.started: dict[str, tuple[int, int]] = {}
        self.advanced: dict[str, int] = {}
        self.messages: list[str] = []

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self.started[name] = (done_units, total_units)

    def advance(self, name: str, units: int, nbytes: int) -> None:
        self.advanced[name] = self.advanced.get(name, 0) + units
        if sum(self.advanced.values()) == self.after and self.action is not None:
            self.action()

    def message(self, text: str) -> None:
        self.messages.append(text)

    def close(self) -> None:
        pass


def slow_down(seconds: float) -> None:
    """Run on a worker (``client.run``): every unit copy there takes ``seconds`` longer, so
    that a worker can be killed while it is surely running a task; 0 restores."""
    from migrate.copy import engine

    original = engine.__dict__.setdefault("_test_original_copy", engine.UnitWorker.copy)

    def copy(self: engine.UnitWorker, task: engine.WorkUnit) -> int:
        time.sleep(seconds)
        return int(original(self, task))

    engine.UnitWorker.copy = copy if seconds else original  # type: ignore[method-assign]


def sabotage(kind: str) -> None:
    """Run on a worker (``client.run``): ``"store"`` makes every unit copy there fail as if
    DEST were unreachable; ``"task"`` makes every task fail before it copies anything;
    ``""`` restores."""
    from migrate.copy import distributed, engine

    saved = distributed.__dict__.setdefault(
        "_test_saved", (engine.UnitWorker.copy, distributed._unit_worker)
    )

    def unreachable(self: engine.UnitWorker, task: engine.WorkUnit) -> int:
        raise StoreError(f"{self.dest.url}: cannot write: connection refused")

    def no_plan(run_id: str) -> engine.UnitWorker:
        raise RuntimeError("sabotaged")

    engine.UnitWorker.copy = unreachable if kind == "store" else saved[0]  # type: ignore[method-assign]
    distributed._unit_worker = no_plan if kind == "task" else saved[1]


class Recording:
    """A Dask client that records what is submitted to it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.submitted: list[tuple[Any, ...]] = []
        self.plugins = 0
        self.shipped = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def submit(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        self.submitted.append(args)
        return self.client.submit(function, *args, **kwargs)

    def register_plugin(self, plugin: Any, name: str) -> Any:
        self.plugins += 1
        self.shipped = pickle.dumps(plugin)
        return self.client.register_plugin(plugin, name=name)


def migrate(
    source: Path,
    dest: Path | str,
    executor: DaskExecutor | None,
    progress: Hook,
    s3: S3Options | None = None,
    **only: str,
) -> tuple[Plan, RunResult]:
    """Plan and run the migration of ``source`` (one image when ``only["image"]``)."""
    src = str(source / only["image"]) if "image" in only else str(source)
    options = PlanOptions(unit_bytes=UNIT_BYTES)
    prepared = prepare(src, str(dest), options, read_only_dest=False, s3=s3)
    result = run_plan(
        prepared.plan,
        prepared.source,
        prepared.dest,
        EngineOptions(workers=2),
        progress,
        executor,
    )
    return prepared.plan, result


def unit_records(dest: Path) -> set[str]:
    """The per-unit resume records at DEST, as ``image/…/level/unit`` paths."""
    base = dest / ".cellmap-migrate" / "images"
    return {
        path.relative_to(base).as_posix()
        for path in base.rglob("*")
        if path.is_file() and path.name.isdigit()
    }


def assert_equal_to_source(source: Path, dest: Path, plan: Plan) -> None:
    """cellmap-migrate verify, and an independent read of every level (zarr-python vs. our
    own N5 reader)."""
    result = verify(
        LocalStore(source, read_only=True),
        LocalStore(dest, read_only=True),
        inner=plan.source_inner,  # the part of the source that was migrated
    )
    assert not result.problems, result.problems
    assert result.images == len(plan.images)
    for image in plan.images:
        for level in image.levels:
            expected = read_n5_array(source / level.source_path)
            actual = read_zarr(dest / level.dest_path)
            assert actual.dtype == expected.dtype, level.dest_path
            np.testing.assert_array_equal(actual, expected, err_msg=level.dest_path)


# --------------------------------------------------------------------------------------
# End to end on a real cluster
# --------------------------------------------------------------------------------------


def test_convert_with_scheduler_address_verifies_equal(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    run = run_cli(
        "convert", str(source), str(dest), "--scheduler", cluster.address, "--unit-mib", "0.0625"
    )
    assert run.exit_code == 0, run.stderr
    assert f"dask: scheduler {cluster.address}, 2 worker(s), 2 thread(s)" in run.stderr
    check = run_cli("verify", str(source), str(dest))
    assert check.exit_code == 0, check.stdout + check.stderr
    plan, _ = migrate(source, dest, None, Hook())  # a finished job: plans, copies nothing
    assert not unit_records(dest)
    assert_equal_to_source(source, dest, plan)


def test_scheduler_given_as_a_scheduler_file(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    image = source / "em/fibsem-uint8"
    run = run_cli("convert", str(image), str(dest), "--scheduler", str(cluster.scheduler_file))
    assert run.exit_code == 0, run.stderr
    assert f"dask: scheduler {cluster.address}" in run.stderr
    assert run_cli("verify", str(image), str(dest)).exit_code == 0  # the part migrated


@pytest.mark.slow
def test_worker_sigkilled_mid_run_the_run_still_completes(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    killed: list[tuple[int, int]] = []
    with cluster.client() as client:
        pids: dict[str, int] = client.run(os.getpid)

        def kill_a_busy_worker() -> None:
            """SIGKILL a worker process that is running a batch right now."""
            busy = {address: len(keys) for address, keys in client.processing().items()}
            victim = max(pids, key=lambda address: busy.get(address, 0))
            os.kill(pids[victim], signal.SIGKILL)
            killed.append((pids[victim], busy.get(victim, 0)))

        progress = Hook(after=4, action=kill_a_busy_worker)
        executor = DaskExecutor(client, batch_units=3, tasks_per_thread=2)
        client.run(slow_down, 0.05)
        try:
            plan, result = migrate(source, dest, executor, progress, image=BIG.path)
        finally:
            client.run(slow_down, 0)
        assert killed, "the run finished before a worker was killed"
        ((pid, tasks),) = killed
        assert tasks >= 1  # it died holding work, which Dask ran elsewhere
        assert result.complete
        assert not result.failures
        # progress came from task completions: every unit, once
        assert progress.advanced == {BIG.path: 36}
        assert progress.started == {BIG.path: (0, 36)}
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
        assert pid not in client.run(os.getpid).values()
    assert_equal_to_source(source, dest, plan)


@pytest.mark.slow
def test_whole_cluster_lost_then_finished_by_the_local_engine(source: Path, tmp_path: Path) -> None:
    """A destination finished half by the cluster and half by the embedded engine."""
    dest = tmp_path / "out.zarr"
    doomed = Cluster(tmp_path / "dask", workers=1)
    (tmp_path / "dask").mkdir()
    try:
        doomed.start()
        with doomed.client() as client:

            def lose_the_cluster() -> None:
                doomed.kill()
                deadline = time.monotonic() + 30
                while client.status == "running" and time.monotonic() < deadline:
                    time.sleep(0.01)  # the client notices; then more tasks are submitted

            executor = DaskExecutor(client, batch_units=1)
            executor.refresh_seconds = 0  # and it asks the (dead) scheduler for its size
            with pytest.raises(ClusterError, match=r"lost the Dask scheduler.*run the same"):
                migrate(source, dest, executor, Hook(10, lose_the_cluster), image=BIG.path)
    finally:
        doomed.stop()
    by_cluster = unit_records(dest)
    assert 10 <= len(by_cluster) < 36
    progress = Hook()
    plan, result = migrate(source, dest, None, progress, image=BIG.path)
    assert result.complete
    (image,) = result.images
    # the cluster's records are honoured: the local engine copies only the rest
    assert image.units_skipped == len(by_cluster)
    assert image.units_copied == 36 - len(by_cluster)
    assert progress.started == {BIG.path: (len(by_cluster), 36)}
    assert_equal_to_source(source, dest, plan)


def test_local_run_interrupted_then_finished_on_the_cluster(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate(source, dest, None, Hook(after=12, action=interrupt), image=BIG.path)
    done_locally = {tuple(record.split("/")[-2:]) for record in unit_records(dest)}
    by_local = len(done_locally)
    assert 12 <= by_local < 36
    with cluster.client() as client:
        progress = Hook()
        recording = Recording(client)
        executor = DaskExecutor(recording)
        plan, result = migrate(source, dest, executor, progress, image=BIG.path)
    # the plan went out once, in the worker plugin; each task carries indices only, and the
    # signature of each unit's source blocks
    assert recording.plugins == 1
    (image_plan,) = plan.images
    submitted = [
        (image_plan.levels[level].name, str(unit))
        for _, _, level, units, _ in recording.submitted
        for unit in units
    ]
    everything = {(lv.name, str(u)) for lv in image_plan.levels for u in range(lv.unit_count)}
    assert sorted(submitted) == sorted(everything - done_locally)  # each missing unit, once
    for args in recording.submitted:
        run_id, image_index, level_index, units, signatures = args
        assert isinstance(run_id, str)
        assert isinstance(image_index, int)
        assert isinstance(level_index, int)
        assert all(isinstance(u, int) for u in units)
        assert len(signatures) == len(units)
        assert len(pickle.dumps(args)) < 300 + 30 * len(units)
    assert result.complete
    (image,) = result.images
    assert (image.units_skipped, image.units_copied) == (by_local, 36 - by_local)
    assert any(f"{36 - by_local} unit(s) in" in m for m in progress.messages), progress.messages
    assert_equal_to_source(source, dest, plan)


def test_corrupt_block_is_reported_per_unit_like_the_local_engine(
    cluster: Cluster, tmp_path: Path
) -> None:
    n5 = write_dataset(tmp_path / "src", "jrc_bad-1", [BIG])
    block = n5 / BIG.path / "s0" / "1" / "2" / "1"  # F order: x=1, y=2, z=1
    raw = bytearray(block.read_bytes())
    raw[-8:] = b"\xff" * 8  # the gzip stream's checksum and length
    block.write_bytes(bytes(raw))
    outcomes = {}
    for name, make in (("local", lambda _c: None), ("dask", DaskExecutor)):
        with cluster.client() as client:
            _, result = migrate(n5, tmp_path / f"{name}.zarr", make(client), Hook())
        (image,) = result.images
        outcomes[name] = (image.failures, image.units_copied, image.complete)
        records = unit_records(tmp_path / f"{name}.zarr")
        assert len(records) == 35  # every other unit is recorded
    assert outcomes["dask"] == outcomes["local"]
    failures, copied, complete = outcomes["dask"]
    assert copied == 35
    assert not complete
    assert len(failures) == 1
    assert "s0/1/2/1" in failures[0], failures


def test_unreachable_storage_stops_the_run_like_the_local_engine(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    with cluster.client() as client:
        client.run(sabotage, "store")
        try:
            with pytest.raises(StoreError, match="cannot write: connection refused; run the"):
                migrate(source, tmp_path / "out.zarr", DaskExecutor(client, retries=0), Hook())
        finally:
            client.run(sabotage, "")
    assert not unit_records(tmp_path / "out.zarr")


def test_a_failing_task_fails_its_units_and_the_others_go_on(
    cluster: Cluster, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    with cluster.client() as client:
        pids: dict[str, int] = client.run(os.getpid)
        broken = min(pids)  # one of the two workers fails every task it runs
        client.run(sabotage, "task", workers=[broken])
        try:
            executor = DaskExecutor(client, retries=0, batch_units=1)
            _, result = migrate(source, dest, executor, Hook(), image=BIG.path)
        finally:
            client.run(sabotage, "", workers=[broken])
    (image,) = result.images
    assert not image.complete
    assert image.failures
    assert all("the Dask task failed: RuntimeError: sabotaged" in f for f in image.failures)
    assert image.units_copied == len(unit_records(dest)) == 36 - len(image.failures)
    assert image.units_copied > 0
    (state,) = status(LocalStore(dest, read_only=True))
    assert not state.complete  # not finalized: a rerun finishes it


@pytest.mark.slow
def test_s3_destination_workers_find_their_own_credentials(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEST on an S3 server: the workers reopen it from its URL and S3 options; no secret
    is shipped to them (they read the same environment as this machine)."""
    server = MotoServer()
    workers = Cluster(tmp_path / "dask", workers=1)
    (tmp_path / "dask").mkdir()
    (tmp_path / "home").mkdir()
    try:
        server.start()
        for name in CLEARED_AWS_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in fake_aws_environment(server.url, tmp_path / "home").items():
            monkeypatch.setenv(name, value)  # inherited by the worker processes
        s3 = s3_client(server.url)
        s3.create_bucket(Bucket="dest")
        workers.start()
        with workers.client() as client:
            recording = Recording(client)
            executor = DaskExecutor(recording)
            options = S3Options(endpoint_url=server.url, region=REGION)
            plan, result = migrate(source, "s3://dest/out.zarr", executor, Hook(), options)
        assert result.complete
        assert recording.plugins == 1
        assert server.url.encode() in recording.shipped  # the S3 options went along ...
        for secret in SECRETS:  # ... and no credential
            assert secret.encode() not in recording.shipped
        download_prefix(s3, "dest", "out.zarr", tmp_path / "out.zarr")
    finally:
        workers.stop()
        server.stop()
    assert_equal_to_source(source, tmp_path / "out.zarr", plan)


@pytest.mark.slow
def test_cluster_local_with_two_worker_processes(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    run = run_cli(
        "convert", str(source / BIG.path), str(dest), "--cluster", "local", "--workers", "2",
        "--unit-mib", "0.0625", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["complete"] is True
    messages = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    (dask_line,) = [m["text"] for m in messages if m.get("event") == "message"]
    assert ", 2 worker(s), 2 thread(s); dashboard http" in dask_line
    assert run_cli("verify", str(source / BIG.path), str(dest)).exit_code == 0


# --------------------------------------------------------------------------------------
# Options and errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1", "--cluster", "local"], "exclude each other"),
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers does not apply"),
        (["--cluster", "lsf", "--workers", "2"], "use --cluster-jobs"),
        (["--cluster-cores", "4"], "--cluster-cores only apply with --cluster lsf|slurm"),
        (["--cluster", "local", "--cluster-queue", "q"], "--cluster-queue only apply"),
    ],
)
def test_cluster_option_errors(source: Path, tmp_path: Path, args: list[str], message: str) -> None:
    run = run_cli("convert", str(source), str(tmp_path / "out.zarr"), *args)
    assert run.exit_code == 1
    assert run.stderr.startswith("error: ")
    assert message in run.stderr, run.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_unreachable_scheduler_is_one_error_line(source: Path, tmp_path: Path) -> None:
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        run = run_cli(
            "convert", str(source / BIG.path), str(tmp_path / "out.zarr"),
            "--scheduler", "tcp://127.0.0.1:1",
        )  # fmt: skip
    assert run.exit_code == 1
    assert "error: cannot reach the Dask scheduler at tcp://127.0.0.1:1" in run.stderr


def test_jobqueue_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ClusterError, match=r"needs dask-jobqueue.*cellmap-migrate\[jobqueue\]"):
        jobqueue_cluster(ClusterOptions(cluster="slurm", cores=2, memory="4GB"))


@pytest.mark.parametrize(
    ("kind", "walltime", "directives"),
    [
        ("slurm", "00:30:00", ["#SBATCH -p short", "--cpus-per-task=2", "--mem=4G", "-t 00:30:00"]),
        ("lsf", "00:30", ["#BSUB -q short", "#BSUB -n 2", "#BSUB -W 00:30"]),
    ],
)
def test_jobqueue_job_script_carries_the_resource_options(
    kind: str, walltime: str, directives: list[str]
) -> None:
    options = ClusterOptions(
        cluster=kind,  # type: ignore[arg-type]
        cores=2,
        memory="4GB",
        walltime=walltime,
        queue="short",
    )
    options.check()
    with jobqueue_cluster(
        options, scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    ) as jobs:
        script = jobs.job_script()  # nothing is submitted until the cluster is scaled
    for directive in directives:
        assert directive in script, script
    assert "distributed.cli.dask_worker" in script


def test_jobqueue_needs_memory_is_a_clear_error() -> None:
    with (
        dask.config.set({"jobqueue.slurm.memory": None}),
        pytest.raises(ClusterError, match=r"--cluster slurm needs --cluster-memory"),
    ):
        jobqueue_cluster(ClusterOptions(cluster="slurm", cores=2))


def test_importing_migrate_does_not_import_dask() -> None:
    code = (
        "import sys, migrate, migrate.cli, migrate.copy.engine, migrate.api\n"
        "assert not any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------------------
# Batching and ordering (pure)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 64, 100, 997])
def test_golden_order_is_a_spreading_permutation(count: int) -> None:
    order = golden_order(count)
    assert sorted(order) == list(range(count))
    if count >= 10:  # neighbours in submission order are far apart in the grid
        gaps = [abs(a - b) for a, b in itertools.pairwise(order)]
        assert min(gaps) > count // 5


def _plan(source: Path, tmp_path: Path, unit_bytes: int, **more: Any) -> Plan:
    options = PlanOptions(unit_bytes=unit_bytes, **more)
    return prepare(str(source), str(tmp_path / "o.zarr"), options, read_only_dest=True).plan


def test_batches_cover_every_unit_once_and_interleave_levels(source: Path, tmp_path: Path) -> None:
    plan = _plan(source, tmp_path, UNIT_BYTES)
    work = [
        LevelWork(i, j, tuple(range(level.unit_count)))
        for i, image in enumerate(plan.images)
        for j, level in enumerate(image.levels)
    ]
    total = sum(len(w.units) for w in work)
    batches = make_batches(plan, work, threads=2, batch_units=4)
    seen = sorted((b.image, b.level, u) for b in batches for u in b.units)
    assert seen == sorted((w.image, w.level, u) for w in work for u in w.units)
    assert len(seen) == total
    assert all(1 <= len(b.units) <= 4 for b in batches)
    # each batch: consecutive units of one level; the first round visits every level
    assert all(list(b.units) == list(range(b.units[0], b.units[-1] + 1)) for b in batches)
    assert {(b.image, b.level) for b in batches[: len(work)]} == {(w.image, w.level) for w in work}


def test_batch_size_follows_bytes_units_and_cluster_size(source: Path, tmp_path: Path) -> None:
    unit = 16**3 * 2  # one 16³ uint16 chunk per unit: 4 × 8 × 8 = 256 units in s0
    plan = _plan(source, tmp_path, unit, chunks=(16, 16, 16))
    index = next(i for i, image in enumerate(plan.images) if image.dest_path == BIG.path)
    assert plan.images[index].levels[0].unit_count == 256
    work = [LevelWork(index, 0, tuple(range(256)))]
    sizes = {
        (bytes_, units, threads): {len(b.units) for b in make_batches(
            plan, work, threads=threads, batch_bytes=bytes_, batch_units=units
        )}
        for bytes_, units, threads in [(4 * unit, 64, 1), (2**30, 3, 1), (2**30, 64, 4)]
    }  # fmt: skip
    assert sizes[(4 * unit, 64, 1)] == {4}  # ~batch_bytes of voxels
    assert sizes[(2**30, 3, 1)] == {3, 1}  # at most batch_units (256 = 85 × 3 + 1)
    # a small job on 4 threads: at least 4 windows of 4 tasks per thread (256 / 64)
    assert sizes[(2**30, 64, 4)] == {4}


def test_cluster_options_need_a_cluster() -> None:
    with pytest.raises(MigrationError, match="need --scheduler ADDRESS or --cluster KIND"):
        ClusterOptions(retries=0).check()
