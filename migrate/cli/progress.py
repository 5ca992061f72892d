"""Watching a run: bars on a terminal, timestamped lines (plain or JSON) otherwise, and a
JSON-lines log file (``--log-file``) whatever the terminal is.

The engine reports through the :class:`~migrate.copy.events.Progress` protocol; storage
retries arrive from :mod:`migrate.storage.retries`; the command adds the start of the run,
warnings, errors and the summary through :class:`Watch`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TextIO, TypeVar

from migrate.copy.events import Progress
from migrate.errors import MigrationError
from migrate.storage import iocounts, retries

F = TypeVar("F", bound=Callable[..., Any])


MIN_RATE_SECONDS = 1.0
MIN_RATE_BYTES = 1_000_000
"""A rate (MB/s of voxels) is shown only when it was measured over at least this long and
this many bytes: a few small units finishing within milliseconds give numbers like
26577.7 MB/s that say nothing about the storage or the machine."""


def meaningful_rate(nbytes: float, seconds: float) -> float | None:
    """``nbytes / seconds`` when measured over at least :data:`MIN_RATE_SECONDS` and
    :data:`MIN_RATE_BYTES`, else None (not shown)."""
    if seconds < MIN_RATE_SECONDS or nbytes < MIN_RATE_BYTES:
        return None
    return nbytes / seconds


_line_lock = threading.Lock()
"""Held while a whole line is written (to stderr or the log file) by any thread: retries
are reported from the threads that make the requests, many at once."""


def write_line(stream: TextIO | IO[str], line: str) -> None:
    """``line`` and its newline in one write, whole, whatever other threads print: print()
    writes the text and the newline separately, so two threads printing at once glued
    their lines together (``…(attempt 1/10)2026-12-03T06:49:12+00:00 retrying …``)."""
    with _line_lock:
        stream.write(line + "\n")
        stream.flush()


def timestamp() -> str:
    """Now, ISO 8601 with the local UTC offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def format_eta(seconds: float | None) -> str:
    """``6s``, ``2m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class _Tally:
    """Units and voxel bytes of one image (or of the whole run) and when they moved."""

    units_total: int = 0
    units_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    copied: int = 0
    """Voxel bytes copied in this run (resumed units excluded)."""
    first: float | None = None
    """When the first unit of this run was reported (the rate is measured from then)."""
    first_bytes: int = 0
    last_emit: float = field(default=-1e18)

    @property
    def finished(self) -> bool:
        return self.units_done >= self.units_total

    def add(self, units: int, nbytes: int, now: float) -> None:
        if self.first is None:
            self.first, self.first_bytes = now, nbytes
        self.units_done += units
        self.bytes_done += nbytes
        self.copied += nbytes

    def rate(self, now: float) -> float | None:
        """Voxel bytes per second since the first reported unit (None: not measurable)."""
        if self.first is None or now <= self.first or self.copied <= self.first_bytes:
            return None
        return (self.copied - self.first_bytes) / (now - self.first)

    def shown_rate(self, now: float) -> float | None:
        """:meth:`rate` when it is worth showing (:func:`meaningful_rate`), else None."""
        if self.first is None:
            return None
        return meaningful_rate(self.copied - self.first_bytes, now - self.first)

    def eta(self, rate: float | None) -> float | None:
        if self.finished:
            return 0.0
        if not rate:
            return None
        return max(self.bytes_total - self.bytes_done, 0) / rate


class LineProgress:
    """Progress as lines, each starting with an ISO timestamp and carrying the ETA: per image
    its first progress, then at most one line per ``interval`` seconds, and when it is done;
    likewise for the whole run (``all images``). JSON objects instead with ``as_json``.
    ``clock`` gives the seconds rates and intervals are measured in."""

    def __init__(
        self, stream: TextIO | IO[str] | None = None, *, as_json: bool = False,
        interval: float = 5.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self.interval = interval
        self.clock = clock
        self.images: dict[str, _Tally] = {}
        self.run = _Tally()
        self.started = clock()

    def write(self, event: str, text: str, fields: dict[str, Any]) -> None:
        if self.as_json:
            line = json.dumps({"time": timestamp(), "event": event, **fields})
        else:
            line = f"{timestamp()} {text}"
        write_line(self.stream, line)

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self.images[name] = _Tally(total_units, done_units, total_bytes, done_bytes)
        self.run.units_total += total_units
        self.run.units_done += done_units
        self.run.bytes_total += total_bytes
        self.run.bytes_done += done_bytes
        state = f"resuming at {done_units}/{total_units} units" if done_units else "queued"
        self.write(
            "start",
            f"start {name}: {total_units} unit(s), {total_bytes / 1e6:.1f} MB of voxels, {state}",
            {"image": name, "units": f"{done_units}/{total_units}",
             "total_mb": round(total_bytes / 1e6, 1), "done_mb": round(done_bytes / 1e6, 1)},
        )  # fmt: skip

    def advance(self, name: str, units: int, nbytes: int) -> None:
        now = self.clock()
        image = self.images[name]
        image.add(units, nbytes, now)
        self.run.add(units, nbytes, now)
        overall = self.run.rate(now) or self._run_rate(now)
        if image.finished or now - image.last_emit >= self.interval:
            image.last_emit = now
            event = "done" if image.finished else "progress"
            self._line(event, name, image, image.rate(now) or overall, image.shown_rate(now))
        if self.run.finished or now - self.run.last_emit >= self.interval:
            self.run.last_emit = now
            self._line("overall", "all images", self.run, overall, self.run.shown_rate(now))

    def _run_rate(self, now: float) -> float | None:
        """The whole run's rate measured from its start (before a second unit is in)."""
        elapsed = now - self.started
        return self.run.copied / elapsed if elapsed > 0 and self.run.copied else None

    def _line(
        self, event: str, name: str, tally: _Tally, rate: float | None, shown: float | None
    ) -> None:
        """One progress line; ``rate`` estimates the ETA, ``shown`` is the rate printed
        (None: not measured long enough to mean anything, see :func:`meaningful_rate`)."""
        eta = tally.eta(rate)
        percent = 100.0 * tally.bytes_done / tally.bytes_total if tally.bytes_total else 100.0
        speed = f"{shown / 1e6:.1f} MB/s, " if shown else ""
        self.write(
            event,
            f"{event} {name}: {tally.units_done}/{tally.units_total} units, "
            f"{tally.bytes_done / 1e6:.1f}/{tally.bytes_total / 1e6:.1f} MB ({percent:.0f} %), "
            f"{speed}ETA {format_eta(eta)}",
            {
                **({} if event == "overall" else {"image": name}),
                "units": f"{tally.units_done}/{tally.units_total}",
                "done_mb": round(tally.bytes_done / 1e6, 1),
                "total_mb": round(tally.bytes_total / 1e6, 1),
                "mb_per_s": round(shown / 1e6, 1) if shown else None,
                "eta_s": round(eta, 1) if eta is not None else None,
            },
        )

    def message(self, text: str) -> None:
        if text.startswith("error: "):
            self.write("error", text, {"text": text.removeprefix("error: ")})
        elif text.startswith("warning: "):
            self.write("warning", text, {"text": text.removeprefix("warning: ")})
        else:
            self.write("message", text, {"text": text})

    def retry(self, retry: retries.Retry) -> None:
        self.write("retry", retry.describe(), retry_fields(retry))

    def close(self) -> None:
        pass


