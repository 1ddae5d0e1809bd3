"""`imgtrack audit` on realistic inputs: a pod list, rendered manifests, a compose file, plain lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.registries import Registry
from tests.conftest import LayoutFactory, commit_file, run

FIXTURES = Path(__file__).parent / "fixtures" / "audit"


@pytest.fixture
def recorded(project: Path, layouts: LayoutFactory) -> dict[str, str]:
    """api 1.4.0 (two platforms), api 1.5.0, web 2.0.0, recorded; their digests by placeholder."""
    out = {}
    for key, image, version, platforms in [
        ("API14", "api", "1.4.0", ("linux/amd64", "linux/arm64")),
        ("API15", "api", "1.5.0", ("linux/amd64",)),
        ("WEB20", "web", "2.0.0", ("linux/amd64",)),
    ]:
        commit_file(project)
        path, _ = layouts(platforms=platforms)
        rec = run(["record", str(path), "--image", image, "--version", version, "--json"], project).json()
        out[key] = rec["digest"]
        if key == "API14":
            out["API14_AMD64"] = rec["manifests"][0]["digest"]
    out["UNKNOWN_HEX"] = "e" * 64
    return out


def fixture(name: str, digests: dict[str, str], target: Path) -> Path:
    text = (FIXTURES / name).read_text()
    for key, value in digests.items():
        text = text.replace("{" + key + "}", value)
    out = target / name
    out.write_text(text)
    return out


def statuses(rows: list[dict]) -> dict[str, str]:
    return {row["where"]: row["status"] for row in rows}


def test_pod_list(project: Path, recorded: dict[str, str], tmp_path: Path) -> None:
    result = run(["audit", str(fixture("pods.json", recorded, tmp_path)), "--json"], project)
    assert result.code == 1, "unknown, latest and mismatch fail by default"
    rows = result.json()
    assert statuses(rows) == {
        "Pod shop/api-7d9f8b6c5-x2lq4 migrate": "behind",  # platform-manifest digest of 1.4.0
        "Pod shop/api-7d9f8b6c5-x2lq4 api": "ok",
        "Pod shop/web-0 web": "latest",
        "Pod shop/web-0 debug": "unknown",
        "Pod shop/api-canary api": "mismatch",
        "Pod shop/pending api": "unpinned",
    }
    ok = next(r for r in rows if r["status"] == "ok")
    assert ok["version"] == "1.5.0" and len(ok["commit"]) == 40 and ok["recorded_by"].startswith("Test Dev")
    mismatch = next(r for r in rows if r["status"] == "mismatch")
    assert "1.5.0" in mismatch["detail"] and "1.4.0 runs" in mismatch["detail"]


def test_rendered_manifests(project: Path, recorded: dict[str, str], tmp_path: Path) -> None:
    rows = run(["audit", str(fixture("manifests.yaml", recorded, tmp_path)), "--json"], project).json()
    assert statuses(rows) == {
        "Deployment shop/api api": "ok",
        "StatefulSet shop/web web": "ok",
        "DaemonSet agent agent": "unpinned",
        "CronJob nightly report": "latest",
        "Job backfill wait": "behind",
        "Job backfill run": "ok",
        "Pod one-off tool": "unknown",
    }


def test_compose_and_lines_and_table(project: Path, recorded: dict[str, str], tmp_path: Path) -> None:
    rows = run(["audit", str(fixture("compose.yaml", recorded, tmp_path)), "--json"], project).json()
    assert [r["status"] for r in rows] == ["behind", "unpinned"]
    lines = fixture("running.txt", recorded, tmp_path)
    result = run(["audit", "-", "--fail-on", "unknown,latest,mismatch"], project, stdin=lines.read_text())
    assert result.code == 0, result.out + result.err
    table = result.out.splitlines()
    assert table[0].split()[:3] == ["STATUS", "WHERE", "IMAGE"]
    assert [line.split()[0] for line in table[1:]] == ["ok", "behind", "ok"]
    assert "1.5.0 is recorded" in table[2]
    assert run(["audit", str(lines), "--fail-on", "behind"], project).code == 1


def test_bad_audit_input(project: Path, tmp_path: Path) -> None:
    broken = tmp_path / "pods.json"
    broken.write_text('{"items": [')
    result = run(["audit", str(broken)], project)
    assert result.code == 2 and "looks like JSON" in result.err and len(result.err.strip().splitlines()) == 1
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("apiVersion: v1\nkind: Pod\nspec: [unclosed\n")
    result = run(["audit", str(bad_yaml)], project)
    assert result.code == 2 and "bad.yaml:" in result.err and "not valid YAML" in result.err
    assert run(["audit", str(bad_yaml), "--fail-on", "nope"], project).code == 2
    assert run(["audit", str(tmp_path / "missing.txt")], project).code == 2
    spaced = tmp_path / "lines.txt"
    spaced.write_text("two words\n")
    assert run(["audit", str(spaced)], project).code == 2


def test_remote_resolves_tags(project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path) -> None:
    path, digest = layouts()
    repo = plain_registry.repo()
    assert run(["push", str(path), "--image", "api", "--version", "4.0.0", "--to", repo, "-q"], project).code == 0
    lines = tmp_path / "tags.txt"
    lines.write_text(f"{repo}:4.0.0\n")
    offline = run(["audit", str(lines), "--json"], project).json()
    assert offline[0]["status"] == "unpinned"
    online = run(["audit", str(lines), "--json", "--remote"], project).json()
    assert online[0]["status"] == "ok" and online[0]["digest"] == digest
