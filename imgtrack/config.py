"""`.imgtrack/config.toml`: the policy, the images and the registries, tracked in git.

Precedence, written down once: command-line flag > environment > this file > built-in default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtrack.errors import ConfigError, InvalidReference, UsageError
from imgtrack.oci.reference import check_registry_host, parse_repository
from imgtrack.policy import DEFAULT_FLOATING, DEFAULT_IMMUTABLE, DEFAULT_TEMPLATES, TagRules, validate_templates

CONFIG_DIR = ".imgtrack"
CONFIG_FILE = "config.toml"
LEDGER_DIR = "ledger"

MAX_CONFIG_BYTES = 1024 * 1024
IMAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)  # with fullmatch


def env_int(
    name: str, default: int, low: int, high: int, unit: str = "", environ: Mapping[str, str] = os.environ
) -> int:
    """A whole number from the environment variable `name`, checked like a flag (exit 2 naming it); unset or
    empty gives `default`."""
    text = environ.get(name, "")
    if not text:
        return default
    wanted = f"a whole number{unit} from {low} to {high}"
    if not re.fullmatch(r"[0-9]{1,19}", text, re.ASCII):
        raise UsageError(f"environment variable {name}={text[:40]!r} is not {wanted}; fix it or unset it")
    value = int(text)
    if not low <= value <= high:
        raise UsageError(f"environment variable {name}={value} is outside {wanted}; fix it or unset it")
    return value


DEFAULT_CONFIG_TEXT = """\
# imgtrack configuration, tracked in git with the ledger beside it (.imgtrack/ledger/).
# Precedence: command-line flag > environment > this file > built-in default.
schema = 1

[versions]
# A git tag named prefix + semver (v1.4.0) marks a release; the version of every other
# commit is derived from the nearest such tag: 1.4.1-dev.3+g1a2b3c4.
tag_prefix = "v"

[tags]
# Tags given to every recorded build. Placeholders: {version} (with "+" written "_"),
# {major} {minor} {patch} {short} (7-hex commit) {commit} (40-hex).
templates = ["{version}", "{major}.{minor}", "sha-{short}"]
# Immutable tags name one digest forever. Any tag that is neither immutable nor floating
# is treated as immutable too.
immutable = ["{version}", "sha-*"]
# Floating tags go to releases only (never to a pre-release or dev build) and only move
# forward in semver order.
floating = ["{major}.{minor}", "{major}"]
# Bare `latest` is refused. true makes `latest` a computed alias: always the highest
# non-prerelease version in the ledger, given at push time, never pushed alone.
latest = false

# One table per image you build; `record --image NAME` takes NAME from here. In a repository
# that builds several images, each can have its own release tags and source folders: its
# version then comes from its own tags (api/v1.2.0) and counts, and its dirtiness judges,
# only changes under its paths.
# [images.api]
# repositories = ["registry.example.com/team/api"]
# tag_prefix = "api/v"
# paths = ["services/api", "libs/common"]
# source = "https://git.example.com/team/api"   # said by the record attached to each pushed image
[images]

# Where builds are rolled out (imgtrack deploy, status, rollback; audit --env), and the repositories
# each pulls from.
# [environments.prod]
# repositories = ["registry.example.com/prod/api"]
[environments]

