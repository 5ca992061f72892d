"""TensorStore handles for source (N5, read-only) and destination (Zarr v2 / v3) arrays.

The ``n5`` driver exposes the N5 ``dimensions`` order (x, y, z); every handle returned here
is transposed so that callers index in **C order** (z, y, x), the order of the output.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrate.errors import StoreError
from migrate.storage import Store
from migrate.storage.reread import retry_in_transit
from schemas.plan import LevelPlan, NgffVersion, PrecomputedLevel

if TYPE_CHECKING:  # imported where used: a run with nothing for TensorStore to do starts faster
    import tensorstore as ts

_contexts: dict[int, ts.Context] = {}
_lock = threading.Lock()


def context(workers: int) -> ts.Context:
    """One shared TensorStore context per worker count: bounded decode/encode threads, no
    chunk cache (each chunk is read once, so caching would only hold memory), and no fsync
    per chunk file (like ``cp`` and the transplant path: a killed process loses nothing; after
    a machine crash, ``verify`` the output)."""
    import tensorstore as ts

    with _lock:
        if workers not in _contexts:
            _contexts[workers] = ts.Context(
                {
                    "data_copy_concurrency": {"limit": max(1, workers)},
                    "file_io_concurrency": {"limit": max(8, 4 * workers)},
                    "cache_pool": {"total_bytes_limit": 0},
                    "file_io_sync": False,
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


def n5_metadata(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of N5 array attributes TensorStore's n5 driver wants (F order lists)."""
    compression = attributes["compression"]
    kind = compression["type"]
    return {
        "dimensions": list(attributes["dimensions"]),
        "blockSize": list(attributes["blockSize"]),
        "dataType": attributes["dataType"],
        "compression": {
            "type": kind,
            **{k: compression[k] for k in TS_COMPRESSION_KEYS.get(kind, ()) if k in compression},
        },
    }


def level_n5_metadata(level: LevelPlan) -> dict[str, Any]:
    """The N5 metadata of a planned source level (from C-order plan values to F order)."""
    return n5_metadata(
        {
            "dimensions": list(reversed(level.shape)),
            "blockSize": list(reversed(level.source_blocks)),
            "dataType": level.dtype,
            "compression": level.source_compression,
        }
    )


def open_source(store: Store, level: LevelPlan, workers: int) -> ts.TensorStore:
    """The source array of a planned level (an N5 array, or a precomputed scale: ``store``
    is then the image's source root), opened read-only, as a C-order (z, y, x) view; a
    mirrored level (``level.mirror``) is seen through the mirror, so that index ``j`` of a
    mirrored axis reads source voxel ``N - 1 - j``, what the output holds at ``j``."""
    if level.precomputed is not None:
        array = open_precomputed(store, level.precomputed, context(workers))
    else:
        array = open_source_array(store, level.source_path, level_n5_metadata(level), workers)
    return mirrored(array, level.mirror)


def mirrored(array: ts.TensorStore, mirror: tuple[bool, ...] | None) -> ts.TensorStore:
    """``array`` (C order, origin 0) reversed along the axes ``mirror`` names: a view (no
    I/O, no copy), with stride −1 on those axes and the origin moved back to 0."""
    if mirror is None or not any(mirror):
        return array
    import tensorstore as ts

    axes = [k for k, flip in enumerate(mirror) if flip]
    return array[ts.d[axes].stride[-1]].translate_to[0]


def open_precomputed(store: Store, source: PrecomputedLevel, context: ts.Context) -> ts.TensorStore:
    """A planned precomputed scale (``store``: the root its volume path is relative to)
    opened read-only as a C-order (z, y, x) view from 0: TensorStore's
    ``neuroglancer_precomputed`` driver exposes x, y, z, channel with the domain starting at
    ``voxel_offset``; the one channel is taken, moved to the origin and transposed. The
    scale's planned metadata is given to TensorStore, which refuses to open a volume whose
    ``info`` no longer says it."""
    import tensorstore as ts

    scale = dict(source.scale)
    metadata = {
        "key": scale["key"],
        "size": scale["size"],
        "voxel_offset": scale.get("voxel_offset", [0, 0, 0]),
        "resolution": scale["resolution"],
        "chunk_size": scale["chunk_sizes"][0],
        "encoding": scale["encoding"],
        "sharding": scale.get("sharding"),
    }
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": store.kvstore_spec(source.volume),
        "scale_index": source.scale_index,
        "scale_metadata": metadata,
    }
    array = ts.open(spec, read=True, open=True, context=context).result()
    single = array[..., 0]  # the one channel (its domain is [0, 1))
    return single.translate_to[0, 0, 0].T


def open_source_array(
    store: Store, path: str, metadata: dict[str, Any], workers: int
) -> ts.TensorStore:
    """An N5 array opened read-only with known ``metadata``, as a C-order (z, y, x) view.

    The metadata was parsed and checked already, so TensorStore neither re-reads nor judges
    ``attributes.json`` (it would refuse keys that Java N5 writes).
    """
    import tensorstore as ts

    spec = {
        "driver": "n5",
        "kvstore": store.kvstore_spec(path),
        "metadata": metadata,
    }
    array = ts.open(
        spec, read=True, open=True, assume_metadata=True, context=context(workers)
    ).result()
    return array.T


def open_dest(store: Store, path: str, version: NgffVersion, workers: int) -> ts.TensorStore:
    """The existing Zarr array at ``path`` (metadata already written), opened for writing."""
    import tensorstore as ts

    driver = "zarr" if version == "0.4" else "zarr3"
    spec = {"driver": driver, "kvstore": store.kvstore_spec(path)}
    return ts.open(spec, open=True, read=True, write=True, context=context(workers)).result()


def open_dest_readonly(
    store: Store, path: str, version: NgffVersion, workers: int
) -> ts.TensorStore:
    import tensorstore as ts

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

    def get(self, level: LevelPlan, source: Store | None = None) -> LevelHandles:
        """The handles of ``level``, read from ``source`` (default: the cache's store)."""
        with self._lock:
            if level.dest_path not in self._handles:
                dest = retry_in_transit(  # its .zarray or zarr.json may come short
                    self._dest,
                    self._dest.display(level.dest_path),
                    lambda: open_dest(self._dest, level.dest_path, self._version, self._workers),
                    why=lambda exc: f"TensorStore cannot open it ({ts_error_text(exc)})",
                    final=is_storage_error,
                )
                self._handles[level.dest_path] = LevelHandles(
                    open_source(source or self._source, level, self._workers), dest
                )
            return self._handles[level.dest_path]


def box_slices(box: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


_SPEC_NOISE = re.compile(r"\s*\[tensorstore_spec='.*?'\]")


def ts_error_text(exc: BaseException) -> str:
    """TensorStore's message on one line, without the JSON spec it appends."""
    text: Any = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _SPEC_NOISE.sub("", str(text))


STORAGE_STATUS = (
    "ABORTED",  # TensorStore's "All N retry attempts failed"
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "CANCELLED",
)
"""Status codes of TensorStore errors that say the storage could not be used (connection,
credentials, throttling) rather than that the bytes it returned cannot be decoded."""


def is_storage_error(exc: BaseException) -> bool:
    """True when ``exc`` is a failure to reach or use storage (the same request could succeed
    later or with other credentials), False for anything else, e.g. a corrupt source block."""
    if isinstance(exc, StoreError):
        return True
    text = str(exc)
    return (
        text.startswith(STORAGE_STATUS)
        or "CURL error" in text
        or ("credentials" in text.lower() and text.startswith("INTERNAL"))
    )