def retry_fields(retry: retries.Retry) -> dict[str, Any]:
    return {
        "client": "boto3",
        "where": retry.where,
        "reason": retry.reason,
        "attempt": retry.attempt,
        "max_attempts": retry.max_attempts,
        "delay_s": round(retry.delay, 2),
        "text": retry.describe(),
    }


def _rich_columns() -> tuple[Any, Any]:
    """Speed and time-remaining columns that say ``queued`` for an image no unit of which
    has been copied yet, ``starting`` for the whole run (instead of rich's ``?`` and
    ``-:--:--``)."""
    from rich.progress import TimeRemainingColumn, TransferSpeedColumn
    from rich.text import Text

    class Speed(TransferSpeedColumn):
        def render(self, task: Any) -> Text:
            if task.fields.get("queued"):
                return Text(task.fields.get("waiting", "queued"), style="progress.data.speed")
            since, at = task.fields.get("since", (None, 0))
            elapsed = time.monotonic() - since if since is not None else 0.0
            if meaningful_rate(task.completed - at, elapsed) is None:
                return Text("", style="progress.data.speed")  # not measured long enough yet
            return super().render(task)

    class Remaining(TimeRemainingColumn):
        def render(self, task: Any) -> Text:
            if task.fields.get("queued"):
                return Text("", style="progress.remaining")
            return Text.assemble("ETA ", super().render(task))

    return Speed(), Remaining()