# Registries that speak plain HTTP (loopback hosts always may).
# [registries."registry.internal:5000"]
# insecure = true
[registries]
"""


@dataclass(frozen=True)
class ImageConfig:
    name: str
    repositories: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # the source folders the image is built from; none: the whole repository
    tag_prefix: str | None = None  # its own release tags' prefix; None: the global versions.tag_prefix
    source: str = ""  # where its source lives (a URL), said by the record artifact attached to the image


@dataclass(frozen=True)
class RegistryConfig:
    host: str
    insecure: bool = False


@dataclass(frozen=True)
class EnvironmentConfig:
    """Where builds are rolled out (`[environments.prod]`): a name, and the repositories it pulls from."""

    name: str
    repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The parsed configuration of one project."""

    tag_prefix: str = "v"
    rules: TagRules = field(default_factory=TagRules)
    images: dict[str, ImageConfig] = field(default_factory=dict)
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    environments: dict[str, EnvironmentConfig] = field(default_factory=dict)

    def prefix_of(self, image: str) -> str:
        """The prefix of `image`'s release tags: its own, or the global one."""
        found = self.images.get(image)
        return found.tag_prefix if found is not None and found.tag_prefix is not None else self.tag_prefix

    def paths_of(self, image: str) -> tuple[str, ...]:
        """The source folders `image` is built from; empty for the whole repository."""
        found = self.images.get(image)
        return found.paths if found is not None else ()

    def prefixes(self) -> dict[str, tuple[str, ...]]:
        """Every release-tag prefix in use, with the images whose versions it gives."""
        found: dict[str, list[str]] = {self.tag_prefix: []}
        for name in sorted(self.images):
            found.setdefault(self.prefix_of(name), []).append(name)
        return {prefix: tuple(names) for prefix, names in found.items()}

    def environment(self, name: str, config_path: Path) -> EnvironmentConfig:
        """The configured environment `name`, or a ConfigError saying how to add it."""
        found = self.environments.get(name)
        if found is None:
            known = ", ".join(sorted(self.environments)) or "none yet"
            raise ConfigError(
                f"environment {name[:80]!r} is not configured in {config_path} (configured: {known}); add an "
                f"[environments.NAME] table there"
            )
        return found

    def image(self, name: str, config_path: Path) -> ImageConfig:
        """The configured image `name`, or a ConfigError saying how to add it."""
        found = self.images.get(name)
        if found is None and not IMAGE_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"image name {name[:80]!r} must be lowercase letters, digits, '.', '_' or '-' "
                "(64 at most); give a name from [images] in the config"
            )
        if found is None:
            known = ", ".join(sorted(self.images)) or "none yet"
            raise ConfigError(
                f"image {name!r} is not configured in {config_path} (configured: {known}); "
                f"add a [images.{name}] table there"
            )
        return found


def config_path(work_tree: Path) -> Path:
    return work_tree / CONFIG_DIR / CONFIG_FILE


def ledger_root(work_tree: Path) -> Path:
    return work_tree / CONFIG_DIR / LEDGER_DIR


def load_config(work_tree: Path) -> Config:
    """Read `.imgtrack/config.toml` under `work_tree`."""
    path = config_path(work_tree)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is over {MAX_CONFIG_BYTES // 1024} KiB; a config is a few KB: fix it")
        data = tomllib.loads(raw.decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{path} does not exist; run `imgtrack init` in {work_tree} first") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path} is a folder; it should be imgtrack's config file: move it away, then `imgtrack init`"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be imgtrack's config; fix it") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML ({exc}); fix it or recreate it with `imgtrack init --force`"
        ) from None
    return parse_config(data, path)


_TOP_KEYS = ("schema", "versions", "tags", "images", "registries", "environments")
_TABLE_KEYS = {"versions": ("tag_prefix",), "tags": ("templates", "immutable", "floating", "latest")}
_PER_ENTRY_KEYS = {
    "images": ("repositories", "paths", "tag_prefix"),
    "registries": ("insecure",),
    "environments": ("repositories",),
}
_PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]{0,64}", re.ASCII)
_SOURCE_RE = re.compile(r"(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:/-]*)?)?", re.ASCII)


def _known_keys(table: dict[str, Any], known: tuple[str, ...], where: str, path: Path) -> None:
    """Refuse a key imgtrack does not read: a typo (`tag_prefx`) would otherwise change nothing, silently."""
    for key in table:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {where}{close[0]}?" if close else f"known here: {', '.join(known)}"
            raise ConfigError(f"{path}: unknown key {where}{key}; {hint} (remove or rename it)")


def _repositories(table: dict[str, Any], where: str, path: Path) -> tuple[str, ...]:
    """A table's `repositories`: each a repository reference, without tag or digest."""
    repos = _strings(table.get("repositories", []), where, path)
    for repo in repos:
        try:
            parse_repository(repo, f"{where}:")
        except InvalidReference as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return repos


def _prefix(value: Any, where: str, path: Path) -> str:
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value) or "//" in value or value.startswith("/"):
        raise ConfigError(
            f"{path}: {where} must be a string of at most 64 letters, digits, '.', '_', "
            "'-' or '/' (a git tag name's start, such as v or api/v); fix that entry"
        )
    return value


def _check_prefixes(images: dict[str, ImageConfig], default: str, path: Path) -> None:
    """Two images may share versions only by both leaving tag_prefix unset (the global one): a prefix
    one image claims as its own and another also answers to would make each release tag ambiguous."""
    owners: dict[str, list[ImageConfig]] = {}
    for image in images.values():
        owners.setdefault(default if image.tag_prefix is None else image.tag_prefix, []).append(image)
    for prefix, sharing in owners.items():
        if len(sharing) > 1 and any(image.tag_prefix is not None for image in sharing):
            names = " and ".join(f"images.{image.name}" for image in sharing[:2])
            raise ConfigError(
                f"{path}: {names} both take their versions from release tags {prefix}*; give each its own "
                "tag_prefix (such as api/v and web/v), or leave it unset on both to share the global one"
            )


