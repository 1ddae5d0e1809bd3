"""An HTTP proxy in front of a real registry that injects faults: 5xx, 429 with Retry-After,
connection resets (before a response, or mid-body), and stalls. Bounded: every rule fires a set
number of times, and the proxy forwards only to its one loopback upstream."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


@dataclass
class Fault:
    method: str
    path: str  # regex searched in the request path
    kind: str  # "503" | "500" | "429" | "reset" | "reset-mid-body" | "stall" | "lie-digest" | "replace" | "retype" | "endless" | "challenge" | "redirect"
    times: int = 1
    seconds: float = 0.0
    body: bytes = b""  # "replace": the body (status 200); "challenge": a token realm; "redirect": a base URL
    content_type: str = ""  # for "replace" and "retype": the Content-Type the proxy claims

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method == method and re.search(self.path, path) is not None


class FaultProxy:
    def __init__(self, upstream: str, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) to serve https, as a TLS registry would."""
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.require_basic = False  # answer 401 Basic to any request without Authorization
        self.fired: list[str] = []
        self.forwarded: list[tuple[str, str, int, bool]] = []  # (method, path, status, sent Authorization)
        self.lock = threading.Lock()
        proxy = self
        client = httpx.Client(base_url=f"http://{upstream}", follow_redirects=False, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if proxy.require_basic and "Authorization" not in self.headers:
                    self.rfile.read(length)
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="faulty"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fault = proxy.take(self.command, self.path)
                if fault is not None and fault.kind in ("challenge", "redirect"):  # body: the realm or the target
                    self.rfile.read(length)
                    self.send_response(401 if fault.kind == "challenge" else 307)
                    if fault.kind == "challenge":
                        self.send_header("WWW-Authenticate", f'Bearer realm="{fault.body.decode()}",service="faulty"')
                    else:
                        self.send_header("Location", fault.body.decode() + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault is not None and fault.kind == "reset":
                    self._reset()
                    return
                if fault is not None and fault.kind == "stall":
                    time.sleep(fault.seconds)
                    self._reset()
                    return
                body = self.rfile.read(length) if length else b""
                if fault is not None and fault.kind == "replace":
                    self.send_response(200)
                    self.send_header("Content-Type", fault.content_type or "application/vnd.oci.image.manifest.v1+json")
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    self.wfile.write(fault.body)
                    return
                if fault is not None and fault.kind == "endless":  # a chunked body that never ends
                    self.send_response(200)
                    self.send_header("Content-Type", fault.content_type or "application/vnd.oci.image.manifest.v1+json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
                    try:
                        while True:
                            self.wfile.write(chunk)
                    except OSError:  # the client hung up, as it should
                        self.close_connection = True
                    return
                if fault is not None and fault.kind == "error-body":  # a 400 whose body echoes a secret
                    payload = fault.body
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault is not None and fault.kind in ("503", "500", "429"):
                    self.send_response(int(fault.kind))
                    if fault.kind == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")
                }
                upstream = client.request(self.command, self.path, content=body, headers=headers)
                with proxy.lock:
                    proxy.forwarded.append(
                        (self.command, self.path, upstream.status_code, "Authorization" in self.headers)
                    )
                data = upstream.content
                if fault is not None and fault.kind == "grow-body":  # a body longer than the blob
                    data = data + b"\0" * 10_000_000
                if fault is not None and fault.kind == "corrupt-body":  # same length, other bytes
                    data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        continue
                    if key.lower() == "location":
                        value = value.replace(f"http://{proxy.upstream}", f"http://{proxy.host}")
                    if key.lower() == "docker-content-digest" and fault is not None and fault.kind == "lie-digest":
                        value = "sha256:" + "0" * 64
                    if key.lower() == "content-type" and fault is not None and fault.kind == "retype":
                        value = fault.content_type
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault is not None and fault.kind == "reset-mid-body":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(data)

            def _reset(self) -> None:
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    self.fired.append(f"{fault.kind} {method} {path}")
                    return fault
        return None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class OtherHost:
    """A server on another loopback address (127.0.0.2): where a redirect sends a blob download.
    It serves the upstream registry's bytes and keeps the headers of every request it receives."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[dict[str, str]] = []
        seen = self.requests
        client = httpx.Client(base_url=f"http://{upstream}", timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(dict(self.headers.items()))
                upstream_response = client.get(self.path)
                self.send_response(upstream_response.status_code)
                self.send_header("Content-Length", str(len(upstream_response.content)))
                self.end_headers()
                self.wfile.write(upstream_response.content)

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.2:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
