"""plan's offline image references are the names build and push use."""

from __future__ import annotations

from conftest import BASIC_PROJECT, ENV, MakeProject

from deployer.config import load_project
from deployer.plan import image_refs


def test_registry_url_is_normalised_like_build_and_push(make_project: MakeProject) -> None:
    cfg = BASIC_PROJECT.replace("server: registry.example.com:5000",
                                "server: https://registry.example.com:5000/")
    project = load_project(make_project({"deployer.yaml": cfg}), "prod", ENV)
    assert image_refs(project, "t") == {"web": "registry.example.com:5000/shop/web:t"}


def test_docker_hub_refs_have_no_server(make_project: MakeProject) -> None:
    cfg = BASIC_PROJECT.replace("server: registry.example.com:5000", "server: docker.io")
    project = load_project(make_project({"deployer.yaml": cfg}), "prod", ENV)
    assert image_refs(project, "t") == {"web": "shop/web:t"}
