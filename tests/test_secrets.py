"""A sentinel password, used through every auth path, never appears in stdout, stderr, --debug output,
exception text, the ledger, or the git history of the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from testkit.registries import PASSWORD, USER, Registry
from tests.conftest import LayoutFactory, git, run


def test_sentinel_password_never_leaks(
    project: Path,
    layouts: LayoutFactory,
    basic_registry: Registry,
    token_registry: Registry,
    isolated_home: Path,
    tmp_path: Path,
) -> None:
    wrong = "WRONG-" + PASSWORD
    outputs: list[str] = []
    path, digest = layouts()
    for registry in (basic_registry, token_registry):
        repo = registry.repo()
        for password in (wrong, PASSWORD):
            env = {"IMGTRACK_USERNAME": USER, "IMGTRACK_PASSWORD": password}
            for args in (
                ["--debug", "push", str(path), "--image", "api", "--to", repo],
                ["--debug", "pull", f"{repo}@{digest}", "--to", str(tmp_path / "out")],
                ["--debug", "push", str(path), "--to", repo, "--username", USER, "--password-stdin"],
            ):
                result = run(args, project, env=env, stdin=password + "\n")
                outputs += [result.out, result.err]
            login = run(
                ["--debug", "login", registry.host, "-u", USER, "--password-stdin"], project, stdin=password + "\n"
            )
            outputs += [login.out, login.err]
    assert any("refused the credentials" in text for text in outputs), "the wrong password was really tried"
    assert any("pushed api" in text for text in outputs), "the right one really worked"
    for text in outputs:
        assert PASSWORD not in text and wrong not in text
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ledger after pushes")
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=project, capture_output=True, text=True).stdout
    assert 'kind = "push"' in history
    assert PASSWORD not in history and USER + ":" not in history
    for ledger_file in (project / ".imgtrack").rglob("*"):
        if ledger_file.is_file():
            assert PASSWORD not in ledger_file.read_text(errors="replace")
