"""The storage interface: a tree of byte objects under a root URL, addressed by keys.

Keys are '/'-separated paths relative to the store's root. Sources are opened read-only:
every write method of a read-only store raises, so no code path can modify a source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from migrate.errors import StoreError


def join_key(*parts: str) -> str:
    """Join key parts with '/', dropping empty parts and stray slashes."""
    return "/".join(piece for part in parts for piece in part.split("/") if piece)


A = TypeVar("A")
R = TypeVar("R")


class ConditionalWritesUnsupportedError(StoreError):
    """The storage refuses conditional writes (create-if-absent, replace-if-unchanged)."""


class Store(ABC):
    """A tree of byte objects addressed by '/'-separated keys under a root URL."""

    concurrency = 1
    """How many small requests (metadata, listings, records) :meth:`map` keeps in flight."""

    def __init__(self, url: str, *, read_only: bool) -> None:
        self.url = url.rstrip("/")
        self.read_only = read_only

    def display(self, key: str = "") -> str:
        """A human-readable location of ``key`` for messages."""
        return f"{self.url}/{join_key(key)}" if key else self.url

    def _check_writable(self, key: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.display(key)}: refusing to write to a read-only source")

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Create or replace an object (atomically where the backend allows)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (a no-op when there is none)."""

    @abstractmethod
    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        """Immediate children of ``prefix``: (sub-prefix names, object names), sorted."""

    def list_dir_stats(self, prefix: str) -> tuple[list[str], list[tuple[str, int, str]]]:
        """Immediate children of ``prefix``: (sub-prefix names, (object name, size, stamp)),
        sorted; stamps as :meth:`list_stats` gives them."""
        dirs, files = self.list_dir(prefix)
        stats = self.map(lambda name: self.stat(join_key(prefix, name)), files)
        return dirs, [
            (name, found[0], found[1])
            for name, found in zip(files, stats, strict=True)
            if found is not None
        ]

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every object key under ``prefix``, recursively, relative to ``prefix``."""

    @abstractmethod
    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        """Every object under ``prefix``, recursively, as (key relative to ``prefix``, size in
        bytes, stamp): what a listing tells without reading the objects. The stamp changes
        when an object is rewritten (local: the modification time in ns; S3: the ETag)."""

    @abstractmethod
    def stat(self, key: str) -> tuple[int, str] | None:
        """(size in bytes, stamp) of one object, as :meth:`list_stats` would list it; None
        when it does not exist. One request (S3: a HEAD), no bytes read."""

    def remove_dead_temporaries(self, prefix: str, *, recursive: bool = True) -> int:
        """Remove the temporary files that writers which no longer run left under
        ``prefix`` (only local directories have them; an object store's writes are whole);
        returns how many were removed."""
        return 0

    @abstractmethod
    def kvstore_spec(self, key: str = "") -> dict[str, Any]:
        """A TensorStore kvstore spec for the prefix ``key`` of this store."""

    # Conditional writes: the few objects several processes may race for (the lease) go
    # through these. A version token names one stored state of an object (S3: its ETag;
    # local: a digest of its bytes); a write conditioned on a token succeeds only while the
    # object is still in that state, so of two racing writers exactly one wins.

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and version token, or None when it does not exist."""
        raise ConditionalWritesUnsupportedError(f"{self.display(key)}: no conditional writes here")

    def create_if_absent(self, key: str, data: bytes) -> str | None:
        """Create the object unless it exists: its version token, or None when it existed."""
        raise ConditionalWritesUnsupportedError(f"{self.display(key)}: no conditional writes here")

    def replace_if_unchanged(self, key: str, data: bytes, token: str) -> str | None:
        """Replace the object if it is still in the state ``token`` names: the new token,
        or None when it changed (or is gone)."""
        raise ConditionalWritesUnsupportedError(f"{self.display(key)}: no conditional writes here")

    def delete_if_unchanged(self, key: str, token: str) -> bool:
        """Delete the object if it is still in the state ``token`` names; True if deleted."""
        raise ConditionalWritesUnsupportedError(f"{self.display(key)}: no conditional writes here")

    def root_is_object(self) -> bool:
        """True when the root location itself is an object (a file), not a prefix."""
        return False

    def exists_prefix(self, prefix: str) -> bool:
        """True when anything is stored under ``prefix``."""
        dirs, files = self.list_dir(prefix)
        return bool(dirs or files)

    def map(self, function: Callable[[A], R], items: Iterable[A]) -> list[R]:
        """``function`` applied to every item, in order, up to :attr:`concurrency` calls at a
        time (each call doing a few requests to this store); the first failure, in item
        order, is raised."""
        work = list(items)
        if self.concurrency <= 1 or len(work) <= 1:
            return [function(item) for item in work]
        pool = ThreadPoolExecutor(min(self.concurrency, len(work)), "store")
        try:
            results = list(pool.map(function, work))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a failure or Ctrl-C: stop now
            raise
        pool.shutdown()
        return results
