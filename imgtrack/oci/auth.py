"""Registry credentials and the httpx auth flow (Basic, and Bearer with a token per scope).

Where credentials come from, in order (written down once): `--username`/`--password-stdin`, then the
environment (IMGTRACK_USERNAME / IMGTRACK_PASSWORD), then `$DOCKER_CONFIG/config.json` (`credHelpers`,
`credsStore`, `auths`), then podman's `auth.json`. Credentials are never printed, logged or written
by imgtrack; `Credentials.__repr__` hides the secret so a traceback cannot show it either.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Generator, Mapping
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlparse

import httpx

from imgtrack.errors import RegistryError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def docker_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", "~")).expanduser() / ".docker")
    return Path(base) / "config.json"


def podman_auth_paths(environ: Mapping[str, str]) -> list[Path]:
    paths = []
    if environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(environ["REGISTRY_AUTH_FILE"]))
    if environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    paths.append(Path(environ.get("HOME", "~")).expanduser() / ".config" / "containers" / "auth.json")
    return paths


def find_credentials(
    registry: str, username: str | None = None, password: str | None = None,
    environ: Mapping[str, str] = os.environ, explicit: bool = True,
) -> Credentials | None:
    """The credentials for `registry`, by the precedence in this module's docstring; None for anonymous.

    Flag and environment credentials name no registry, so they are used only where `explicit` says this
    registry is the command's own target: a source read while promoting, or a registry named by audit
    input, must never receive the target's secret. The config files are keyed by registry, always safe.
    """
    if explicit and username is not None and password is not None:
        return Credentials(username, password)
    if explicit and environ.get("IMGTRACK_USERNAME") and environ.get("IMGTRACK_PASSWORD") is not None:
        return Credentials(environ["IMGTRACK_USERNAME"], environ["IMGTRACK_PASSWORD"])
    keys = DOCKER_HUB_KEYS if registry in DOCKER_HUB_KEYS else (registry, f"https://{registry}", f"http://{registry}")
    found = _from_auth_file(docker_config_path(environ), keys, helpers=True)
    if found is None:
        for path in podman_auth_paths(environ):
            found = _from_auth_file(path, keys, helpers=False)
            if found is not None:
                break
    return found


def _from_auth_file(path: Path, keys: tuple[str, ...], helpers: bool) -> Credentials | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError(f"{path} is not readable JSON; fix it or move it away") from None
    if not isinstance(doc, dict):
        return None
    if helpers:
        for key in keys:
            helper = (doc.get("credHelpers") or {}).get(key)
            if helper:
                return _from_helper(helper, key)
    auths = doc.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            if entry.get("auth"):
                try:
                    user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RegistryError(f"{path}: the auth entry for {key} is not base64 user:password") from None
                return Credentials(user, secret)
            if entry.get("username") and entry.get("password") is not None:
                return Credentials(entry["username"], entry["password"])
    if helpers and doc.get("credsStore"):
        for key in keys:
            found = _from_helper(doc["credsStore"], key, missing_ok=True)
            if found is not None:
                return found
    return None


def _from_helper(helper: str, key: str, missing_ok: bool = False) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, "get"], input=key, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RegistryError(f"credential helper {program} is configured but not installed; install it") from None
    if proc.returncode != 0:
        if missing_ok:
            return None
        # The helper's output can hold secrets: only its exit status is reported.
        raise RegistryError(f"credential helper {program} found no credentials for {key} (exit {proc.returncode})")
    try:
        data = json.loads(proc.stdout)
        return Credentials(data["Username"], data["Secret"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RegistryError(f"credential helper {program} answered in an unknown format") from None


_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH_RE = re.compile(r"^/v2/(.+?)/(blobs|manifests|tags)/")


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

    def _scope(self, request: httpx.Request) -> str:
        m = _REPO_PATH_RE.match(request.url.path)
        if not m:
            return "registry:catalog:*" if request.url.path.startswith("/v2/_catalog") else ""
        actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
        scope = f"repository:{m.group(1)}:{actions}"
        mount_from = request.url.params.get("from")
        return f"{scope} repository:{mount_from}:pull" if mount_from else scope

    def held_header(self, request: httpx.Request) -> str | None:
        """The Authorization this client already holds for `request` (a cached token, or Basic once the
        registry asked for it), without asking anyone; None if it holds none."""
        scope = self._scope(request)
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self.credentials:
            return self.credentials.basic_header()
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = self._scope(request)
        if scope in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        elif self._basic and self.credentials:
            request.headers["Authorization"] = self.credentials.basic_header()
        response = yield request
        if response.status_code != 401:
            return
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
        self, request: httpx.Request, realm: str, service: str | None, scope: str,
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
            "GET", realm + ("&" if "?" in realm else "?") + urlencode(query), headers=headers,
        )
        started = time.monotonic()
        response = yield token_request
        response.read()
        if response.status_code in (401, 403):
            return None  # wrong credentials: the registry's 401 is what the caller reports
        if response.status_code != 200:
            raise RegistryError(
                f"{self.registry}: token service {url.netloc} answered {response.status_code} after "
                f"{time.monotonic() - started:.1f} s; try again later"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (json.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: token service {url.netloc} sent no token")
        return token

    requires_response_body = False


def store_credentials(registry: str, credentials: Credentials, environ: Mapping[str, str] = os.environ) -> str:
    """Save credentials the way `docker login` does: to the configured helper (credHelpers, then
    credsStore), else base64 in `config.json` `auths`. Returns where they went (never the secret)."""
    path = docker_config_path(environ)
    doc = _read_config(path)
    helper = (doc.get("credHelpers") or {}).get(registry) or doc.get("credsStore")
    if helper:
        program = f"docker-credential-{helper}"
        payload = json.dumps({"ServerURL": registry, "Username": credentials.username, "Secret": credentials.password})
        try:
            proc = subprocess.run([program, "store"], input=payload, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise RegistryError(f"credential helper {program} is configured but not installed; install it") from None
        if proc.returncode != 0:
            raise RegistryError(f"credential helper {program} could not store credentials (exit {proc.returncode})")
        return program
    auths = doc.setdefault("auths", {})
    auths[registry] = {"auth": base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()}
    _write_config(path, doc)
    return str(path)


def erase_credentials(registry: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Forget the credentials for `registry` (helper or `auths`); whether there were any."""
    path = docker_config_path(environ)
    doc = _read_config(path)
    helper = (doc.get("credHelpers") or {}).get(registry) or doc.get("credsStore")
    if helper:
        proc = subprocess.run([f"docker-credential-{helper}", "erase"], input=registry, capture_output=True, text=True)
        return proc.returncode == 0
    if registry not in (doc.get("auths") or {}):
        return False
    del doc["auths"][registry]
    _write_config(path, doc)
    return True


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError(f"{path} is not readable JSON; fix it or move it away") from None
    return doc if isinstance(doc, dict) else {}


def _write_config(path: Path, doc: dict[str, Any]) -> None:
    from imgtrack.fsutil import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
