"""Shared helpers: write small projects into temporary folders, copy an
example as a fresh clone has it."""

from __future__ import annotations

import shutil
import signal
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


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (``cmd &``
    or ``nohup``) inherits SIGINT ignored, and so would every deployer the
    tests start: deployer rightly keeps an inherited SIG_IGN, so the Ctrl-C
    tests failed for how the suite was launched, not for the code. Restore
    Python's own handler; the children then start with the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# -- order: the longest files first ----------------------------------------------
#
# .ci/test hands whole files to its workers (--dist loadfile) in collection
# order (--no-loadscope-reorder: xdist's default order is by test count, which
# started the few-test e2e files, the longest, at the end of the run). So the
# slow files go first, longest first, and the hundreds of short unit and
# integration files fill the workers' gaps at the end. Seconds per file from
# a CI run's junit report (2 cores, load 10-28); only the ranking matters. A
# new e2e file not listed yet counts as long.
SLOW_FILES: dict[str, float] = {
    "tests/e2e/test_faults.py": 1568,
    "tests/e2e/test_ship.py": 1363,
    "tests/e2e/test_rollout.py": 1361,
    "tests/e2e/test_faults_signals.py": 1067,
    "tests/e2e/test_day2.py": 1029,
    "tests/e2e/test_swarm.py": 1010,
    "tests/e2e/test_proxy_ops.py": 811,
    "tests/e2e/test_compose_fidelity.py": 750,
    "tests/e2e/test_demo.py": 339,
    "tests/e2e/test_releases.py": 318,
    "tests/e2e/test_no_registry.py": 313,
    "tests/e2e/test_sandbox.py": 311,
    "tests/e2e/test_proxy.py": 310,
    "tests/e2e/test_bootstrap.py": 294,
    "tests/fuzz/test_fuzz_inputs.py": 287,
    "tests/e2e/test_github_actions.py": 278,
    "tests/e2e/test_state_races.py": 260,
    "tests/e2e/test_plan_diff.py": 223,
    "tests/e2e/test_compose_v2.py": 192,
    "tests/e2e/test_proxy_tls.py": 189,
    "tests/e2e/test_images.py": 148,
    "tests/unit/test_cli_options.py": 87,
    "tests/unit/test_action_yml.py": 84,
    "tests/unit/test_cli.py": 71,
}
NEW_E2E_SECONDS = 600.0


def _file_cost(item: pytest.Item) -> float:
    path = item.nodeid.split("::", 1)[0]
    if path in SLOW_FILES:
        return SLOW_FILES[path]
    return NEW_E2E_SECONDS if path.startswith("tests/e2e/") else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_file_cost, reverse=True)  # stable: a file keeps its tests' order
