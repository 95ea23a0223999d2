"""`deployer init`: the scaffold and the compose-to-template converter."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jinja2
import pytest
import yaml

from deployer.config import load_project
from deployer.config.models import InventoryConfig, ProjectConfig
from deployer.errors import ConfigError
from deployer.render import Renderer
from deployer.scaffold import (
    SCAFFOLD_FILES,
    app_name_for,
    compose_to_template,
    init_project,
    scaffold_root,
)

REPO = Path(__file__).resolve().parents[2]

COMPOSE = """\
# The stack we run by hand with `docker compose up --build`.
services:
  api:
    build:
      context: ./api
      dockerfile: Dockerfile.prod
      args:
        PYTHON_VERSION: "3.12"
      target: runtime
    image: shop/api:latest   # the local tag
    ports:
      - "8000:8000"
    environment:
      LOG_FORMAT: "{{ .Time }} {{ .Msg }}"   # a Go template, kept literally
    depends_on:
      db:
        condition: service_healthy
  queue-worker:
    build: ./worker
    command: ["celery", "-A", "tasks", "worker"]
    depends_on:
      - db
    volumes:
      - ./uploads:/uploads
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: example
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 5s
    volumes:
      - pgdata:/var/lib/postgresql/data

volumes:
  pgdata: {}
