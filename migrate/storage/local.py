"""Local directories as stores.

Files are written whole under a temporary name beside their target, then renamed. The
temporary name says who writes it (:func:`temporary_name`: host, pid and the process's start
time), so that a later run can tell the files a killed writer left behind from those a
running one is still writing (:meth:`LocalStore.remove_dead_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import re
import shutil
import socket
import stat as stat_module
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrate.errors import StoreError
from migrate.storage import iocounts
from migrate.storage.base import Store, join_key
from migrate.storage.keys import UnsafeKeyError, check_key

DELETE_ATTEMPTS = 5
"""A folder another process writes into while it is deleted is tried this many times."""
LOCK_PATIENCE = 10.0
"""Seconds a conditional write waits for the lock file another process holds."""

DANGLING_STAMP = "dangling-link"
"""The stamp :meth:`LocalStore.list_stats` gives a symbolic link to nothing: it is listed
(the work unit it falls in is copied, and fails naming it) rather than taken for an absent,
all-zero block."""

TEMPORARY = re.compile(r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>[0-9]+)-(?P<start>[0-9]+)-[0-9]+\.tmp$")
"""The end of a temporary file's name: ``.<host>-<pid>-<process start>-<thread>.tmp``."""


@functools.cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "localhost"


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``): 0 where the
    system does not say, None when there is no such process (or only a zombie: it has
    exited, its parent has not yet noticed)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])  # field 22 of proc(5); the first two end at ")"
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _signal_probe(pid)
    except (OSError, IndexError, ValueError):
        return _signal_probe(pid)


