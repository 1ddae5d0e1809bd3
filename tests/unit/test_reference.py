"""Reference parsing against the distribution project's normalisation tables (ParseNormalizedNamed),
ported as data: valid and invalid names, and the registry and path each normalises to."""

from __future__ import annotations

import pytest

from imgtrack.errors import InvalidReference
from imgtrack.oci.reference import parse_reference

HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
DIGEST = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"

VALID = [
    "docker/docker",
    "library/debian",
    "debian",
    "localhost/library/debian",
    "localhost/debian",
    "LOCALDOMAIN/library/debian",
    "LOCALDOMAIN/debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    f"docker.io/{HEX64}",
    "Docker/docker",
    "DOCKER/docker",
    # remote names
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]

INVALID = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    HEX64,
    # remote names
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
    # imgtrack's own: whole-string grammar, no control characters or spaces, empty
    "debian\n",
    "debian:1.0\n",
    f"debian@{DIGEST}\n",
    " debian",
    "deb ian",
    "debian\x00",
    "",
    # a digest algorithm imgtrack does not read
    "debian@md5:" + "a" * 32,
]

# (registry, path) each spelling normalises to: the repository-info table and the split-hostname table.
NORMALISED = [
    (["localhost/fooo"], "localhost", "fooo"),
    (["localhost/fooo/bar"], "localhost", "fooo/bar"),
    (["LOCALDOMAIN/fooo"], "LOCALDOMAIN", "fooo"),
    (["LOCALDOMAIN/fooo/bar"], "LOCALDOMAIN", "fooo/bar"),
    (["fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar"], "docker.io", "fooo/bar"),
    (["ubuntu", "docker.io/library/ubuntu", "library/ubuntu"], "docker.io", "library/ubuntu"),
    (["nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"], "docker.io", "nonlibrary/ubuntu"),
    (["other/library", "docker.io/other/library"], "docker.io", "other/library"),
    (["127.0.0.1:8000/private/moonbase"], "127.0.0.1:8000", "private/moonbase"),
    (["127.0.0.1:8000/privatebase"], "127.0.0.1:8000", "privatebase"),
    (["example.com/private/moonbase"], "example.com", "private/moonbase"),
    (["example.com/privatebase"], "example.com", "privatebase"),
    (["example.com:8000/private/moonbase"], "example.com:8000", "private/moonbase"),
    (["example.com:8000/privatebasee"], "example.com:8000", "privatebasee"),
    (
        ["ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "index.docker.io/library/ubuntu-12.04-base"],
        "docker.io",
        "library/ubuntu-12.04-base",
    ),
    (["foo", "docker.io/library/foo", "docker.io/foo"], "docker.io", "library/foo"),
    (["library/foo/bar", "docker.io/library/foo/bar"], "docker.io", "library/foo/bar"),
    (["store/foo/bar", "docker.io/store/foo/bar"], "docker.io", "store/foo/bar"),
    (["Foo/bar"], "Foo", "bar"),
    (["FOO/bar"], "FOO", "bar"),
    (["test.com/foo"], "test.com", "foo"),
    (["test_com/foo"], "docker.io", "test_com/foo"),
    (["docker/migrator"], "docker.io", "docker/migrator"),
    (["test.com:8080/foo"], "test.com:8080", "foo"),
    (["test-com:8080/foo"], "test-com:8080", "foo"),
    (["xn--n3h.com/foo"], "xn--n3h.com", "foo"),
    (["xn--n3h.com:18080/foo"], "xn--n3h.com:18080", "foo"),
    # imgtrack reads Docker Hub's registry host as docker.io too (docs/transfer.md)
    (["registry-1.docker.io/foo"], "docker.io", "library/foo"),
    (["registry-1.docker.io/team/foo"], "docker.io", "team/foo"),
]

# (input, tag, digest): a tag and a digest together are both kept; the digest is what transfers fetch.
TAGGED = [
    ("busybox", None, None),
    ("busybox:latest", "latest", None),
    (f"busybox@{DIGEST}", None, DIGEST),
    (f"gcr.io/library/busybox:latest@{DIGEST}", "latest", DIGEST),
    (f"busybox:latest@{DIGEST}", "latest", DIGEST),
    ("192.168.0.1:80", "80", None),
    ("test.com:5000", "5000", None),
    ("test:5000/repo:tag", "tag", None),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_names_parse(text: str) -> None:
    parse_reference(text)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_names_are_refused_with_one_line(text: str) -> None:
    with pytest.raises(InvalidReference) as exc:
        parse_reference(text)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("spellings", "registry", "path"), NORMALISED)
def test_names_normalise_as_docker_does(spellings: list[str], registry: str, path: str) -> None:
    for text in spellings:
        ref = parse_reference(text)
        assert (ref.registry, ref.repository) == (registry, path), text


@pytest.mark.parametrize(("text", "tag", "digest"), TAGGED)
def test_tag_and_digest(text: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.tag, ref.digest) == (tag, digest)


def test_a_bare_image_id_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidReference, match="image id"):
        parse_reference(HEX64)


def test_uppercase_in_the_path_says_lowercase() -> None:
    with pytest.raises(InvalidReference, match="must be lowercase"):
        parse_reference("example.com/Team/api")
