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
        self._rows: dict[str, str] = {}
        """Each dataset's entry, already encoded (only the finished one changes per write)."""

    def add(self, outcome: DatasetOutcome) -> None:
        """Record (or replace) a dataset's outcome and rewrite the file."""
        with self.lock:
            row = outcome.to_json()
            self.document["datasets"][outcome.name] = row
            self._rows[outcome.name] = json.dumps(row)
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
            self._rows = {name: json.dumps(row) for name, row in self.document["datasets"].items()}
            self.document["storage"] = storage
            self.document["totals"] = totals(outcomes)
            self.document["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._write()
            copied: dict[str, Any] = json.loads(json.dumps(self.document))
            return copied

    def _write(self) -> None:
        if self.path is None:
            return
        self.document["totals"] = _totals(list(self.document["datasets"].values()))
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(render(self.document, self._rows))
        os.replace(temporary, self.path)


def render(document: dict[str, Any], rows: dict[str, str] | None = None) -> str:
    """The summary as JSON text: one line per top-level key and one per dataset (``rows``:
    each dataset's entry already encoded, by name).

    The file is rewritten as each dataset finishes, so with hundreds of datasets encoding the
    whole document each time, indented (which only the pure-Python JSON encoder can do),
    would cost the run CPU growing with the square of their number; here each dataset's line
    is encoded once, by the C encoder, and the file still reads a dataset a line."""
    lines: list[str] = []
    for key, value in document.items():
        if key == "datasets" and value:
            encoded = rows or {}
            entries = [
                f"    {json.dumps(name)}: {encoded.get(name) or json.dumps(row)}"
                for name, row in value.items()
            ]
            lines.append(f"  {json.dumps(key)}: {{\n" + ",\n".join(entries) + "\n  }")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def totals(outcomes: list[DatasetOutcome]) -> dict[str, Any]:
    """The run's totals: datasets by state, units copied, bytes read, the failed ones."""
    return _totals([outcome.to_json() for outcome in outcomes])


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    return {
        "datasets": len(rows),
        "by_state": dict(sorted(by_state.items())),
        "units_copied": sum(row["units_copied"] for row in rows),
        "bytes_read": sum(row["bytes_read"] for row in rows),
        "failed": [row["name"] for row in rows if row["failures"]],
    }
