"""Reading an object again when the bytes of a read are in doubt (they do not decode, or do
not check): were they cut short on the way, or are they stored that way?

A middlebox that cuts a response body short and shortens its ``Content-Length`` to match
hands the client a complete-looking response. boto3 catches it when the object has a
checksum (the response's ``x-amz-checksum-*`` header: the read fails and is retried);
TensorStore's S3 reads check no checksum, and not every object has one. Such a cut does not
come twice the same, while bytes that are stored wrong do: so an object is read again until
two reads in a row agree byte for byte, and only those bytes are judged. A local file is not
read through a network: its bytes are what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from migrate.errors import StoreError
from migrate.storage import iocounts, retries
from migrate.storage.base import Store
from migrate.storage.local import LocalStore
from migrate.storage.s3_settings import DEFAULT_MAX_ATTEMPTS


def in_transit(store: Store) -> bool:
    """Are ``store``'s bytes read over a network (where a response may be cut on the way)?"""
    return not isinstance(store, LocalStore)


def max_attempts(store: Store) -> int:
    """Attempts per request on ``store`` (``AWS_MAX_ATTEMPTS`` on S3)."""
    settings = getattr(store, "settings", None)
    return int(getattr(settings, "max_attempts", DEFAULT_MAX_ATTEMPTS))


def read_until_stable(store: Store, key: str, first: bytes | None, why: str) -> bytes | None:
    """The bytes of ``key`` as two reads in a row return them, starting from ``first`` (what
    an earlier read returned, in doubt because of ``why``); ``first`` itself on a local
    store. Each read again is counted and announced as a retry. Raises StoreError when no
    two of the attempts agree."""
    if not in_transit(store):
        return first
    attempts = max_attempts(store)
    where = store.display(key)
    previous = first
    for attempt in range(1, attempts):
        iocounts.count_retry()
        retries.notify(retries.Retry(where, why, attempt, attempts, 0.0))
        again = store.read(key)
        if again == previous:
            return again
        previous = again
        why = "two reads returned different bytes"
    raise StoreError(f"{where}: cannot read: no two of {attempts} reads returned the same bytes")


T = TypeVar("T")


def retry_in_transit(
    store: Store,
    where: str,
    action: Callable[[], T],
    *,
    why: Callable[[Exception], str],
    final: Callable[[Exception], bool] = lambda exc: False,
) -> T:
    """``action`` (a read of ``store`` by a client that checks no checksum: TensorStore),
    tried again at once when it fails and ``store`` is read over a network, up to its
    attempts, each failure but the last announced as a retry (``why`` says what failed,
    ``where`` names the location); the last failure, or one that ``final`` says no retry
    can help, is raised. On a local store ``action`` is tried once."""
    attempts = max_attempts(store) if in_transit(store) else 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts or final(exc):
                raise
            iocounts.count_retry()
            retries.notify(retries.Retry(where, why(exc), attempt, attempts, 0.0))
    raise AssertionError("unreachable")  # pragma: no cover
