"""Progress of a bulk run: one overall bar (bytes across datasets, datasets done, ETA) and a
bar per dataset being copied on a terminal; a line per finished dataset (plain or JSON)
everywhere else. Called from several dataset threads at once, hence the lock."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from migrate.bulk.summary import DatasetOutcome
from migrate.cli.progress import write_line
from migrate.copy.events import Progress


class _DatasetProgress:
    """The engine's :class:`Progress` for one dataset, forwarded to the bulk display."""

    def __init__(self, owner: BulkProgress, dataset: str) -> None:
        self.owner = owner
        self.dataset = dataset

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self.owner.add_bytes(self.dataset, total_bytes, done_bytes)

    def advance(self, name: str, units: int, nbytes: int) -> None:
        self.owner.advance(self.dataset, nbytes)

    def message(self, text: str) -> None:
        self.owner.message(f"{self.dataset}: {text}")

    def close(self) -> None:
        """One dataset's copy phase ended; the bulk display goes on."""


class BulkProgress:
    """Overall and per-dataset progress; bars only on an interactive terminal."""

    def __init__(
        self, datasets: int, *, as_json: bool = False, stream: TextIO | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self.datasets = datasets
        self.finished_count = 0
        self.total_bytes = 0
        self.done_bytes = 0
        self.copied_bytes = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        self.dataset_totals: dict[str, int] = {}
        if not as_json and self.stream.isatty():
            self._start_bars()

    def _start_bars(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(file=self.stream),
        )
        self.tasks[""] = self.bars.add_task(
            "all datasets", total=1, note=f"0/{self.datasets} datasets"
        )
        self.bars.start()

    def for_dataset(self, name: str) -> Progress:
        return _DatasetProgress(self, name)

    def add_bytes(self, dataset: str, total: int, done: int) -> None:
        with self.lock:
            self.total_bytes += total
            self.done_bytes += done
            if self.bars is not None:
                if dataset not in self.tasks:
                    self.tasks[dataset] = self.bars.add_task(dataset, total=0, note="")
                self.dataset_totals[dataset] = self.dataset_totals.get(dataset, 0) + total
                self.bars.update(
                    self.tasks[dataset], total=self.dataset_totals[dataset], advance=done
                )
                self.bars.update(
                    self.tasks[""], total=max(self.total_bytes, 1), completed=self.done_bytes
                )

    def advance(self, dataset: str, nbytes: int) -> None:
        with self.lock:
            self.done_bytes += nbytes
            self.copied_bytes += nbytes
            if self.bars is not None:
                self.bars.update(self.tasks[dataset], advance=nbytes)
                self.bars.update(self.tasks[""], advance=nbytes)

    def eta_seconds(self) -> float | None:
        """Time left at the rate so far, for the bytes of the datasets started so far."""
        elapsed = time.monotonic() - self.started
        if self.copied_bytes <= 0:
            return None
        return (self.total_bytes - self.done_bytes) * elapsed / self.copied_bytes

    def message(self, text: str) -> None:
        with self.lock:
            if self.bars is not None:
                self.bars.console.print(text, highlight=False, markup=False)
            elif self.as_json:
                self._line({"event": "message", "text": text})
            else:
                self._line(text)

    def finished(self, outcome: DatasetOutcome) -> None:
        with self.lock:
            self.finished_count += 1
            note = f"{self.finished_count}/{self.datasets} datasets"
            if self.bars is not None:
                task = self.tasks.pop(outcome.name, None)
                if task is not None:
                    self.bars.remove_task(task)
                self.bars.update(self.tasks[""], note=note)
                if outcome.failures:
                    self.bars.console.print(
                        f"FAILED {outcome.name}: {outcome.failures[0]}",
                        highlight=False,
                        markup=False,
                    )
                return
            eta = self.eta_seconds()
            fields = {
                "dataset": outcome.name,
                "state": outcome.state,
                "datasets_done": self.finished_count,
                "datasets": self.datasets,
                "mb_read": round(outcome.bytes_read / 1e6, 1),
                "eta_s": None if eta is None else round(eta, 1),
            }
            if self.as_json:
                self._line({"event": "dataset", **fields})
            else:
                left = "" if eta is None else f", about {eta:.0f} s left"
                reason = f": {outcome.failures[0]}" if outcome.failures else ""
                self._line(f"{outcome.state}: {outcome.name} ({note}{left}){reason}")

    def _line(self, value: Any) -> None:
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        write_line(self.stream, text)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
