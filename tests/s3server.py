"""A real S3 server for tests: moto's standalone server in a subprocess on 127.0.0.1, a TCP
proxy that can cut every connection for a while, and helpers to move trees in and out.

Nothing here mocks boto3 or TensorStore: both talk HTTP to the server (or to the proxy).
"""

from __future__ import annotations

import collections
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

FAKE_KEY_ID = "AKIAFAKEKEYID7Q4X2Z9W"
FAKE_SECRET = "fakeSecret/Zq8Vt3Lm0Np6Rs1Uw5Xy9Ab2Cd4Ef7Gh"
FAKE_TOKEN = "fakeSessionToken+Jk3Mn6Pq9St2Vw5Yz8Bc1Df4Gh7"
SECRETS = (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN)
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 at a free port, in its own process."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        for _attempt in range(3):  # the free port may be taken before moto binds it
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                        return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the test server, independent of the code under test."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def upload_tree(client: Any, root: Path, bucket: str, prefix: str, threads: int = 8) -> int:
    """Upload every file under ``root`` to ``s3://bucket/prefix/...`` with ``threads`` at
    once; returns the count."""
    files = [path for path in sorted(root.rglob("*")) if path.is_file()]

    def put(path: Path) -> None:
        key = f"{prefix}/{path.relative_to(root).as_posix()}".lstrip("/")
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, files))
    return len(files)


