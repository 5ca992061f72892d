"""TensorStore handles for source (N5, read-only) and destination (Zarr v2 / v3) arrays.

The ``n5`` driver exposes the N5 ``dimensions`` order (x, y, z); every handle returned here
is transposed so that callers index in **C order** (z, y, x), the order of the output.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import tensorstore as ts

from migrate.stores import Store
from schemas.plan import LevelPlan, NgffVersion

_contexts: dict[int, ts.Context] = {}
_lock = threading.Lock()


def context(workers: int) -> ts.Context:
    """One shared TensorStore context per worker count: bounded decode/encode threads and no
    chunk cache (each chunk is read once, so caching would only hold memory)."""
    with _lock:
        if workers not in _contexts:
            _contexts[workers] = ts.Context(
                {
                    "data_copy_concurrency": {"limit": max(1, workers)},
                    "file_io_concurrency": {"limit": max(8, 4 * workers)},
                    "cache_pool": {"total_bytes_limit": 0},
                }
            )
        return _contexts[workers]


TS_COMPRESSION_KEYS = {
    "raw": (),
    "gzip": ("level", "useZlib"),
    "bzip2": ("blockSize",),
    "xz": ("preset",),
    "blosc": ("cname", "clevel", "shuffle", "blocksize"),
    "zstd": ("level",),
}
"""The compression keys TensorStore's n5 driver accepts; it refuses others that Java writes
(n5-blosc's ``nthreads``, n5-zstandard's ``nbWorkers``), which do not affect decoding."""


def n5_metadata(level: LevelPlan) -> dict[str, Any]:
    """The N5 metadata of a source level, as TensorStore wants it (F order lists)."""
    compression = level.source_compression
    kind = compression["type"]
    return {
        "dimensions": list(reversed(level.shape)),
        "blockSize": list(reversed(level.source_blocks)),
        "dataType": level.dtype,
        "compression": {
            "type": kind,
            **{k: compression[k] for k in TS_COMPRESSION_KEYS.get(kind, ()) if k in compression},
        },
    }


def open_source(store: Store, level: LevelPlan, workers: int) -> ts.TensorStore:
    """The N5 array of a planned level, opened read-only, as a C-order (z, y, x) view.

    The metadata comes from the plan (parsed and checked already), so TensorStore neither
    re-reads nor judges ``attributes.json``.
    """
    spec = {
        "driver": "n5",
        "kvstore": store.kvstore_spec(level.source_path),
        "metadata": n5_metadata(level),
    }
    array = ts.open(
        spec, read=True, open=True, assume_metadata=True, context=context(workers)
    ).result()
    return array.T


def open_dest(store: Store, path: str, version: NgffVersion, workers: int) -> ts.TensorStore:
    """The existing Zarr array at ``path`` (metadata already written), opened for writing."""
    driver = "zarr" if version == "0.4" else "zarr3"
    spec = {"driver": driver, "kvstore": store.kvstore_spec(path)}
    return ts.open(spec, open=True, read=True, write=True, context=context(workers)).result()


def open_dest_readonly(
    store: Store, path: str, version: NgffVersion, workers: int
) -> ts.TensorStore:
    driver = "zarr" if version == "0.4" else "zarr3"
    spec = {"driver": driver, "kvstore": store.kvstore_spec(path)}
    return ts.open(spec, open=True, read=True, context=context(workers)).result()


@dataclass
class LevelHandles:
    source: ts.TensorStore
    dest: ts.TensorStore


class HandleCache:
    """Opens each level's pair of handles once per process (workers reuse them across units)."""

    def __init__(self, source: Store, dest: Store, version: NgffVersion, workers: int) -> None:
        self._source = source
        self._dest = dest
        self._version = version
        self._workers = workers
        self._handles: dict[str, LevelHandles] = {}
        self._lock = threading.Lock()

    def get(self, level: LevelPlan) -> LevelHandles:
        with self._lock:
            if level.dest_path not in self._handles:
                self._handles[level.dest_path] = LevelHandles(
                    open_source(self._source, level, self._workers),
                    open_dest(self._dest, level.dest_path, self._version, self._workers),
                )
            return self._handles[level.dest_path]


def box_slices(box: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


def ts_error_text(exc: BaseException) -> str:
    """TensorStore's message without its status prefix noise, on one line."""
    text: Any = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return str(text)
