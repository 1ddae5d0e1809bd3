"""Registry credentials: where they come from, and where `login` stores them (the auth flow that
uses them is in authflow.py, which needs httpx; this module does not).

Where credentials come from, in order (written down once): `--username`/`--password-stdin`, then the
environment (IMGTRACK_USERNAME / IMGTRACK_PASSWORD), then `$DOCKER_CONFIG/config.json` (`credHelpers`,
`auths`, `credsStore`), then podman's `auth.json`. A helper that knows nothing of the registry (it says
"credentials not found", or answers an empty user and secret, as docker-credential-pass does) is no
answer: the next source is asked. Credentials are never printed, logged or written
by imgtrack; `Credentials.__repr__` hides the secret so a traceback cannot show it either.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtrack.errors import RegistryError, UsageError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
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
    registry: str,
    username: str | None = None,
    password: str | None = None,
    environ: Mapping[str, str] = os.environ,
    explicit: bool = True,
) -> Credentials | None:
    """The credentials for `registry`, by the precedence in this module's docstring; None for anonymous.

    Flag and environment credentials name no registry, so they are used only where `explicit` says this
    registry is the command's own target: a source read while promoting, or a registry named by audit
    input, must never receive the target's secret. The config files are keyed by registry, always safe.
    """
    if explicit and username is not None and password is not None:
        return Credentials(username, password)
    env_user, env_secret = environ.get("IMGTRACK_USERNAME"), environ.get("IMGTRACK_PASSWORD")
    if explicit and (env_user or env_secret):
        if not env_user or not env_secret or any(not c.isprintable() for c in env_user):
            raise UsageError(
                "environment variables IMGTRACK_USERNAME and IMGTRACK_PASSWORD go together, and neither "
                "may be empty (nor the user name hold a control character); set both or unset both"
            )
        return Credentials(env_user, env_secret)
    keys = DOCKER_HUB_KEYS if registry in DOCKER_HUB_KEYS else (registry, f"https://{registry}", f"http://{registry}")
    found = _from_auth_file(docker_config_path(environ), keys, helpers=True)
    if found is None:
        for path in podman_auth_paths(environ):
            found = _from_auth_file(path, keys, helpers=False)
            if found is not None:
                break
    return found


def _from_auth_file(path: Path, keys: tuple[str, ...], helpers: bool) -> Credentials | None:
    doc = _read_json(path)
    if doc is None:
        return None
    if helpers:
        for key in keys:
            helper = (doc.get("credHelpers") or {}).get(key)
            if helper:
                found = _from_helper(helper, key)
                if found is not None:
                    return found
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
        if missing_ok or "credentials not found" in proc.stdout + proc.stderr:
            return None  # docker's helper protocol for "nothing stored for this server"
        # The helper's output can hold secrets: only its exit status is reported.
        raise RegistryError(f"credential helper {program} failed for {key} (exit {proc.returncode}); check the helper")
    try:
        data = json.loads(proc.stdout)
        username, secret = data["Username"], data["Secret"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RegistryError(f"credential helper {program} answered in an unknown format") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryError(f"credential helper {program} answered in an unknown format")
    if not username and not secret:
        return None  # an empty answer: nothing stored for this server
    return Credentials(username, secret)


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


MAX_AUTH_FILE_BYTES = 4 * 1024 * 1024


def _read_json(path: Path) -> dict[str, Any] | None:
    """A docker or podman auth file as a dict; None when there is none (or it holds no object)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_AUTH_FILE_BYTES + 1)
        if len(data) > MAX_AUTH_FILE_BYTES:
            raise RegistryError(f"{path} is over 4 MiB, far more than an auth file holds; fix it or move it away")
        doc = json.loads(data)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise RegistryError(f"{path} is not readable JSON; fix it or move it away") from None
    return doc if isinstance(doc, dict) else None


def _read_config(path: Path) -> dict[str, Any]:
    return _read_json(path) or {}


def _write_config(path: Path, doc: dict[str, Any]) -> None:
    from imgtrack.fsutil import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
