"""A small registry that implements the distribution-spec 1.1 referrers API, for the tests.

The CNCF distribution registry the tests run (2.8) has no referrers API, and no registry that has one is
packaged for this machine. This one follows the spec for what imgtrack uses, and nothing more: the API
root, blobs (HEAD, GET, a monolithic upload: POST then PUT with `?digest=`), manifests (HEAD, GET, PUT by
tag or digest), and `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose `subject`
is that digest, filtered by `?artifactType=` (saying so in `OCI-Filters-Applied`), one descriptor a page
with a `Link: <…>; rel="next"` header, so that paging is exercised. A manifest PUT with a `subject` is
answered with `OCI-Subject`. Everything lives in memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, digest or tag) -> (bytes, type)
        self.uploads: set[str] = set()
        self.referrers: dict[tuple[str, str], list[dict]] = {}  # (repo, subject) -> descriptors
        self.requests: list[str] = []


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _route(self) -> tuple[str, str, str, dict[str, list[str]]]:
            url = urlsplit(self.path)
            path = url.path
            for kind in ("/blobs/uploads/", "/blobs/", "/manifests/", "/referrers/"):
                if kind in path:
                    repo, _, rest = path.removeprefix("/v2/").partition(kind)
                    return kind, repo, rest, parse_qs(url.query)
            return "", "", path, parse_qs(url.query)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            store.requests.append(f"{self.command} {self.path}")
            kind, repo, rest, query = self._route()
            if not kind and rest in ("/v2/", "/v2"):
                return self._send(200, b"{}", {"Content-Type": "application/json"})
            if kind == "/blobs/":
                data = store.blobs.get(rest)
                if data is None:
                    return self._send(404)
                return self._send(
                    200, data, {"Docker-Content-Digest": rest, "Content-Type": "application/octet-stream"}
                )
            if kind == "/manifests/":
                found = store.manifests.get((repo, rest))
                if found is None:
                    return self._send(404)
                data, media_type = found
                return self._send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": _digest(data)})
            if kind == "/referrers/":
                return self._referrers(repo, rest, query)
            self._send(404)

        def _referrers(self, repo: str, subject: str, query: dict[str, list[str]]) -> None:
            with store.lock:
                listed = list(store.referrers.get((repo, subject), []))
            headers = {"Content-Type": INDEX}
            if "artifactType" in query:
                listed = [d for d in listed if d.get("artifactType") == query["artifactType"][0]]
                headers["OCI-Filters-Applied"] = "artifactType"
            start = int(query.get("last", ["0"])[0])
            page = listed[start : start + 1]
            if start + 1 < len(listed):
                extra = f"&artifactType={query['artifactType'][0]}" if "artifactType" in query else ""
                headers["Link"] = f'</v2/{repo}/referrers/{subject}?n=1&last={start + 1}{extra}>; rel="next"'
            body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": page}).encode()
            self._send(200, body, headers)

        def do_POST(self) -> None:
            store.requests.append(f"POST {self.path}")
            kind, repo, _rest, _query = self._route()
            self._body()
            if kind != "/blobs/uploads/":
                return self._send(404)
            session = uuid.uuid4().hex
            store.uploads.add(session)
            self._send(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{session}", "Range": "0-0"})

        def do_PUT(self) -> None:
            store.requests.append(f"PUT {self.path}")
            kind, repo, rest, query = self._route()
            data = self._body()
            if kind == "/blobs/uploads/":
                digest = query.get("digest", [""])[0]
                if rest not in store.uploads or _digest(data) != digest:
                    return self._send(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                store.uploads.discard(rest)
                store.blobs[digest] = data
                return self._send(
                    201, headers={"Docker-Content-Digest": digest, "Location": f"/v2/{repo}/blobs/{digest}"}
                )
            if kind != "/manifests/":
                return self._send(404)
            media_type = (self.headers.get("Content-Type") or "").split(";")[0]
            digest = _digest(data)
            doc = json.loads(data)
            with store.lock:
                store.manifests[(repo, digest)] = (data, media_type)
                store.manifests[(repo, rest)] = (data, media_type)
                headers = {"Docker-Content-Digest": digest, "Location": f"/v2/{repo}/manifests/{digest}"}
                subject = doc.get("subject") if isinstance(doc, dict) else None
                if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
                    entry = {"mediaType": media_type, "digest": digest, "size": len(data)}
                    if doc.get("artifactType"):
                        entry["artifactType"] = doc["artifactType"]
                    if doc.get("annotations"):
                        entry["annotations"] = doc["annotations"]
                    listed = store.referrers.setdefault((repo, subject["digest"]), [])
                    if all(d["digest"] != digest for d in listed):
                        listed.append(entry)
                    headers["OCI-Subject"] = subject["digest"]
            self._send(201, headers=headers)

    return Handler


@contextmanager
def referrers_registry() -> Iterator[tuple[str, _Store]]:
    """A running registry with the referrers API: its host:port, and what it holds (for assertions)."""
    store = _Store()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