def keys(client: Any, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def download_prefix(client: Any, bucket: str, prefix: str, root: Path) -> int:
    """Copy every object under ``s3://bucket/prefix/`` into ``root``; returns the count."""
    base = prefix.rstrip("/") + "/"
    found = [item["Key"] for item in keys(client, bucket, base)]

    def get(key: str) -> None:
        path = root / key[len(base) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(get, found))
    return len(found)


def snapshot(client: Any) -> dict[tuple[str, str], str]:
    """(bucket, key) → ETag of every object in every bucket of the server."""
    return {
        (bucket["Name"], item["Key"]): item["ETag"]
        for bucket in client.list_buckets().get("Buckets", [])
        for item in keys(client, bucket["Name"])
    }


Requests = collections.deque[tuple[str, str, str]]
"""The (method, client, path) of each request of a connection whose response has not come
yet."""


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to a target port; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore` (the port stays the same). With ``delay``, every
    piece of a response waits that many seconds first: each small request then takes about
    one round trip to a distant server.

    With ``truncate`` (a fraction, 0 to 1), that fraction of the HTTP responses that have a
    body, chosen by a random generator seeded with ``seed``, is cut after half its body: the
    status line, the headers and the first half go through, then both connections are reset
    (the client meets ``ConnectionResetError`` mid-read). :attr:`truncated` counts them,
    per client (the first word of the request's User-Agent, e.g. ``Boto3/…`` → ``boto3``).

    With ``shorten`` (a fraction), that fraction of the responses that have a body comes
    complete-looking but short, as from a middlebox that cuts a body and fixes the framing:
    the body loses its last 1 byte to half of it, its ``Content-Length`` says the shorter
    length, and every other header is the server's, so a checksum header (``x-amz-checksum-
    crc32``, when the object has one and the client asked for it) is the full body's.
    :attr:`shortened` counts them per client. Only a checksum, or decoding, can tell.
    With ``errors`` (a fraction), that fraction of the responses with a body is replaced by
    a whole ``503 SlowDown`` (the request did reach the server: use it on reads). With
    ``record``, every request is noted (:attr:`requests`: method and path) and the bytes of
    the response bodies counted (:attr:`body_bytes`).
    """

    def __init__(
        self,
        target_port: int,
        delay: float = 0.0,
        *,
        truncate: float = 0.0,
        shorten: float = 0.0,
        errors: float = 0.0,
        record: bool = False,
        seed: int = 0,
    ) -> None:
        self.target_port = target_port
        self.delay = delay
        self.truncate = truncate
        self.shorten = shorten
        self._http = bool(truncate or shorten or errors or record)
        """Forward HTTP message by message (so that responses can be altered): decided once
        for the proxy, not per connection, since a connection accepted while ``truncate``
        is 0 must still be cut when it is set again (boto3 keeps connections open)."""
        self.errors = errors
        self.record = record
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, with ``record``."""
        self.body_bytes = 0
        """Bytes of the response bodies sent to the clients, with ``record``."""
        self.responses_seen: list[tuple[str, str, int]] = []
        """(method, path, body bytes) of every response with a body, with ``record``."""
        self.failed = 0
        """Responses replaced by a 503 so far."""
        self._random = random.Random(seed)
        self.truncated: collections.Counter[str] = collections.Counter()
        """Responses cut after half their body so far, per client."""
        self.shortened: collections.Counter[str] = collections.Counter()
        """Responses whose body and Content-Length were shortened so far, per client."""
        self._resetting: set[socket.socket] = set()
        self.responses = 0
        """HTTP responses seen so far (only counted with ``truncate``)."""
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0
        """Connections accepted so far."""
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again) on the proxy port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._accept, args=(listener, self._stop), daemon=True
        )
        self._thread.start()

    def cut(self) -> None:
        """Stop listening and reset every open connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            doomed = list(self._sockets)
            self._sockets.clear()
        for sock in doomed:
            _close(sock)

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _address = listener.accept()
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                except OSError:
                    _close(client)
                    continue
                with self._lock:
                    self._sockets.update((client, upstream))
                    self.connections += 1
                if self._http:
                    methods: Requests = collections.deque()
                    pumps: list[tuple[Any, tuple[Any, ...]]] = [
                        (self._pump_requests, (client, upstream, methods)),
                        (self._pump_responses, (upstream, client, methods)),
                    ]
                else:
                    pumps = [
                        (self._pump, (client, upstream, 0.0, False)),
                        (self._pump, (upstream, client, self.delay, True)),
                    ]
                for target, args in pumps:
                    threading.Thread(target=target, args=args, daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, delay: float, to_client: bool
    ) -> None:
        ended = False
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
            ended = True
        except OSError:
            pass
        if ended and to_client and _pass_on_end(sink):
            return  # the other direction's pump closes both when the client is done
        for sock in (source, sink):
            _close(sock)
            with self._lock:
                self._sockets.discard(sock)

    def _pump_requests(
        self,
        source: socket.socket,
        sink: socket.socket,
        methods: Requests,
    ) -> None:
        """Forward HTTP requests, noting each one's method (a response to HEAD has no body)
        before its bytes go upstream, so that it is known when the response comes."""
        reader = _Reader(source)
        try:
            while line := reader.readline():
                headers = _read_headers(reader)
                words = line.decode("latin-1").split(" ")
                method = words[0].upper()
                agent = (_header(headers, "user-agent") or "unknown").split("/")[0].lower()
                path = words[1] if len(words) > 1 else ""
                methods.append((method, agent, path))
                if self.record:
                    with self._lock:
                        self.requests.append((method, path))
                sink.sendall(line + headers)
                _forward_body(reader, sink, headers, None)
        except (OSError, ValueError):
            pass
        finally:
            self._close_pair(source, sink)

    def _pump_responses(
        self,
        source: socket.socket,
        sink: socket.socket,
        methods: Requests,
    ) -> None:
        """Forward HTTP responses, cutting the chosen ones after half their body."""
        reader = _Reader(source)
        ended = False
        try:
            while line := reader.readline():
                headers = _read_headers(reader)
                status = int(line.split(b" ", 2)[1])
                if 100 <= status < 200:  # an interim response (100 Continue): no body
                    sink.sendall(line + headers)
                    continue
                method, agent, path = methods.popleft() if methods else ("GET", "unknown", "")
                if self.delay:
                    time.sleep(self.delay)
                length = _content_length(headers)
                if method == "HEAD" or status in (204, 304) or not length:
                    sink.sendall(line + headers)
                    _forward_body(reader, sink, headers, 0 if method == "HEAD" else None)
                    continue
                body = reader.read(length)
                with self._lock:
                    self.responses += 1
                    cut = self._random.random() < self.truncate
                    fail = not cut and self._random.random() < self.errors
                    self.truncated[agent] += cut
                    self.failed += fail
                    if self.record:
                        self.body_bytes += len(body)
                        self.responses_seen.append((method, path, len(body)))
                    short = (
                        not cut
                        and not fail
                        and len(body) > 1
                        and self._random.random() < self.shorten
                    )
                    self.shortened[agent] += short
                    kept = (
                        self._random.randint(len(body) - len(body) // 2, len(body) - 1)
                        if short
                        else len(body)
                    )
                if cut:
                    sink.sendall(line + headers + body[: len(body) // 2])
                    time.sleep(0.2)  # let the client read that much, then fail mid-read
                    self._reset(sink)
                    return
                if fail:
                    sink.sendall(_SLOW_DOWN)
                    continue
                if short:
                    headers = _with_content_length(headers, kept)
                    body = body[:kept]
                sink.sendall(line + headers + body)
            ended = True
        except (OSError, ValueError):
            pass
        if ended and _pass_on_end(sink):
            return  # the request pump closes both when the client is done
        self._close_pair(source, sink)

    def _close_pair(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                resetting = sock in self._resetting
                self._sockets.discard(sock)
                if resetting and sock.fileno() == -1:  # reset and closed: done with it
                    self._resetting.discard(sock)
            if not resetting:  # (a FIN from here would beat the reset to the client)
                _close(sock)

    def _reset(self, sock: socket.socket) -> None:
        """Reset the connection with no FIN before it: the peer's next read fails with
        ``ConnectionResetError``, whatever it had still to read."""
        with self._lock:
            self._resetting.add(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            sock.shutdown(socket.SHUT_RD)  # wakes the other pump's recv, sends nothing
        except OSError:
            pass
        sock.close()


class _Reader:
    """Buffered reads of lines and exact lengths from a socket (not ``makefile``, whose
    reference would keep :meth:`TcpProxy._reset` from closing the socket at once)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self._fill():
            pass
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _read_headers(reader: Any) -> bytes:
    """The header lines of an HTTP message, up to and including the empty line."""
    lines = []
    while True:
        line = reader.readline()
        if not line:
            raise ValueError("connection closed in the headers")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(headers: bytes, name: str) -> str | None:
    for line in headers.decode("latin-1").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name:
            return value.strip()
    return None


def _with_content_length(headers: bytes, length: int) -> bytes:
    """``headers`` with the Content-Length line saying ``length`` (the others unchanged)."""
    lines = headers.split(b"\r\n")
    for number, line in enumerate(lines):
        if line.split(b":", 1)[0].strip().lower() == b"content-length":
            lines[number] = b"Content-Length: " + str(length).encode()
    return b"\r\n".join(lines)


def _content_length(headers: bytes) -> int | None:
    value = _header(headers, "content-length")
    return int(value) if value is not None else None


def _forward_body(reader: Any, sink: socket.socket, headers: bytes, length: int | None) -> None:
    """Forward one message body: ``length`` bytes, else as the headers say (chunked or
    Content-Length; none means no body)."""
    if length is None and (_header(headers, "transfer-encoding") or "").lower() == "chunked":
        while True:
            size_line = reader.readline()
            sink.sendall(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                sink.sendall(_read_headers(reader))  # trailers and the final empty line
                return
            sink.sendall(reader.read(size + 2))
    remaining = (_content_length(headers) or 0) if length is None else length
    while remaining > 0:
        data = reader.read(min(remaining, 65536))
        if not data:
            raise ValueError("connection closed in a body")
        sink.sendall(data)
        remaining -= len(data)


_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
    + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode()
    + _SLOW_DOWN_BODY
)
"""What an S3 server says when it is throttling (a whole response: the connection goes on)."""

_ABORT = b"\x01\x00\x00\x00\x00\x00\x00\x00"
"""SO_LINGER on, 0 seconds: close() resets the connection (RST)."""


def _pass_on_end(sock: socket.socket) -> bool:
    """The server ended the connection after its last response: end it towards the client
    too, after every byte sent (FIN, not the reset of :func:`_close`, which would throw away
    a response the client had not read yet: a busy client lost whole listing pages so).
    Whether that could be done."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    try:
        # an abortive close (RST), like a server that went away
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def fake_aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """Environment variables for the code under test: fake credentials, the test server as
    the endpoint, and no AWS configuration files from the machine running the tests."""
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_TOKEN,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": os.fspath(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.fspath(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": os.fspath(home),
    }


CLEARED_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_MAX_ATTEMPTS",
)
