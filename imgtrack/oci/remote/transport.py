"""How bytes reach one registry, and the one place where what goes wrong on the way becomes an
imgtrack error.

Two roads lead there. Plain GETs the registry answers 200 (manifests, blobs) and the PUT that ends an
upload go over the standard library's http.client: downloads come off the socket in 512 KiB reads and
uploads go out by `sendfile` straight from the layout's file, without passing through httpx, httpcore
and h11, which copy every byte three more times in Python (a cold pull spent about a third of its time
there; docs/performance.md), and a pull that needs nothing else never imports them. Only the common
case takes this road: sent with the Authorization imgtrack already holds, with no proxy set in the
environment. Everything else goes through httpx, with its auth flow, redirect rules and retries: a
challenge, an error status, a connection that fails. A redirect (to blob storage on another host) turns
the fast road off for the registry, since such a registry redirects every blob.

`Transport.send` retries exactly what the protocol says is retryable (408, 429, 5xx and connection
errors) with exponential backoff, jitter and `Retry-After`, bounded in tries and time. Errors of both
roads are translated here and nowhere else: a connection that fails or a certificate that is not
trusted (`send`), a body that breaks off (`read_body`), an error status (`fail`), each into
`RegistryError` (exit 3) or `TransferInterrupted` with the registry named and no secret shown.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from imgtrack.errors import NotTLS, RegistryError, TransferInterrupted, UsageError
from imgtrack.oci.remote.auth import Credentials, is_loopback
from imgtrack.oci.remote.tls import client_context, speaks_tls

if TYPE_CHECKING:
    import httpx

    from imgtrack.oci.remote.authflow import RegistryAuth

READ_BYTES = 512 * 1024
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5
    max_seconds: float = 60.0
    base_delay: float = 0.2
    max_delay: float = 5.0


def proxy_configured() -> bool:
    """Whether the environment names a proxy (httpx would use it; the fast road does not speak proxies)."""
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES)


# httpcore reads a response 64 KiB at a time, and each read takes a trip through h11 and httpx in
# Python. Where blobs still come through httpx (a redirect to storage, a proxy), reads of READ_BYTES
# make them ~20% faster (docs/performance.md). It is a class attribute of httpcore's HTTP/1.1
# connection: if a later httpcore drops it, setting it changes nothing.


def _read_bigger_chunks() -> None:
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", 0) < READ_BYTES:
        HTTP11Connection.READ_NUM_BYTES = READ_BYTES


def _broken_off() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a body broke off, on either road (httpx's only once it is in use)."""
    httpx = sys.modules.get("httpx")
    fast: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)
    return (*fast, httpx.TransportError) if httpx is not None else fast


