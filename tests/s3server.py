"""A real S3 server for tests: moto's standalone server in a subprocess on 127.0.0.1, a TCP
proxy that can cut every connection for a while, and helpers to move trees in and out.

Nothing here mocks boto3 or TensorStore: both talk HTTP to the server (or to the proxy).
"""

from __future__ import annotations

import os
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


def upload_tree(client: Any, root: Path, bucket: str, prefix: str) -> int:
    """Upload every file under ``root`` to ``s3://bucket/prefix/...``; returns the count."""
    files = [path for path in sorted(root.rglob("*")) if path.is_file()]

    def put(path: Path) -> None:
        key = f"{prefix}/{path.relative_to(root).as_posix()}".lstrip("/")
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=8) as pool:
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


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to a target port; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore` (the port stays the same). With ``delay``, every
    piece of a response waits that many seconds first: each small request then takes about
    one round trip to a distant server."""

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
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
                for source, sink, delay in (
                    (client, upstream, 0.0),
                    (upstream, client, self.delay),
                ):
                    threading.Thread(
                        target=self._pump, args=(source, sink, delay), daemon=True
                    ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
                with self._lock:
                    self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        # an abortive close (RST), like a server that went away
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
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
