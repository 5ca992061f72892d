"""Storage locations: local directories and S3 prefixes behind one small interface.

Keys are '/'-separated paths relative to the store's root. Sources are opened read-only:
every write method of a read-only store raises, so no code path can modify a source.

S3 goes through two clients that share one resolved configuration (:class:`S3Settings`):
boto3 for listings, metadata and resume records, TensorStore's ``s3`` kvstore (specs from
:meth:`Store.kvstore_spec`) for chunks. Neither ever carries a secret in a spec, URL or
message: TensorStore is told *where* to find credentials (environment, profile files), never
the credentials themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from migrate.errors import StoreError


def join_key(*parts: str) -> str:
    """Join key parts with '/', dropping empty parts and stray slashes."""
    return "/".join(piece for part in parts for piece in part.split("/") if piece)


A = TypeVar("A")
R = TypeVar("R")


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


# --------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------

DEFAULT_MAX_ATTEMPTS = 10
"""Attempts per S3 request, for boto3 and TensorStore alike, unless ``AWS_MAX_ATTEMPTS`` sets
another number. With the backoff below (1 s doubling up to 10 s between attempts) this
rides out an outage of about a minute before the run stops."""

RETRY_INITIAL_DELAY = 0.5
RETRY_MAX_DELAY = 10.0
TS_RETRY_DELAYS = {
    "initial_delay": f"{RETRY_INITIAL_DELAY:g}s",
    "max_delay": f"{RETRY_MAX_DELAY:g}s",
}

_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_MAX_ATTEMPTS",
    "HOME",
)
"""The environment that decides how S3 is reached (resolutions are cached per its value)."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3, as the user gave it; ``None`` means "from the standard AWS settings".

    ``endpoint_url``: an S3-compatible server (default: ``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, else Amazon). ``region``: default ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION`` / the profile's. ``anon``: True sends unsigned requests (public
    buckets), False requires credentials, None uses credentials when any are configured and
    anonymous requests otherwise.
    """

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool | None = None

    def for_writing(self) -> S3Options:
        """The options for a location that is written: ``anon=True`` only ever meant "read
        public buckets anonymously", so it falls back to the configured credentials."""
        return dataclasses.replace(self, anon=None) if self.anon else self


@dataclass(frozen=True)
class S3Settings:
    """The resolved configuration that boto3 and TensorStore share. Holds no secret: the
    TensorStore credentials say where to find keys (environment, profile files), not what
    they are."""

    endpoint_url: str | None
    region: str | None
    anonymous: bool
    credentials: tuple[tuple[str, str], ...]
    """TensorStore's ``aws_credentials`` resource, as items."""
    credential_source: str
    """Where the credentials come from, for messages (never the credentials themselves)."""
    max_attempts: int


def resolve_s3(options: S3Options) -> S3Settings:
    """Resolve ``options`` against the AWS environment (cached per options and environment)."""
    env = repr([(key, os.environ.get(key)) for key in _ENV_KEYS]).encode()
    return _resolve_s3(options, hashlib.sha256(env).hexdigest())


def _max_attempts() -> int:
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not raw:
        return DEFAULT_MAX_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StoreError(f"AWS_MAX_ATTEMPTS={raw!r}: expected a positive integer")
    return value


@functools.lru_cache(maxsize=16)
def _resolve_s3(options: S3Options, _environment: str) -> S3Settings:
    import boto3
    import botocore.session
    from botocore.exceptions import BotoCoreError

    endpoint = (
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )
    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise StoreError(f"S3 endpoint {endpoint!r}: expected an http:// or https:// URL")
    attempts = _max_attempts()
    core = botocore.session.Session()
    try:
        session = boto3.session.Session(botocore_session=core)
        region = options.region or os.environ.get("AWS_REGION") or session.region_name or None
        found = None if options.anon else session.get_credentials()
    except BotoCoreError as exc:  # a malformed or missing profile
        raise StoreError(f"AWS configuration: {exc}") from exc
    if options.anon or found is None:
        if options.anon is False:
            raise StoreError(
                "no AWS credentials found (environment variables, profile or instance role); "
                "configure some, or read a public bucket with --anon"
            )
        source = (
            "anonymous access (--anon)"
            if options.anon
            else "anonymous access (no AWS credentials configured)"
        )
        return S3Settings(endpoint, region, True, (("type", "anonymous"),), source, attempts)
    method = str(getattr(found, "method", "") or "unknown")
    credentials, source = _tensorstore_credentials(method, session.profile_name, core)
    return S3Settings(endpoint, region, False, credentials, source, attempts)


def _tensorstore_credentials(
    method: str, profile: str, core: Any
) -> tuple[tuple[tuple[str, str], ...], str]:
    """TensorStore's credentials provider for what botocore found, and a description.

    Naming the exact provider (rather than TensorStore's default chain) makes both clients use
    the same credentials and keeps the AWS C libraries from logging errors about every
    config file and metadata service they probe and do not find.
    """
    if method == "env":
        return (("type", "environment"),), "credentials from the AWS_* environment variables"
    if method in ("shared-credentials-file", "config-file", "assume-role"):
        files = []
        for variable in ("credentials_file", "config_file"):
            path = os.path.expanduser(str(core.get_config_variable(variable) or ""))
            # a missing file is an empty one; naming /dev/null keeps TensorStore quiet about it
            files.append(path if path and os.path.isfile(path) else os.devnull)
        return (
            ("type", "profile"),
            ("profile", profile),
            ("credentials_file", files[0]),
            ("config_file", files[1]),
        ), f"credentials of AWS profile {profile!r}"
    if method == "iam-role":
        return (("type", "imds"),), "credentials of the EC2 instance role"
    if method == "container-role":
        return (("type", "ecs"),), "credentials of the ECS container role"
    return (("type", "default"),), f"AWS credentials ({method})"


