"""Whether an S3 endpoint has ever answered this process, and what that changes about
retrying a request that could not reach it.

A request that cannot connect to an endpoint that has answered before (any HTTP response,
an error status included) meets an outage: it is retried on the full schedule
(:data:`~migrate.storage.s3_settings.DEFAULT_MAX_ATTEMPTS` attempts, about a minute), as a
bulk run must when the storage goes away mid-run. An endpoint that has never answered is
most likely a wrong address, a closed port or a network that does not reach it: its
connection failures get :data:`NEVER_ANSWERED_ATTEMPTS` quiet attempts (a few seconds),
then one error that says so.
"""

from __future__ import annotations

import threading
from typing import Any

NEVER_ANSWERED_ATTEMPTS = 3
"""Attempts of a request whose endpoint has never answered and cannot be connected to: with
the backoff of :func:`~migrate.storage.s3_settings.retry_delay` about 3 s in all."""

_answered: set[tuple[str, str]] = set()
_lock = threading.Lock()


def endpoint_key(endpoint_url: str | None, region: str | None, bucket: str) -> tuple[str, str]:
    """The endpoint a bucket is reached at: the configured URL, else AWS in a region."""
    return (endpoint_url or f"aws {region or 'default region'}", bucket)


def mark_answered(key: tuple[str, str]) -> None:
    """The endpoint of ``key`` answered a request (successfully or with an error status)."""
    if key not in _answered:
        with _lock:
            _answered.add(key)


def has_answered(key: tuple[str, str]) -> bool:
    return key in _answered


def no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` means that no response at all came back: the connection was refused,
    could not be made in time (or the host name did not resolve), or was closed before
    any response. A response cut short, a read timeout on a made connection, or any HTTP
    status is an answer."""
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    return isinstance(exc, EndpointConnectionError | ConnectionClosedError)


def no_answer_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words: ``connection refused``, ``connect timed
    out``, the resolver's message, …"""
    from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError

    if isinstance(exc, ConnectTimeoutError):
        return "connect timed out"
    if isinstance(exc, ConnectionClosedError):
        return "connection closed before any response"
    cause: Any = getattr(exc, "kwargs", {}).get("error")
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        errno_text = getattr(cause, "strerror", None)
        if errno_text:
            return str(errno_text).lower()
        text = str(cause)
        if "refused" in text.lower():
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return "cannot connect"
