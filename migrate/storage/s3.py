"""S3 prefixes as stores: boto3 for listings, metadata and resume records; TensorStore's
``s3`` kvstore (specs from :meth:`S3Store.kvstore_spec`) for chunks."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from migrate.errors import StoreError
from migrate.storage import iocounts, retries, s3_reach
from migrate.storage.base import ConditionalWritesUnsupportedError, Store, join_key
from migrate.storage.keys import check_key
from migrate.storage.s3_settings import (
    _ENV_KEYS,
    _NOT_FOUND,
    TS_RETRY_DELAYS,
    S3Options,
    S3Settings,
    _error_code,
    _is_transient,
    describe_s3_error,
    request_failures,
    resolve_s3,
    retry_delay,
)


def _make_client(settings: S3Settings) -> Any:
    """One boto3 client per settings (and AWS environment, where boto3 finds the keys) in a
    process, shared by every store that uses them: clients are thread-safe, and making one
    costs ~0.1 s of CPU, which a bulk run over hundreds of datasets, each with its own
    stores, would pay again and again."""
    environment = repr([(key, os.environ.get(key)) for key in _ENV_KEYS])
    return _shared_client(settings, environment)


@functools.lru_cache(maxsize=16)
def _shared_client(settings: S3Settings, _environment: str) -> Any:
    import boto3
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        # S3Store retries itself, on TensorStore's schedule: one policy for both clients
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=64,
        **({"signature_version": UNSIGNED} if settings.anonymous else {}),
        # S3-compatible servers all understand path-style addressing; not all resolve
        # bucket host names
        **({"s3": {"addressing_style": "path"}} if settings.endpoint_url else {}),
    )
    session = botocore.session.get_session()
    # Timestamps (LastModified) stay the strings the server sent: nothing here reads them,
    # and parsing each with dateutil was half of the client's time in a listing.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return boto3.session.Session(botocore_session=session).client(
        "s3", endpoint_url=settings.endpoint_url, config=config
    )


T = TypeVar("T")


def retry_reason(exc: BaseException) -> str:
    """Why a request failed, in a few words: ``503 SlowDown``, or the connection error."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = _error_code(exc) or "error"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"HTTP {status}" if code == str(status) else f"{status or ''} {code}".strip()
    for name, words in _CONNECTION_FAILURES.items():
        if name in {cls.__name__ for cls in type(exc).__mro__}:
            return words
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


_CONNECTION_FAILURES = {
    "EndpointConnectionError": "cannot connect",
    "ConnectionClosedError": "connection closed before the response",
    "ReadTimeoutError": "read timed out",
    "ConnectTimeoutError": "connect timed out",
    "ResponseStreamingError": "response cut short (connection reset)",
    "ProtocolError": "response cut short (connection reset)",
    "IncompleteRead": "response cut short",
    "IncompleteReadError": "response cut short",
    "ResponseParserError": "response cut short (unparsable)",
    "RemoteDisconnected": "connection closed before the response",
    "FlexibleChecksumError": "checksum mismatch (the body was cut or altered on the way)",
}
"""botocore's connection failures in a few words (their messages repeat the whole URL)."""