class FastPath:
    """The fast road: manifest and blob GETs and upload PUTs over kept-alive connections to one registry, shared by the
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

    def open(self, url: str, headers: dict[str, str], final: tuple[int, ...] = (200,)) -> FastBody | None:
        """The response to GET `url` if its status is one of `final` (a 404's small body already read),
        or None when httpx should make the request instead."""
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
        if response.status == 404 and 404 in final:
            try:
                response.read(64 * 1024)  # an error document: what is left past this closes the connection
            except (OSError, http.client.HTTPException):
                pass
            body = FastBody(self, origin, conn, response)
            body.close()
            return body
        if response.status != 200 or 200 not in final:
            if 300 <= response.status < 400:
                self.enabled = False
            conn.close()
            return None
        return FastBody(self, origin, conn, response)

    def head(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        """(status, headers with lower-case names) of the answer to HEAD `url`, or None when no answer
        came (httpx makes the request instead)."""
        if not self.enabled:
            return None
        origin, conn, target = self._connection(url)
        try:
            conn.request("HEAD", target, headers=headers)
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
            response = conn.getresponse()
            response.read()  # a HEAD answer has no body: this only marks the response done
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        if 300 <= response.status < 400:
            self.enabled = False
        if response.will_close:
            conn.close()
        else:
            self.give_back(origin, conn)
        return response.status, {name.lower(): value for name, value in response.getheaders()}

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
            if conn.sock is None:  # closed under us: nothing was sent whole, httpx uploads instead
                conn.close()
                return None
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
        self._closed = False

    @property
    def status(self) -> int:
        return self.response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes, raw: `Transport.read_body` says what a failure means."""
        while chunk := self.response.read(READ_BYTES):
            yield chunk
        if self.response.length:  # http.client ends a body cut short without a word: bytes still owed
            raise http.client.IncompleteRead(b"", self.response.length)

    def close(self) -> None:
        """Give the connection back if the body was read whole, else close it; once, however often called
        (a connection given back twice is lent to two threads at once)."""
        if self._closed:
            return
        self._closed = True
        if self.response.isclosed() and not self.response.will_close:
            self.owner.give_back(self.origin, self.conn)
        else:
            self.conn.close()


class Transport:
    """Requests to one registry (`host[:port]`): the scheme it speaks, the httpx client and its auth flow,
    the fast road, retries, and the translation of every failure."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        ca_file: Path | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        jobs: int = 4,
    ) -> None:
        self.registry = registry
        self.retry = retry
        self.credentials = credentials
        self._verify = client_context(ca_file)
        self._timeout, self._jobs = timeout, jobs
        self._fast = FastPath(self._verify, connect_timeout=10.0, read_timeout=timeout)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()  # the threads of a transfer may all need it at once
        self._plain_allowed = insecure or is_loopback(registry)
        self._base: str | None = "http://" + registry if insecure else None

    @property
    def http(self) -> httpx.Client:
        """The httpx client, made (and httpx imported) for the first request that needs it."""
        with self._client_lock:
            if self._client is None:
                import httpx

                from imgtrack.oci.remote.authflow import RegistryAuth

                _read_bigger_chunks()
                try:
                    self._client = httpx.Client(
                        auth=RegistryAuth(self.registry, self.credentials),
                        verify=self._verify,
                        follow_redirects=True,
                        timeout=httpx.Timeout(self._timeout, connect=10.0),
                        limits=httpx.Limits(max_connections=self._jobs + 2, max_keepalive_connections=self._jobs + 2),
                        headers={"User-Agent": "imgtrack"},
                    )
                except (httpx.InvalidURL, ValueError, ImportError) as exc:
                    raise UsageError(_proxy_message(exc)) from None
            return self._client

    @property
    def _auth(self) -> RegistryAuth | None:
        """The auth flow, once httpx is in use; before that no credentials were asked for, so none are held."""
        client = self._client
        return client.auth if client is not None else None  # type: ignore[return-value]

    def close(self) -> None:
        self._fast.close()
        if self._client is not None:
            self._client.close()

    @property
    def base(self) -> str:
        """`https://host` or `http://host`: the registry's API origin."""
        if self._base is None:
            self._base = self._probe()
        return self._base

    def _probe(self) -> str:
        """https, or plain http where allowed and the server speaks nothing else (docker's rule for loopback).

        A registry that may only be reached over https is not probed: its first request says whatever
        is wrong (no TLS, an untrusted certificate) as well as a probe would, a round trip sooner."""
        if not self._plain_allowed:
            return f"https://{self.registry}"
        if not proxy_configured():
            tls = speaks_tls(self.registry, timeout=10.0)
            if tls is not None:
                return f"{'https' if tls else 'http'}://{self.registry}"
        try:
            self.send("GET", f"https://{self.registry}/v2/")
            return f"https://{self.registry}"
        except NotTLS:  # only a server that speaks no TLS at all; a certificate problem never means clear text
            return f"http://{self.registry}"

    def absolute(self, location: str) -> str:
        return location if location.startswith(("http://", "https://")) else f"{self.base}{location}"

    # --- httpx, with retries ------------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        content: Callable[[], object] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        tries: int | None = None,
    ) -> httpx.Response:
        """One request with retries. `content` makes a fresh body for each try (a stream is read once)."""
        import httpx

        started = time.monotonic()
        tries = tries or self.retry.tries
        for attempt in range(1, tries + 1):
            try:
                body = content() if content else None
                request = self.http.build_request(method, url, content=body, headers=headers)  # type: ignore[arg-type]
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError):
                    self._refuse_connection(exc)
                failure: str = f"{type(exc).__name__}: {_reason(exc)}"
                delay = self.delay(attempt, None)
                cause: Exception = exc
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRY_STATUS:
                    return response
                failure = f"HTTP {response.status_code}"
                delay = self.delay(attempt, response.headers.get("Retry-After"))
                response.close()
                cause = RegistryError(failure)
            if attempt == tries or time.monotonic() - started + delay > self.retry.max_seconds:
                raise RegistryError(
                    f"{self.registry}: {method} {urlsplit(url).path} failed after {attempt} tries ({failure}); "
                    "check that the registry is up and reachable, then run the command again"
                ) from cause
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _refuse_connection(self, exc: Exception) -> None:
        """A failure to connect that no retry can mend: an untrusted certificate, or no TLS spoken at all."""
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            raise RegistryError(
                f"{self.registry}: its TLS certificate is not trusted ({_reason(exc)}); "
                "pass --ca-file with the CA that signed it, or add that CA to the system store"
            ) from exc
        if "WRONG_VERSION_NUMBER" in text:
            raise NotTLS(
                f"{self.registry} speaks plain HTTP, not TLS; for a registry you trust on your network, "
                f'mark it insecure ([registries."{self.registry}"] insecure = true, or --insecure)'
            ) from exc

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """How long to wait before try `attempt + 1`."""
        if retry_after:
            try:
                return min(float(retry_after), self.retry.max_delay * 2)
            except ValueError:
                pass
        backoff = min(self.retry.base_delay * 2 ** (attempt - 1), self.retry.max_delay)
        return float(backoff * random.uniform(0.5, 1.0))

    def cancel(self, response: httpx.Response) -> None:
        """Abandon the upload session a response opened, if it named one."""
        import httpx

        location = response.headers.get("Location")
        if location:
            try:
                self.http.delete(self.absolute(location))
            except httpx.HTTPError:
                pass  # an abandoned upload session expires on its own

    # --- the fast road --------------------------------------------------------------------------------

    @property
    def fast_enabled(self) -> bool:
        return self._fast.enabled

    def _fast_headers(self, method: str, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": "imgtrack", **(extra or {})}
        held = self._auth.held_header(method, url) if self._auth else None
        if held:
            headers["Authorization"] = held
        return headers

    def fast_get(
        self, url: str, extra: dict[str, str] | None = None, final: tuple[int, ...] = (200,)
    ) -> FastBody | None:
        """The 200 response to a GET over http.client, or None for httpx to make the request. Not tried
        when the registry has asked for credentials and none are held for this request: it would only
        answer 401 again, a round trip for nothing."""
        headers = self._fast_headers("GET", url, extra)
        if "Authorization" not in headers and self._auth is not None and self._auth.challenged:
            return None
        return self._fast.open(url, headers, final)

    def fast_head(self, url: str, extra: dict[str, str] | None = None) -> tuple[int, dict[str, str]] | None:
        """(200 or 404, headers with lower-case names) of a HEAD over http.client, or None for httpx to
        make the request (any other answer: a challenge, a redirect, a 5xx to retry). A 404 is as final
        here as through httpx: both send the same Authorization, or none before a challenge."""
        headers = self._fast_headers("HEAD", url, extra)
        if "Authorization" not in headers and self._auth is not None and self._auth.challenged:
            return None
        answer = self._fast.head(url, headers)
        return answer if answer is not None and answer[0] in (200, 404) else None

    def fast_put_file(self, url: str, extra: dict[str, str], extent: tuple[Path, int], size: int) -> str | None:
        """`FastPath.put_file` with the Authorization held for `url`."""
        return self._fast.put_file(url, self._fast_headers("PUT", url, extra), extent, size)

    # --- what went wrong ------------------------------------------------------------------------------

    def read_body(self, chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
        """A body's chunks from either road, with a connection that breaks off mid-body said once."""
        try:
            yield from chunks
        except _broken_off() as exc:
            raise TransferInterrupted(
                f"{self.registry}: {what} broke off ({type(exc).__name__}: {_reason(exc)}); run the command again"
            ) from exc

    def fail(self, response: httpx.Response, what: str) -> RegistryError:
        """The error for an answer that is not one the request hoped for."""
        code = response.status_code
        if code == 401:
            return RegistryError(
                f"{self.registry} refused the credentials for {what} (401); log in with "
                f"`imgtrack login {self.registry}`, or set IMGTRACK_USERNAME and IMGTRACK_PASSWORD"
            )
        if code == 403:
            return RegistryError(f"{self.registry} denies access to {what} (403); ask for push/pull rights")
        if code == 404:
            return self.not_found(what)
        return RegistryError(f"{self.registry}: {what} failed: HTTP {code}{error_codes(response)}")

    def not_found(self, what: str) -> RegistryError:
        return RegistryError(f"{self.registry}: {what} not found (404); check the repository name and tag")

    def check_said(self, said: str | None, expected: str, what: str) -> None:
        """Refuse a `Docker-Content-Digest` that is not the digest imgtrack sent."""
        if said and said != expected:
            raise RegistryError(
                f"{self.registry}: {what} was stored as {said}, not {expected}; the registry altered it"
            )


def _proxy_message(exc: Exception) -> str:
    """Why the proxy the environment names cannot be used (httpx reads it when a client is made)."""
    names = [
        n
        for n in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
        if os.environ.get(n)
    ]
    reason = "SOCKS proxies are not supported, use an http:// one" if isinstance(exc, ImportError) else str(exc)[:120]
    return (
        f"the proxy in the environment ({', '.join(names) or 'proxy variables'}) cannot be used: {reason}; "
        "fix it or unset it"
    )


_ERROR_CODE_RE = re.compile(r"[A-Z][A-Z_]{1,40}")  # with fullmatch


def error_codes(response: httpx.Response) -> str:
    """The distribution spec's error codes (`MANIFEST_INVALID`, …) from an error body, and nothing else
    of it: a body is the registry's text, and may echo a token or a header back."""
    import httpx

    try:
        doc = response.json()
    except (ValueError, httpx.ResponseNotRead):
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    codes = [
        str(e["code"])
        for e in errors[:5]
        if isinstance(e, dict) and isinstance(e.get("code"), str) and _ERROR_CODE_RE.fullmatch(e["code"])
    ]
    return f" ({', '.join(codes)})" if codes else ""


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:160]
