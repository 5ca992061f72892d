"""Storage locations: local directories (and, later, S3 prefixes) behind one small interface.

Keys are '/'-separated paths relative to the store's root. Sources are opened read-only:
every write method of a read-only store raises, so no code path can modify a source.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrate.errors import StoreError


def join_key(*parts: str) -> str:
    """Join key parts with '/', dropping empty parts and stray slashes."""
    return "/".join(piece for part in parts for piece in part.split("/") if piece)


class Store(ABC):
    """A tree of byte objects addressed by '/'-separated keys under a root URL."""

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

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every object key under ``prefix``, recursively, relative to ``prefix``."""

    @abstractmethod
    def kvstore_spec(self, key: str = "") -> dict[str, Any]:
        """A TensorStore kvstore spec for the prefix ``key`` of this store."""

    def exists_prefix(self, prefix: str) -> bool:
        """True when anything is stored under ``prefix``."""
        dirs, files = self.list_dir(prefix)
        return bool(dirs or files)


class LocalStore(Store):
    """A directory on a local file system."""

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool) -> None:
        self.root = Path(root).expanduser().absolute()
        super().__init__(str(self.root), read_only=read_only)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"{self.display(key)}: cannot read: {exc.strerror}") from exc

    def write(self, key: str, data: bytes) -> None:
        self._check_writable(key)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"{self.display(key)}: cannot write: {exc.strerror}") from exc

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix)
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(self._path(prefix)) as entries:
                for entry in entries:
                    (dirs if entry.is_dir() else files).append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise StoreError(f"{self.display(prefix)}: cannot list: {exc.strerror}") from exc
        return sorted(dirs), sorted(files)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(base).as_posix()
            for name in filenames:
                yield name if rel == "." else f"{rel}/{name}"

    def kvstore_spec(self, key: str = "") -> dict[str, Any]:
        return {"driver": "file", "path": str(self._path(key)) + "/"}


def open_store(url: str, *, read_only: bool) -> Store:
    """Open a location given as a local path, ``file://`` URL or ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        raise StoreError(f"{url}: S3 locations are not supported yet")
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url, read_only=read_only)