def _signal_probe(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        return 0  # it exists (owned by someone else)
    return 0


@functools.cache
def _writer(pid: int) -> str:
    return f"{_host()}-{pid}-{_process_start(pid) or 0}"


TENSORSTORE_LOCK = ".__lock"
"""Suffix of the file TensorStore's ``file`` kvstore writes a key's new value into, under an
exclusive lock on it (Linux: an open-file-description lock), before renaming it to the key:
a writer killed mid-write leaves ``<key>.__lock`` behind."""


def _remove_unheld_lock(path: str) -> int:
    """Remove TensorStore's lock file ``path`` when no process holds its lock (its writer is
    gone: the kernel dropped the lock with it); 1 when removed. Unlinked while we hold the
    lock ourselves, as TensorStore's own protocol expects (a writer that opens it meanwhile
    finds it unlinked and starts again)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # a live writer holds it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return 1
        return 0
    finally:
        os.close(fd)


def temporary_name(name: str) -> str:
    """The temporary file name under which this thread writes the file ``name``."""
    return f".{name}.{_writer(os.getpid())}-{threading.get_ident()}.tmp"


def writer_alive(name: str) -> bool:
    """Whether the writer of the temporary file ``name`` may still be running: True unless
    its name says it was written on this host by a process that is gone (or whose pid now
    belongs to a process started later). Names of other forms are never called dead."""
    match = TEMPORARY.search(name)
    if match is None or match["host"] != _host():
        return True
    start = _process_start(int(match["pid"]))
    if start is None:
        return False
    recorded = int(match["start"])
    return start == 0 or recorded == 0 or start == recorded


def _lock_holder(lock: Path) -> str:
    """Who holds the ``flock`` on ``lock``, from ``/proc/locks`` (Linux): "pid N", or
    "another process" where the system does not say."""
    try:
        inode = os.stat(lock).st_ino
        with open("/proc/locks") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                    return f"pid {fields[4]}"
    except (OSError, ValueError):
        pass
    return "another process"


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
    """A directory on a local file system.

    Every key is checked (:func:`~migrate.storage.keys.check_key`): made of plain segments,
    so it names a path under the root. Symbolic links are followed where the store only
    reads (a source assembled from links elsewhere reads as one tree), except a directory
    link that leads back to a directory on its own path (a loop), which is an error; a store
    that writes (DEST) refuses any key whose path, its links resolved, leaves the root, so
    nothing is ever written, deleted or handed to TensorStore outside it.
    """

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool) -> None:
        # absolute, with "." and ".." resolved: TensorStore refuses ".." in a file path
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self._real_root = os.path.realpath(self.root)
        super().__init__(str(self.root), read_only=read_only)

    def path(self, key: str) -> Path:
        """The local path of ``key``, after the checks of the class docstring."""
        check_key(key, self.url)
        if not key:
            return self.root
        path = self.root / key
        if not self.read_only:
            real = os.path.realpath(path)
            if not self._inside(real):
                raise UnsafeKeyError(
                    f"{path}: leads to {real} (through a symbolic link), outside the "
                    f"destination {self.root}; refusing to write there"
                )
        return path

    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep)

    def _check_no_loop(self, key: str, entry: os.DirEntry[str]) -> None:
        """Raise StoreError when ``entry`` (found listing ``key``) is a link to a directory
        that holds, or is, a directory on its own path: following it would never end."""
        if not entry.is_symlink():
            return
        target = os.path.realpath(entry.path)
        parts = key.removesuffix("/").split("/") if key else []
        for depth in range(len(parts), -1, -1):
            on_path = os.path.realpath(self.root.joinpath(*parts[:depth]))
            if on_path == target or on_path.startswith(target.rstrip(os.sep) + os.sep):
                raise StoreError(
                    f"{entry.path}: a symbolic link to {target}, which holds the link itself: "
                    "following it would loop; remove it"
                )

    def read(self, key: str) -> bytes | None:
        try:
            data = self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            dangling = dangling_link(self.path(key))
            if dangling is not None:
                raise StoreError(f"cannot read {dangling}") from None
            return None
        except OSError as exc:
            raise StoreError(f"{self.display(key)}: cannot read: {exc.strerror}") from exc
        iocounts.count_read(len(data))
        return data

    def write(self, key: str, data: bytes) -> None:
        self._check_writable(key)
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(temporary_name(path.name))
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"{self.display(key)}: cannot write: {exc.strerror}") from exc
        iocounts.count_written(len(data))

    def root_is_object(self) -> bool:
        return self.root.is_file()

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        """Hold an exclusive ``flock`` on the lock file beside ``key`` (``<key>.lock``)
        for one conditional write; yields the lock file's path (its holder may delete it).

        A lock file deleted by its previous holder while this process waited is detected
        (the locked inode is no longer the one at the path) and the lock is taken again."""
        path = self.path(key)
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
                self._flock(fd, lock)
                try:
                    same = os.stat(lock).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield lock
                    return
            finally:
                os.close(fd)

    def _flock(self, fd: int, lock: Path) -> None:
        """Take the lock on ``fd``, waiting at most :data:`LOCK_PATIENCE` seconds for the
        process that holds it; then StoreError names the lock file and its holder."""
        deadline = time.monotonic() + LOCK_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _lock_holder(lock)
                    raise StoreError(
                        f"{lock}: held by {holder} for more than {LOCK_PATIENCE:.0f} s (a "
                        "conditional write takes milliseconds: a frozen or hung process); "
                        "stop it, or delete the lock file if no cellmap-migrate runs here"
                    ) from None
                time.sleep(0.05)

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
        path = self.path(key)
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
        path = self.path(prefix)
        for attempt in range(DELETE_ATTEMPTS):
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
                return
            except FileNotFoundError:
                continue  # removed meanwhile by someone else: look again
            except OSError as exc:  # a writer added a file meanwhile ("Directory not empty")
                if exc.errno != errno.ENOTEMPTY or attempt == DELETE_ATTEMPTS - 1:
                    raise StoreError(f"{self.display(prefix)}: cannot delete: {exc}") from exc

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(self.path(prefix)) as entries:
                for entry in entries:
                    is_dir = entry.is_dir()
                    if is_dir:
                        self._check_no_loop(prefix, entry)
                    (dirs if is_dir else files).append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise StoreError(f"{self.display(prefix)}: cannot list: {exc.strerror}") from exc
        return sorted(dirs), sorted(files)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.path(prefix)
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(base).as_posix()
            for name in filenames:
                yield name if rel == "." else f"{rel}/{name}"

    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        pending = [("", self.path(prefix))]
        while pending:
            rel, path = pending.pop()
            try:
                with os.scandir(path) as entries:
                    found = list(entries)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise StoreError(f"{path}: cannot list: {exc.strerror}") from exc
            for entry in found:
                key = rel + entry.name
                try:
                    if entry.is_dir():
                        self._check_no_loop(join_key(prefix, rel), entry)
                        pending.append((key + "/", Path(entry.path)))
                        continue
                    stat = entry.stat()
                except FileNotFoundError:
                    if entry.is_symlink():  # a dangling link: a lost object, not an absent one
                        yield key, 0, DANGLING_STAMP  # (reading it fails, naming the link)
                    continue  # removed meanwhile: not an object
                yield key, stat.st_size, str(stat.st_mtime_ns)

    def stat(self, key: str) -> tuple[int, str] | None:
        try:
            found = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"{self.display(key)}: cannot read: {exc.strerror}") from exc
        if not stat_module.S_ISREG(found.st_mode):
            return None
        return found.st_size, str(found.st_mtime_ns)

    def remove_dead_temporaries(self, prefix: str, *, recursive: bool = True) -> int:
        self._check_writable(prefix)
        removed = 0
        pending = [self.path(prefix)]
        while pending:
            path = pending.pop()
            try:
                with os.scandir(path) as entries:
                    found = list(entries)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in found:
                if entry.name.endswith(".tmp") and not writer_alive(entry.name):
                    try:
                        os.unlink(entry.path)
                        removed += 1
                    except FileNotFoundError:
                        pass
                elif entry.name.endswith(TENSORSTORE_LOCK) and entry.is_file(follow_symlinks=False):
                    removed += _remove_unheld_lock(entry.path)
                elif recursive and entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
        return removed

    def kvstore_spec(self, key: str = "") -> dict[str, Any]:
        return {"driver": "file", "path": str(self.path(key)) + "/"}


# --------------------------------------------------------------------------------------
# S3
