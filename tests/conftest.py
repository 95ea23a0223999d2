"""Shared helpers: write small projects into temporary folders."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.secrets import masker

BASIC_PROJECT = """\
app: shop
registry:
  server: registry.example.com:5000
  username: ci-bot
  password: ${REGISTRY_PASSWORD}
images:
  web:
    repository: shop/web
    context: .
files:
  - template: templates/docker-compose.yaml.j2
    dest: docker-compose.yaml
  - template: templates/app.conf.j2
    dest: app.conf
    mode: "0600"
"""

BASIC_COMPOSE = """\
services:
  web:
    image: {{ images.web }}
    environment:
      WORKERS: "{{ workers }}"
    volumes:
      - ./app.conf:/etc/app.conf:ro
      - ./data:/data
"""

BASIC_CONF = """\
greeting={{ greeting }}
host={{ host.name }}
password={{ db_password }}
"""

BASIC_INVENTORY = """\
ssh: {user: deploy}
vars: {greeting: hello, db_password: "${DB_PASSWORD}", workers: 1}
groups:
  web:
    vars: {workers: 4}
    hosts:
      web-1: {address: 203.0.113.10}
      web-2: {address: 203.0.113.11, ssh: {port: 2222}, vars: {workers: 8}}
"""

ENV = {"REGISTRY_PASSWORD": "reg-pass-Xy9", "DB_PASSWORD": "db-pass-Qz7"}

MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Write a project; keyword args override files by relative path."""

    def make(files: dict[str, str] | None = None, **_: object) -> Path:
        base = {
            "deployer.yaml": BASIC_PROJECT,
            "templates/docker-compose.yaml.j2": BASIC_COMPOSE,
            "templates/app.conf.j2": BASIC_CONF,
            "inventories/prod.yaml": BASIC_INVENTORY,
        }
        base.update(files or {})
        for rel, text in base.items():
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        return tmp_path

    return make


@pytest.fixture(autouse=True)
def _fresh_masker() -> None:
    masker.clear()
