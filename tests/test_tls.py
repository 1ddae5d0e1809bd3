"""How imgtrack picks http or https for a loopback registry: a bare TLS handshake, never a request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from imgtrack.oci.remote.tls import speaks_tls
from testkit.registries import Registry, free_port


@contextmanager
def _server(answer: bytes | None) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server that records what it is sent, then answers `answer` (None: closes silently)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            received.append(conn.recv(65536))
            if answer is not None:
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        thread.join(timeout=5)
        listener.close()


def test_plain_http_server_is_told_apart_and_hears_no_request() -> None:
    with _server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as (host, received):
        assert speaks_tls(host, timeout=5) is False
    assert received and received[0][:1] == b"\x16"  # a TLS handshake record: no HTTP request, no header


def test_tls_registry_is_recognised(tls_registry: Registry) -> None:
    assert speaks_tls(tls_registry.host, timeout=5) is True


def test_silence_and_refusal_are_left_to_a_real_request() -> None:
    with _server(None) as (host, _):
        assert speaks_tls(host, timeout=5) is None
    assert speaks_tls(f"127.0.0.1:{free_port()}", timeout=5) is None
