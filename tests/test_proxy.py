"""The test proxy (``tests/s3server.TcpProxy``) must not lose what it was given: a server
that sends its response and closes (``Connection: close``, as moto does) gets that response
to a client that reads it late, whole. An abortive close there once threw away whole
listing pages a busy client had not read yet (boto: "Connection was closed before we
received a valid response"), which looked like a fault of the code under test."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.s3server import TcpProxy

BODY = bytes(range(256)) * 1200
"""300 KB: more than a loopback socket's default receive buffer holds unread."""


def _serve_once(listener: socket.socket, done: threading.Event) -> None:
    """Read one request, answer it with ``BODY`` and ``Connection: close``, close."""
    connection, _ = listener.accept()
    with connection:
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(4096)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
            + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
            + BODY
        )
    done.set()


def _pumps_alive() -> int:
    return sum(1 for thread in threading.enumerate() if "_pump" in thread.name)


@pytest.mark.parametrize("record", [False, True], ids=["bytes", "http"])
def test_a_response_the_server_closed_after_reaches_a_late_reader_whole(record: bool) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    served = threading.Event()
    threading.Thread(target=_serve_once, args=(listener, served), daemon=True).start()
    proxy = TcpProxy(listener.getsockname()[1], delay=0.01, record=record)
    before = _pumps_alive()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        client.sendall(b"GET /bucket?list-type=2 HTTP/1.1\r\nHost: here\r\n\r\n")
        assert served.wait(30), "the server never answered"
        # the observed event: the proxy has forwarded the response and met the server's end
        # (its server-to-client pump is over); only now does the client read
        deadline = time.monotonic() + 30
        while _pumps_alive() > before + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _pumps_alive() <= before + 1, "the proxy never finished the response"
        received = b""
        client.settimeout(30)
        try:
            while chunk := client.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # (what the reader met: the test fails below, on what it had by then)
        client.close()
    finally:
        proxy.cut()
        listener.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == BODY
