"""Beyond one machine: a plan's work units as tasks on a Dask distributed cluster.

:class:`DaskExecutor` is a :class:`migrate.copy.engine.UnitExecutor`: ``run_plan`` prepares DEST
and finalizes the metadata on the calling machine exactly as with the embedded engine; only
the copying of work units moves to the cluster's workers.

- **Tasks are batches** of units of one level (about ``batch_bytes`` of voxels, at most
  ``batch_units`` units, fewer when the job is small so that every worker thread gets work).
- **Waves**: at most ``tasks_per_thread`` × (the cluster's worker threads) tasks are in
  flight; the next is submitted as one completes, so a 10 TB image never puts hundreds of
  thousands of tasks on the scheduler at once.
- **Order spreads writes over key prefixes**: batches of one level are visited with a golden-
  ratio stride through its unit grid, and the levels of all images are interleaved.
- **The plan is shipped once**: a worker plugin carries the plan (JSON), the store locations
  (URLs and non-secret options, never credentials) and the engine options to every worker,
  including workers that join or restart later; each task carries only
  ``(run id, image index, level index, unit indices, their source signatures)``. Workers
  open their own TensorStore handles and record every finished unit at DEST
  (``migrate.dest.records.record_unit``) exactly as the embedded engine does, so an
  interrupted run resumes anywhere, locally or on a cluster.
- **Under the coordinator's lease** (``migrate.dest.lease``): workers take no lease; each
  task first checks that the lease at DEST is still its run's, so the workers of a run that
  lost its lease stop (and their records go under that run's generation, which a newer run
  does not count).
- **Failures**: a unit whose source blocks are corrupt is reported per unit, like the
  embedded engine; a task that raises is retried ``retries`` times, and a task whose worker
  dies is rescheduled by Dask (up to ``distributed.scheduler.allowed-failures`` times).
  When a task still fails, a ``MigrationError`` (storage that cannot be reached) stops the
  run as it does the embedded engine; anything else (e.g. ``KilledWorker``) fails the
  task's units and the other tasks go on. Losing the scheduler stops the run with
  :class:`~migrate.errors.ClusterError`. In every case DEST is resumable.

This module imports ``distributed``: import it only when a cluster is asked for (``import
migrate`` never imports Dask).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distributed import Client, Future, WorkerPlugin, as_completed

from migrate.copy.engine import Job, LevelWork, Report, UnitOutcome, UnitWorker, WorkUnit
from migrate.copy.options import EngineOptions
from migrate.dest.lease import LeaseLostError, read_holder
from migrate.errors import ClusterError, MigrationError
from migrate.storage import S3Options, Store, open_store
from schemas.plan import Plan

ClusterKind = Literal["local", "lsf", "slurm"]

DEFAULT_RETRIES = 3
DEFAULT_BATCH_BYTES = 128 * 2**20
DEFAULT_BATCH_UNITS = 64
DEFAULT_TASKS_PER_THREAD = 4
MIN_WINDOWS = 4
"""A small job is cut into at least this many windows of tasks, so the last tasks are short."""
JOBQUEUE_HINT = "pip install 'cellmap-migrate[jobqueue]'"


# --------------------------------------------------------------------------------------
# Which cluster: options, connecting, starting and stopping
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterOptions:
    """Where the work units run: an existing scheduler, or a cluster started for the run.

    ``workers`` is the number of worker processes of a ``local`` cluster, each copying one
    unit at a time (like ``--workers`` threads of the embedded engine; default: one per
    core). ``jobs``, ``cores``, ``memory``,
    ``walltime`` and ``queue`` describe the batch jobs of an ``lsf``/``slurm`` cluster (each
    runs Dask workers); unset values come from dask-jobqueue's configuration.
    """

    scheduler: str | None = None
    cluster: ClusterKind | None = None
    workers: int | None = None
    jobs: int | None = None
    cores: int | None = None
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    retries: int = DEFAULT_RETRIES

    def check(self) -> None:
        """Refuse combinations that do not make sense, naming the options."""
        if self.scheduler and self.cluster:
            raise MigrationError("--scheduler and --cluster exclude each other: choose one")
        batch = {
            "--cluster-jobs": self.jobs,
            "--cluster-cores": self.cores,
            "--cluster-memory": self.memory,
            "--cluster-walltime": self.walltime,
            "--cluster-queue": self.queue,
        }
        given = [name for name, value in batch.items() if value is not None]
        if given and self.cluster not in ("lsf", "slurm"):
            raise MigrationError(f"{', '.join(given)} only apply with --cluster lsf|slurm")
        if not (self.scheduler or self.cluster):
            raise MigrationError("the cluster options need --scheduler ADDRESS or --cluster KIND")
        if self.workers is not None and self.cluster != "local":
            where = "--scheduler" if self.scheduler else f"--cluster {self.cluster}"
            hint = "" if self.scheduler else " (use --cluster-jobs)"
            raise MigrationError(f"--workers does not apply with {where}{hint}")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobqueue_cluster(options: ClusterOptions, **extra: Any) -> Any:
    """An (unscaled) dask-jobqueue LSF or SLURM cluster with the options given (the others
    come from dask-jobqueue's configuration); ``extra`` goes to its constructor as is."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"--cluster {options.cluster} needs dask-jobqueue, which is not installed: "
            + JOBQUEUE_HINT
        ) from None
    import dask

    kind = dask_jobqueue.LSFCluster if options.cluster == "lsf" else dask_jobqueue.SLURMCluster
    for name, value in (("cores", options.cores), ("memory", options.memory)):
        configured = dask.config.get(f"jobqueue.{options.cluster}.{name}", default=None)
        if value is None and configured is None:
            raise ClusterError(
                f"--cluster {options.cluster} needs --cluster-{name} (or "
                f"jobqueue.{options.cluster}.{name} in the Dask configuration)"
            )
    given = {
        "cores": options.cores,
        "memory": options.memory,
        "walltime": options.walltime,
        "queue": options.queue,
    }
    try:
        return kind(**{key: value for key, value in given.items() if value is not None}, **extra)
    except ValueError as exc:  # dask-jobqueue: "You must specify how much memory ..."
        raise ClusterError(f"--cluster {options.cluster}: {exc}") from exc


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """A client of the cluster ``options`` name: connected to ``--scheduler`` (an address,
    or a scheduler JSON file), or to a cluster started here and stopped on exit."""
    options.check()
    if options.scheduler:
        target = options.scheduler
        try:
            if Path(target).is_file():
                client = Client(scheduler_file=target, set_as_default=False)
            else:
                client = Client(target, set_as_default=False)
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {target}: {exc}") from exc
        with client:
            yield client
        return
    if options.cluster == "local":
        from distributed import LocalCluster

        processes = options.workers or _cores()
        with (
            LocalCluster(
                n_workers=processes,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            yield client
        return
    with jobqueue_cluster(options) as cluster, Client(cluster, set_as_default=False) as client:
        cluster.scale(jobs=options.jobs or 1)
        yield client


def describe(client: Client) -> str:
    """One line: the scheduler, its workers and threads, and the dashboard when it has one."""
    nthreads = client.nthreads()
    text = (
        f"dask: scheduler {client.scheduler.address}, {len(nthreads)} worker(s), "
        f"{sum(nthreads.values())} thread(s)"
    )
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):  # the scheduler runs without a dashboard
        link = None
    return text + (f"; dashboard {link}" if link else "")


# --------------------------------------------------------------------------------------
# Worker side: the plan, shipped once per worker by a plugin; tasks are batches of units
# --------------------------------------------------------------------------------------

_shipped: dict[str, tuple[str, int]] = {}
"""run id → (payload JSON, the worker's thread count), installed by :class:`PlanPlugin`."""
_loaded: dict[str, UnitWorker] = {}
_leases: dict[str, str | None] = {}
"""run id → the id of the lease its coordinator holds at DEST (None: it holds none)."""
_lock = threading.Lock()


def store_config(store: Store) -> dict[str, Any]:
    """What a worker needs to re-open ``store``: its URL, read-only flag and, for S3, the
    user's S3 options (endpoint, region, anonymous access). Never credentials: workers find
    their own the way this machine does (environment, profile, instance role)."""
    config: dict[str, Any] = {"url": store.url, "read_only": store.read_only}
    options = getattr(store, "options", None)
    if isinstance(options, S3Options):
        config["s3"] = dataclasses.asdict(options)
    return config


def reopen_store(config: dict[str, Any]) -> Store:
    """The store :func:`store_config` describes, opened in this process."""
    s3 = S3Options(**config["s3"]) if "s3" in config else None
    return open_store(config["url"], read_only=bool(config["read_only"]), s3=s3)


def payload(job: Job) -> str:
    """Everything a worker needs for a run, as one JSON document."""
    return json.dumps(
        {
            "plan": job.plan.to_json_dict(),
            "fingerprint": job.plan.fingerprint,
            "source": store_config(job.source),
            "dest": store_config(job.dest),
            "options": dataclasses.asdict(job.options),
            "generations": list(job.generations),
            "lease": job.run_id,
        }
    )


class PlanPlugin(WorkerPlugin):  # type: ignore[misc]
    """Installs one run's payload on every worker (the scheduler also gives it to workers
    that join or restart during the run); removed when the run ends."""

    def __init__(self, run_id: str, text: str) -> None:
        self.name = run_id
        self.text = text

    def setup(self, worker: Any) -> None:
        with _lock:
            _shipped[self.name] = (self.text, int(worker.state.nthreads))

    def teardown(self, worker: Any) -> None:
        with _lock:
            _shipped.pop(self.name, None)
            _loaded.pop(self.name, None)
            _leases.pop(self.name, None)


def _unit_worker(run_id: str) -> UnitWorker:
    """This worker process's :class:`UnitWorker` for a run (built on first use)."""
    with _lock:
        worker = _loaded.get(run_id)
        if worker is not None:
            return worker
        if run_id not in _shipped:
            raise RuntimeError(f"{run_id}: the plan of this run is not installed on this worker")
        text, nthreads = _shipped[run_id]
        data = json.loads(text)
        plan = Plan.model_validate(data["plan"])
        if plan.fingerprint != data["fingerprint"]:
            raise RuntimeError(f"{run_id}: the shipped plan does not match its fingerprint")
        options = EngineOptions(**{**data["options"], "workers": nthreads})
        worker = UnitWorker(
            plan,
            reopen_store(data["source"]),
            reopen_store(data["dest"]),
            options,
            tuple(data.get("generations") or ()),
            run_id=data.get("lease"),
        )
        _leases[run_id] = data.get("lease")
        _loaded[run_id] = worker
        return worker


def check_lease(dest: Store, lease_id: str | None) -> None:
    """Refuse to work for a run that no longer holds the lease of DEST (one read per task):
    a worker of a superseded run stops instead of writing into the new run's output."""
    if lease_id is None:
        return
    found = read_holder(dest)
    holder = found[0] if found is not None else None
    if holder is None or holder.run_id != lease_id:
        who = f" ({holder.describe()})" if holder is not None else ""
        raise LeaseLostError(
            f"{dest.display()}: this run no longer holds the lease of DEST{who}; its workers "
            "stopped"
        )


def copy_batch(
    run_id: str,
    image: int,
    level: int,
    units: tuple[int, ...],
    signatures: tuple[str, ...] = (),
) -> list[tuple[int, int, str | None]]:
    """The Dask task: copy and record each unit (with the signature of its source blocks,
    listed by the client before the run); returns ``(unit, bytes, failure)`` per unit (a
    corrupt source block fails its unit, not the task)."""
    worker = _unit_worker(run_id)
    check_lease(worker.dest, _leases.get(run_id))
    outcomes = []
    for position, unit in enumerate(units):
        signature = signatures[position] if position < len(signatures) else ""
        outcome = worker.run(WorkUnit(image, level, unit, signature))
        outcomes.append((unit, outcome.nbytes, outcome.failure))
    return outcomes


# --------------------------------------------------------------------------------------
# Client side: batching, ordering, waves
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    image: int
    level: int
    units: tuple[int, ...]
    signatures: tuple[str, ...] = ()


def golden_order(count: int) -> list[int]:
    """A permutation of ``range(count)`` whose consecutive entries are far apart: a stride of
    about ``0.618 × count``, coprime with ``count``."""
    if count <= 2:
        return list(range(count))
    step = max(1, round(count * 0.6180339887))
    while math.gcd(step, count) != 1:
        step += 1
    return [(k * step) % count for k in range(count)]


def make_batches(
    plan: Plan,
    work: Sequence[LevelWork],
    *,
    threads: int,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    batch_units: int = DEFAULT_BATCH_UNITS,
    tasks_per_thread: int = DEFAULT_TASKS_PER_THREAD,
) -> list[Batch]:
    """Cut the remaining units into tasks and order them.

    A batch holds consecutive (C-order) units of one level: about ``batch_bytes`` of voxels,
    at most ``batch_units`` units, and small enough that a small job still makes
    ``MIN_WINDOWS × tasks_per_thread × threads`` tasks (no worker is left alone with a long
    last task). Each level's batches are visited in
    :func:`golden_order`, and the levels are interleaved round-robin, so that tasks running
    at the same time write under different key prefixes.
    """
    total = sum(len(w.units) for w in work)
    spread = max(1, math.ceil(total / max(1, MIN_WINDOWS * tasks_per_thread * threads)))
    streams: list[list[Batch]] = []
    for w in work:
        if not w.units:
            continue
        level = plan.images[w.image].levels[w.level]
        unit_nbytes = max(1, level.nbytes // max(1, level.unit_count))
        size = max(1, min(batch_bytes // unit_nbytes, batch_units, spread))
        starts = range(0, len(w.units), size)
        chunks = []
        for i in starts:
            units = tuple(w.units[i : i + size])
            chunks.append(Batch(w.image, w.level, units, tuple(w.signature(u) for u in units)))
        streams.append([chunks[i] for i in golden_order(len(chunks))])
    return [
        batch for round_ in itertools.zip_longest(*streams) for batch in round_ if batch is not None
    ]


class DaskExecutor:
    """Runs a job's work units as batches on a Dask cluster (see the module docstring)."""

    refresh_seconds = 2.0
    """How often the window follows the cluster's size (workers joining or leaving)."""

    def __init__(
        self,
        client: Client,
        *,
        retries: int = DEFAULT_RETRIES,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batch_units: int = DEFAULT_BATCH_UNITS,
        tasks_per_thread: int = DEFAULT_TASKS_PER_THREAD,
    ) -> None:
        self.client = client
        self.retries = retries
        self.batch_bytes = batch_bytes
        self.batch_units = batch_units
        self.tasks_per_thread = tasks_per_thread
        self._threads = 0
        self._threads_checked = 0.0

    def _connected(self) -> bool:
        return bool(self.client.status == "running")

    def _lost(self) -> ClusterError:
        return ClusterError(
            f"lost the Dask scheduler at {self.client.scheduler.address}; every finished "
            "work unit is recorded at DEST: run the same command again, on a cluster or "
            "locally, to finish"
        )

    def _window(self) -> int:
        """Tasks allowed in flight; follows the cluster's size (checked every few seconds,
        while the scheduler is there: a lost one shows as cancelled tasks)."""
        now = time.monotonic()
        if now - self._threads_checked >= self.refresh_seconds and self._connected():
            with contextlib.suppress(OSError, TimeoutError):
                self._threads = sum(self.client.nthreads().values())
            self._threads_checked = now
        return self.tasks_per_thread * max(1, self._threads)

    def _best_effort(self, action: Callable[[], Any]) -> None:
        """Clean up on the scheduler (cancel, unregister) unless it is gone."""
        if self._connected():
            with contextlib.suppress(OSError, TimeoutError):
                action()

    def __call__(self, job: Job, report: Report) -> None:
        window = self._window()
        batches = make_batches(
            job.plan,
            job.work,
            threads=max(1, self._threads),
            batch_bytes=self.batch_bytes,
            batch_units=self.batch_units,
            tasks_per_thread=self.tasks_per_thread,
        )
        units = sum(len(b.units) for b in batches)
        job.progress.message(
            f"{describe(self.client)}; {units} unit(s) in {len(batches)} task(s), "
            f"at most {window} in flight"
        )
        if not batches:
            return
        run_id = f"cellmap-migrate-{job.plan.fingerprint}-{uuid.uuid4().hex[:8]}"
        self.client.register_plugin(PlanPlugin(run_id, payload(job)), name=run_id)
        try:
            self._run(job, report, run_id, batches)
        finally:
            self._best_effort(lambda: self.client.unregister_worker_plugin(run_id))

    def _run(self, job: Job, report: Report, run_id: str, batches: list[Batch]) -> None:
        """Submit in waves, report outcomes as tasks complete."""
        queue = iter(enumerate(batches))
        in_flight: dict[Future, Batch] = {}
        completed = as_completed(loop=self.client.loop)

        def top_up() -> None:
            window = self._window()
            for number, batch in itertools.islice(queue, max(0, window - len(in_flight))):
                future = self.client.submit(
                    copy_batch,
                    run_id,
                    batch.image,
                    batch.level,
                    batch.units,
                    batch.signatures,
                    key=f"cellmap-copy-{run_id[-8:]}-{number}",
                    retries=self.retries,
                    pure=False,
                )
                in_flight[future] = batch
                completed.add(future)

        try:
            top_up()
            for future in completed:
                batch = in_flight.pop(future)
                if future.status == "cancelled":  # not by us: the client lost the scheduler
                    raise self._lost()
                if future.status == "finished":
                    for unit, nbytes, failure in future.result():
                        report(
                            UnitOutcome(WorkUnit(batch.image, batch.level, unit), nbytes, failure)
                        )
                else:
                    error = future.exception()
                    if isinstance(error, MigrationError):
                        raise error  # e.g. storage unreachable: stop, as the local engine does
                    self._report_task_error(job, report, batch, error)
                top_up()
        except ClusterError:
            raise
        except (OSError, TimeoutError) as exc:  # CommClosedError is an OSError
            if not self._connected():
                raise self._lost() from exc
            self._best_effort(lambda: self.client.cancel(list(in_flight)))
            raise
        except BaseException:
            self._best_effort(lambda: self.client.cancel(list(in_flight)))
            raise

    def _report_task_error(
        self, job: Job, report: Report, batch: Batch, error: BaseException | None
    ) -> None:
        image = job.plan.images[batch.image]
        level = image.levels[batch.level]
        text = str(error).splitlines()[0] if str(error) else ""
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        for unit in batch.units:
            report(
                UnitOutcome(
                    WorkUnit(batch.image, batch.level, unit),
                    failure=f"{image.dest_path}/{level.name} unit {unit}: "
                    f"the Dask task failed: {reason}",
                )
            )