_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
_DENIED = (
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
)
_TRANSIENT = (
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
)


def _error_code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _is_transient(exc: BaseException) -> bool:
    """A failure that the same request may not meet again: no connection, a cut or timed
    out response, throttling, a server error."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as ConnectionFailure

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or _error_code(exc) in _TRANSIENT
    return isinstance(exc, ConnectionFailure | HTTPClientError | IncompleteReadError | OSError)


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, …): TensorStore's
    schedule (``TS_RETRY_DELAYS``), with ±20 % jitter."""
    delay = min(RETRY_INITIAL_DELAY * 2.0**attempt, RETRY_MAX_DELAY)
    return delay * random.uniform(0.8, 1.2)


def describe_s3_error(exc: BaseException, settings: S3Settings) -> str:
    """One line about a boto3 failure, without request signatures or credentials."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "error")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"HTTP {status}" if code == str(status) else code
        text += f" (HTTP {status})" if status and code != str(status) else ""
        message = str(error.get("Message") or "")
        if message and message != code:
            text += f": {message}"
        if code in _DENIED:
            text += f"; using {settings.credential_source}"
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _is_transient(exc):
        text += f" (gave up after {settings.max_attempts} attempts)"
    return text


def _make_client(settings: S3Settings) -> Any:
    import boto3
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
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url, config=config)


T = TypeVar("T")


class S3Store(Store):
    """A prefix ``s3://bucket/prefix`` of an S3 (or S3-compatible) bucket.

    Small requests are latency-bound (tens of milliseconds each, whatever their size), so
    metadata is read and written many at a time (:attr:`concurrency`).

    boto3 lists, reads and writes metadata and resume records; TensorStore's ``s3`` kvstore,
    configured identically through :meth:`kvstore_spec`, moves the chunks. Both retry
    transient failures the same way: ``max_attempts`` attempts, backoff from 0.5 s doubling
    up to 10 s. Picklable (for remote workers): the client is rebuilt, and the credentials
    resolved again, where the store is unpickled.
    """

    def __init__(self, url: str, *, read_only: bool, options: S3Options | None = None) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"{url}: expected s3://bucket/prefix")
        self.bucket = bucket
        self.concurrency = 32  # within the client's connection pool (max_pool_connections)
        self.prefix = join_key(prefix)
        self.options = options or S3Options()
        self.settings = resolve_s3(self.options)
        self._client: Any = None
        self._lock = threading.Lock()
        root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        super().__init__(root, read_only=read_only)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        del state["_lock"]
        del state["settings"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.settings = resolve_s3(self.options)

    @property
    def client(self) -> Any:
        """The boto3 client (thread-safe; made on first use)."""
        with self._lock:
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _dir(self, key: str) -> str:
        """The S3 prefix of the "directory" ``key``: '' or 'a/b/'."""
        full = self._key(key)
        return f"{full}/" if full else ""

    def _request(self, verb: str, key: str, operation: Callable[[], T]) -> T:
        """Run one idempotent request, retrying transient failures; a StoreError naming
        ``key`` when it keeps failing or fails for good."""
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 1
        while True:
            try:
                return operation()
            except (ClientError, BotoCoreError, OSError) as exc:
                if attempt >= self.settings.max_attempts or not _is_transient(exc):
                    message = describe_s3_error(exc, self.settings)
                    raise StoreError(f"{self.display(key)}: cannot {verb}: {message}") from exc
            time.sleep(retry_delay(attempt))
            attempt += 1

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def get() -> bytes | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise
            return bytes(response["Body"].read())

        return self._request("read", key, get)

    def write(self, key: str, data: bytes) -> None:
        self._check_writable(key)
        self._request(
            "write",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data),
        )

    def _pages(self, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The pages of a listing (each request retried on its own)."""
        token: str | None = None
        while True:
            arguments = {**kwargs, **({"ContinuationToken": token} if token else {})}
            request = functools.partial(
                self.client.list_objects_v2, Bucket=self.bucket, **arguments
            )
            page: dict[str, Any] = self._request("list", key, request)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix)
        exact = self._key(prefix)
        batches: list[list[str]] = [[exact]] if exact else []
        for page in self._pages(prefix, Prefix=self._dir(prefix)):
            batches.append([item["Key"] for item in page.get("Contents", [])])
        for batch in batches:
            for start in range(0, len(batch), 1000):
                objects = [{"Key": key} for key in batch[start : start + 1000]]
                if objects:
                    self._delete(prefix, objects)

    def _delete(self, prefix: str, objects: list[dict[str, str]]) -> None:
        response = self._request(
            "delete",
            prefix,
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

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        base = self._dir(prefix)
        dirs: list[str] = []
        files: list[str] = []
        for page in self._pages(prefix, Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(base) :].rstrip("/")
                if name:
                    dirs.append(name)
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name:
                    files.append(name)
        return sorted(dirs), sorted(files)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self._dir(prefix)
        for page in self._pages(prefix, Prefix=base):
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name and not name.endswith("/"):  # skip "directory marker" objects
                    yield name

    def exists_prefix(self, prefix: str) -> bool:
        for page in self._pages(prefix, Prefix=self._dir(prefix), MaxKeys=1):
            return bool(page.get("Contents") or page.get("CommonPrefixes"))
        return False

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
