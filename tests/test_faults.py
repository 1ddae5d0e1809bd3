"""Faults between imgtrack and a real registry: the push completes, or fails with exit 3 and one
clear line; an incomplete push is never recorded; the next push skips what the registry holds."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from testkit.layouts import biggest_blob
from testkit.registries import Registry
from tests.conftest import LayoutFactory, fact_files, run
from tests.faultproxy import Fault, FaultProxy, OtherHost


def pushes_recorded(project: Path, rec: dict) -> int:
    return len(fact_files(project, rec, "push"))


def test_5xx_and_429_are_retried_and_the_push_completes(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
) -> None:
    faulty.faults = [
        Fault("PUT", r"/blobs/uploads/", "503", times=2),
        Fault("POST", r"/blobs/uploads/", "500", times=1),
        Fault("PUT", r"/manifests/", "429", times=1),
        Fault("HEAD", r"/blobs/", "reset", times=1),
    ]
    path, digest = layouts()
    repo = f"{faulty.host}/test/retry"
    result = run(["push", str(path), "--image", "api", "--to", repo, "--json"], project)
    assert result.code == 0, result.err
    assert len(faulty.fired) == 5, faulty.fired
    direct = repo.replace(faulty.host, plain_registry.host)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{direct}@{digest}"],
        check=True,
        capture_output=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    assert pushes_recorded(project, result.json()) == 1


def test_reset_mid_blob_upload_retries_the_upload(project: Path, layouts: LayoutFactory, faulty: FaultProxy) -> None:
    faulty.faults = [Fault("PUT", r"/blobs/uploads/", "reset", times=1)]
    path, _ = layouts(layer_size=200_000)
    result = run(["push", str(path), "--image", "api", "--to", f"{faulty.host}/test/reset-upload"], project)
    assert result.code == 0, result.err
    assert faulty.fired == [f"reset PUT {p}" for p in [faulty.fired[0].split(" ", 2)[2]]]


def test_persistent_failure_exits_3_records_nothing_and_the_next_push_resumes(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
) -> None:
    path, _ = layouts(layers=3)
    repo = f"{faulty.host}/test/broken"
    # Manifests keep failing: blobs land, the push cannot complete.
    faulty.faults = [Fault("PUT", r"/manifests/", "503", times=100)]
    failed = run(["push", str(path), "--image", "api", "--to", repo, "--json", "--timeout", "5", "--quiet"], project)
    assert failed.code == 3, failed.err
    lines = failed.err.strip().splitlines()
    assert len(lines) == 1 and faulty.host in lines[0] and "503" in lines[0] and "Traceback" not in failed.err
    rec = run(["show", "api@" + run(["log", "--json"], project).json()[0]["version"], "--json"], project).json()
    assert pushes_recorded(project, rec) == 0, "an incomplete push is never recorded"
    faulty.faults = []
    resumed = run(["push", str(path), "--to", repo, "--json"], project)
    assert resumed.code == 0, resumed.err
    pushed = resumed.json()["pushed"][0]
    assert pushed["blobs_skipped"] >= 4 and pushed["recorded"]
    assert pushes_recorded(project, rec) == 1


def test_stalled_registry_times_out_with_a_clear_line(
    project: Path, layouts: LayoutFactory, faulty: FaultProxy
) -> None:
    faulty.faults = [Fault("HEAD", r"/blobs/", "stall", times=100, seconds=3)]
    path, _ = layouts()
    result = run(
        ["push", str(path), "--image", "api", "--to", f"{faulty.host}/test/stall", "--timeout", "0.5", "-q"], project
    )
    assert result.code == 3 and "failed after" in result.err and "Timeout" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_download_reset_mid_body_is_fetched_again(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    path, digest = layouts(layer_size=100_000)
    repo = plain_registry.repo()
    assert run(["push", str(path), "--image", "api", "--to", repo], project).code == 0
    faulty.faults = [Fault("GET", r"/blobs/sha256:", "reset-mid-body", times=1)]
    via_proxy = repo.replace(plain_registry.host, faulty.host)
    out = tmp_path / "pulled"
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(out)], tmp_path)
    assert result.code == 0, result.err
    assert faulty.fired and not list(out.rglob(".*.partial"))


def test_chunked_upload_resumes_after_a_broken_connection(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
) -> None:
    path, digest = layouts(layers=1, layer_size=400_000)
    faulty.faults = [Fault("PATCH", r"/blobs/uploads/", "reset", times=2)]
    repo = f"{faulty.host}/test/chunked"
    result = run(["push", str(path), "--image", "api", "--to", repo], project, env={"IMGTRACK_CHUNK_SIZE": "65536"})
    assert result.code == 0, result.err
    assert [f.split()[0] for f in faulty.fired] == ["reset", "reset"]
    direct = repo.replace(faulty.host, plain_registry.host)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{direct}@{digest}"],
        check=True,
        capture_output=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    copy = subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{direct}@{digest}",
            f"oci:{project.parent / 'check'}:x",
        ],
        capture_output=True,
        text=True,
    )
    assert copy.returncode == 0, copy.stderr  # skopeo verifies every blob it copies


def test_registry_that_alters_a_digest_is_refused(project: Path, layouts: LayoutFactory, faulty: FaultProxy) -> None:
    faulty.faults = [Fault("PUT", r"/manifests/", "lie-digest", times=1)]
    path, _ = layouts()
    result = run(["push", str(path), "--image", "api", "--to", f"{faulty.host}/test/liar", "-q"], project)
    assert result.code == 3 and "altered" in result.err and "sha256:0000" in result.err
    rec = run(["log", "--json"], project).json()[0]
    assert pushes_recorded(project, rec) == 0


def test_registry_that_alters_a_blob_digest_is_refused(
    project: Path, layouts: LayoutFactory, faulty: FaultProxy
) -> None:
    faulty.faults = [Fault("PUT", r"/blobs/uploads/", "lie-digest", times=1)]
    path, _ = layouts()
    result = run(["push", str(path), "--image", "api", "--to", f"{faulty.host}/test/blobliar", "-q"], project)
    assert result.code == 3 and "altered" in result.err and "blob upload" in result.err, result.err
    assert pushes_recorded(project, run(["log", "--json"], project).json()[0]) == 0


def test_manifest_over_4_mib_is_refused(project: Path, faulty: FaultProxy, tmp_path: Path) -> None:
    faulty.faults = [Fault("GET", r"/manifests/", "replace", times=5, body=b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}")]
    result = run(["pull", f"{faulty.host}/test/huge:1", "--to", str(tmp_path / "out"), "-q"], tmp_path)
    assert result.code == 3 and "4 MiB" in result.err
    assert not (tmp_path / "out").exists()


def _pushed_behind_proxy(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
) -> tuple[str, str, str]:
    """An image pushed to the plain registry: (its digest, its repository through the proxy, its layer's hex)."""
    path, digest = layouts(layers=1, layer_size=50_000)
    repo = plain_registry.repo()
    assert run(["push", str(path), "--image", "api", "--to", repo, "-q"], project).code == 0
    return digest, repo.replace(plain_registry.host, faulty.host), biggest_blob(path).name


def test_registry_serving_other_bytes_for_a_blob_keeps_nothing(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    digest, via_proxy, layer = _pushed_behind_proxy(project, layouts, faulty, plain_registry)
    faulty.faults = [Fault("GET", f"/blobs/sha256:{layer}", "corrupt-body", times=100)]  # the layer only
    out = tmp_path / "pulled"
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(out), "-q"], tmp_path)
    assert result.code == 3 and "served other content" in result.err
    visible = [b for b in (out / "blobs" / "sha256").glob("*") if not b.name.startswith(".")]
    assert all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in visible), "only verified blobs"
    assert layer not in {b.name for b in visible}


