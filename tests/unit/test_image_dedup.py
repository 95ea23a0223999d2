"""Identical builds (same context, Dockerfile, args, target) are built once."""

from __future__ import annotations

from pathlib import Path

from deployer.config import load_project
from deployer.images.stage import same_builds

CFG = """\
app: shop
registry: {server: registry.example.com:5000}
images:
  web: {repository: shop/web, context: ., args: {A: "1"}}
  worker: {repository: shop/worker, context: ./, args: {A: "1"}}
  cron: {repository: shop/cron, context: ., args: {A: "1"}}
  dev: {repository: shop/dev, context: ., args: {A: "1"}, target: dev}
  other: {repository: shop/other, context: ./sub}
  other2: {repository: shop/other2, context: sub, dockerfile: Dockerfile.2}
  pg: {repository: shop/pg, source: postgres:16}
  pg2: {repository: shop/pg2, source: postgres:16}
files:
  - {template: c.j2, dest: docker-compose.yaml}
"""


def test_same_builds_map_to_the_first(tmp_path: Path) -> None:
    (tmp_path / "deployer.yaml").write_text(CFG)
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories/prod.yaml").write_text("hosts: {a: {address: 192.0.2.1}}\n")
    project = load_project(tmp_path, "prod", {})
    assert same_builds(project) == {"worker": "web", "cron": "web"}
