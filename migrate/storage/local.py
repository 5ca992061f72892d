"""Local directories as stores."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrate.errors import StoreError
from migrate.storage.base import Store


def dangling_link(path: Path) -> str | None:
    """Why ``path``, which could not be opened as missing, is not simply missing: a symbolic
    link whose target does not exist (a block file there is not an all-zero block, it is
    lost), or None when nothing is there."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return f"{path}: a symbolic link to {target}, which does not exist"


class LocalStore(Store):
    """A directory on a local file system."""

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool) -> None:
        # absolute, with "." and ".." resolved: TensorStore refuses ".." in a file path
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        super().__init__(str(self.root), read_only=read_only)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            dangling = dangling_link(self._path(key))
            if dangling is not None:
                raise StoreError(f"cannot read {dangling}") from None
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


# --------------------------------------------------------------------------------------
# S3
