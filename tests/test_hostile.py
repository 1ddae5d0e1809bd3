"""Hostile and odd input, end to end: unbounded version numbers, control characters in every grammar,
environment variables, input that would eat the machine. Each gives one line and its documented exit
code, writes nothing, and never exits 70 (conftest's `run` fails any test that sees a 70)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, record_file, run
from tests.test_record import ledger_files

HUGE = "99999999999999999999999"  # past 64 bits: SQLite's integers stop at 2**63 - 1
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def one_line(result_err: str) -> bool:
    return len(result_err.strip().splitlines()) == 1


def test_a_huge_version_merged_from_a_branch_breaks_no_command(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    assert run(["hooks", "install"], project).code == 0
    git(project, "switch", "-q", "-c", "big")
    commit_file(project, "big.txt")  # each build from its own commit: one sha- tag each
    assert run(["record", "--digest", DIGEST_A, "--image", "api", "--version", f"{HUGE}.0.0"], project).code == 0
    assert run(["ledger", "commit", "-m", "a huge version"], project).code == 0
    git(project, "switch", "-q", "main")
    commit_file(project, "main.txt")
    assert run(["record", "--digest", DIGEST_B, "--image", "api", "--version", "1.0.0"], project).code == 0
    assert run(["record", "--digest", DIGEST_C, "--image", "api", "--version", f"{HUGE}.5.0"], project).code == 0
    assert run(["ledger", "commit", "-m", "two more"], project).code == 0
    git(project, "merge", "-q", "--no-edit", "big")

    log = run(["log", "--json"], project)
    assert log.code == 0 and {r["version"] for r in log.json()} == {"1.0.0", f"{HUGE}.0.0", f"{HUGE}.5.0"}
    assert run(["show", f"api@{HUGE}.0.0", "--json"], project).json()["digest"] == DIGEST_A
    # Ordering and ranges over numbers past 64 bits: the highest in the range, exactly.
    resolved = run(["resolve", f"api@^{HUGE}"], project)
    assert resolved.code == 0 and resolved.out.strip() == f"api@{DIGEST_C}", resolved
    assert run(["resolve", "api@^1"], project).out.strip() == f"api@{DIGEST_B}"
    assert run(["resolve", f"api@^{HUGE}0"], project).code == 1  # recorded nowhere: not found, no crash
    assert run(["verify"], project).code == 0
    assert run(["record", "--digest", "sha256:" + "d" * 64, "--image", "web", "--version", "2.0.0"], project).code == 0
    assert (
        run(
            ["export", "allowlist", "--format", "kyverno", "--releases-only", "-o", str(tmp_path / "p.yaml")], project
        ).code
        == 0
    )
    push = git(project, "push", "-q", "origin", "main")
    assert push == ""
    # The cache rebuilt from nothing holds them too.
    for cache in (project / ".git" / "imgtrack").glob("cache.sqlite*"):
        cache.unlink()
    assert run(["resolve", f"api@^{HUGE}"], project).out.strip() == f"api@{DIGEST_C}"


def test_a_version_past_the_tag_limit_in_a_record_file_is_named_by_verify(project: Path) -> None:
    assert run(["record", "--digest", DIGEST_A, "--image", "api", "--version", "1.0.0"], project).code == 0
    path = record_file(project, {"image": "api", "digest": DIGEST_A})
    long_version = "1." + "9" * 5000 + ".0"  # Python's int() refuses 5,000 digits: never reached
    path.write_text(path.read_text().replace('version = "1.0.0"', f'version = "{long_version}"'))
    result = run(["verify"], project)
    assert result.code == 1 and path.name in result.out + result.err
    for args in (["log"], ["show", DIGEST_A]):
        refused = run(args, project)
        assert refused.code == 2 and path.name in refused.err and one_line(refused.err), refused


@pytest.mark.parametrize(
    "args",
    [
        ["record", "--digest", DIGEST_A + "\n", "--image", "api"],
        ["record", "--digest", DIGEST_A, "--image", "api", "--tag", "v1\n"],
        ["record", "--digest", DIGEST_B, "--image", "api", "--version", "1.0.0\n"],
        ["record", "--digest", DIGEST_B, "--image", "api", "--version", "1." + "9" * 200 + ".0"],
        ["record", "--digest", DIGEST_B, "--image", "api\n"],
        ["record", "--digest", DIGEST_B, "--image", "api", "--tag", "v\u00e9"],
        ["pull", "registry.example.com/team/api:1.0\n", "--to", "out"],
        ["pull", "registry.example.com/team/api\x1b[2J", "--to", "out"],
        ["push", "api@1.0.0", "--to", "registry.example.com/team/api\n"],
        ["push", "api@1.0.0", "--to", "registry.example.com/team/api:1.0"],
        ["resolve", "api@^1", "--repository", "registry.example.com/Team/api"],
        ["resolve", "api@^1", "--repository", "registry.example.com/team/api@" + DIGEST_A],
        ["resolve", f"api@^{'9' * 5000}"],
        ["resolve", "api@^1.0\n"],
        ["show", "api@1.0.0\n"],
        ["log", "-n", "999999999999999999999999"],
        ["log", "-n", "9" * 5000],
        ["pull", "api@1.0.0", "--to", "out", "--timeout", "nan"],
        ["pull", "api@1.0.0", "--to", "out", "--timeout", "inf"],
        ["login", "registry.example.com\n", "-u", "me", "--password-stdin"],
    ],
)
def test_malformed_arguments_are_one_line_and_exit_2(project: Path, args: list[str]) -> None:
    assert run(["record", "--digest", DIGEST_A, "--image", "api", "--version", "1.0.0"], project).code == 0
    before = ledger_files(project)
    result = run(args, project, stdin="secret\n")
    assert result.code in (1, 2) and one_line(result.err), result
    assert result.code == 2 or args[0] in ("show", "resolve"), result
    assert ledger_files(project) == before
    assert not (project / "out").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1e9", " 65536", "65536\n", "9" * 30])
def test_environment_variables_are_checked_like_flags(project: Path, layouts: LayoutFactory, value: str) -> None:
    path, _ = layouts()
    before = ledger_files(project)
    result = run(
        ["push", str(path), "--image", "api", "--to", "oci:" + str(project.parent / "dest")],
        project,
        env={"IMGTRACK_CHUNK_SIZE": value},
    )
    assert result.code == 2 and "IMGTRACK_CHUNK_SIZE" in result.err and one_line(result.err), result
    assert ledger_files(project) == before and not (project.parent / "dest").exists()


def test_login_refuses_an_empty_password_before_any_request(project: Path, isolated_home: Path) -> None:
    config = isolated_home / ".docker" / "config.json"
    before = config.read_bytes() if config.exists() else None
    for stdin in ("", "\n"):
        # Port 9 (discard) on loopback: were a request made, the answer would be exit 3, not 2.
        result = run(["login", "127.0.0.1:9", "-u", "me", "--password-stdin"], project, stdin=stdin)
        assert result.code == 2 and "empty password" in result.err and one_line(result.err), result
    assert (config.read_bytes() if config.exists() else None) == before


def _alias_bomb(levels: int) -> str:
    lines = ["kind: List", "x0: &a0 [{kind: Pod, spec: {containers: [{name: c, image: nginx}]}}]"]
    lines += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"items: *a{levels - 1}", ""])


_HUNGRY = [
    ("alias bomb", _alias_bomb(12), "aliases add more than"),
    ("alias cycle", "kind: List\nitems: &a [*a]\n", "refers to the value that holds it"),
    ("json nested deep", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("yaml nested deep", "a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ("not utf-8", "kind: Pod\nmetadata: {name: \udcff}\n", "UTF-8"),
]


@pytest.mark.parametrize(("name", "text", "words"), _HUNGRY, ids=[case[0] for case in _HUNGRY])
def test_audit_input_that_would_eat_the_machine_is_refused(
    project: Path, tmp_path: Path, name: str, text: str, words: str
) -> None:
    source = tmp_path / "input.yaml"
    source.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = run(["audit", str(source)], project)
    assert result.code == 2 and words in result.err and one_line(result.err), result


def test_audit_reads_aliases_that_only_share_values(project: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.yaml"
    source.write_text(
        "kind: List\nitems:\n- &p {kind: Pod, metadata: {name: a}, spec: {containers: "
        "[{name: c, image: 'nginx:1.0'}]}}\n- *p\n"
    )
    result = run(["audit", str(source), "--json"], project)
    assert [row["status"] for row in result.json()] == ["unpinned", "unpinned"]


def test_audit_reports_an_unparseable_image_as_invalid_not_latest(project: Path) -> None:
    pods = {
        "kind": "List",
        "items": [
            {
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "Registry.example.com/Team/API:1.0"},
                        {"name": "b", "image": "nginx:1.0 \x1b[2J"},
                        {"name": "c", "image": "nginx"},
                    ]
                },
            }
        ],
    }
    result = run(["audit", "-", "--json"], project, stdin=json.dumps(pods))
    statuses = {row["reference"]: (row["status"], row["detail"]) for row in result.json()}
    assert statuses["Registry.example.com/Team/API:1.0"][0] == "invalid"
    assert "lowercase" in statuses["Registry.example.com/Team/API:1.0"][1]
    assert statuses["nginx:1.0 \x1b[2J"][0] == "invalid"
    assert statuses["nginx"][0] == "latest"
    assert result.code == 1  # invalid fails by default
    table = run(["audit", "-"], project, stdin=json.dumps(pods))
    assert "\x1b" not in table.out and "\\x1b[2J" in table.out  # a terminal escape is shown, not obeyed


@pytest.mark.parametrize("shape", ["image folder is a file", "cache is a folder", "cache folder is a file"])
def test_a_file_system_not_shaped_as_expected_is_named(project: Path, shape: str) -> None:
    assert run(["record", "--digest", DIGEST_A, "--image", "web", "--version", "1.0.0"], project).code == 0
    ledger, cache = project / ".imgtrack" / "ledger", project / ".git" / "imgtrack"
    if shape == "image folder is a file":
        (ledger / "api").write_text("not a folder\n")
        culprit = ledger / "api"
    elif shape == "cache is a folder":
        for f in cache.glob("cache.sqlite*"):
            f.unlink()
        (cache / "cache.sqlite").mkdir()
        culprit = cache / "cache.sqlite"
    else:
        import shutil

        shutil.rmtree(cache)
        cache.write_text("not a folder\n")
        culprit = cache
    result = run(["record", "--digest", DIGEST_B, "--image", "api", "--version", "1.0.1"], project)
    assert result.code == 2 and str(culprit) in result.err and "move it away" in result.err and one_line(result.err)
    assert not list(ledger.glob("*/*/" + DIGEST_B.replace(":", "-") + ".toml"))
    if shape == "image folder is a file":
        verify = run(["verify"], project)
        assert verify.code == 1 and f"{culprit}: is neither a record nor a fact" in verify.out
    else:
        logged = run(["log"], project)
        assert logged.code == 2 and str(culprit) in logged.err


def test_a_blob_far_bigger_than_its_descriptor_is_refused_before_it_is_hashed(
    project: Path,
    layouts: LayoutFactory,
) -> None:
    from testkit.layouts import biggest_blob

    path, _ = layouts()
    layer = biggest_blob(path)
    with open(layer, "r+b") as f:
        f.truncate(10 * 1024**3)  # sparse: 10 GB that take no space, and minutes to hash
    before = ledger_files(project)
    result = run(["record", str(path), "--image", "api"], project)
    assert result.code == 2 and "bigger than the" in result.err and layer.name[:12] in result.err, result
    assert one_line(result.err) and ledger_files(project) == before


def test_output_paths_need_their_folder_and_nothing_is_made_on_the_way(project: Path, tmp_path: Path) -> None:
    assert run(["record", "--digest", DIGEST_A, "--image", "api", "--version", "1.0.0"], project).code == 0
    missing = tmp_path / "no" / "such"
    for args in (
        ["export", "allowlist", "--format", "kyverno", "-o", str(missing / "policy.yaml")],
        ["pull", "api@1.0.0", "--to", str(missing / "layout")],
        ["push", "api@1.0.0", "--to", f"oci:{missing / 'layout'}"],
    ):
        result = run(args, project)
        assert result.code == 2 and f"the folder {missing} does not exist" in result.err and one_line(result.err)
        assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_text("x")
    assert run(["pull", "api@1.0.0", "--to", str(tmp_path / "file")], project).code == 2
    assert run(["export", "allowlist", "--format", "kyverno", "-o", str(tmp_path)], project).code == 2
    assert run(["export", "allowlist", "--format", "kyverno", "-o", str(tmp_path / "p.yaml")], project).code == 0


@pytest.mark.parametrize(
    "env",
    [
        {"IMGTRACK_USERNAME": "me"},
        {"IMGTRACK_PASSWORD": "secret"},
        {"IMGTRACK_USERNAME": "me", "IMGTRACK_PASSWORD": ""},
        {"IMGTRACK_USERNAME": "me\x1b", "IMGTRACK_PASSWORD": "secret"},
        {"HTTPS_PROXY": "http://proxy.example.com::::"},
        {"HTTP_PROXY": "ftp://proxy.example.com"},
        {"ALL_PROXY": "socks5://127.0.0.1:1080"},
    ],
    ids=lambda env: ",".join(env),
)
def test_credential_and_proxy_variables_are_checked_before_any_request(
    project: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    # Port 9 on loopback: were a request made, the answer would be exit 3.
    result = run(["pull", "127.0.0.9:9/team/api:1.0", "--to", str(tmp_path / "out")], project, env=env)
    assert result.code == 2 and one_line(result.err), result
    assert any(name in result.err for name in env), result.err
    assert "secret" not in result.err


def test_a_git_failure_is_one_line_naming_what_git_said(project: Path) -> None:
    assert run(["record", "--digest", DIGEST_A, "--image", "api", "--version", "1.0.0"], project).code == 0
    (project / ".git" / "index.lock").write_text("")  # another git process, or one that was killed
    result = run(["ledger", "commit"], project)
    assert result.code == 2 and one_line(result.err), result
    assert "index.lock': File exists" in result.err and "run the command again" in result.err
