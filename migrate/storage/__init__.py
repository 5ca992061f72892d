"""Storage: local directories and S3 prefixes behind one small interface (the bottom room).

``base`` is the interface, ``local`` and ``s3`` its two backends, ``s3_settings`` how S3 is
reached and retried. Everything above reads and writes through :class:`Store`; this package
imports nothing from the rest of ``migrate`` but :mod:`migrate.errors`.
"""

from __future__ import annotations

from migrate.errors import StoreError
from migrate.storage.base import ConditionalWritesUnsupportedError, Store, join_key
from migrate.storage.keys import (
    UnsafeKeyError,
    check_key,
    check_segment,
    path_problem,
    segment_problem,
)
from migrate.storage.local import LocalStore, temporary_name, writer_alive
from migrate.storage.s3 import S3Store
from migrate.storage.s3_settings import (
    DEFAULT_MAX_ATTEMPTS,
    S3Options,
    S3Settings,
    describe_s3_error,
    resolve_s3,
    retry_delay,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "ConditionalWritesUnsupportedError",
    "LocalStore",
    "S3Options",
    "S3Settings",
    "S3Store",
    "Store",
    "UnsafeKeyError",
    "check_key",
    "check_segment",
    "describe_s3_error",
    "join_key",
    "open_store",
    "path_problem",
    "resolve_s3",
    "retry_delay",
    "segment_problem",
    "temporary_name",
    "writer_alive",
]


def open_store(url: str, *, read_only: bool, s3: S3Options | None = None) -> Store:
    """Open a location given as a local path, ``file://`` URL or ``s3://bucket/prefix``.

    ``s3`` says how to reach S3 (endpoint, region, anonymous access); local paths ignore it.
    """
    if url.startswith("s3://"):
        return S3Store(url, read_only=read_only, options=s3)
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        raise StoreError(f"{url}: unsupported location; give a local path or s3://bucket/prefix")
    return LocalStore(url, read_only=read_only)
