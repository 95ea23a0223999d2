"""The wheel carries every package of deployer.

setuptools' explicit ``packages`` list does not follow new folders by itself:
``deployer.proxy`` and ``deployer.swarm`` were missing from it, so a
non-editable install (``pip install .``, the GitHub Action on a runner) had
no proxy or swarm code. This compares the list with the source tree.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_pyproject() -> None:
    # Python 3.10 is supported and has no tomllib: read the one list by hand.
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert block, "pyproject.toml has no [tool.setuptools] packages list"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "deployer").rglob("__init__.py")}
    assert on_disk - listed == set()
