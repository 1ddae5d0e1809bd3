"""The CI job the GitHub Action (`action.yml`) and the GitLab CI include (`ci/gitlab/imgtrack.yml`) run:
`python -m imgtrack.ci_job`. Record a build, push it if asked, commit the ledger if asked, and hand the
results on the way each CI system takes them.

Inputs are environment variables, `INPUT_<NAME>` (what action.yml passes) or `IMGTRACK_<NAME>` (GitLab
CI variables): SOURCE, DIGEST, IMAGE, PUSH_TO, VERSION, COMMIT, TAGS (comma or newline separated),
COMMIT_LEDGER (true/false). Outputs `digest`, `version` and `tags` go to `$GITHUB_OUTPUT` and a summary
of the record to `$GITHUB_STEP_SUMMARY` when GitHub sets them; on GitLab, to the dotenv file
`imgtrack.env` (IMGTRACK_RECORDED_DIGEST, _VERSION, _TAGS) and the job log. Each step runs the
imgtrack command line, so its errors, one line each, and its exit codes are the job's.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgtrack.errors import ImgtrackError

INPUTS = ("source", "digest", "image", "push_to", "version", "commit", "tags", "commit_ledger")


def inputs(environ: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for name in INPUTS:
        key = name.upper()
        found[name] = (environ.get(f"INPUT_{key}") or environ.get(f"IMGTRACK_{key}") or "").strip()
    return found


class JobError(ImgtrackError):
    """The job stopped: a bad input (exit 2), or an imgtrack step that failed, whose own stderr already
    said why (no message, its exit status)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"ci job: {message}" if message else "")
        self.exit_code = code


def _imgtrack(args: list[str]) -> Any:
    """Run one imgtrack command with --json; its stderr passes through, a failure ends the job with its
    exit status."""
    proc = subprocess.run([sys.executable, "-m", "imgtrack", *args, "--json"], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise JobError("", proc.returncode)
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def run_job(environ: Mapping[str, str]) -> dict[str, Any]:
    given = inputs(environ)
    if not given["image"]:
        raise JobError("input image is empty; give the image name from .imgtrack/config.toml ([images.NAME])", 2)
    if bool(given["source"]) == bool(given["digest"]):
        raise JobError(
            "give exactly one of the inputs source (an OCI layout, layout tar or buildx metadata file) and digest "
            "(a build another step pushed)",
            2,
        )
    if given["commit_ledger"] not in ("", "true", "false"):
        raise JobError(f"input commit-ledger is {given['commit_ledger'][:20]!r}; give true or false", 2)
    tags = [t.strip() for t in given["tags"].replace("\n", ",").split(",") if t.strip()]
    record_args = ["record", given["source"]] if given["source"] else ["record", "--digest", given["digest"]]
    record_args += ["--image", given["image"]]
    for flag in ("version", "commit"):
        if given[flag]:
            record_args += [f"--{flag}", given[flag]]
    for tag in tags:
        record_args += ["--tag", tag]
    record = _imgtrack(record_args)
    if given["push_to"]:
        source = given["source"] or f"{given['image']}@{record['version']}"
        record = _imgtrack(["push", source, "--image", given["image"], "--to", given["push_to"], "--quiet"])
    committed = None
    if given["commit_ledger"] == "true":
        committed = _imgtrack(["ledger", "commit", "--push"])
    return {"record": record, "committed": committed}


def _github_outputs(path: Path, record: Mapping[str, Any]) -> None:
    delimiter = f"imgtrack_{secrets.token_hex(8)}"  # a multi-line value ends at a line no tag can be
    text = (
        f"digest={record['digest']}\nversion={record['version']}\n"
        f"tags<<{delimiter}\n" + "".join(f"{t}\n" for t in record["tags"]) + f"{delimiter}\n"
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def summary(result: Mapping[str, Any]) -> str:
    """The record as Markdown, for a job summary."""
    record = result["record"]
    rows = [
        ("image", record["image"]),
        ("version", record["version"]),
        ("commit", record["commit"]),
        ("tree", record["tree"]),
        ("digest", record["digest"]),
        ("tags", ", ".join(record["tags"]) or "none"),
        ("platforms", ", ".join(m["platform"] for m in record.get("manifests", [])) or "one manifest"),
    ]
    rows += [("pushed to", p["repository"]) for p in record.get("pushes", [])]
    committed = result.get("committed")
    if committed and committed.get("commit"):
        rows.append(("ledger commit", committed["commit"]))
    lines = [f"### imgtrack: {record['image']} {record['version']}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in rows]
    return "\n".join(lines) + "\n"


def publish(result: Mapping[str, Any], environ: Mapping[str, str], cwd: Path) -> str | None:
    """Hand the results to the CI system; the summary to print on stdout where it has no summary file."""
    record = result["record"]
    if environ.get("GITHUB_OUTPUT"):
        _github_outputs(Path(environ["GITHUB_OUTPUT"]), record)
    if environ.get("GITHUB_STEP_SUMMARY"):
        with open(environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(summary(result))
    if environ.get("GITLAB_CI") == "true":
        dotenv = (
            f"IMGTRACK_RECORDED_DIGEST={record['digest']}\nIMGTRACK_RECORDED_VERSION={record['version']}\n"
            f"IMGTRACK_RECORDED_TAGS={','.join(record['tags'])}\n"
        )
        (cwd / "imgtrack.env").write_text(dotenv, encoding="utf-8")
    return None if environ.get("GITHUB_STEP_SUMMARY") else summary(result)


def job(environ: Mapping[str, str], cwd: Path) -> str | None:
    """The whole job: what to print on stdout, if anything."""
    return publish(run_job(environ), environ, cwd)


if __name__ == "__main__":
    from imgtrack.cli import run_ci_job

    run_ci_job(job)
