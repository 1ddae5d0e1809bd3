"""Manifest and blob bodies over the standard library's http.client. Downloads come off the socket in
512 KiB reads, uploads go out by `sendfile` straight from the layout's file, without passing through
httpx, httpcore and h11, which copy every byte three more times in Python (a cold pull spent about a
third of its time there; docs/performance.md), and a pull that needs nothing else never imports them.

Only the common case takes this path: a GET the registry itself answers 200, or the PUT that ends an
upload answered 201, sent with the Authorization imgtrack already holds, with no proxy set in the
environment. Everything else goes back to the httpx client, with its auth flow, redirect rules and
retries: a challenge, an error status, a connection that fails. A redirect (to blob storage on
another host) also turns this path off for the registry, since such a registry redirects every blob.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from imgtrack.errors import TransferInterrupted

READ_BYTES = 512 * 1024
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def proxy_configured() -> bool:
    """Whether the environment names a proxy (httpx would use it; this path does not speak proxies)."""
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES)


class FastPath:
    """Manifest and blob GETs and upload PUTs over kept-alive connections to one registry, shared by the
    threads of a transfer."""

    def __init__(self, context: ssl.SSLContext, connect_timeout: float, read_timeout: float) -> None:
        self.context = context
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.enabled = not proxy_configured()
        self._idle: list[tuple[str, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def _connection(self, url: str) -> tuple[str, http.client.HTTPConnection, str]:
        """(origin, a kept-alive or new connection to it, the request target) for `url`."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            for i, (held, conn) in enumerate(self._idle):
                if held == origin:
                    del self._idle[i]
                    return origin, conn, target
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.netloc, timeout=self.connect_timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=self.connect_timeout)
        return origin, conn, target

    def open(self, url: str, headers: dict[str, str]) -> FastBody | None:
        """The 200 response to GET `url`, or None when httpx should make the request instead."""
        if not self.enabled:
            return None
        origin, conn, target = self._connection(url)
        try:
            conn.request("GET", target, headers=headers)
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()  # a kept-alive connection the server had closed, or no connection at all
            return None
        if response.status != 200:
            if 300 <= response.status < 400:
                self.enabled = False
            conn.close()
            return None
        return FastBody(self, origin, conn, response)

    def put_file(self, url: str, headers: dict[str, str], extent: tuple[Path, int], size: int) -> str | None:
        """PUT `size` bytes of a file from an offset; the registry's Docker-Content-Digest on 201, ""
        when it sent none, or None when httpx should upload instead (nothing was committed)."""
        if not self.enabled:
            return None
        origin, conn, target = self._connection(url)
        try:
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            for name, value in {**headers, "Content-Length": str(size)}.items():
                conn.putheader(name, value)
            conn.endheaders()
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            with open(extent[0], "rb") as f:
                conn.sock.sendfile(f, extent[1], size)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        if response.status != 201:
            conn.close()
            return None
        if response.will_close:
            conn.close()
        else:
            self.give_back(origin, conn)
        return response.getheader("Docker-Content-Digest") or ""

    def give_back(self, origin: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((origin, conn))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()


class FastBody:
    """One response body, read in chunks; the connection is kept only if the body was read whole."""

    def __init__(
        self, owner: FastPath, origin: str, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        self.owner, self.origin, self.conn, self.response = owner, origin, conn, response

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def chunks(self, what: str) -> Iterator[bytes]:
        try:
            while chunk := self.response.read(READ_BYTES):
                yield chunk
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise TransferInterrupted(f"{what} broke off ({type(exc).__name__}: {exc}); run the command again") from exc
        if self.response.length:  # http.client ends a body cut short without a word: bytes still owed
            raise TransferInterrupted(f"{what} broke off {self.response.length} bytes early; run the command again")

    def close(self) -> None:
        if self.response.isclosed() and not self.response.will_close:
            self.owner.give_back(self.origin, self.conn)
        else:
            self.conn.close()
