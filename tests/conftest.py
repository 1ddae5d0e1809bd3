"""Shared fixtures: real git repositories and OCI layouts in temp dirs; imgtrack run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.layouts import build_layout
from testkit.registries import PASSWORD, USER, Registry, TokenServer, htpasswd_file, make_ca_and_cert, run_registry
from tests.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test reads or writes the user's home or git config."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = Test Dev\n\temail = dev@example.com\n[init]\n\tdefaultBranch = main\n"
        '[protocol "file"]\n\tallow = always\n[advice]\n\tdetachedHead = false\n'
    )
    saved = dict(os.environ)
    os.environ.update(
        {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
            "DOCKER_CONFIG": str(home / ".docker"),
            "XDG_RUNTIME_DIR": str(home / "run"),
        }
    )
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        os.environ.pop(key, None)
    # Every imgtrack process the tests start (CLI, hooks, benchmarks' helpers) imports this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [saved.get("PYTHONPATH")])])
    yield home
    os.environ.clear()
    os.environ.update(saved)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def run(args: list[str], cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run imgtrack as a user would: a separate process, its exit status, stdout and stderr.

    The process imports this checkout's imgtrack, whatever other copy pip installed last. An exit 70
    (internal error) or a traceback fails the test that caused it, whatever that test asserts.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "imgtrack", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    # No input makes imgtrack exit 70 (its internal error): every run in the suite checks it.
    assert proc.returncode != 70, (args, proc.stderr)
    assert "--debug" in args or "Traceback" not in proc.stderr, (args, proc.stderr)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit_file(repo: Path, name: str = "app.txt", content: str | None = None, message: str | None = None) -> str:
    path = repo / name
    path.write_text(content if content is not None else path.read_text() + "x\n" if path.exists() else "x\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message or f"change {name}")
    return git(repo, "rev-parse", "HEAD")


def add_image(repo: Path, name: str, repositories: list[str] | None = None) -> None:
    with open(repo / ".imgtrack" / "config.toml", "a") as f:
        f.write(f"\n[images.{name}]\nrepositories = {json.dumps(repositories or [])}\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with one commit, `imgtrack init` done, and the image `api` configured, committed."""
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    commit_file(repo, "app.txt", "hello\n", "first")
    assert run(["init"], repo).code == 0
    add_image(repo, "api")
    add_image(repo, "web")
    git(repo, "add", ".imgtrack")
    git(repo, "commit", "-q", "-m", "imgtrack init")
    return repo


def record_file(repo: Path, rec: dict[str, str]) -> Path:
    """Where the ledger keeps the record `rec` (a `record --json` result)."""
    stem = rec["digest"].replace(":", "-")
    return repo / ".imgtrack" / "ledger" / rec["image"] / stem[7:9] / f"{stem}.toml"


def record_files(repo: Path) -> list[Path]:
    """Every record file of the ledger (facts aside)."""
    return sorted((repo / ".imgtrack" / "ledger").glob("*/*/*.toml"))


def fact_files(repo: Path, rec: dict[str, str], kind: str = "*") -> list[Path]:
    """The fact files of the record `rec` (of one kind: push, promote, tag)."""
    return sorted(record_file(repo, rec).with_suffix("").glob(f"{kind}-*.toml"))


def smuggle_tag(path: Path, tag: str) -> None:
    """Edit a record by hand to carry `tag`, as someone bypassing `imgtrack record` would."""
    path.write_text(path.read_text().replace("tags = [\n", f'tags = [\n    "{tag}",\n'))


class LayoutFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def __call__(self, seed: int | None = None, **kwargs: object) -> tuple[Path, str]:
        """A fresh layout directory and the digest of the image it holds."""
        self.count += 1
        seed = self.count if seed is None else seed
        path = self.root / f"layout-{self.count}"
        top = build_layout(path, seed=seed, **kwargs)  # type: ignore[arg-type]
        return path, top.digest


@pytest.fixture
def layouts(tmp_path: Path) -> LayoutFactory:
    return LayoutFactory(tmp_path / "layouts")


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry-plain")) as host:
        yield Registry(host)


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry-basic")
    users = htpasswd_file(work / "htpasswd")
    extra = f"auth:\n  htpasswd:\n    realm: imgtrack-test\n    path: {users}\n"
    with run_registry(work, extra) as host:
        yield Registry(host, username=USER, password=PASSWORD)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry-tls")
    ca, cert, key = make_ca_and_cert(work)
    extra = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    with run_registry(work, extra, scheme="https", ca_file=ca) as host:
        yield Registry(host, ca_file=ca)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry-token")
    tokens = TokenServer(work, service="imgtrack-test", issuer="imgtrack-test-issuer")
    extra = (
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: imgtrack-test\n"
        f"    issuer: imgtrack-test-issuer\n    rootcertbundle: {tokens.cert_file}\n"
    )
    try:
        with run_registry(work, extra) as host:
            yield Registry(host, username=USER, password=PASSWORD)
    finally:
        tokens.close()


@pytest.fixture
def faulty_tls(plain_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultProxy, Path]]:
    """The fault proxy served over TLS with a CA of its own, as a hostile TLS registry: (proxy, CA file)."""
    ca, cert, key = make_ca_and_cert(tmp_path_factory.mktemp("faulty-tls"))
    proxy = FaultProxy(plain_registry.host, tls=(cert, key))
    yield proxy, ca
    proxy.close()


@pytest.fixture
def faulty(plain_registry: Registry) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the plain registry (fresh rules for each test)."""
    proxy = FaultProxy(plain_registry.host)
    yield proxy
    proxy.close()
