"""Credentials and the auth flow as pure logic (httpx.MockTransport): where secrets go, and where not."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imgtrack.errors import RegistryError
from imgtrack.oci.pool import Registries
from imgtrack.oci.remote.auth import Credentials, find_credentials
from imgtrack.oci.remote.authflow import RegistryAuth

SECRET = "s3ntinel-not-for-logs"


def test_precedence_flags_environment_docker_podman(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(
        json.dumps({"auths": {"reg.example.com": {"auth": base64.b64encode(b"docker-user:docker-pw").decode()}}})
    )
    podman = tmp_path / "auth.json"
    podman.write_text(json.dumps({"auths": {"other.example.com": {"auth": base64.b64encode(b"pod:pw").decode()}}}))
    env = {"DOCKER_CONFIG": str(docker), "REGISTRY_AUTH_FILE": str(podman), "HOME": str(tmp_path)}
    assert find_credentials("reg.example.com", "flag", "pw", env) == Credentials("flag", "pw")
    assert find_credentials(
        "reg.example.com", environ={**env, "IMGTRACK_USERNAME": "e", "IMGTRACK_PASSWORD": "p"}
    ) == Credentials("e", "p")
    assert find_credentials("reg.example.com", environ=env) == Credentials("docker-user", "docker-pw")
    assert find_credentials("other.example.com", environ=env) == Credentials("pod", "pw")
    assert find_credentials("nobody.example.com", environ=env) is None


def test_explicit_credentials_go_only_to_the_commands_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGTRACK_USERNAME", "ci")
    monkeypatch.setenv("IMGTRACK_PASSWORD", SECRET)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registries = Registries(targets={"target.example.com"})
    try:
        target = registries.client("target.example.com").transport.http.auth
        source = registries.client("source.example.com").transport.http.auth
        assert isinstance(target, RegistryAuth) and target.credentials == Credentials("ci", SECRET)
        assert isinstance(source, RegistryAuth) and source.credentials is None
        assert SECRET not in repr(target.credentials)
    finally:
        registries.close()
    flags = Registries(username="flag-user", password=SECRET, targets={"target.example.com"})
    try:
        assert flags.client("target.example.com").transport.http.auth.credentials == Credentials("flag-user", SECRET)  # type: ignore[union-attr]
        assert flags.client("source.example.com").transport.http.auth.credentials is None  # type: ignore[union-attr]
    finally:
        flags.close()


def _registry_with_token_service(seen: list[httpx.Request], realm: str = "https://auth.example.com/token"):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example.com" or request.url.path == "/token":
            scope = request.url.params.get_list("scope")
            return httpx.Response(200, json={"token": "tok-" + "+".join(scope)})
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer tok-"):
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",scope="repository:team/api:pull"'},
            )
        return httpx.Response(200, json={"ok": True})

    return handler


def test_bearer_challenge_fetches_a_token_per_scope_and_caches_it() -> None:
    seen: list[httpx.Request] = []
    auth = RegistryAuth("reg.example.com", Credentials("u", SECRET))
    with httpx.Client(transport=httpx.MockTransport(_registry_with_token_service(seen)), auth=auth) as client:
        assert client.get("https://reg.example.com/v2/team/api/manifests/1").status_code == 200
        assert client.get("https://reg.example.com/v2/team/api/manifests/2").status_code == 200
    token_requests = [r for r in seen if r.url.host == "auth.example.com"]
    assert len(token_requests) == 1, "the token is cached for its scope"
    assert token_requests[0].headers["Authorization"] == Credentials("u", SECRET).basic_header()


def test_no_credentials_to_a_plain_http_realm_on_another_host() -> None:
    seen: list[httpx.Request] = []
    auth = RegistryAuth("reg.example.com", Credentials("u", SECRET))
    handler = _registry_with_token_service(seen, realm="http://auth.example.com/token")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        with pytest.raises(RegistryError) as caught:
            client.get("https://reg.example.com/v2/team/api/manifests/1")
    assert "plain HTTP" in str(caught.value) and SECRET not in str(caught.value)
    assert not any(r.url.host == "auth.example.com" for r in seen)


def test_authorization_does_not_follow_a_redirect_to_another_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "reg.example.com":
            if "Authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"Location": "https://storage.example.net/blob?sig=x"})
        return httpx.Response(200, content=b"blob")

    with httpx.Client(
        transport=httpx.MockTransport(handler),
        auth=RegistryAuth("reg.example.com", Credentials("u", SECRET)),
        follow_redirects=True,
    ) as client:
        assert client.get("https://reg.example.com/v2/team/api/blobs/sha256:" + "a" * 64).content == b"blob"
    storage = [r for r in seen if r.url.host == "storage.example.net"]
    assert storage and all("Authorization" not in r.headers for r in storage)


def test_an_endless_token_answer_is_cut_off() -> None:
    def endless() -> Iterator[bytes]:
        yield b'{"token": "'
        while True:
            yield b"x" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, stream=_Endless(endless()))
        return httpx.Response(
            401,
            headers={
                "WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",'
                'service="reg",scope="repository:team/api:pull"'
            },
        )

    auth = RegistryAuth("reg.example.com", Credentials("u", SECRET))
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        with pytest.raises(RegistryError, match="sent over 1024 KiB"):
            client.get("https://reg.example.com/v2/team/api/manifests/1")


class _Endless(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks


def test_an_auth_file_past_its_limit_is_refused_not_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes(b'{"auths": {}, "x": "' + b"y" * (4 * 1024 * 1024) + b'"}')
    with pytest.raises(RegistryError, match="over 4 MiB"):
        find_credentials("reg.example.com", environ={"DOCKER_CONFIG": str(tmp_path), "HOME": str(tmp_path)})
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RegistryError, match="not readable JSON"):
        find_credentials("reg.example.com", environ={"DOCKER_CONFIG": str(tmp_path), "HOME": str(tmp_path)})
