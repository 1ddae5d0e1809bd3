"""The OCI distribution API, one sync client per registry, shared by a thread pool: the requests
of the spec and what their answers mean. How the bytes travel, retries and the translation of every
failure are transport.py's."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from imgtrack.errors import RegistryError
from imgtrack.oci.digest import digest_bytes
from imgtrack.oci.layout import Descriptor
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX
from imgtrack.oci.remote.auth import Credentials
from imgtrack.oci.remote.transport import RETRY_STATUS, RetryPolicy, Transport, error_codes

if TYPE_CHECKING:
    import httpx

ACCEPT_MANIFESTS = ", ".join(sorted(ALL_MANIFEST_TYPES))


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
        self.chunk_size = chunk_size  # blobs larger than this go up in resumable chunks of this size
        self.transport = Transport(
            registry, credentials, insecure=insecure, ca_file=ca_file, retry=retry, timeout=timeout, jobs=jobs
        )

    @property
    def base(self) -> str:
        return self.transport.base

    def close(self) -> None:
        self.transport.close()

    # --- API -------------------------------------------------------------------------------------

    def check(self) -> None:
        """GET /v2/: reachable, speaks the API, and accepts our credentials."""
        response = self.transport.send("GET", f"{self.base}/v2/")
        if response.status_code != 200:
            raise self.transport.fail(response, "the API root /v2/")

    def has_blob(self, repo: str, digest: str) -> bool:
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        fast = self.transport.fast_head(url)
        if fast is not None:
            return fast[0] == 200
        response = self.transport.send("HEAD", url, ok=(200, 404))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self.transport.fail(response, f"blob {digest[:19]}… in {repo}")

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest a tag (or digest) names in `repo`, by HEAD; None if it names nothing."""
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        fast = self.transport.fast_head(url, {"Accept": ACCEPT_MANIFESTS})
        if fast is not None:
            return (fast[1].get("docker-content-digest") or None) if fast[0] == 200 else None
        response = self.transport.send(
            "HEAD", f"{self.base}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}, ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.transport.fail(response, f"manifest {reference} of {repo}")
        said = response.headers.get("Docker-Content-Digest")
        return str(said) if said else None

    def manifest_size(self, repo: str, digest: str) -> int:
        """The size of the manifest `digest` in `repo`, by HEAD (what a descriptor of it needs)."""
        what = f"manifest {digest[:19]}… of {repo}"
        url = f"{self.base}/v2/{repo}/manifests/{digest}"
        fast = self.transport.fast_head(url, {"Accept": ACCEPT_MANIFESTS})
        if fast is not None and fast[0] == 200:
            length = fast[1].get("content-length") or ""
        else:
            response = self.transport.send("HEAD", url, headers={"Accept": ACCEPT_MANIFESTS}, ok=(200,))
            if response.status_code != 200:
                raise self.transport.fail(response, what)
            length = response.headers.get("Content-Length") or ""
        if not length.isdigit() or int(length) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{self.registry}: {what} has no usable Content-Length ({length[:20]!r}); refused")
        return int(length)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry would rather have an upload."""
        response = self.transport.send(
            "POST",
            f"{self.base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from_repo}",
            ok=(201, 202),
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            self.transport.cancel(response)
            return False
        raise self.transport.fail(response, f"mount of {digest[:19]}… into {repo}")

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
        start = self.transport.send("POST", f"{self.base}/v2/{repo}/blobs/uploads/", ok=(202,))
        if start.status_code != 202:
            raise self.transport.fail(start, f"upload to {repo}")
        location = self.transport.absolute(start.headers.get("Location", ""))
        sep = "&" if "?" in location else "?"
        if extent is not None and self.transport.fast_enabled and location.startswith(self.base + "/"):
            url = f"{location}{sep}digest={digest}"
            said = self.transport.fast_put_file(url, {"Content-Type": "application/octet-stream"}, extent, size)
            if said is not None:
                self.transport.check_said(said, digest, f"blob upload to {repo}")
                return
            # The session may be spent: start a fresh one through httpx.
            self.upload_blob(repo, digest, size, open_body)
            return
        done = self.transport.send(
            "PUT",
            f"{location}{sep}digest={digest}",
            content=open_body,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if done.status_code != 201:
            raise self.transport.fail(done, f"upload of {digest[:19]}… to {repo}")
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
            start = self.transport.send("POST", f"{self.base}/v2/{repo}/blobs/uploads/", ok=(202,))
            if start.status_code != 202:
                raise self.transport.fail(start, f"upload to {repo}")
            return self.transport.absolute(start.headers.get("Location", ""))

        location = open_session()
        offset, failures = 0, 0
        while offset < size:
            end = min(offset + chunk_size, size)
            try:
                response = self.transport.send(
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
                location = self.transport.absolute(response.headers.get("Location", location))
                offset = _range_end(response.headers.get("Range"), end)
                continue
            lost = _session_lost(response)
            if response is not None and not lost and response.status_code not in (416, *RETRY_STATUS):
                raise self.transport.fail(response, f"upload of {digest[:19]}… to {repo}")
            failures += 1
            if failures >= self.transport.retry.tries:
                raise RegistryError(
                    f"{self.registry}: upload of {digest[:19]}… to {repo} kept breaking off at byte {offset}; "
                    "run the command again: blobs the registry holds are not sent again, this one is sent "
                    "from its start"
                )
            time.sleep(self.transport.delay(failures, None))
            status = None if lost else self.transport.send("GET", location, ok=(204, 400, 404))
            if status is None or _session_lost(status):
                location, offset = open_session(), 0  # the registry lost the session: this blob starts again
                continue
            if status.status_code != 204:
                raise self.transport.fail(status, f"upload status of {digest[:19]}… in {repo}")
            location = self.transport.absolute(status.headers.get("Location", location))
            offset = _range_end(status.headers.get("Range"), 0)
        sep = "&" if "?" in location else "?"
        done = self.transport.send("PUT", f"{location}{sep}digest={digest}", ok=(201,), headers={"Content-Length": "0"})
        if done.status_code != 201:
            raise self.transport.fail(done, f"upload of {digest[:19]}… to {repo}")
        self._check_digest(done, digest, f"blob upload to {repo}")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None:
        """PUT a manifest by tag or digest; the `OCI-Subject` the registry answers with (a manifest with a
        `subject`, on a registry with the referrers API), else None."""
        response = self.transport.send(
            "PUT",
            f"{self.base}/v2/{repo}/manifests/{reference}",
            content=lambda: data,
            headers={"Content-Type": media_type},
            ok=(201,),
        )
        if response.status_code != 201:
            raise self.transport.fail(response, f"manifest {reference} in {repo}")
        self._check_digest(response, digest_bytes(data), f"manifest {reference} in {repo}")
        subject = response.headers.get("OCI-Subject")
        return str(subject) if subject else None

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
            what = f"referrers of {digest[:19]}…"
            body = self.transport.fast_get(url, {"Accept": OCI_INDEX}, final=(200, 404))
            if body is not None:
                try:
                    if body.status == 404:
                        if pages == 1:
                            return None
                        raise RegistryError(f"{self.registry}: a page of the {what} vanished (404)")
                    chunks = self.transport.read_body(body.chunks(), what)
                    data, _ = self._read_manifest(body.header("Content-Length"), None, chunks, what)
                    link = body.header("Link")
                finally:
                    body.close()
            else:
                page, link = self._referrers_page(url, pages, what, repo)
                if page is None:
                    return None
                data = page
            found += parse_referrers_index(data, f"{self.registry}: referrers of {digest[:19]}… in {repo}")
            url = _next_link(link, self.base)
        return found

    def _referrers_page(self, url: str, page: int, what: str, repo: str) -> tuple[bytes | None, str | None]:
        """(body, Link) of one page of referrers through httpx; (None, None) for a 404 first page."""
        response = self.transport.send("GET", url, headers={"Accept": OCI_INDEX}, ok=(200, 404), stream=True)
        try:
            if response.status_code == 404:
                response.read()
                if page == 1:
                    return None, None
                raise RegistryError(f"{self.registry}: a page of the {what} vanished (404)")
            if response.status_code != 200:
                response.read()
                raise self.transport.fail(response, f"{what} in {repo}")
            chunks = self.transport.read_body(response.iter_bytes(), what)
            data, _ = self._read_manifest(response.headers.get("Content-Length"), None, chunks, what)
            return data, response.headers.get("Link")
        finally:
            response.close()

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """A manifest's bytes and media type, refused above 4 MiB."""
        found = self.get_manifest_if_any(repo, reference)
        if found is None:
            raise self.transport.not_found(f"manifest {reference} of {repo}")
        return found

    def get_manifest_if_any(self, repo: str, reference: str) -> tuple[bytes, str] | None:
        """`get_manifest`, or None when the registry has no such manifest (404)."""
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        what = f"manifest {reference} of {repo}"
        body = self.transport.fast_get(url, {"Accept": ACCEPT_MANIFESTS}, final=(200, 404))
        if body is not None:
            try:
                if body.status == 404:
                    return None
                return self._read_manifest(
                    body.header("Content-Length"),
                    body.header("Content-Type"),
                    self.transport.read_body(body.chunks(), what),
                    what,
                )
            finally:
                body.close()
        response = self.transport.send("GET", url, headers={"Accept": ACCEPT_MANIFESTS}, ok=(200, 404), stream=True)
        try:
            if response.status_code == 404:
                response.read()
                return None
            if response.status_code != 200:
                response.read()
                raise self.transport.fail(response, what)
            return self._read_manifest(
                response.headers.get("Content-Length"),
                response.headers.get("Content-Type"),
                self.transport.read_body(response.iter_bytes(), what),
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
        body = self.transport.fast_get(url)
        if body is not None:
            try:
                yield self.transport.read_body(body.chunks(), f"download of {digest[:19]}…")
            finally:
                body.close()
            return
        response = self.transport.send("GET", url, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise self.transport.fail(response, f"blob {digest[:19]}… of {repo}")
            # The network's own chunks: re-buffering them into bigger ones copies every byte once more.
            yield self.transport.read_body(response.iter_bytes(), f"download of {digest[:19]}…")
        finally:
            response.close()

    def _check_digest(self, response: httpx.Response, expected: str, what: str) -> None:
        self.transport.check_said(response.headers.get("Docker-Content-Digest"), expected, what)


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


def _session_lost(response: httpx.Response | None) -> bool:
    """An upload session the registry no longer knows: 404 (BLOB_UPLOAD_UNKNOWN), or 400 saying so, or
    BLOB_UPLOAD_INVALID for a session state it cannot read (a registry restarted with a new secret)."""
    if response is None or response.status_code not in (400, 404):
        return False
    return response.status_code == 404 or any(
        code in error_codes(response) for code in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID")
    )


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
