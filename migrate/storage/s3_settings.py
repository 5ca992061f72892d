"""How S3 is reached: the user's options resolved once into settings that boto3 and
TensorStore share, and the one retry policy both follow.

Neither client ever carries a secret in a spec, URL or message: TensorStore is told *where*
to find credentials (environment, profile files), never the credentials themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

from migrate.errors import StoreError

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


@functools.cache
def request_failures() -> tuple[type[BaseException], ...]:
    """Every exception type one boto3 request can fail with, transient or not: botocore's
    own, and those it lets through unwrapped (urllib3's ``ProtocolError`` when the body of an
    error response is cut mid-read, ``http.client``'s, a body its parser cannot read)."""
    import http.client

    import urllib3.exceptions
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return (
        ClientError,
        BotoCoreError,
        ResponseParserError,
        OSError,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
    )


def _is_transient(exc: BaseException) -> bool:
    """A failure that the same request may not meet again: no connection, a cut, truncated
    or timed out response (whatever layer reports it: botocore, urllib3, http.client, or a
    body too short to parse), a body whose checksum does not match (cut or altered on the
    way: the stored object has the checksum it was written with), throttling, a server
    error."""
    import http.client

    import urllib3.exceptions
    from botocore.exceptions import (
        ClientError,
        FlexibleChecksumError,
        HTTPClientError,
        IncompleteReadError,
    )
    from botocore.exceptions import ConnectionError as ConnectionFailure
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or _error_code(exc) in _TRANSIENT
    return isinstance(
        exc,
        ConnectionFailure
        | HTTPClientError  # ResponseStreamingError, ReadTimeoutError, ConnectionClosedError
        | IncompleteReadError
        | FlexibleChecksumError  # "Expected checksum … did not match calculated checksum"
        | ResponseParserError  # a response body cut short
        | OSError
        | urllib3.exceptions.ProtocolError  # IncompleteRead, "Connection broken: …"
        | urllib3.exceptions.TimeoutError
        | http.client.IncompleteRead
        | http.client.BadStatusLine,  # RemoteDisconnected
    )


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