def test_oversized_blob_and_non_json_manifest_from_a_registry(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    digest, via_proxy, layer = _pushed_behind_proxy(project, layouts, faulty, plain_registry)
    faulty.faults = [Fault("GET", f"/blobs/sha256:{layer}", "grow-body", times=100)]
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(tmp_path / "a"), "-q"], tmp_path)
    assert result.code == 3 and "runs past" not in result.out and "served other content" in result.err
    assert not list((tmp_path / "a").rglob(layer))
    faulty.faults = [Fault("GET", r"/manifests/", "replace", times=100, body=b"<html>not json</html>")]
    result = run(["pull", f"{via_proxy}:latest-build", "--to", str(tmp_path / "b"), "-q"], tmp_path)
    assert result.code == 3 and "not JSON" in result.err and len(result.err.strip().splitlines()) == 1


def test_a_token_in_an_error_body_is_not_printed(project: Path, layouts: LayoutFactory, faulty: FaultProxy) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.leaked-token-from-the-registry"
    body = json.dumps(
        {
            "errors": [
                {
                    "code": "MANIFEST_INVALID",
                    "message": f"bad manifest, your token was {token}",
                    "detail": {"Authorization": f"Bearer {token}"},
                }
            ]
        }
    ).encode()
    faulty.faults = [Fault("PUT", r"/manifests/", "error-body", times=10, body=body)]
    path, _ = layouts()
    result = run(["--debug", "push", str(path), "--image", "api", "--to", f"{faulty.host}/test/echo", "-q"], project)
    assert result.code == 3 and "MANIFEST_INVALID" in result.err
    assert token not in result.err + result.out


