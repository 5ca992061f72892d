"""The bulk summary file: per dataset state, bytes, units written, time and failures.

It is rewritten (atomically: a temporary file renamed over it) every time a dataset
finishes, so a run that is killed leaves it current up to its last finished dataset. It is a
report, not bookkeeping: the next run reads each dataset's state from its DEST, never from
here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_summary_path(now: float | None = None) -> Path:
    """``cellmap-bulk-YYYYmmddTHHMMSSZ.json`` in the working directory."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return Path.cwd() / f"cellmap-bulk-{stamp}.json"


@dataclass
class DatasetOutcome:
    """What became of one dataset in a bulk run."""

    name: str
    source: str
    dest: str
    state: str = "pending"
    """pending, complete, failed, skipped (no N5 root), or a status/verify verdict."""
    before: str = ""
    """Its state at DEST before the run: new, partial, complete, … (per image, joined)."""
    images: int = 0
    units_total: int = 0
    units_copied: int = 0
    units_skipped: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    detail: str = ""
    """What was proven (verify) or where it stands (status), in words."""
    report: str | None = None
    """Its HTML report (``--report DIR``), relative to DIR."""

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["seconds"] = round(self.seconds, 3)
        return data


class Summary:
    """The summary document of one bulk run, kept at ``path`` (None: kept in memory only)."""

    def __init__(self, command: str, root: str, dest_root: str, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.document: dict[str, Any] = {
            "command": command,
            "root": root,
            "dest_root": dest_root,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "finished": None,
            "datasets": {},
            "skipped": {},
            "warnings": [],
        }

    def add(self, outcome: DatasetOutcome) -> None:
        """Record (or replace) a dataset's outcome and rewrite the file."""
        with self.lock:
            self.document["datasets"][outcome.name] = outcome.to_json()
            self._write()

    def skip(self, name: str, reason: str) -> None:
        with self.lock:
            self.document["skipped"][name] = reason

    def warn(self, text: str) -> None:
        with self.lock:
            self.document["warnings"].append(text)

    def finish(
        self, outcomes: list[DatasetOutcome], storage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Totals, the finish time; the file written a last time. Returns the document.
        ``storage``: the stored bytes and objects the whole run moved in this process (None
        when a Dask cluster's workers copied, which this process cannot count)."""
        with self.lock:
            self.document["datasets"] = {o.name: o.to_json() for o in outcomes}
            self.document["storage"] = storage
            self.document["totals"] = totals(outcomes)
            self.document["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._write()
            copied: dict[str, Any] = json.loads(json.dumps(self.document))
            return copied

    def _write(self) -> None:
        if self.path is None:
            return
        self.document["totals"] = totals(
            [DatasetOutcome(**value) for value in self.document["datasets"].values()]
        )
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.document, indent=2) + "\n")
        os.replace(temporary, self.path)


def totals(outcomes: list[DatasetOutcome]) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    for outcome in outcomes:
        by_state[outcome.state] = by_state.get(outcome.state, 0) + 1
    return {
        "datasets": len(outcomes),
        "by_state": dict(sorted(by_state.items())),
        "units_copied": sum(o.units_copied for o in outcomes),
        "bytes_read": sum(o.bytes_read for o in outcomes),
        "failed": [o.name for o in outcomes if o.failures],
    }
