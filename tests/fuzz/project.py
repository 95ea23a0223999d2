"""A copy of examples/flask-postgres reduced to what check and plan read."""

from __future__ import annotations

import shutil
from pathlib import Path

from .harness import EXAMPLE

FILES = ["deployer.yaml", "inventories/prod.yaml", "templates/docker-compose.yaml.j2",
         "templates/docker_config.py.j2", "templates/db_password.j2"]


def base_texts() -> dict[str, str]:
    return {f: (EXAMPLE / f).read_text(encoding="utf-8") for f in FILES}


def write_project(root: Path, texts: dict[str, str | bytes]) -> Path:
    """Write ``texts`` (relative path -> content) into a fresh ``root``."""
    if root.exists():
        shutil.rmtree(root)
    for rel, content in texts.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8", errors="surrogatepass")
    return root