class S3Requests:
    """The boto3 side of one bucket: the client (thread-safe, made on first use), idempotent
    requests retried on TensorStore's schedule, listings page by page, deletes in batches.

    Keys here are full object keys; ``where`` is the location a failure message names.
    Picklable (for remote workers): the client is rebuilt, and the credentials resolved
    again, where it is unpickled.
    """

    def __init__(self, bucket: str, options: S3Options) -> None:
        self.bucket = bucket
        self.options = options
        self.settings = resolve_s3(options)
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        del state["_lock"]
        del state["settings"]
        # a worker process inherits what this one knows: an outage mid-run is ridden out
        state["_answered"] = s3_reach.has_answered(self._endpoint)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        answered = state.pop("_answered", False)
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.settings = resolve_s3(self.options)
        if answered:
            s3_reach.mark_answered(self._endpoint)

    @property
    def client(self) -> Any:
        """The boto3 client (thread-safe; made on first use)."""
        with self._lock:
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    def call(self, verb: str, where: str, operation: Callable[[], T]) -> T:
        """Run one idempotent request, retrying transient failures; a StoreError naming
        ``where`` when it keeps failing or fails for good. An endpoint that has never
        answered gets a few quiet attempts only (:mod:`migrate.storage.s3_reach`)."""
        attempt = 1
        started = time.monotonic()
        while True:
            try:
                result = operation()
            except request_failures() as exc:
                if not s3_reach.no_answer(exc):
                    s3_reach.mark_answered(self._endpoint)
                elif not s3_reach.has_answered(self._endpoint):
                    self._wait_for_a_first_answer(verb, where, exc, attempt, started)
                    attempt += 1
                    continue
                if attempt >= self.settings.max_attempts or not _is_transient(exc):
                    message = describe_s3_error(exc, self.settings)
                    raise StoreError(f"{where}: cannot {verb}: {message}") from exc
                delay = retry_delay(attempt)
                iocounts.count_retry()
                limit = self.settings.max_attempts
                retries.notify(retries.Retry(where, retry_reason(exc), attempt, limit, delay))
            else:
                s3_reach.mark_answered(self._endpoint)
                return result
            time.sleep(delay)
            attempt += 1

    @property
    def _endpoint(self) -> tuple[str, str]:
        return s3_reach.endpoint_key(self.settings.endpoint_url, self.settings.region, self.bucket)

    def _wait_for_a_first_answer(
        self, verb: str, where: str, exc: BaseException, attempt: int, started: float
    ) -> None:
        """After failed ``attempt`` of a request whose endpoint has never answered this
        process: wait quietly before the next one, or, after the last of the few it gets,
        raise the StoreError that says so."""
        if attempt < min(s3_reach.NEVER_ANSWERED_ATTEMPTS, self.settings.max_attempts):
            iocounts.count_retry()
            time.sleep(retry_delay(attempt))
            return
        endpoint = self.settings.endpoint_url or f"AWS S3 ({self.settings.region or 'no region'})"
        raise StoreError(
            f"{where}: cannot {verb}: no answer from the S3 endpoint {endpoint} "
            f"({s3_reach.no_answer_reason(exc)}; {attempt} attempts in "
            f"{time.monotonic() - started:.0f} s); check the address (--endpoint-url, "
            "AWS_ENDPOINT_URL) and that the network reaches it"
        ) from exc

    def get(self, key: str, where: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        from botocore.exceptions import ClientError

        def get() -> bytes | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise
            data = bytes(response["Body"].read())
            iocounts.count_read(len(data))
            return data

        return self.call("read", where, get)

    def head(self, key: str, where: str) -> tuple[int, str] | None:
        """(size, ETag) of the object, or None when it does not exist."""
        from botocore.exceptions import ClientError

        def head() -> tuple[int, str] | None:
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise
            return int(response.get("ContentLength", 0)), str(response.get("ETag", ""))

        return self.call("read", where, head)

    def put(self, key: str, data: bytes, where: str) -> None:
        """Create or replace the object."""
        self.call(
            "write",
            where,
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data),
        )
        iocounts.count_written(len(data))

    def pages(self, where: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The pages of a listing (``list_objects_v2`` arguments; each request retried on
        its own)."""
        token: str | None = None
        while True:
            arguments = {**kwargs, **({"ContinuationToken": token} if token else {})}
            request = functools.partial(
                self.client.list_objects_v2, Bucket=self.bucket, **arguments
            )
            page: dict[str, Any] = self.call("list", where, request)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, batches: list[list[str]], where: str) -> None:
        """Delete every key of ``batches``, up to 1000 per request (S3's limit)."""
        for batch in batches:
            for start in range(0, len(batch), 1000):
                objects = [{"Key": key} for key in batch[start : start + 1000]]
                if objects:
                    self._delete_objects(objects, where)

    def _delete_objects(self, objects: list[dict[str, str]], where: str) -> None:
        response = self.call(
            "delete",
            where,
            lambda: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            ),
        )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(
                f"s3://{self.bucket}/{first.get('Key')}: cannot delete: "
                f"{first.get('Code')}: {first.get('Message')} "
                f"({len(errors)} object(s) not deleted)"
            )


class S3Store(Store):
    """A prefix ``s3://bucket/prefix`` of an S3 (or S3-compatible) bucket.

    Small requests are latency-bound (tens of milliseconds each, whatever their size), so
    metadata is read and written many at a time (:attr:`concurrency`).

    boto3 lists, reads and writes metadata and resume records (through
    :class:`S3Requests`); TensorStore's ``s3`` kvstore, configured identically through
    :meth:`kvstore_spec`, moves the chunks. Both retry transient failures the same way:
    ``max_attempts`` attempts, backoff from 0.5 s doubling up to 10 s. Picklable (for remote
    workers): the client is rebuilt, and the credentials resolved again, where the store is
    unpickled.
    """

    def __init__(self, url: str, *, read_only: bool, options: S3Options | None = None) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"{url}: expected s3://bucket/prefix")
        self.bucket = bucket
        self.concurrency = 32  # within the client's connection pool (max_pool_connections)
        self.prefix = join_key(prefix)
        self.options = options or S3Options()
        self._requests = S3Requests(bucket, self.options)
        root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        super().__init__(root, read_only=read_only)

    @property
    def settings(self) -> S3Settings:
        """How S3 is reached (resolved from :attr:`options`)."""
        return self._requests.settings

    @property
    def client(self) -> Any:
        """The boto3 client (thread-safe; made on first use)."""
        return self._requests.client

    def _key(self, key: str) -> str:
        """The full object key of ``key``, which must be made of plain segments
        (:func:`~migrate.storage.keys.check_key`): S3 stores ``..`` literally, but a file
        system or an HTTP client that normalizes URL paths would climb out of the prefix."""
        return join_key(self.prefix, check_key(key, self.url))

    def _dir(self, key: str) -> str:
        """The S3 prefix of the "directory" ``key``: '' or 'a/b/'."""
        full = self._key(key)
        return f"{full}/" if full else ""

    def read(self, key: str) -> bytes | None:
        return self._requests.get(self._key(key), self.display(key))

    def write(self, key: str, data: bytes) -> None:
        self._check_writable(key)
        self._requests.put(self._key(key), data, self.display(key))

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix)
        where = self.display(prefix)
        exact = self._key(prefix)
        batches: list[list[str]] = [[exact]] if exact else []
        for page in self._requests.pages(where, Prefix=self._dir(prefix)):
            batches.append([item["Key"] for item in page.get("Contents", [])])
        self._requests.delete(batches, where)

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        dirs, files = self.list_dir_stats(prefix)
        return dirs, [name for name, _size, _stamp in files]

    def list_dir_stats(self, prefix: str) -> tuple[list[str], list[tuple[str, int, str]]]:
        base = self._dir(prefix)
        dirs: list[str] = []
        files: list[tuple[str, int, str]] = []
        for page in self._requests.pages(self.display(prefix), Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(base) :].rstrip("/")
                if name:
                    dirs.append(name)
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name:
                    files.append((name, int(item.get("Size", 0)), str(item.get("ETag", ""))))
        return sorted(dirs), sorted(files)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self._dir(prefix)
        for page in self._requests.pages(self.display(prefix), Prefix=base):
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name and not name.endswith("/"):  # skip "directory marker" objects
                    yield name

    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        base = self._dir(prefix)
        for page in self._requests.pages(self.display(prefix), Prefix=base):
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name and not name.endswith("/"):
                    yield name, int(item.get("Size", 0)), str(item.get("ETag", ""))

    def stat(self, key: str) -> tuple[int, str] | None:
        return self._requests.head(self._key(key), self.display(key))

    def exists_prefix(self, prefix: str) -> bool:
        pages = self._requests.pages(self.display(prefix), Prefix=self._dir(prefix), MaxKeys=1)
        for page in pages:
            return bool(page.get("Contents") or page.get("CommonPrefixes"))
        return False

    # Conditional writes: PutObject with If-None-Match: * (create) or If-Match: <ETag>
    # (replace), DeleteObject with If-Match. A server that answers NotImplemented (or HTTP
    # 501) raises ConditionalWritesUnsupportedError; one that ignores the headers is detected by
    # the caller (migrate.dest.lease), which knows what it wrote.

    def _conditional(self, verb: str, key: str, operation: Callable[[], T]) -> T | None:
        """``operation`` (retried like any request); None when its precondition failed."""
        from botocore.exceptions import ClientError

        def attempt() -> T | None:
            try:
                return operation()
            except ClientError as exc:
                code = _error_code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    return None
                if code in ("NotImplemented", "501") or status == 501:
                    raise ConditionalWritesUnsupportedError(
                        f"{self.display(key)}: the S3 server does not support conditional "
                        f"writes ({code or status})"
                    ) from exc
                raise

        return self._requests.call(verb, self.display(key), attempt)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        def get() -> tuple[bytes, str] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise
            return bytes(response["Body"].read()), str(response.get("ETag", ""))

        return self._requests.call("read", self.display(key), get)

    def create_if_absent(self, key: str, data: bytes) -> str | None:
        self._check_writable(key)
        response = self._conditional(
            "write",
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            ),
        )
        return None if response is None else str(response.get("ETag", ""))

    def replace_if_unchanged(self, key: str, data: bytes, token: str) -> str | None:
        self._check_writable(key)
        response = self._conditional(
            "write",
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=token
            ),
        )
        return None if response is None else str(response.get("ETag", ""))

    def delete_if_unchanged(self, key: str, token: str) -> bool:
        from botocore.exceptions import ClientError

        self._check_writable(key)

        def delete() -> bool:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=token)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return False
                raise
            return True

        return bool(self._conditional("delete", key, delete))

    def root_is_object(self) -> bool:
        return bool(self.prefix) and self.read("") is not None

    def kvstore_spec(self, key: str = "") -> dict[str, Any]:
        settings = self.settings
        spec: dict[str, Any] = {"driver": "s3", "bucket": self.bucket, "path": self._dir(key)}
        region = settings.region or ("us-east-1" if settings.endpoint_url else None)
        if settings.endpoint_url:
            spec["endpoint"] = settings.endpoint_url
        if region:
            spec["aws_region"] = region
        spec["aws_credentials"] = dict(settings.credentials)
        spec["s3_request_retries"] = {"max_retries": settings.max_attempts, **TS_RETRY_DELAYS}
        return spec
