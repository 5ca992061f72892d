"""Bytes and objects moved on storage by this process, whichever client moved them.

Plain file and boto3 I/O of this package is counted where it happens (:func:`count_read`,
:func:`count_written`); TensorStore counts its own kvstore I/O (its ``/tensorstore/kvstore/…``
metrics), which :func:`totals` adds in. The counts are process-wide: take :func:`totals`
before and after a run and subtract.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_read = 0
_written = 0
_objects = 0
_retries = 0

_TS_DRIVERS = ("file", "s3", "gcs", "gcs_grpc", "http")


@dataclass(frozen=True)
class IOCounts:
    """Stored (compressed) bytes read and written, objects written, and requests retried."""

    bytes_read: int = 0
    bytes_written: int = 0
    objects_written: int = 0
    retries: int = 0

    def __sub__(self, other: IOCounts) -> IOCounts:
        return IOCounts(
            self.bytes_read - other.bytes_read,
            self.bytes_written - other.bytes_written,
            self.objects_written - other.objects_written,
            self.retries - other.retries,
        )

    def to_json(self) -> dict[str, int]:
        return dict(vars(self))


def count_read(nbytes: int) -> None:
    """``nbytes`` of stored bytes were read (by this package, not TensorStore)."""
    global _read
    with _lock:
        _read += nbytes


def count_written(nbytes: int, objects: int = 1) -> None:
    """``objects`` objects of ``nbytes`` in all were stored (by this package)."""
    global _written, _objects
    with _lock:
        _written += nbytes
        _objects += objects


def count_retry() -> None:
    """A request of this package failed and will be tried again."""
    global _retries
    with _lock:
        _retries += 1


def _tensorstore_counts() -> IOCounts:
    """TensorStore's kvstore counters so far (zero when it has not been imported)."""
    if "tensorstore" not in sys.modules:
        return IOCounts()
    import tensorstore as ts

    values: dict[str, int] = {}
    for metric in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/"):
        name = str(metric.get("name", ""))
        driver, _, what = name.removeprefix("/tensorstore/kvstore/").partition("/")
        if driver not in _TS_DRIVERS:
            continue
        entries: list[dict[str, Any]] = metric.get("values") or []
        total = sum(int(entry.get("value", 0)) for entry in entries if "value" in entry)
        values[what] = values.get(what, 0) + total
    return IOCounts(
        values.get("bytes_read", 0),
        values.get("bytes_written", 0),
        values.get("write", 0),
        values.get("retries", 0),
    )


def tensorstore_retries() -> int:
    """Requests TensorStore has retried in this process so far (its own counter)."""
    return _tensorstore_counts().retries


def totals() -> IOCounts:
    """Everything this process has read, written and retried on storage so far."""
    with _lock:
        own = IOCounts(_read, _written, _objects, _retries)
    ts = _tensorstore_counts()
    return IOCounts(
        own.bytes_read + ts.bytes_read,
        own.bytes_written + ts.bytes_written,
        own.objects_written + ts.objects_written,
        own.retries + ts.retries,
    )