def test_wrong_content_types_from_a_registry(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    digest, via_proxy, _ = _pushed_behind_proxy(project, layouts, faulty, plain_registry)
    # A registry that labels a good manifest text/html: the manifest's own mediaType decides, as skopeo does.
    faulty.faults = [Fault("GET", r"/manifests/", "retype", times=100, content_type="text/html")]
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(tmp_path / "a"), "-q", "--json"], tmp_path)
    assert result.code == 0, result.err
    assert result.json()["digest"] == digest
    # One that calls an image manifest an index: the two disagree, and nothing is written.
    faulty.faults = [
        Fault("GET", r"/manifests/", "retype", times=100, content_type="application/vnd.oci.image.index.v1+json")
    ]
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(tmp_path / "b"), "-q"], tmp_path)
    assert result.code == 3 and len(result.err.strip().splitlines()) == 1, result.err
    assert "index" in result.err and "manifest" in result.err
    assert not (tmp_path / "b").exists()
    # JSON of a manifest type, but not a manifest's shape.
    faulty.faults = [Fault("GET", r"/manifests/", "replace", times=100, body=b'{"schemaVersion": 2, "layers": "none"}')]
    result = run(["pull", f"{via_proxy}:latest-build", "--to", str(tmp_path / "c"), "-q"], tmp_path)
    assert result.code == 3 and len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err and not (tmp_path / "c").exists()


