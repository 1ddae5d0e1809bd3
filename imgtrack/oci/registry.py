"""The OCI distribution API: one sync client per registry, shared by a thread pool.

Plain GETs the registry answers 200 (manifests, blobs) and upload PUTs go over http.client (fastpath.py);
everything else goes through httpx, with its auth flow and redirect rules. httpx is imported on the
first request that needs it: a pull from a registry that asks for no credentials never loads it (~30 ms).

Retries exactly what the protocol says is retryable (408, 429, 5xx and connection errors) with
exponential backoff, jitter and `Retry-After`, bounded in tries and time. Lower-level errors are
translated once, here, into `RegistryError` (exit 3) with the registry named and no secret shown.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from imgtrack.errors import NotTLS, RegistryError, TransferInterrupted, UsageError
from imgtrack.oci.auth import Credentials, is_loopback
from imgtrack.oci.digest import digest_bytes
from imgtrack.oci.fastpath import READ_BYTES, FastBody, FastPath, proxy_configured
from imgtrack.oci.layout import Descriptor
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX
from imgtrack.oci.tls import client_context, speaks_tls

if TYPE_CHECKING:
    import httpx

    from imgtrack.oci.authflow import RegistryAuth

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

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


ACCEPT_MANIFESTS = ", ".join(sorted(ALL_MANIFEST_TYPES))


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5
    max_seconds: float = 60.0
    base_delay: float = 0.2
    max_delay: float = 5.0


class RegistryClient:
    """Talk to one registry (`host[:port]`)."""

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
        chunk_size: int = 128 * 1024 * 1024,
    ) -> None:
        self.registry = registry
        self.retry = retry
        self.chunk_size = chunk_size  # blobs larger than this go up in resumable chunks of this size
        self.credentials = credentials
        self._verify = client_context(ca_file)
        self._timeout, self._jobs = timeout, jobs
        self._fast = FastPath(self._verify, connect_timeout=10.0, read_timeout=timeout)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()  # the threads of a transfer may all need it at once
        self._plain_allowed = insecure or is_loopback(registry)
        self._base: str | None = "http://" + registry if insecure else None

    @property
    def _http(self) -> httpx.Client:
        """The httpx client, made (and httpx imported) for the first request that needs it."""
        with self._client_lock:
            if self._client is None:
                import httpx

                from imgtrack.oci.authflow import RegistryAuth

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

    # --- transport -------------------------------------------------------------------------------

    @property
    def base(self) -> str:
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
            self._send("GET", f"https://{self.registry}/v2/")
            return f"https://{self.registry}"
        except NotTLS:  # only a server that speaks no TLS at all; a certificate problem never means clear text
            return f"http://{self.registry}"

    def _send(
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
                request = self._http.build_request(method, url, content=body, headers=headers)  # type: ignore[arg-type]
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise RegistryError(
                        f"{self.registry}: its TLS certificate is not trusted ({_reason(exc)}); "
                        "pass --ca-file with the CA that signed it, or add that CA to the system store"
                    ) from exc
                if isinstance(exc, httpx.ConnectError) and "WRONG_VERSION_NUMBER" in str(exc):
                    raise NotTLS(
                        f"{self.registry} speaks plain HTTP, not TLS; for a registry you trust on your network, "
                        f'mark it insecure ([registries."{self.registry}"] insecure = true, or --insecure)'
                    ) from exc
                failure: str = f"{type(exc).__name__}: {_reason(exc)}"
                delay = self._delay(attempt, None)
                cause: Exception = exc
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRY_STATUS:
                    return response
                failure = f"HTTP {response.status_code}"
                delay = self._delay(attempt, response.headers.get("Retry-After"))
                response.close()
                cause = RegistryError(failure)
            if attempt == tries or time.monotonic() - started + delay > self.retry.max_seconds:
                raise RegistryError(
                    f"{self.registry}: {method} {urlsplit(url).path} failed after {attempt} tries ({failure}); "
                    "check that the registry is up and reachable, then run the command again"
                ) from cause
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.retry.max_delay * 2)
            except ValueError:
                pass
        backoff = min(self.retry.base_delay * 2 ** (attempt - 1), self.retry.max_delay)
        return float(backoff * random.uniform(0.5, 1.0))

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        code = response.status_code
        if code == 401:
            return RegistryError(
                f"{self.registry} refused the credentials for {what} (401); log in with "
                f"`imgtrack login {self.registry}`, or set IMGTRACK_USERNAME and IMGTRACK_PASSWORD"
            )
        if code == 403:
            return RegistryError(f"{self.registry} denies access to {what} (403); ask for push/pull rights")
        if code == 404:
            return RegistryError(f"{self.registry}: {what} not found (404); check the repository name and tag")
        return RegistryError(f"{self.registry}: {what} failed: HTTP {code}{_error_codes(response)}")

    # --- API -------------------------------------------------------------------------------------

    def check(self) -> None:
        """GET /v2/: reachable, speaks the API, and accepts our credentials."""
        response = self._send("GET", f"{self.base}/v2/")
        if response.status_code != 200:
            raise self._fail(response, "the API root /v2/")

    def has_blob(self, repo: str, digest: str) -> bool:
        response = self._send("HEAD", f"{self.base}/v2/{repo}/blobs/{digest}", ok=(200, 404))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"blob {digest[:19]}… in {repo}")

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest a tag (or digest) names in `repo`, by HEAD; None if it names nothing."""
        response = self._send(
            "HEAD", f"{self.base}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}, ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"manifest {reference} of {repo}")
        said = response.headers.get("Docker-Content-Digest")
        return str(said) if said else None

    def manifest_size(self, repo: str, digest: str) -> int:
        """The size of the manifest `digest` in `repo`, by HEAD (what a descriptor of it needs)."""
        what = f"manifest {digest[:19]}… of {repo}"
        response = self._send(
            "HEAD", f"{self.base}/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT_MANIFESTS}, ok=(200,)
        )
        if response.status_code != 200:
            raise self._fail(response, what)
        length = response.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{self.registry}: {what} has no usable Content-Length ({length[:20]!r}); refused")
        return int(length)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry would rather have an upload."""
        response = self._send(
            "POST",
            f"{self.base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from_repo}",
            ok=(201, 202),
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            self._cancel(response)
            return False
        raise self._fail(response, f"mount of {digest[:19]}… into {repo}")

    def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        open_body: Callable[[], Iterator[bytes]],
        extent: tuple[Path, int] | None = None,
    ) -> None:
        """Monolithic, streamed upload: POST for a session, then PUT the bytes with ?digest=. With
        `extent` (the blob's file and offset), the PUT goes out by sendfile when it can."""
        start = self._send("POST", f"{self.base}/v2/{repo}/blobs/uploads/", ok=(202,))
        if start.status_code != 202:
            raise self._fail(start, f"upload to {repo}")
        location = self._absolute(start.headers.get("Location", ""))
        sep = "&" if "?" in location else "?"
        if extent is not None and self._fast.enabled and location.startswith(self.base + "/"):
            url = f"{location}{sep}digest={digest}"
            headers = self._fast_headers("PUT", url, {"Content-Type": "application/octet-stream"})
            said = self._fast.put_file(url, headers, extent, size)
            if said is not None:
                self._check_said(said, digest, f"blob upload to {repo}")
                return
            # The session may be spent: start a fresh one through httpx.
            self.upload_blob(repo, digest, size, open_body)
            return
        done = self._send(
            "PUT",
            f"{location}{sep}digest={digest}",
            content=open_body,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if done.status_code != 201:
            raise self._fail(done, f"upload of {digest[:19]}… to {repo}")
        self._check_digest(done, digest, f"blob upload to {repo}")

    def upload_blob_chunked(
        self,
        repo: str,
        digest: str,
        size: int,
        read_range: Callable[[int, int], Iterator[bytes]],
        chunk_size: int,
    ) -> None:
        """PATCH chunks with Content-Range; after a broken connection, ask the registry how far the upload
        got (GET on the session: Range) and go on from there, within the retry bounds; then PUT ?digest=.
        A session the registry no longer knows (restarted without its state, expired) is started again
        from the blob's first byte, within the same bounds."""

        def open_session() -> str:
            start = self._send("POST", f"{self.base}/v2/{repo}/blobs/uploads/", ok=(202,))
            if start.status_code != 202:
                raise self._fail(start, f"upload to {repo}")
            return self._absolute(start.headers.get("Location", ""))

        location = open_session()
        offset, failures = 0, 0
        while offset < size:
            end = min(offset + chunk_size, size)
            try:
                response = self._send(
                    "PATCH",
                    location,
                    content=partial(read_range, offset, end),
                    tries=1,
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end - 1}",
                        "Content-Length": str(end - offset),
                    },
                )
            except RegistryError:
                response = None
            if response is not None and response.status_code == 202:
                location = self._absolute(response.headers.get("Location", location))
                offset = _range_end(response.headers.get("Range"), end)
                continue
            lost = _session_lost(response)
            if response is not None and not lost and response.status_code not in (416, *RETRY_STATUS):
                raise self._fail(response, f"upload of {digest[:19]}… to {repo}")
            failures += 1
            if failures >= self.retry.tries:
                raise RegistryError(
                    f"{self.registry}: upload of {digest[:19]}… to {repo} kept breaking off at byte {offset}; "
                    "run the command again: blobs the registry holds are not sent again, this one is sent "
                    "from its start"
                )
            time.sleep(self._delay(failures, None))
            status = None if lost else self._send("GET", location, ok=(204, 400, 404))
            if status is None or _session_lost(status):
                location, offset = open_session(), 0  # the registry lost the session: this blob starts again
                continue
            if status.status_code != 204:
                raise self._fail(status, f"upload status of {digest[:19]}… in {repo}")
            location = self._absolute(status.headers.get("Location", location))
            offset = _range_end(status.headers.get("Range"), 0)
        sep = "&" if "?" in location else "?"
        done = self._send("PUT", f"{location}{sep}digest={digest}", ok=(201,), headers={"Content-Length": "0"})
        if done.status_code != 201:
            raise self._fail(done, f"upload of {digest[:19]}… to {repo}")
        self._check_digest(done, digest, f"blob upload to {repo}")

    def _cancel(self, response: httpx.Response) -> None:
        import httpx

        location = response.headers.get("Location")
        if location:
            try:
                self._http.delete(self._absolute(location))
            except httpx.HTTPError:
                pass  # an abandoned upload session expires on its own

    def _absolute(self, location: str) -> str:
        return location if location.startswith(("http://", "https://")) else f"{self.base}{location}"

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None:
        """PUT a manifest by tag or digest; the `OCI-Subject` the registry answers with (a manifest with a
        `subject`, on a registry with the referrers API), else None."""
        response = self._send(
            "PUT",
            f"{self.base}/v2/{repo}/manifests/{reference}",
            content=lambda: data,
            headers={"Content-Type": media_type},
            ok=(201,),
        )
        if response.status_code != 201:
            raise self._fail(response, f"manifest {reference} in {repo}")
        self._check_digest(response, digest_bytes(data), f"manifest {reference} in {repo}")
        subject = response.headers.get("OCI-Subject")
        return str(subject) if subject else None

    def get_manifest_if_any(self, repo: str, reference: str) -> tuple[bytes, str] | None:
        """`get_manifest`, or None when the registry has no such manifest (404)."""
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        response = self._send("GET", url, headers={"Accept": ACCEPT_MANIFESTS}, ok=(200, 404), stream=True)
        try:
            if response.status_code == 404:
                response.read()
                return None
            if response.status_code != 200:
                response.read()
                raise self._fail(response, f"manifest {reference} of {repo}")
            return self._read_manifest(
                response.headers.get("Content-Length"),
                response.headers.get("Content-Type"),
                response.iter_bytes(),
                f"manifest {reference} of {repo}",
            )
        finally:
            response.close()

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor] | None:
        """The referrers API's answer for `digest` (every page, following `Link`), or None when the
        registry does not implement it (404)."""
        from imgtrack.oci.referrers import parse_referrers_index

        first = f"{self.base}/v2/{repo}/referrers/{digest}"
        if artifact_type:
            first += f"?artifactType={quote(artifact_type, safe='')}"
        url: str | None = first
        found: list[Descriptor] = []
        pages = 0
        while url is not None:
            pages += 1
            if pages > MAX_REFERRER_PAGES:
                raise RegistryError(
                    f"{self.registry}: referrers of {digest[:19]}… in {repo} run past {MAX_REFERRER_PAGES} pages; refused"
                )
            response = self._send("GET", url, headers={"Accept": OCI_INDEX}, ok=(200, 404), stream=True)
            try:
                if response.status_code == 404:
                    response.read()
                    if pages == 1:
                        return None
                    raise RegistryError(f"{self.registry}: a page of the referrers of {digest[:19]}… vanished (404)")
                if response.status_code != 200:
                    response.read()
                    raise self._fail(response, f"referrers of {digest[:19]}… in {repo}")
                data, _ = self._read_manifest(
                    response.headers.get("Content-Length"), None, response.iter_bytes(), f"referrers of {digest[:19]}…"
                )
                link = response.headers.get("Link")
            finally:
                response.close()
            found += parse_referrers_index(data, f"{self.registry}: referrers of {digest[:19]}… in {repo}")
            url = _next_link(link, self.base)
        return found

    def _fast_headers(self, method: str, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": "imgtrack", **(extra or {})}
        held = self._auth.held_header(method, url) if self._auth else None
        if held:
            headers["Authorization"] = held
        return headers

    def _fast_get(self, url: str, extra: dict[str, str] | None = None) -> FastBody | None:
        """The 200 response to a GET over http.client, or None for httpx to make the request. Not tried
        when the registry has asked for credentials and none are held for this request: it would only
        answer 401 again, a round trip for nothing."""
        headers = self._fast_headers("GET", url, extra)
        if "Authorization" not in headers and self._auth is not None and self._auth.challenged:
            return None
        return self._fast.open(url, headers)

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """A manifest's bytes and media type, refused above 4 MiB."""
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        what = f"manifest {reference} of {repo}"
        body = self._fast_get(url, {"Accept": ACCEPT_MANIFESTS})
        if body is not None:
            try:
                return self._read_manifest(
                    body.header("Content-Length"),
                    body.header("Content-Type"),
                    body.chunks(f"{self.registry}: {what}"),
                    what,
                )
            finally:
                body.close()
        response = self._send("GET", url, headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise self._fail(response, what)
            return self._read_manifest(
                response.headers.get("Content-Length"),
                response.headers.get("Content-Type"),
                response.iter_bytes(),
                what,
            )
        finally:
            response.close()

    def _read_manifest(
        self, length: str | None, content_type: str | None, chunks: Iterator[bytes], what: str
    ) -> tuple[bytes, str]:
        if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{self.registry}: {what} is {length} bytes; over 4 MiB is refused")
        data = b""
        for chunk in chunks:
            data += chunk
            if len(data) > MAX_MANIFEST_BYTES:
                raise RegistryError(f"{self.registry}: {what} is over 4 MiB; refused")
        return data, (content_type or "").split(";")[0].strip()

    @contextmanager
    def blob_stream(self, repo: str, digest: str) -> Iterator[Iterator[bytes]]:
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        body = self._fast_get(url)
        if body is not None:
            try:
                yield body.chunks(f"{self.registry}: download of {digest[:19]}…")
            finally:
                body.close()
            return
        response = self._send("GET", url, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise self._fail(response, f"blob {digest[:19]}… of {repo}")
            # The network's own chunks: re-buffering them into bigger ones copies every byte once more.
            yield self._guarded(response.iter_bytes(), digest)
        finally:
            response.close()

    def _guarded(self, chunks: Iterator[bytes], digest: str) -> Iterator[bytes]:
        import httpx

        try:
            yield from chunks
        except httpx.TransportError as exc:
            raise TransferInterrupted(
                f"{self.registry}: download of {digest[:19]}… broke off ({_reason(exc)}); run the command again"
            ) from exc

    def _check_digest(self, response: httpx.Response, expected: str, what: str) -> None:
        self._check_said(response.headers.get("Docker-Content-Digest"), expected, what)

    def _check_said(self, said: str | None, expected: str, what: str) -> None:
        if said and said != expected:
            raise RegistryError(
                f"{self.registry}: {what} was stored as {said}, not {expected}; the registry altered it"
            )


MAX_REFERRER_PAGES = 100


def _next_link(header: str | None, base: str) -> str | None:
    """The `rel="next"` target of a `Link` header (RFC 8288), made absolute; None when there is none."""
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if target.startswith("<") and target.endswith(">") and re.search(r'rel="?next"?', params):
            link = target[1:-1]
            if link.startswith("/"):
                return f"{base}{link}"
            if link.startswith(base + "/"):
                return link
            return None  # a link to another host is not followed (credentials would go with it)
    return None


def _proxy_message(exc: Exception) -> str:
    """Why the proxy the environment names cannot be used (httpx reads it when a client is made)."""
    import os

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


def _session_lost(response: httpx.Response | None) -> bool:
    """An upload session the registry no longer knows: 404 (BLOB_UPLOAD_UNKNOWN), or 400 saying so, or
    BLOB_UPLOAD_INVALID for a session state it cannot read (a registry restarted with a new secret)."""
    if response is None or response.status_code not in (400, 404):
        return False
    return response.status_code == 404 or any(
        code in _error_codes(response) for code in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID")
    )


_ERROR_CODE_RE = re.compile(r"[A-Z][A-Z_]{1,40}")  # with fullmatch


def _error_codes(response: httpx.Response) -> str:
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


def _range_end(header: str | None, default: int) -> int:
    """The next offset after a `Range: 0-N` header (N+1), or `default` without one.

    The distribution registry says `0-0` for an empty upload too; a chunked upload never holds exactly
    one byte (chunks are far larger), so `0-0` means nothing received."""
    if not header or "-" not in header:
        return default
    if header.strip() == "0-0":
        return 0
    try:
        return int(header.rsplit("-", 1)[1]) + 1
    except ValueError:
        return default


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:160]
