"""A small HTTP server that lets a browser (Neuroglancer) read a local output.

It serves the files under one directory, read-only, on 127.0.0.1, the way Neuroglancer's
HTTP key-value store reads them: ``GET`` of whole objects and of byte ranges (``Range:
bytes=a-b``, ``a-`` and the suffix form ``-n`` that sharded Zarr v3 uses for shard indexes;
``206`` with ``Content-Range``), ``HEAD``, ``OPTIONS`` preflights, and ``404`` for a missing
key (Neuroglancer reads a missing chunk as fill value, a missing ``.zattrs`` as absent
metadata). Every response carries CORS headers, so a Neuroglancer page from another origin
(https://neuroglancer-demo.appspot.com) can read it, and allows Chrome's private network
access preflight (a public page reading 127.0.0.1).
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO
from urllib.parse import unquote

from migrate.errors import MigrationError
from migrate.storage import path_problem

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Max-Age": "86400",
    "Access-Control-Allow-Private-Network": "true",
}
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The (start, stop) byte span of a single-range ``Range`` header over ``size`` bytes;
    None when it is not satisfiable. Raises ValueError on a header this server does not
    understand (several ranges, other units), which is answered with the whole object."""
    match = RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise ValueError(header)
    first, last = match.groups()
    if first == "":  # the last n bytes
        length = int(last)
        return (max(0, size - length), size) if length > 0 and size > 0 else None
    start = int(first)
    stop = size if last == "" else min(size, int(last) + 1)
    return (start, stop) if start < size and start < stop else None


def content_type(path: Path) -> str:
    """JSON for Zarr metadata, the usual type of other known files (a browser runs scripts
    only when they say so), bytes otherwise (chunks)."""
    if path.name in (".zarray", ".zattrs", ".zgroup", "zarr.json"):
        return "application/json"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class Handler(BaseHTTPRequestHandler):
    """Serves ``self.server.root`` read-only (set by :func:`make_server`)."""

    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log = self.server.request_log
        if log is not None:
            log.append(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}")

    def _file(self) -> tuple[int, os.stat_result] | None:
        """The regular file the request names, opened (its descriptor and size), or None
        (404): a path that is not made of plain names (``..``, ``%2e%2e``, ``//``, a
        backslash, NUL), a missing file, a directory, a device, a FIFO, a socket, or a
        symbolic link that leads outside the served root. The file is opened without
        blocking (a FIFO would wait for a writer) and checked after opening, so what is
        checked is what is read."""
        relative = unquote(self._target())
        if relative in ("", "/") or relative.endswith("/") or not relative.startswith("/"):
            return None
        if path_problem(relative[1:]) is not None:
            return None
        root = self.server.real_root
        real = os.path.realpath(os.path.join(root, relative[1:]))
        if not real.startswith(root.rstrip(os.sep) + os.sep):
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW)
        except OSError:
            return None
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode):
            os.close(fd)
            return None
        return fd, stat

    def _target(self) -> str:
        """The path of the request target, without its query or fragment (not through
        ``urlsplit``, which reads ``//host/…`` as a host)."""
        return self.path.split("?", 1)[0].split("#", 1)[0]

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**CORS_HEADERS, **headers}.items():
            self.send_header(name, value)
        self.end_headers()

    def do_OPTIONS(self) -> None:
        asked = self.headers.get("Access-Control-Request-Headers")
        headers = {**PREFLIGHT_HEADERS, "Access-Control-Allow-Headers": asked or "Range"}
        self._start(HTTPStatus.NO_CONTENT, {**headers, "Content-Length": "0"})

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        opened = self._file()
        if opened is None:
            message = b"not found\n"
            self._start(
                HTTPStatus.NOT_FOUND,
                {"Content-Type": "text/plain", "Content-Length": str(len(message))},
            )
            if body:
                self.wfile.write(message)
            return
        fd, stat = opened
        with open(fd, "rb") as file:
            self._send(file, stat, body)

    def _send(self, file: BinaryIO, stat: os.stat_result, body: bool) -> None:
        size = stat.st_size
        headers = {
            "Content-Type": content_type(Path(unquote(self._target()))),
            "Accept-Ranges": "bytes",
            "ETag": f'"{stat.st_mtime_ns:x}-{size:x}"',
            "Cache-Control": "no-cache",
        }  # fmt: skip
        status, start, stop = HTTPStatus.OK, 0, size
        header = self.headers.get("Range")
        if header:
            try:
                span = parse_range(header, size)
            except ValueError:
                span = (0, size)
            else:
                if span is None:
                    self._start(
                        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                        {**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"},
                    )
                    return
                status = HTTPStatus.PARTIAL_CONTENT
                headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
            start, stop = span
        headers["Content-Length"] = str(stop - start)
        self._start(status, headers)
        if body:  # only the range: shards may be large
            file.seek(start)
            self.wfile.write(file.read(stop - start))


class OutputServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, port: int, request_log: list[str] | None) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.request_log = request_log
        super().__init__(("127.0.0.1", port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that goes away mid-request (a closed tab) is not an error worth a
        traceback; anything else is reported as usual."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def make_server(root: str, port: int = 0, request_log: list[str] | None = None) -> OutputServer:
    """A server for the directory ``root`` on 127.0.0.1:``port`` (0: any free port), not yet
    serving; ``request_log`` collects one line per request (method, path, status)."""
    if not Path(root).is_dir():
        raise MigrationError(f"{root}: not a directory")
    try:
        return OutputServer(root, port, request_log)
    except OSError as exc:
        raise MigrationError(
            f"127.0.0.1:{port}: cannot listen ({exc.strerror}); choose another --port"
        ) from None


def serve_in_background(server: OutputServer) -> threading.Thread:
    """Serve ``server`` on a daemon thread (stop it with ``server.shutdown()``)."""
    thread = threading.Thread(target=server.serve_forever, name="view-server", daemon=True)
    thread.start()
    return thread
