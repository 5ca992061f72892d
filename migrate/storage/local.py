"""Local directories as stores."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrate.errors import StoreError
from migrate.storage.base import Store


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

    def root_is_object(self) -> bool:
        return self.root.is_file()

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        """Hold an exclusive ``flock`` on the lock file beside ``key`` (``<key>.lock``)
        for one conditional write; yields the lock file's path (its holder may delete it).

        A lock file deleted by its previous holder while this process waited is detected
        (the locked inode is no longer the one at the path) and the lock is taken again."""
        path = self._path(key)
        lock = path.with_name(f"{path.name}.lock")
        while True:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was pruned in between: again
                continue
            except OSError as exc:
                raise StoreError(f"{self.display(key)}: cannot lock: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(lock).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield lock
                    return
            finally:
                os.close(fd)

    @staticmethod
    def _token(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self.read(key)
        return None if data is None else (data, self._token(data))

    def create_if_absent(self, key: str, data: bytes) -> str | None:
        self._check_writable(key)
        with self._locked(key):
            if self.read(key) is not None:
                return None
            self.write(key, data)
        return self._token(data)

    def replace_if_unchanged(self, key: str, data: bytes, token: str) -> str | None:
        self._check_writable(key)
        with self._locked(key):
            current = self.read(key)
            if current is None or self._token(current) != token:
                return None
            self.write(key, data)
        return self._token(data)

    def delete_if_unchanged(self, key: str, token: str) -> bool:
        """Delete the object (and its lock file) if unchanged, then every folder above it
        that is left empty, up to the store's root (exclusive)."""
        self._check_writable(key)
        path = self._path(key)
        with self._locked(key) as lock:
            current = self.read(key)
            if current is None or self._token(current) != token:
                return False
            try:
                path.unlink()
                lock.unlink()
            except OSError as exc:
                raise StoreError(f"{self.display(key)}: cannot delete: {exc.strerror}") from exc
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop
                break
            parent = parent.parent
        return True

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


# --------------------------------------------------------------------------------------
# S3
