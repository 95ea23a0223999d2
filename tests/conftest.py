"""Shared helpers: write small projects into temporary folders, copy an
example as a fresh clone has it."""

from __future__ import annotations

import shutil
import subprocess
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


def copy_tracked(src: Path, dest: Path) -> Path:
    """Copy the files of ``src`` that git tracks (``git ls-files``, so also
    staged new ones) into ``dest``: the example as a fresh clone has it, never
    the git-ignored files a demo or an earlier run left there
    (``inventories/sandbox.yaml``, ``.deployer/``). Returns ``dest``."""
    p = subprocess.run(
        # safe.directory: a clone owned by another user (CI checkouts) still lists
        ["git", "-c", "safe.directory=*", "-C", str(src), "ls-files", "-z", "--", "."],
        capture_output=True, check=False,
    )
    if p.returncode != 0:
        pytest.fail(f"git ls-files in {src} failed: {p.stderr.decode(errors='replace')}",
                    pytrace=False)
    dest.mkdir(parents=True, exist_ok=True)
    for rel in p.stdout.decode().split("\0"):
        source = src / rel
        if not rel or not (source.is_file() or source.is_symlink()):
            continue  # deleted in the work tree, or a submodule
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


@pytest.fixture(autouse=True)
def _fresh_masker() -> None:
    masker.clear()