def test_endless_bodies_are_cut_off(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    digest, via_proxy, layer = _pushed_behind_proxy(project, layouts, faulty, plain_registry)
    faulty.faults = [Fault("GET", r"/manifests/", "endless", times=100)]
    result = run(["pull", f"{via_proxy}:latest-build", "--to", str(tmp_path / "a"), "-q"], tmp_path)
    assert result.code == 3 and "4 MiB" in result.err, result.err
    faulty.faults = [
        Fault("GET", f"/blobs/sha256:{layer}", "endless", times=100, content_type="application/octet-stream")
    ]
    result = run(["pull", f"{via_proxy}@{digest}", "--to", str(tmp_path / "b"), "-q"], tmp_path)
    assert result.code == 3 and len(result.err.strip().splitlines()) == 1, result.err
    assert not list((tmp_path / "b").rglob(layer)), result.err


SECRET = "sentinel-Pa55word-for-hostile-registries"


def test_a_tls_registry_with_a_plain_http_token_realm_gets_no_credentials(
    faulty_tls: tuple[FaultProxy, Path],
    tmp_path: Path,
) -> None:
    proxy, ca = faulty_tls
    for realm in ("http://token.invalid/token", f"http://{proxy.host}/token"):  # another host, and its own
        proxy.faults = [Fault("GET", r"^/v2/", "challenge", times=100, body=realm.encode())]
        result = run(
            [
                "pull",
                f"{proxy.host}/test/app:1",
                "--to",
                str(tmp_path / "out"),
                "--ca-file",
                str(ca),
                "--username",
                "ci",
                "--password-stdin",
                "-q",
            ],
            tmp_path,
            stdin=SECRET + "\n",
        )
        assert result.code == 3 and "plain HTTP" in result.err, result.err
        assert SECRET not in result.err + result.out
        assert not (tmp_path / "out").exists()


def test_authorization_does_not_follow_a_redirect_to_another_host(
    project: Path,
    layouts: LayoutFactory,
    faulty: FaultProxy,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    digest, via_proxy, layer = _pushed_behind_proxy(project, layouts, faulty, plain_registry)
    other = OtherHost(plain_registry.host)
    try:
        faulty.require_basic = True  # the registry wants credentials, then sends the layer to storage elsewhere
        faulty.faults = [Fault("GET", f"/blobs/sha256:{layer}", "redirect", times=100, body=other.base.encode())]
        result = run(
            [
                "pull",
                f"{via_proxy}@{digest}",
                "--to",
                str(tmp_path / "out"),
                "--username",
                "ci",
                "--password-stdin",
                "--json",
            ],
            tmp_path,
            stdin=SECRET + "\n",
        )
        assert result.code == 0, result.err
        assert result.json()["digest"] == digest
        assert other.requests, "the layer came from the other host"
        assert all("authorization" not in {k.lower() for k in headers} for headers in other.requests)
    finally:
        other.close()


def _serve(work: Path, port: int, secret: str) -> subprocess.Popen[bytes]:
    """A registry on `port` over the storage in `work`, with its own `secret` (a registry without one in
    its config makes a new one at each start), answering before this returns."""
    import time

    import httpx

    config = work / f"config-{secret}.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.05)


def test_a_registry_restarted_during_a_chunked_upload_loses_nothing(
    project: Path,
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    import os
    import signal
    import sys
    import time

    from testkit.registries import free_port

    work, port = tmp_path / "registry", free_port()
    work.mkdir()
    registry = _serve(work, port, "first-secret")
    try:
        path, digest = layouts(layers=1, layer_size=8_000_000)
        repo = f"127.0.0.1:{port}/test/restarted"
        push = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "push", str(path), "--image", "api", "--to", repo, "-q", "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "IMGTRACK_CHUNK_SIZE": "65536"},
        )
        uploads = work / "data" / "docker" / "registry" / "v2" / "repositories" / "test" / "restarted" / "_uploads"
        deadline = time.monotonic() + 60
        while not any(uploads.glob("*/data")) or sum(f.stat().st_size for f in uploads.glob("*/data")) < 1_000_000:
            assert push.poll() is None and time.monotonic() < deadline, "the upload never got under way"
            time.sleep(0.01)
        registry.send_signal(signal.SIGKILL)  # mid-upload, mid-chunk perhaps
        registry.wait()
        registry = _serve(work, port, "second-secret")  # same storage; the old session's state is unreadable
        out, err = push.communicate(timeout=120)
        assert push.returncode == 0, err
        assert json.loads(out)["pushed"][0]["blobs_copied"] > 0
        check = subprocess.run(
            [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                f"docker://{repo}@{digest}",
                f"oci:{tmp_path / 'check'}:x",
            ],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr  # every blob whole: skopeo verifies each
    finally:
        registry.terminate()
        registry.wait(10)


def test_a_re_push_asks_each_question_once_and_a_failed_head_is_retried(
    project: Path, layouts: LayoutFactory, faulty: FaultProxy
) -> None:
    """What a HEAD or GET finds missing (404) is the answer on the first road taken: a re-push that
    moves nothing asks nothing twice; a HEAD answered 503 is asked again and the push still lands."""
    path, _ = layouts()
    repo = f"{faulty.host}/test/once"
    first = run(["push", str(path), "--image", "api", "--to", repo, "--json", "-q"], project).json()
    faulty.forwarded.clear()
    faulty.faults = [Fault("HEAD", r"/manifests/", "503", times=1)]
    again = run(["push", f"api@{first['version']}", "--to", repo, "-q"], project)
    assert again.code == 0, again.err
    asked = [(method, p) for method, p, status, _ in faulty.forwarded if status != 503]
    assert len(faulty.fired) == 1 and asked, faulty.forwarded
    assert len(asked) == len(set(asked)), asked  # the referrers API's 404 included: asked once
    assert all(method in ("HEAD", "GET") for method, _ in asked), asked  # nothing written on a no-op