class BarProgress:
    """Rich progress bars: one for the whole run (bytes, rate, ETA) above one per image;
    images waiting their turn say ``queued``."""

    OVERALL = "all images"

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        speed, remaining = _rich_columns()
        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            speed,
            remaining,
            TextColumn("{task.fields[units]}"),
            console=self.console,
        )
        self.overall = self.bars.add_task(
            self.OVERALL, total=None, units="", queued=True, waiting="starting"
        )
        self.totals = [0, 0, 0, 0]  # units done, units total, bytes total, bytes done
        self.tasks: dict[str, Any] = {}
        self.units: dict[str, list[int]] = {}
        self.done: dict[str, int] = {}
        self._first: dict[Any, tuple[float, int]] = {}
        self.bars.start()

    def _since(self, task: Any, done: int) -> tuple[float, int]:
        """When ``task`` first advanced and the bytes it held then: its speed is measured
        from there and shown once :func:`meaningful_rate` allows it."""
        if task not in self._first:
            self._first[task] = (time.monotonic(), done)
        return self._first[task]

    def _update_overall(self, advance: int = 0) -> None:
        done, total, nbytes, _ = self.totals
        fields: dict[str, Any] = {"units": f"{done}/{total} units"}
        if advance:
            fields["queued"] = False
            fields["since"] = self._since(self.overall, self.totals[3])
        self.bars.update(self.overall, total=max(nbytes, 1), advance=advance, **fields)

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self.units[name] = [done_units, total_units]
        self.done[name] = done_bytes
        self.tasks[name] = self.bars.add_task(
            name,
            total=max(total_bytes, 1),
            completed=done_bytes,
            units=f"{done_units}/{total_units} units",
            queued=done_units < total_units,
        )
        self.totals[0] += done_units
        self.totals[1] += total_units
        self.totals[2] += total_bytes
        self.totals[3] += done_bytes
        self.bars.update(self.overall, completed=self.totals[3])  # resumed bytes: no speed sample
        self._update_overall()

    def advance(self, name: str, units: int, nbytes: int) -> None:
        counts = self.units[name]
        counts[0] += units
        self.totals[0] += units
        self.totals[3] += nbytes
        self.done[name] += nbytes
        self.bars.update(
            self.tasks[name],
            advance=nbytes,
            units=f"{counts[0]}/{counts[1]} units",
            queued=False,
            since=self._since(self.tasks[name], self.done[name]),
        )
        self._update_overall(nbytes)

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def retry(self, retry: retries.Retry) -> None:
        self.message(retry.describe())

    def close(self) -> None:
        self.bars.stop()


class Tee:
    """The same reports to several progress displays (the terminal and the log file)."""

    def __init__(self, *targets: Any) -> None:
        self.targets = targets

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        for target in self.targets:
            target.start(name, total_units, total_bytes, done_units, done_bytes)

    def advance(self, name: str, units: int, nbytes: int) -> None:
        for target in self.targets:
            target.advance(name, units, nbytes)

    def message(self, text: str) -> None:
        for target in self.targets:
            target.message(text)

    def retry(self, retry: retries.Retry) -> None:
        for target in self.targets:
            target.retry(retry)

    def close(self) -> None:
        for target in self.targets:
            target.close()


def make_progress(*, as_json: bool, stream: TextIO | None = None) -> Progress:
    """Bars on an interactive terminal; timestamped lines (plain or JSON) everywhere else."""
    stream = stream if stream is not None else sys.stderr
    if not as_json and stream.isatty():
        return BarProgress()
    return LineProgress(stream, as_json=as_json)


