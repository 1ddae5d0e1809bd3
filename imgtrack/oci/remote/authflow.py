"""The httpx auth flow for registries: Basic, and Bearer with a token per scope.

Imported only when a request goes through httpx; credentials come from auth.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator
from urllib.parse import parse_qs, urlencode, urlparse, urlsplit

import httpx

from imgtrack.errors import RegistryError
from imgtrack.oci.remote.auth import Credentials, is_loopback

MAX_TOKEN_BYTES = 1024 * 1024
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH_RE = re.compile(r"^/v2/(.+?)/(blobs|manifests|tags)/")


def scope_of(method: str, url: str) -> str:
    """The token scope a request needs: pull for reads, pull,push for writes, and pull on the source
    repository of a cross-repository mount."""
    parts = urlsplit(url)
    m = _REPO_PATH_RE.match(parts.path)
    if not m:
        return "registry:catalog:*" if parts.path.startswith("/v2/_catalog") else ""
    actions = "pull" if method in ("GET", "HEAD") else "pull,push"
    scope = f"repository:{m.group(1)}:{actions}"
    mount_from = parse_qs(parts.query).get("from")
    return f"{scope} repository:{mount_from[0]}:pull" if mount_from else scope


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(params))


class RegistryAuth(httpx.Auth):
    """Basic, or Bearer tokens fetched from the challenge's realm and cached per scope (thread-safe
    enough: a token fetched twice by two threads is harmless)."""

    def __init__(self, registry: str, credentials: Credentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._basic = False
        self.challenged = False  # the registry answered 401 at least once: it wants credentials

    def held_header(self, method: str, url: str) -> str | None:
        """The Authorization this client already holds for a request (a cached token, or Basic once the
        registry asked for it), without asking anyone; None if it holds none."""
        scope = scope_of(method, url)
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self.credentials:
            return self.credentials.basic_header()
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = scope_of(request.method, str(request.url))
        if scope in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        elif self._basic and self.credentials:
            request.headers["Authorization"] = self.credentials.basic_header()
        response = yield request
        if response.status_code != 401:
            return
        self.challenged = True
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None or self._basic and "Authorization" in request.headers:
                return
            self._basic = True
            request.headers["Authorization"] = self.credentials.basic_header()
            yield request
        elif scheme == "bearer" and params.get("realm"):
            # The challenge names the scope the registry wants (on insufficient scope too).
            wanted = params.get("scope") or scope
            token = yield from self._fetch_token(request, params["realm"], params.get("service"), wanted)
            if token is None:
                return
            self._tokens[scope] = self._tokens[wanted] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _fetch_token(
        self,
        request: httpx.Request,
        realm: str,
        service: str | None,
        scope: str,
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        url = urlparse(realm)
        if url.scheme not in ("https", "http"):
            raise RegistryError(f"{self.registry}: token realm {realm!r} is not an http(s) URL")
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scope.split()]
        headers = {}
        if self.credentials is not None:
            # Credentials never travel in clear text: only to an https realm. A registry reached over
            # plain HTTP (loopback, or marked insecure) may use a plain realm on loopback; one reached
            # over TLS never downgrades its credentials, whatever host the realm names.
            if url.scheme == "https" or request.url.scheme == "http" and is_loopback(url.netloc):
                headers["Authorization"] = self.credentials.basic_header()
            else:
                raise RegistryError(
                    f"{self.registry}: the token realm {url.scheme}://{url.netloc} is plain HTTP; "
                    "refusing to send credentials there (ask the registry's operator for an https realm)"
                )
        token_request = httpx.Request(
            "GET",
            realm + ("&" if "?" in realm else "?") + urlencode(query),
            headers=headers,
        )
        started = time.monotonic()
        response = yield token_request
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_TOKEN_BYTES:  # a token is a few KB: an endless answer is cut off
                response.close()
                raise RegistryError(
                    f"{self.registry}: token service {url.netloc} sent over "
                    f"{MAX_TOKEN_BYTES // 1024} KiB; refused (a token is far smaller)"
                )
        # httpx reads each response of an auth flow once more when the flow goes on; the body read here
        # is what it then finds (Response.read returns `_content` when it is set).
        response._content = body
        if response.status_code in (401, 403):
            return None  # wrong credentials: the registry's 401 is what the caller reports
        if response.status_code != 200:
            raise RegistryError(
                f"{self.registry}: token service {url.netloc} answered {response.status_code} after "
                f"{time.monotonic() - started:.1f} s; try again later"
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: token service {url.netloc} sent no token")
        return token

    requires_response_body = False
