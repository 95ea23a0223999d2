"""Image references: pure string functions used by plan, templates and push."""

from __future__ import annotations

import pytest

from deployer.config.models import ImageConfig
from deployer.images.mirror import source_ref
from deployer.images.refs import (
    HUB_LOGIN,
    image_ref,
    login_server,
    pinned_ref,
    registry_of,
    repository_name,
    split_ref,
)

D = "sha256:" + "ab" * 32


def test_private_registry_refs() -> None:
    assert image_ref("reg.example.com:5000", "shop/web", "abc123") == (
        "reg.example.com:5000/shop/web:abc123"
    )
    assert pinned_ref("reg.example.com:5000", "shop/web", "abc123", D) == (
        f"reg.example.com:5000/shop/web:abc123@{D}"
    )
    assert image_ref("10.0.0.1:5443", "shop/web", "t") == "10.0.0.1:5443/shop/web:t"


@pytest.mark.parametrize(
    "server", [None, "docker.io", "index.docker.io", "https://index.docker.io/v1/"]
)
def test_docker_hub_has_no_server_part(server: str | None) -> None:
    assert repository_name(server, "me/web") == "me/web"
    assert pinned_ref(server, "me/web", "t", D) == f"me/web:t@{D}"
    assert login_server(server) == HUB_LOGIN


def test_server_normalised() -> None:
    assert repository_name("https://reg.example.com/", "a") == "reg.example.com/a"
    assert login_server("reg.example.com:5000") == "reg.example.com:5000"


@pytest.mark.parametrize("digest", ["", "sha256:abc", "md5:" + "a" * 64, D.upper()])
def test_pinned_ref_needs_a_sha256_digest(digest: str) -> None:
    with pytest.raises(ValueError):
        pinned_ref("r", "a", "t", digest)


@pytest.mark.parametrize(
    ("ref", "parts", "registry"),
    [
        ("postgres", ("postgres", None, None), None),
        ("postgres:16", ("postgres", "16", None), None),
        ("library/postgres:16", ("library/postgres", "16", None), None),
        ("localhost/x", ("localhost/x", None, None), "localhost"),
        ("reg:5000/shop/web", ("reg:5000/shop/web", None, None), "reg:5000"),
        ("reg:5000/shop/web:t1", ("reg:5000/shop/web", "t1", None), "reg:5000"),
        (f"reg.io/shop/web:t1@{D}", ("reg.io/shop/web", "t1", D), "reg.io"),
        (f"reg.io/shop/web@{D}", ("reg.io/shop/web", None, D), "reg.io"),
        ("docker.io/library/postgres:16", ("docker.io/library/postgres", "16", None), None),
    ],
)
def test_split_and_registry_of(
    ref: str, parts: tuple[str, str | None, str | None], registry: str | None
) -> None:
    assert split_ref(ref) == parts
    assert registry_of(ref) == registry


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("postgres", "postgres:latest"),
        ("postgres:16", "postgres:16"),
        ("reg:5000/pg", "reg:5000/pg:latest"),
        (f"postgres@{D}", f"postgres@{D}"),
        (f"postgres:16@{D}", f"postgres:16@{D}"),
    ],
)
def test_mirror_source_gets_an_explicit_tag(source: str, expected: str) -> None:
    assert source_ref(ImageConfig(repository="mirror/pg", source=source)) == expected