"""

IMAGES = {
    "api": "registry.example.com:5000/shop/api:abc1234@sha256:" + "a" * 64,
    "queue_worker": "registry.example.com:5000/shop/queue-worker:abc1234@sha256:" + "b" * 64,
}


def render(template: str, images: dict[str, str]) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template).render(images=images)


# -- scaffold files ----------------------------------------------------------


def test_scaffold_root_is_the_repo_templates_folder_in_a_checkout() -> None:
    assert scaffold_root() == REPO / "templates"
    for rel in SCAFFOLD_FILES:
        assert (scaffold_root() / rel).is_file(), rel


def test_init_writes_the_scaffold_and_it_validates(tmp_path: Path) -> None:
    dest = tmp_path / "My_Shop"
    dest.mkdir()
    written = init_project(dest)
    assert written == [dest / rel for rel in SCAFFOLD_FILES]
    cfg = yaml.safe_load((dest / "deployer.yaml").read_text())
    assert cfg["app"] == "my-shop"
    assert cfg["images"]["web"]["repository"] == "my-shop/web"
    ProjectConfig.model_validate(cfg)
    InventoryConfig.model_validate(yaml.safe_load((dest / "inventories/prod.yaml").read_text()))
    assert "myapp" not in (dest / "deployer.yaml").read_text()


def test_scaffold_checks_and_renders_with_the_real_loader(tmp_path: Path) -> None:
    """The scaffold is what a new user runs first: `deployer check prod` on it
    must pass once REGISTRY_PASSWORD is set."""
    init_project(tmp_path)
    project = load_project(tmp_path, "prod", {"REGISTRY_PASSWORD": "pw-1234"})
    [host] = project.hosts
    files = Renderer(project).render(host, {"web": "r.example/x/web:t@sha256:" + "c" * 64}, "r1")
    [compose] = files
    data = yaml.safe_load(compose.content)
    assert data["services"]["web"]["image"] == "r.example/x/web:t@sha256:" + "c" * 64
    assert data["services"]["web"]["ports"] == ["80:8000"]
    assert "db" not in data["services"]  # the commented example stays a Jinja comment


def test_init_refuses_to_overwrite_and_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "deployer.yaml").write_text("app: mine\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/docker-compose.yaml.j2").write_text("mine\n")
    with pytest.raises(ConfigError) as exc:
        init_project(tmp_path)
    assert str(tmp_path / "deployer.yaml") in exc.value.message
    assert str(tmp_path / "templates/docker-compose.yaml.j2") in exc.value.message
    assert exc.value.hint is not None and "--force" in exc.value.hint
    # Nothing touched, not even the file that did not exist.
    assert (tmp_path / "deployer.yaml").read_text() == "app: mine\n"
    assert not (tmp_path / "inventories").exists()


def test_init_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "deployer.yaml").write_text("app: mine\n")
    init_project(tmp_path, force=True)
    assert yaml.safe_load((tmp_path / "deployer.yaml").read_text())["images"]["web"]


def test_app_name_for_folder_names(tmp_path: Path) -> None:
    assert app_name_for(tmp_path / "Shop_API v2") == "shop-api-v2"
    assert app_name_for(tmp_path / "___") == "app"


# -- compose conversion --------------------------------------------------------


def test_compose_to_template_structure() -> None:
    conv = compose_to_template(COMPOSE, "shop")
    assert conv.images == {
        "api": {
            "repository": "shop/api",
            "context": "api",
            "dockerfile": "Dockerfile.prod",
            "args": {"PYTHON_VERSION": "3.12"},
            "target": "runtime",
        },
        "queue_worker": {"repository": "shop/queue-worker", "context": "worker"},
    }
    for entry in conv.images.values():
        ProjectConfig.model_validate({"app": "shop", "images": {"x": entry}})

    t = conv.template
    assert "build:" not in t
    assert 'image: "{{ images.api }}"   # the local tag' in t
    assert 'image: "{{ images.queue_worker }}"' in t
    # The renamed service says so, right above its image line.
    assert (
        "    # images.queue_worker: the image of service 'queue-worker' "
        "(template names must be identifiers)\n"
        '    image: "{{ images.queue_worker }}"\n'
    ) in t
    # Comments and key order of the original survive.
    assert t.startswith("# The stack we run by hand")
    assert t.index("\n  api:\n") < t.index("\n  queue-worker:\n") < t.index("\n  db:\n")
    assert any("queue_worker" in n for n in conv.notes)


def test_compose_template_renders_back_to_the_original_minus_build() -> None:
    conv = compose_to_template(COMPOSE, "shop")
    got = yaml.safe_load(render(conv.template, IMAGES))

    want = yaml.safe_load(COMPOSE)
    for svc, name in (("api", "api"), ("queue-worker", "queue_worker")):
        del want["services"][svc]["build"]
        want["services"][svc]["image"] = IMAGES[name]
    assert got == want
    # The Go template literal came through unchanged, and key order is kept.
    assert got["services"]["api"]["environment"]["LOG_FORMAT"] == "{{ .Time }} {{ .Msg }}"
    assert list(got["services"]["queue-worker"]) == ["image", "command", "depends_on", "volumes"]
    assert list(got["services"]) == ["api", "queue-worker", "db"]


def test_contexts_are_relative_to_the_compose_files_folder() -> None:
    conv = compose_to_template(COMPOSE, "shop", base="deploy/compose")
    assert conv.images["api"]["context"] == "deploy/compose/api"
    assert conv.images["queue_worker"]["context"] == "deploy/compose/worker"


def test_flow_style_and_merge_keys_fall_back_to_reemitting() -> None:
    text = textwrap.dedent(
        """\
        x-common: &common
          build: .
          restart: always
        services:
          web: {build: ., ports: ["80:80"]}
          job:
            <<: *common
            command: ["run", "{{x}}", "{%y%}"]
        """
    )
    conv = compose_to_template(text, "shop")
    # Both build `.`: one image, built and pushed once.
    assert set(conv.images) == {"web"}
    assert any("same build" in n and "'job'" in n for n in conv.notes)
    got = yaml.safe_load(render(conv.template, {"web": "r/w:1"}))
    assert got["services"] == {
        "web": {"image": "r/w:1", "ports": ["80:80"]},
        "job": {"image": "r/w:1", "restart": "always", "command": ["run", "{{x}}", "{%y%}"]},
    }
    assert "comments" in conv.template.splitlines()[0]
    assert "&common" in conv.template and "<<: *common" in conv.template


def test_other_services_using_the_built_local_image_follow_it() -> None:
    text = textwrap.dedent(
        """\
        services:
          web:
            build: .
            image: shop/web:dev
          worker:
            image: shop/web:dev
            command: celery
        """
    )
    conv = compose_to_template(text, "shop")
    got = yaml.safe_load(render(conv.template, {"web": "r/shop/web:1"}))
    assert got["services"]["worker"] == {"image": "r/shop/web:1", "command": "celery"}
    assert any("'worker'" in n for n in conv.notes)


def test_build_args_without_values_and_unsupported_options_are_noted() -> None:
    text = textwrap.dedent(
        """\
        services:
          web:
            build:
              context: .
              args: [TOKEN, MODE=prod]
              cache_from: [x]
            ports: ["${PORT}:80"]
        """
    )
    conv = compose_to_template(text, "shop")
    assert conv.images["web"]["args"] == {"TOKEN": "${TOKEN}", "MODE": "prod"}
    joined = "\n".join(conv.notes)
    assert "TOKEN" in joined
    assert "cache_from" in joined
    assert "${VAR} interpolation" in joined


def test_endraw_literal_is_escaped_too() -> None:
    text = 'services:\n  web:\n    build: .\n    command: "echo {% endraw %} {{ a }}"\n'
    conv = compose_to_template(text, "shop")
    got = yaml.safe_load(render(conv.template, {"web": "r/w:1"}))
    assert got["services"]["web"]["command"] == "echo {% endraw %} {{ a }}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("services: [1, 2", "not valid YAML: line"),
        ("version: '3'\n", "no 'services' mapping"),
        ("services:\n  web:\n    build: 3\n", "build must be a path or a mapping"),
    ],
)
def test_bad_compose_files(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        compose_to_template(text, "shop")
    assert fragment in str(exc.value)


def test_init_from_compose_writes_images_and_template(tmp_path: Path) -> None:
    src = tmp_path / "shop"
    (src / "ops").mkdir(parents=True)
    compose = src / "ops" / "docker-compose.yml"
    compose.write_text(COMPOSE)
    init_project(src, from_compose=compose)

    cfg = yaml.safe_load((src / "deployer.yaml").read_text())
    assert cfg["app"] == "shop"
    assert cfg["images"]["api"]["context"] == "ops/api"
    assert cfg["images"]["queue_worker"] == {
        "repository": "shop/queue-worker",
        "context": "ops/worker",
    }
    # The release mirrors the project: the compose file lands in ops/, where
    # its ./uploads means ops/uploads, as it did by hand.
    assert cfg["files"] == [
        {"template": "templates/docker-compose.yaml.j2", "dest": "ops/docker-compose.yaml"}
    ]
    assert cfg["compose_file"] == "ops/docker-compose.yaml"
    # The rest of the scaffold (registry, comments) is untouched.
    text = (src / "deployer.yaml").read_text()
    assert "# From docker-compose.yml: one entry per service that had build:." in text
    assert "# NOTE: service 'queue-worker'" in text
    assert "keep_releases: 5" in text
    assert "# NOTE: data, kept in <deploy_dir>/shared on each server and never uploaded: " \
        "ops/uploads" in text
    ProjectConfig.model_validate(cfg)

    template = (src / "templates/docker-compose.yaml.j2").read_text()
    assert template == compose_to_template(COMPOSE, "shop", base="ops").template


def test_init_from_missing_compose_touches_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the compose file"):
        init_project(tmp_path, from_compose=tmp_path / "nope.yml")
    assert list(tmp_path.iterdir()) == []


def test_yaml_12_values_and_compose_tags_survive_init() -> None:
    text = textwrap.dedent(
        """\
        services:
          web:  # the app
            build: .
            ports:
              - 22:22
            restart: no
            labels: !reset []
          sidecar: {build: ., command: !override [run]}
        """
    )
    conv = compose_to_template(text, "shop")
    from deployer.project.yaml12 import load_12

    got = load_12(render(conv.template, {"web": "r/w:1"}))
    assert got["services"]["web"] == {"image": "r/w:1", "ports": ["22:22"], "restart": "no",
                                      "labels": []}
    assert got["services"]["sidecar"] == {"image": "r/w:1", "command": ["run"]}
    assert "!reset" in conv.template and "!override" in conv.template
    assert "# the app" in conv.template


def test_identical_builds_are_one_image() -> None:
    svc = "    build: {context: ./app, dockerfile: Dockerfile, args: {A: '1'}}\n"
    text = "services:\n" + "".join(f"  s{i}:\n{svc}" for i in range(4)) + (
        "  other:\n    build: {context: ./app, target: dev}\n")
    conv = compose_to_template(text, "shop")
    assert list(conv.images) == ["s0", "other"]
    got = yaml.safe_load(render(conv.template, {"s0": "r/a:1", "other": "r/b:1"}))
    assert [s["image"] for s in got["services"].values()] == ["r/a:1"] * 4 + ["r/b:1"]


def test_init_notes_what_is_config_data_and_secret(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "nginx.conf").write_text("server {}\n")
    (tmp_path / ".env").write_text("DATA=./library\n")
    (tmp_path / "app.env").write_text("A=1\n")
    (tmp_path / "docker-compose.yml").write_text(textwrap.dedent("""\
        services:
          web:
            image: nginx
            env_file: app.env
            volumes: [./nginx.conf:/etc/nginx/nginx.conf, "${DATA}:/data"]
          debug:
            image: busybox
            profiles: [debug]
        """))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "nginx.conf", "docker-compose.yml"],
                   check=True)
    init_project(tmp_path, from_compose=tmp_path / "docker-compose.yml")
    text = (tmp_path / "deployer.yaml").read_text()
    assert "# NOTE: config, copied into every release: nginx.conf\n" in text
    assert "never uploaded: library (list a path" in text
    assert "# NOTE: secret, copied 0600 into every release: .env, app.env\n" in text
    assert "not enabled: debug" in text
