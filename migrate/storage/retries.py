"""Who hears about a storage request that failed and is tried again: a small listener
registry. The storage backends call :func:`notify` before each retry; the CLI subscribes
(:func:`listening`) to show the retry as it happens and to log it.

Only requests this package makes itself are seen (boto3: listings, metadata, resume
records). TensorStore retries its own requests (the chunks) internally and tells no one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """One failed attempt of a request that is about to be tried again."""

    where: str
    """The location the request was for, e.g. ``s3://bucket/a/b.zarr/.zattrs``."""
    reason: str
    """Why it failed, short: ``503 SlowDown``, ``connection refused``."""
    attempt: int
    """The attempt that failed (1, 2, …)."""
    max_attempts: int
    delay: float
    """Seconds before the next attempt."""

    def describe(self) -> str:
        return f"retrying {self.where}: {self.reason} (attempt {self.attempt}/{self.max_attempts})"


Listener = Callable[[Retry], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def notify(retry: Retry) -> None:
    """Tell every listener about ``retry`` (from the thread that will retry); a listener
    that raises does not stop the request."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(retry)
        except Exception:  # a broken display must not fail a storage request
            continue


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` for every retry while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