class Watch:
    """What one command shows and logs: the terminal display (made when the copying starts,
    :meth:`progress`), storage retries as they happen, and with ``log_file`` every event as
    a JSON line (start of the run, per-image events, warnings, retries, errors, summary).

    Use as a context manager around the command's work: retries are heard inside it, and a
    MigrationError leaving it is logged as the run's error.
    """

    def __init__(self, command: str, *, as_json: bool, log_file: str | None) -> None:
        self.command = command
        self.as_json = as_json
        self.terminal: Any = None
        self.log: LineProgress | None = None
        self._file: IO[str] | None = None
        if log_file:
            try:
                self._file = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed on exit
            except OSError as exc:
                why = exc.strerror
                raise MigrationError(f"{log_file}: cannot open the log file: {why}") from exc
            self.log = LineProgress(self._file, as_json=True, interval=5.0)

    def __enter__(self) -> Watch:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(retries.listening(self.retry))
        self.record("run", command=self.command, argv=sys.argv[1:])
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._stack.close()
        if exc is not None:
            if isinstance(exc, MigrationError):
                self.record("error", text=str(exc))
            elif isinstance(exc, KeyboardInterrupt):
                self.record("error", text="interrupted")
            else:
                self.record("error", text=f"internal error: {type(exc).__name__}: {exc}")
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, event: str, **fields: Any) -> None:
        """One event in the log file only (nothing when there is none)."""
        if self.log is not None:
            self.log.write(event, "", fields)

    def progress(self) -> Progress:
        """The display of the copying: the terminal's, and the log file's beside it; from
        now on TensorStore's retries are shown too."""
        self.terminal = make_progress(as_json=self.as_json)
        if hasattr(self, "_stack"):
            self.watch_tensorstore()
        return Tee(self.terminal, self.log) if self.log is not None else self.terminal

    def warning(self, text: str) -> None:
        self.record("warning", text=text)

    def retry(self, retry: retries.Retry) -> None:
        """A boto3 retry, shown as it happens (from the thread that will retry)."""
        self._show("retry", retry.describe(), retry_fields(retry))

    def _show(self, event: str, text: str, fields: dict[str, Any]) -> None:
        """In the log, and on the terminal: above the bars, as a timestamped line, or JSON."""
        if self.log is not None:
            self.log.write(event, text, fields)
        target = self.terminal
        if isinstance(target, LineProgress):
            target.write(event, text, fields)
        elif isinstance(target, BarProgress):
            target.message(text)
        elif self.as_json:
            write_line(sys.stderr, json.dumps({"time": timestamp(), "event": event, **fields}))
        elif sys.stderr.isatty():
            write_line(sys.stderr, text)
        else:
            write_line(sys.stderr, f"{timestamp()} {text}")

    def _poll_tensorstore(self, stop: threading.Event, every: float) -> None:
        """TensorStore retries chunk requests inside its C++ code and reports none of them;
        its retry counter is read every ``every`` seconds and each increase shown (which
        request, and why, it does not say). Once more when stopped."""
        seen = iocounts.tensorstore_retries()
        while True:
            stopped = stop.wait(every)
            now = iocounts.tensorstore_retries()
            if now > seen:
                text = (
                    f"retrying chunk requests: TensorStore retried {now - seen} more "
                    f"({now} in this process; it does not say which or why)"
                )
                fields = {"client": "tensorstore", "retries": now - seen, "total": now}
                self._show("retry", text, {**fields, "text": text})
                seen = now
            if stopped:
                return

    def watch_tensorstore(self, every: float = 1.0) -> None:
        """Show TensorStore's retries while the block of this Watch runs (see
        :meth:`_poll_tensorstore`)."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._poll_tensorstore, args=(stop, every), daemon=True, name="ts-retries"
        )
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join()

        self._stack.callback(finish)


_current: list[Watch] = []


def current_watch() -> Watch:
    """The Watch of the command running now (a terminal-only one outside :func:`watched`)."""
    return _current[-1] if _current else Watch("", as_json=False, log_file=None)


def watched(command: F) -> F:
    """Give a command ``--log-file FILE`` and run it inside a :class:`Watch` (see
    :func:`current_watch`): retries shown as they happen, events logged as JSON lines."""
    import functools

    import click

    @functools.wraps(command)
    def wrapper(*args: Any, log_file: str | None, **kwargs: Any) -> Any:
        name = click.get_current_context().info_name or command.__name__
        with Watch(name, as_json=bool(kwargs.get("as_json")), log_file=log_file) as watch:
            _current.append(watch)
            try:
                return command(*args, **kwargs)
            finally:
                _current.pop()

    option = click.option(
        "--log-file",
        metavar="FILE",
        help="Append every event (start, per-image progress, warnings, retries, errors, "
        "summary) to FILE as JSON lines.",
    )
    return option(wrapper)  # type: ignore[return-value]


def log_plan(watch: Watch, plan: Any) -> None:
    """The plan's images (with their voxel bytes) and its warnings, to the log file."""
    images = [
        {
            "image": image.dest_path,
            "source": image.source_path,
            "kind": image.kind,
            "levels": len(image.levels),
            "units": sum(level.unit_count for level in image.levels),
            "total_mb": round(sum(level.nbytes for level in image.levels) / 1e6, 1),
        }
        for image in plan.images
    ]
    watch.record(
        "plan", source=plan.source, dest=plan.dest, fingerprint=plan.fingerprint, images=images
    )
    for image in plan.images:
        for text in image.warnings:
            watch.warning(f"{image.source_path}: {text}")
        for text in image.conflicts:
            watch.warning(f"{image.source_path}: CONFLICT: {text}")