def _strings(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {where} must be a list of strings; fix that entry")
    return tuple(value)


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table; fix that entry")
    return value


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate a parsed config document."""
    _known_keys(data, _TOP_KEYS, "", path)
    for table, keys in _TABLE_KEYS.items():
        if isinstance(data.get(table), dict):
            _known_keys(data[table], keys, f"{table}.", path)
    for table, keys in _PER_ENTRY_KEYS.items():
        for name, entry in (data.get(table) or {}).items() if isinstance(data.get(table), dict) else ():
            if isinstance(entry, dict):
                _known_keys(entry, keys, f"{table}.{name}.", path)
    schema = data.get("schema", 1)
    if schema != 1:
        raise ConfigError(f"{path}: schema {schema!r} is not supported by this imgtrack (schema 1); upgrade imgtrack")
    versions = _table(data, "versions", path)
    prefix = _prefix(versions.get("tag_prefix", "v"), "versions.tag_prefix", path)
    tags = _table(data, "tags", path)
    latest = tags.get("latest", False)
    if not isinstance(latest, bool):
        raise ConfigError(f"{path}: tags.latest must be true or false; fix that entry")
    rules = TagRules(
        templates=_strings(tags.get("templates", list(DEFAULT_TEMPLATES)), "tags.templates", path),
        immutable=_strings(tags.get("immutable", list(DEFAULT_IMMUTABLE)), "tags.immutable", path),
        floating=_strings(tags.get("floating", list(DEFAULT_FLOATING)), "tags.floating", path),
        latest=latest,
    )
    for pattern in (*rules.templates, *rules.immutable, *rules.floating):
        if not pattern or any(c.isspace() or not c.isprintable() for c in pattern):
            raise ConfigError(
                f"{path}: tag pattern {pattern[:80]!r} is empty or holds whitespace or a control "
                "character; fix that entry"
            )
    validate_templates(rules, str(path))
    images: dict[str, ImageConfig] = {}
    for name, table in _table(data, "images", path).items():
        if not IMAGE_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{path}: image name {name!r} must be lowercase letters, digits, '.', '_' or '-' (64 at most); rename it"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [images.{name}] must be a table; fix that entry")
        repos = _repositories(table, f"images.{name}.repositories", path)
        paths = _strings(table.get("paths", []), f"images.{name}.paths", path)
        for source in paths:
            if (
                not source
                or source.startswith(("/", "-", ":"))
                or ".." in source.split("/")
                or not source.isprintable()
            ):
                raise ConfigError(
                    f"{path}: images.{name}.paths: {source!r} must be a path inside the repository, relative to its "
                    "top (e.g. services/api); fix that entry"
                )
        own = table.get("tag_prefix")
        own_prefix = None if own is None else _prefix(own, f"images.{name}.tag_prefix", path)
        source_url = table.get("source", "")
        if not isinstance(source_url, str) or not _SOURCE_RE.fullmatch(source_url):
            raise ConfigError(
                f"{path}: images.{name}.source must be an http(s) URL without user or password (it is attached "
                "to every pushed image), such as https://git.example.com/team/api; fix that entry"
            )
        images[name] = ImageConfig(name=name, repositories=repos, paths=paths, tag_prefix=own_prefix, source=source_url)
    _check_prefixes(images, prefix, path)
    registries: dict[str, RegistryConfig] = {}
    for host, table in _table(data, "registries", path).items():
        try:
            check_registry_host(host)
        except InvalidReference as exc:
            raise ConfigError(f"{path}: [registries]: {exc}") from None
        if not isinstance(table, dict) or not isinstance(table.get("insecure", False), bool):
            raise ConfigError(f"{path}: [registries.{host!r}] must be a table with insecure = true|false")
        registries[host] = RegistryConfig(host=host, insecure=bool(table.get("insecure", False)))
    environments: dict[str, EnvironmentConfig] = {}
    for name, table in _table(data, "environments", path).items():
        if not IMAGE_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{path}: environment name {name[:80]!r} must be lowercase letters, digits, '.', '_' or '-' (64 at "
                "most); rename it"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [environments.{name}] must be a table; fix that entry")
        repos = _repositories(table, f"environments.{name}.repositories", path)
        environments[name] = EnvironmentConfig(name=name, repositories=repos)
    return Config(tag_prefix=prefix, rules=rules, images=images, registries=registries, environments=environments)
