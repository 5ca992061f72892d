"""When each work unit finished: a :class:`~migrate.copy.events.Progress` that records the
engine's calls and passes every one on unchanged to the progress it wraps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrate.copy.events import Progress

MAX_POINTS = 5000
"""A report keeps at most this many points of a run's timeline."""


@dataclass(frozen=True)
class Completion:
    """``units`` work units of image ``name`` finished ``seconds`` after the run started,
    having covered ``nbytes`` bytes of voxels."""

    seconds: float
    name: str
    units: int
    nbytes: int


@dataclass
class Timeline:
    """The run's unit completions, in the order the engine reported them."""

    completions: list[Completion] = field(default_factory=list)
    seconds: float = 0.0
    """From the first ``start`` to ``close``."""

    def to_json(self, max_points: int = MAX_POINTS) -> dict[str, Any]:
        """The timeline as JSON, with at most ``max_points`` completions (see :meth:`binned`)."""
        return {
            "seconds": round(self.seconds, 6),
            "completions": [
                [round(c.seconds, 6), c.name, c.units, c.nbytes]
                for c in self.binned(max_points).completions
            ],
        }

    def binned(self, max_points: int = MAX_POINTS) -> Timeline:
        """This timeline, or, when it has more than ``max_points`` completions, one with a
        completion per equal slice of time (named ``*``) adding up that slice's units and
        bytes at the slice's last completion time: a multi-terabyte run keeps a small record."""
        if len(self.completions) <= max_points:
            return self
        width = max(self.seconds, self.completions[-1].seconds, 1e-9) / max_points
        bins: dict[int, list[float]] = {}
        for c in self.completions:
            slot = bins.setdefault(min(int(c.seconds / width), max_points - 1), [0.0, 0, 0])
            slot[0] = max(slot[0], c.seconds)
            slot[1] += c.units
            slot[2] += c.nbytes
        return Timeline(
            [Completion(t, "*", int(u), int(b)) for _, (t, u, b) in sorted(bins.items())],
            self.seconds,
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Timeline:
        return cls(
            [Completion(float(s), str(n), int(u), int(b)) for s, n, u, b in value["completions"]],
            float(value["seconds"]),
        )


class RecordingProgress:
    """Wraps the progress of a run: each call is forwarded to ``inner`` as it came, and each
    ``advance`` is also recorded with its time in :attr:`timeline`."""

    def __init__(self, inner: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.clock = clock
        self.timeline = Timeline()
        self._t0: float | None = None

    def _now(self) -> float:
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        self._now()
        self.inner.start(name, total_units, total_bytes, done_units, done_bytes)

    def advance(self, name: str, units: int, nbytes: int) -> None:
        self.timeline.completions.append(Completion(self._now(), name, units, nbytes))
        self.inner.advance(name, units, nbytes)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def close(self) -> None:
        self.timeline.seconds = self._now()
        self.inner.close()
