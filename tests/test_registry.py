"""push and pull against the real distribution registry (plain, Basic auth, TLS), checked with skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from testkit.registries import PASSWORD, USER, Registry
from tests.conftest import LayoutFactory, fact_files, git, record_file, run


def skopeo_digest(ref: str, *flags: str) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *flags, ref], check=True, capture_output=True
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_push_pull_round_trip_with_skopeo(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    git(project, "tag", "v1.0.0")
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64/v8"))
    repo = plain_registry.repo()
    pushed = run(["push", str(path), "--image", "api", "--to", repo, "--json"], project)
    assert pushed.code == 0, pushed.err
    data = pushed.json()
    assert data["pushed"][0]["recorded"] and data["pushed"][0]["bytes_copied"] > 0
    for tag in ("1.0.0", "1.0", f"sha-{data['commit'][:7]}"):
        assert skopeo_digest(f"docker://{repo}:{tag}") == digest
    assert f'repository = "{repo}"' in fact_files(project, data, "push")[0].read_text()

    again = run(["push", "api@1.0.0", "--to", repo, "--json"], project).json()["pushed"][0]
    assert again["bytes_copied"] == 0 and again["recorded"] is False

    target = tmp_path / "pulled"
    assert run(["pull", "api@1.0.0", "--to", str(target)], project).code == 0
    assert skopeo_digest(f"oci:{target}:1.0.0") == digest
    # What skopeo pushes, imgtrack pulls: by tag, outside any repository.
    other = plain_registry.repo("from-skopeo")
    subprocess.run(
        ["skopeo", "copy", "-q", "--all", "--dest-tls-verify=false", f"oci:{target}:1.0.0", f"docker://{other}:v1"],
        check=True,
    )
    out = tmp_path / "out"
    result = run(["pull", f"{other}:v1", "--to", str(out)], tmp_path)
    assert result.code == 0, result.err
    assert skopeo_digest(f"oci:{out}:v1") == digest


def test_push_to_another_repository_mounts_blobs(
    project: Path, layouts: LayoutFactory, plain_registry: Registry
) -> None:
    path, _ = layouts()
    first, second = plain_registry.repo("a"), plain_registry.repo("b")
    assert run(["push", str(path), "--image", "api", "--to", first], project).code == 0
    moved = run(["push", str(path), "--to", second, "--json"], project).json()["pushed"][0]
    assert moved["bytes_copied"] == 0, "layers came by cross-repository mount, not upload"
    assert moved["recorded"]


def test_drift_on_registry_tag_is_refused(project: Path, layouts: LayoutFactory, plain_registry: Registry) -> None:
    repo = plain_registry.repo()
    first, _ = layouts()
    rec = run(["push", str(first), "--image", "api", "--to", repo, "--json"], project).json()
    other, _ = layouts()
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{other}:latest-build",
            f"docker://{repo}:{rec['tags'][0]}",
        ],
        check=True,
    )
    before = record_file(project, rec).read_text()
    result = run(["push", rec["digest"], "--to", repo], project)
    assert result.code == 1 and "drifted" in result.err
    assert record_file(project, rec).read_text() == before


def test_basic_auth_from_environment_and_docker_config(
    project: Path, layouts: LayoutFactory, basic_registry: Registry, isolated_home: Path
) -> None:
    path, digest = layouts()
    repo = basic_registry.repo()
    anonymous = run(["push", str(path), "--image", "api", "--to", repo], project)
    assert anonymous.code == 3 and basic_registry.host in anonymous.err and "401" in anonymous.err
    assert not list((project / ".imgtrack" / "ledger" / "api").glob("*/*/push-*.toml"))

    wrong = run(
        ["push", str(path), "--to", repo],
        project,
        env={"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": "not-" + PASSWORD},
    )
    assert wrong.code == 3 and "refused the credentials" in wrong.err
    assert PASSWORD not in wrong.err + wrong.out and "not-" + PASSWORD not in wrong.err + wrong.out

    ok = run(
        ["push", str(path), "--to", repo, "--json"],
        project,
        env={"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": PASSWORD},
    )
    assert ok.code == 0, ok.err
    assert PASSWORD not in ok.out + ok.err
    assert skopeo_digest(f"docker://{repo}:{ok.json()['tags'][0]}", "--creds", f"{USER}:{PASSWORD}") == digest

    docker = isolated_home / ".docker"
    docker.mkdir(exist_ok=True)
    import base64

    (docker / "config.json").write_text(
        json.dumps({"auths": {basic_registry.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}})
    )
    try:
        out = project.parent / "pulled"
        pulled = run(["pull", f"{repo}@{digest}", "--to", str(out)], project)
        assert pulled.code == 0, pulled.err
    finally:
        (docker / "config.json").unlink()
    for text in [p.read_text() for p in (project / ".imgtrack").rglob("*.toml")]:
        assert PASSWORD not in text


def test_password_stdin(project: Path, layouts: LayoutFactory, basic_registry: Registry) -> None:
    path, _ = layouts()
    result = run(
        ["push", str(path), "--image", "api", "--to", basic_registry.repo(), "--username", USER, "--password-stdin"],
        project,
        stdin=PASSWORD + "\n",
    )
    assert result.code == 0, result.err


def test_tls_registry_needs_its_ca(project: Path, layouts: LayoutFactory, tls_registry: Registry) -> None:
    path, digest = layouts()
    repo = tls_registry.repo()
    untrusted = run(["push", str(path), "--image", "api", "--to", repo], project)
    assert untrusted.code == 3 and "not trusted" in untrusted.err and "--ca-file" in untrusted.err
    trusted = run(["push", str(path), "--to", repo, "--ca-file", str(tls_registry.ca_file), "--json"], project)
    assert trusted.code == 0, trusted.err
    assert skopeo_digest(f"docker://{repo}:{trusted.json()['tags'][0]}") == digest
    out = project.parent / "pulled-tls"
    pulled = run(["pull", f"{repo}@{digest}", "--to", str(out), "--ca-file", str(tls_registry.ca_file)], project)
    assert pulled.code == 0, pulled.err
    assert skopeo_digest(f"oci:{out}") == digest
    # Without --ca-file, the system trust store decides; OpenSSL reads its location from SSL_CERT_FILE.
    system = run(
        ["pull", f"{repo}@{digest}", "--to", str(project.parent / "pulled-tls-system")],
        project,
        env={"SSL_CERT_FILE": str(tls_registry.ca_file)},
    )
    assert system.code == 0, system.err
    junk = project.parent / "not-a-ca.pem"
    junk.write_text("hello\n")
    bad = run(["pull", f"{repo}@{digest}", "--to", str(project.parent / "x"), "--ca-file", str(junk)], project)
    assert bad.code == 3 and f"--ca-file {junk} cannot be loaded" in bad.err and len(bad.err.splitlines()) == 1
    assert not (project.parent / "x").exists()


def test_unreachable_registry_and_missing_repository(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    from testkit.registries import free_port

    path, _ = layouts()
    down = run(["push", str(path), "--image", "api", "--to", f"127.0.0.1:{free_port()}/team/api"], project)
    assert down.code == 3 and "failed after" in down.err and "Traceback" not in down.err
    missing = run(["pull", f"{plain_registry.repo('nothing')}:1.0", "--to", str(tmp_path / "x")], tmp_path)
    assert missing.code == 3 and "not found" in missing.err
    assert not (tmp_path / "x").exists()
    bad = run(["pull", "Registry.Example/UPPER:tag", "--to", str(tmp_path / "y")], tmp_path)
    assert bad.code == 2 and "lowercase" in bad.err


def test_token_auth_push_and_pull(
    project: Path, layouts: LayoutFactory, token_registry: Registry, tmp_path: Path
) -> None:
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64"))
    repo = token_registry.repo()
    creds = {"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": PASSWORD}
    anonymous = run(["push", str(path), "--image", "api", "--to", repo], project)
    assert anonymous.code == 3 and "refused the credentials" in anonymous.err
    pushed = run(["push", str(path), "--to", repo, "--json"], project, env=creds)
    assert pushed.code == 0, pushed.err
    assert skopeo_digest(f"docker://{repo}:{pushed.json()['tags'][0]}", "--creds", f"{USER}:{PASSWORD}") == digest
    # A second repository: the mount needs push on the target and pull on the source, in one token.
    second = token_registry.repo("second")
    mounted = run(["push", digest, "--to", second, "--json"], project, env=creds)
    assert mounted.code == 0, mounted.err
    assert mounted.json()["pushed"][0]["bytes_copied"] == 0
    out = tmp_path / "pulled"
    pulled = run(["pull", f"{second}@{digest}", "--to", str(out)], tmp_path, env=creds)
    assert pulled.code == 0, pulled.err
    assert skopeo_digest(f"oci:{out}") == digest
    assert PASSWORD not in pushed.out + pushed.err + mounted.out + pulled.out


def test_a_registry_that_asked_for_credentials_is_not_asked_again_without_them(
    project: Path, layouts: LayoutFactory, token_registry: Registry
) -> None:
    """Promote within a token-auth registry: the destination's first request meets the challenge, so
    the source manifest, for which no token is held yet, goes straight to the auth flow: one 401, not two."""
    from tests.faultproxy import FaultProxy

    proxy = FaultProxy(token_registry.host)  # forwards everything; records what it forwarded
    try:
        path, digest = layouts()
        creds = {"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": PASSWORD}
        pushed = run(
            ["push", str(path), "--image", "api", "--to", f"{proxy.host}/team/source", "--json"], project, env=creds
        )
        assert pushed.code == 0, pushed.err
        proxy.forwarded.clear()
        promoted = run(
            ["promote", f"api@{pushed.json()['version']}", "--to", f"{proxy.host}/team/target"], project, env=creds
        )
        assert promoted.code == 0, promoted.err
        source_gets = [
            (status, auth)
            for method, p, status, auth in proxy.forwarded
            if method == "GET" and p.startswith("/v2/team/source/manifests/")
        ]
        assert source_gets and source_gets[-1] == (200, True)
        assert [g for g in source_gets if not g[1]] == [(401, False)]
    finally:
        proxy.close()


def test_login_logout_with_docker_config(
    project: Path, layouts: LayoutFactory, basic_registry: Registry, isolated_home: Path
) -> None:
    config = isolated_home / ".docker" / "config.json"
    wrong = run(["login", basic_registry.host, "-u", USER, "--password-stdin"], project, stdin="nope\n")
    assert wrong.code == 3 and "refused the credentials" in wrong.err and not config.exists()
    assert "nope" not in wrong.err
    assert run(["login", basic_registry.host, "-u", USER], project).code == 2  # no password on argv
    ok = run(["login", basic_registry.host, "-u", USER, "--password-stdin"], project, stdin=PASSWORD + "\n")
    assert ok.code == 0, ok.err
    assert PASSWORD not in ok.out + ok.err
    assert basic_registry.host in json.loads(config.read_text())["auths"]
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    path, _ = layouts()
    assert run(["push", str(path), "--image", "api", "--to", basic_registry.repo()], project).code == 0
    assert run(["logout", basic_registry.host], project).code == 0
    assert basic_registry.host not in json.loads(config.read_text())["auths"]
    assert run(["push", str(path), "--to", basic_registry.repo()], project).code == 3


def test_credential_helper(
    project: Path, layouts: LayoutFactory, basic_registry: Registry, isolated_home: Path, tmp_path: Path
) -> None:
    """`credHelpers` names a docker-credential-* program; imgtrack runs it, as docker does."""
    store = tmp_path / "helper-store.json"
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    helper = helper_dir / "docker-credential-imgtracktest"
    helper.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"store = {str(store)!r}\n"
        "action = sys.argv[1]\nkey = sys.stdin.read().strip()\n"
        "try:\n    data = json.load(open(store))\nexcept FileNotFoundError:\n    data = {}\n"
        "if action == 'get':\n"
        "    if key not in data:\n        print('credentials not found'); sys.exit(1)\n"
        "    print(json.dumps({'Username': data[key][0], 'Secret': data[key][1]}))\n"
        "elif action == 'store':\n    d = json.loads(key); data[d['ServerURL']] = [d['Username'], d['Secret']]\n"
        "    json.dump(data, open(store, 'w'))\n"
        "elif action == 'erase':\n    data.pop(key, None); json.dump(data, open(store, 'w'))\n"
    )
    helper.chmod(0o755)
    config = isolated_home / ".docker" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text(json.dumps({"credHelpers": {basic_registry.host: "imgtracktest"}}))
    env = {"PATH": f"{helper_dir}:{__import__('os').environ['PATH']}"}
    try:
        ok = run(
            ["login", basic_registry.host, "-u", USER, "--password-stdin"], project, stdin=PASSWORD + "\n", env=env
        )
        assert ok.code == 0, ok.err
        assert "docker-credential-imgtracktest" in ok.out and PASSWORD not in config.read_text()
        path, _ = layouts()
        pushed = run(["push", str(path), "--image", "api", "--to", basic_registry.repo()], project, env=env)
        assert pushed.code == 0, pushed.err
    finally:
        config.unlink()


def test_verify_remote_finds_drift_and_deleted_manifests(
    project: Path, layouts: LayoutFactory, plain_registry: Registry
) -> None:
    git(project, "tag", "v2.0.0")
    path, digest = layouts()
    repo = plain_registry.repo()
    rec = run(["push", str(path), "--image", "api", "--to", repo, "--json", "-q"], project).json()
    clean = run(["verify", "--remote"], project)
    assert clean.code == 0, clean.out + clean.err
    # A tag moved behind imgtrack's back, with skopeo.
    other, _ = layouts()
    subprocess.run(
        ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{other}:latest-build", f"docker://{repo}:2.0.0"],
        check=True,
    )
    drift = run(["verify", "--remote", "--json"], project)
    assert drift.code == 1
    messages = [f["message"] for f in drift.json()["findings"]]
    assert any("'2.0.0' now names" in m and "behind imgtrack's back" in m for m in messages), messages
    # The floating tag 2.0 still names the recorded digest: not a finding.
    assert not any("'2.0'" in m for m in messages)
    subprocess.run(["skopeo", "delete", "--tls-verify=false", f"docker://{repo}@{digest}"], check=True)
    gone = run(["verify", "--remote"], project)
    assert gone.code == 1 and "no longer exists" in gone.out
    assert rec["digest"] == digest


def test_promote_within_a_registry_and_to_another(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, basic_registry: Registry
) -> None:
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64"))
    first = plain_registry.repo("staging")
    rec = run(
        ["push", str(path), "--image", "api", "--version", "3.1.0", "--to", first, "-q", "--json"], project
    ).json()
    within = run(["promote", "api@3.1.0", "--to", plain_registry.repo("prod"), "--json", "-q"], project)
    assert within.code == 0, within.err
    assert within.json()["pushed"][0]["bytes_copied"] == 0, "same registry: blobs are mounted"
    across = run(
        ["promote", "api@3.1.0", "--to", basic_registry.repo("prod"), "--json", "-q"],
        project,
        env={"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": PASSWORD},
    )
    assert across.code == 0, across.err
    assert across.json()["pushed"][0]["bytes_copied"] > 0
    target = across.json()["pushed"][0]["repository"]
    assert skopeo_digest(f"docker://{target}:3.1.0", "--creds", f"{USER}:{PASSWORD}") == digest
    assert len(fact_files(project, rec, "push")) == 1 and len(fact_files(project, rec, "promote")) == 2
    assert run(["promote", str(path), "--to", first], project).code == 2


def test_blob_downloads_leave_proxied_registries_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from imgtrack.oci.remote.transport import FastPath

    context = ssl.create_default_context()
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert FastPath(context, 1, 1).enabled
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not FastPath(context, 1, 1).enabled  # httpx honours the proxy; the fast path cannot


def test_a_credential_helper_that_knows_nothing_falls_through(
    project: Path, layouts: LayoutFactory, basic_registry: Registry, isolated_home: Path, tmp_path: Path
) -> None:
    """A helper answering `get` with exit 0 and an empty user and secret (docker-credential-pass does, for a
    server it holds nothing for) is no answer: the next source, here `auths`, is used, as docker does."""
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    calls = tmp_path / "calls"
    helper = helper_dir / "docker-credential-knowsnothing"
    helper.write_text(
        f'#!/bin/sh\necho "$1" >> {calls}\ncat >/dev/null\necho \'{{"ServerURL":"","Username":"","Secret":""}}\'\n'
    )
    helper.chmod(0o755)
    config = isolated_home / ".docker" / "config.json"
    config.parent.mkdir(exist_ok=True)
    auth = __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(
        json.dumps(
            {"credHelpers": {basic_registry.host: "knowsnothing"}, "auths": {basic_registry.host: {"auth": auth}}}
        )
    )
    env = {"PATH": f"{helper_dir}:{__import__('os').environ['PATH']}"}
    try:
        path, _ = layouts()
        pushed = run(["push", str(path), "--image", "api", "--to", basic_registry.repo()], project, env=env)
        assert pushed.code == 0, pushed.err
        assert "get" in calls.read_text(), "the helper was asked first"
        # With nothing behind it the push is anonymous, and the registry's refusal says so (exit 3).
        config.write_text(json.dumps({"credHelpers": {basic_registry.host: "knowsnothing"}}))
        anonymous = run(["push", str(path), "--to", basic_registry.repo()], project, env=env)
        assert anonymous.code == 3 and "credentials" in anonymous.err, anonymous
    finally:
        config.unlink()


def test_a_kept_alive_connection_is_lent_to_one_request_at_a_time(plain_registry: Registry) -> None:
    """A 404 answered on the fast path gives its connection back once, however often its body is closed:
    lent twice, two threads of a push wrote on one socket and one found it closed under it (exit 70)."""
    import ssl

    from imgtrack.oci.remote.transport import FastPath

    fast = FastPath(ssl.create_default_context(), 5, 5)
    body = fast.open(f"http://{plain_registry.host}/v2/none/manifests/latest", {}, final=(200, 404))
    assert body is not None and body.status == 404
    body.close()  # as every caller does, after open already gave the connection back
    first = fast._connection(f"http://{plain_registry.host}/v2/")[1]
    second = fast._connection(f"http://{plain_registry.host}/v2/")[1]
    assert first is not second
    fast.close()
