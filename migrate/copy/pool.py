"""One pool of copy threads fed by the work units of several plans at once (bulk runs).

:class:`SharedPool` is a :class:`~migrate.copy.engine.UnitExecutor`: give the same pool to
several :func:`~migrate.copy.engine.run_plan` calls running in their own threads, and the
units of all their plans share ``workers`` threads, with at most ``window`` units in flight
across all of them (memory stays bounded however many plans feed it). Each plan's metadata
phases (prepare, finalize) run in its own calling thread, so they overlap with the copying
of the others. Every unit is copied and recorded by a :class:`~migrate.copy.engine.UnitWorker`
exactly as with :func:`~migrate.copy.engine.run_local`, so resume works the same.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading

from migrate.copy.engine import Job, Report, UnitOutcome, WorkUnit, job_units, job_worker
from migrate.errors import MigrationError


class PoolClosedError(MigrationError):
    """The shared pool was closed (Ctrl-C, or the bulk run stopped) while units waited."""


class SharedPool:
    """``workers`` copy threads shared by every job handed to it (see the module docstring)."""

    def __init__(self, workers: int, window: int | None = None) -> None:
        self.workers = max(1, workers)
        self.window = max(1, window if window is not None else 2 * self.workers)
        self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="copy")
        self._slots = threading.BoundedSemaphore(self.window)
        self._closed = threading.Event()

    def __enter__(self) -> SharedPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting units, drop the queued ones, wait for those running."""
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _take_slot(self) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self._closed.is_set():
                raise PoolClosedError("the copy pool was closed; run the same command again")
        if self._closed.is_set():
            self._slots.release()
            raise PoolClosedError("the copy pool was closed; run the same command again")

    def __call__(self, job: Job, report: Report) -> None:
        """Run ``job``'s units on the shared threads; ``report`` is called in this thread."""
        worker = job_worker(job)
        finished: queue.SimpleQueue[cf.Future[int]] = queue.SimpleQueue()
        in_flight: dict[cf.Future[int], WorkUnit] = {}

        def settle(future: cf.Future[int]) -> None:
            self._slots.release()
            finished.put(future)

        def collect(block: bool) -> None:
            while in_flight:
                try:
                    future = finished.get(block=block)
                except queue.Empty:
                    return
                task = in_flight.pop(future)
                block = False
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    report(UnitOutcome(task, future.result()))
                elif isinstance(error, Exception):
                    report(UnitOutcome(task, failure=worker.failure(task, error)))
                else:
                    raise error

        try:
            for task in job_units(job):
                self._take_slot()
                try:
                    future = self._pool.submit(worker.copy, task)
                except RuntimeError:  # shut down meanwhile
                    self._slots.release()
                    raise PoolClosedError(
                        "the copy pool was closed; run the same command again"
                    ) from None
                in_flight[future] = task
                future.add_done_callback(settle)
                collect(block=False)
            while in_flight:
                collect(block=True)
        except BaseException:
            for future in list(in_flight):
                future.cancel()
            raise
