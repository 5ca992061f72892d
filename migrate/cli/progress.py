"""Progress reporting: bars on a terminal, periodic plain or JSON lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from migrate.copy.events import Progress


class LineProgress:
    """Plain-text (or JSON) progress lines, at most one per ``interval`` seconds per image."""

    def __init__(
        self, stream: TextIO | None = None, *, as_json: bool = False, interval: float = 5.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self.interval = interval
        self.state: dict[str, dict[str, float]] = {}

    def _emit(self, event: str, name: str, **fields: Any) -> None:
        if self.as_json:
            self.stream.write(json.dumps({"event": event, "image": name, **fields}) + "\n")
        else:
            detail = ", ".join(f"{k} {v}" for k, v in fields.items())
            self.stream.write(f"{event}: {name}: {detail}\n")
        self.stream.flush()

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        now = time.monotonic()
        self.state[name] = {
            "total": total_units, "done": done_units, "bytes": 0, "t0": now, "last": now,
        }  # fmt: skip
        self._emit(
            "start", name, units=f"{done_units}/{total_units}", total_mb=round(total_bytes / 1e6, 1)
        )

    def advance(self, name: str, units: int, nbytes: int) -> None:
        s = self.state[name]
        s["done"] += units
        s["bytes"] += nbytes
        now = time.monotonic()
        finished = s["done"] >= s["total"]
        if finished or now - s["last"] >= self.interval:
            s["last"] = now
            elapsed = max(now - s["t0"], 1e-9)
            rate = s["bytes"] / elapsed
            self._emit(
                "done" if finished else "progress",
                name,
                units=f"{int(s['done'])}/{int(s['total'])}",
                mb_per_s=round(rate / 1e6, 1),
            )

    def message(self, text: str) -> None:
        if self.as_json:
            self.stream.write(json.dumps({"event": "message", "text": text}) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class BarProgress:
    """Rich progress bars, one per image: bytes copied, MB/s and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[units]}"),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self.units: dict[str, list[int]] = {}
        self.bars.start()

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self.units[name] = [done_units, total_units]
        self.tasks[name] = self.bars.add_task(
            name,
            total=max(total_bytes, 1),
            completed=done_bytes,
            units=f"{done_units}/{total_units} units",
        )

    def advance(self, name: str, units: int, nbytes: int) -> None:
        counts = self.units[name]
        counts[0] += units
        self.bars.update(self.tasks[name], advance=nbytes, units=f"{counts[0]}/{counts[1]} units")

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        self.bars.stop()


def make_progress(*, as_json: bool, stream: TextIO | None = None) -> Progress:
    """Bars on an interactive terminal; lines (plain or JSON) everywhere else."""
    stream = stream if stream is not None else sys.stderr
    if not as_json and stream.isatty():
        return BarProgress()
    return LineProgress(stream, as_json=as_json)
