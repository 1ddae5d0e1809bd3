"""`imgtrack pin` on real-world-shaped files: a Deployment with an init container and a sidecar, a
multi-document file with a CronJob, a compose file, a file holding no workload. Compared byte for byte
with what is expected; `--check` fails on tags and passes once pinned; a second run changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import LayoutFactory, commit_file, run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pin"


def _setup(project: Path, layouts: LayoutFactory, tmp_path: Path) -> tuple[dict, Path]:
    config = project / ".imgtrack" / "config.toml"
    config.write_text(
        config.read_text().replace(
            "\n[images.api]\nrepositories = []", '\n[images.api]\nrepositories = ["registry.example.com/team/api"]'
        )
    )
    commit_file(project, message="api 1.5.0")
    path, _ = layouts(seed=5)
    rec = run(["record", str(path), "--image", "api", "--version", "1.5.0", "--json"], project).json()
    work = tmp_path / "deploy"
    shutil.copytree(FIXTURES, work, ignore=shutil.ignore_patterns("*.expected"))
    return rec, work  # type: ignore[return-value]


def _expected(name: str, rec: dict) -> str:
    text = (FIXTURES / f"{name}.expected").read_text()
    return text.replace("{DIGEST}", rec["digest"]).replace("{COMMIT}", rec["commit"][:7])


def test_pin_rewrites_exactly_the_references_and_nothing_else(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    rec, work = _setup(project, layouts, tmp_path)
    files = [str(work / n) for n in ("deployment.yaml", "compose.yaml", "service.yaml")]
    check = run(["pin", *files, "--to", "api@^1.5", "--check"], project)
    assert check.code == 1 and "deployment.yaml:13: " in check.out and "is a tag, not a digest" in check.out
    assert "compose.yaml:3: registry.example.com/team/api:latest is a tag" in check.out
    assert "deployment.yaml:36:" in check.out and "a digest the ledger does not record" in check.out
    assert (work / "deployment.yaml").read_text() == (FIXTURES / "deployment.yaml").read_text(), (
        "--check writes nothing"
    )

    result = run(["pin", *files, "--to", "api@^1.5"], project)
    assert result.code == 0, result.err
    assert "service.yaml: left alone: holds Service" in result.err
    for name in ("deployment.yaml", "compose.yaml"):
        assert (work / name).read_text() == _expected(name, rec), name
    assert (work / "service.yaml").read_text() == (FIXTURES / "service.yaml").read_text()

    again = run(["pin", *files, "--to", "api@^1.5", "--json"], project)
    assert again.json()["written"] == []  # type: ignore[index]
    for name in ("deployment.yaml", "compose.yaml"):
        assert (work / name).read_text() == _expected(name, rec), f"{name}: a second run changes nothing"
    # Pinned now, but for the CronJob's digest nobody recorded: --check still names that one alone.
    check = run(["pin", *files, "--to", "api@^1.5", "--check", "--json"], project)
    assert check.code == 1
    failing = [r for r in check.json()["references"] if r["status"] in ("tag", "behind", "unknown")]  # type: ignore[index]
    assert [r["line"] for r in failing] == [36]


def test_pin_refuses_bad_input_and_writes_nothing(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    _, work = _setup(project, layouts, tmp_path)
    (work / "broken.yaml").write_text("kind: Deployment\nspec: {template: [\n")
    before = (work / "deployment.yaml").read_text()
    bad = run(["pin", str(work / "deployment.yaml"), str(work / "broken.yaml"), "--to", "api@^1.5"], project)
    assert bad.code == 2 and "broken.yaml:3: not valid YAML" in bad.err and len(bad.err.strip().splitlines()) == 1
    assert (work / "deployment.yaml").read_text() == before, "one bad file stops them all, before any is written"
    none = run(["pin", str(work / "deployment.yaml"), "--to", "api@^9"], project)
    assert none.code == 1 and "no recorded version of api satisfies" in none.err
    assert run(["pin", str(work / "deployment.yaml"), "--env", "moon"], project).code == 2
    assert run(["pin", str(work / "missing.yaml"), "--to", "api@^1.5"], project).code == 2


def test_pin_kustomization_and_helm_values(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    """kustomization `images:` get a `digest` (newTag goes: kustomize would render tag@digest), Helm
    `image:` blocks get `digest` beside their tag; a `{...}` entry and other repositories stay as they are."""
    rec, work = _setup(project, layouts, tmp_path)
    files = [str(work / n) for n in ("kustomization.yaml", "values.yaml")]
    check = run(["pin", *files, "--to", "api@^1.5", "--check", "--json"], project)
    assert check.code == 1
    refs = check.json()["references"]  # type: ignore[index]
    assert [(r["line"], r["status"]) for r in refs if r["status"] != "other"] == [
        (7, "tag"),
        (9, "tag"),
        (13, "tag"),
        (16, "tag"),
        (5, "tag"),
        (13, "tag"),
    ]
    result = run(["pin", *files, "--to", "api@^1.5"], project)
    assert result.code == 0, result.err
    assert "kustomization.yaml:16: left alone: the image is a {...} mapping" in result.err
    for name in ("kustomization.yaml", "values.yaml"):
        assert (work / name).read_text() == _expected(name, rec), name
    assert run(["pin", *files, "--to", "api@^1.5", "--json"], project).json()["written"] == []  # type: ignore[index]
    # A `digest:` that is not a string is not overwritten, nor is a second `digest:` added beside it.
    odd = work / "odd-values.yaml"
    odd.write_text("image:\n  repository: registry.example.com/team/api\n  digest: [1]\n")
    left = run(["pin", str(odd), "--to", "api@^1.5"], project)
    assert left.code == 0 and "odd-values.yaml:2: left alone: its digest is not a string" in left.err
    assert odd.read_text() == "image:\n  repository: registry.example.com/team/api\n  digest: [1]\n"
    check = run(["pin", str(work / "values.yaml"), "--to", "api@^1.5", "--check"], project)
    assert check.code == 0, check.out


def test_pin_into_a_read_only_folder_changes_no_file(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    """One file pin cannot replace (its folder is a read-only mount): exit 74, one line, and the other
    file, which could be written, is not touched either."""
    import subprocess

    _, work = _setup(project, layouts, tmp_path)
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    shutil.copy(work / "compose.yaml", frozen / "compose.yaml")
    subprocess.run(["mount", "--bind", str(frozen), str(frozen)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(frozen)], check=True)
        before = (work / "deployment.yaml").read_text()
        bad = run(["pin", str(work / "deployment.yaml"), str(frozen / "compose.yaml"), "--to", "api@^1.5"], project)
        assert bad.code == 74, bad.err
        assert "compose.yaml cannot be replaced" in bad.err and len(bad.err.strip().splitlines()) == 1
        assert (work / "deployment.yaml").read_text() == before
        assert (frozen / "compose.yaml").read_text() == (FIXTURES / "compose.yaml").read_text()
    finally:
        subprocess.run(["umount", str(frozen)], check=True)
