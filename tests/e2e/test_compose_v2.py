"""ship, the health gate and rollback under Compose v2 (`docker compose`).

Debian 12, the sandbox's base, ships only docker-compose 1.29, so every other
e2e test runs compose v1. Here one sandbox host gets Debian 13's
docker-compose package (the v2 CLI plugin; `.ci/setup` downloads it, pinned
by hash) in place of v1, and the rollout app goes through a ship, a changed
ship, an unhealthy release that is rolled back by itself, and a rollback.
The containers' ``com.docker.compose.version`` label proves which compose
started them.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_rollout import ROLLAPP, WEB_PORT, Project, app_sandbox, get, results

pytestmark = pytest.mark.e2e

DEB = Path("/var/cache/deployer-ci/docker-compose_2.26.1-4_amd64.deb")
DEB_SHA256 = "47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"
V2_VERSION = "2.26.1"  # Debian adds its revision: 2.26.1-4


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    if not DEB.is_file() or hashlib.sha256(DEB.read_bytes()).hexdigest() != DEB_SHA256:
        pytest.fail(f"{DEB} is missing or not the pinned file: run `bash .ci/setup`",
                    pytrace=False)
    with app_sandbox(tmp_path_factory.mktemp("compose-v2"), ROLLAPP, 1, {}) as p:
        container = p.info.hosts[0].container
        subprocess.run(["docker", "cp", str(DEB), f"{container}:/tmp/compose-v2.deb"],
                       check=True, capture_output=True)
        p.sh(p.names()[0], "dpkg -i /tmp/compose-v2.deb >/dev/null && rm /tmp/compose-v2.deb")
        yield p


def compose_versions(p: Project) -> set[str]:
    """The compose versions that started the app's running containers."""
    out = p.sh(p.names()[0], "docker ps --filter label=com.docker.compose.project=rollapp "
                             "--format '{{.Label \"com.docker.compose.version\"}}'")
    return {v.split("-")[0] for v in out.split()}


def test_the_host_has_only_compose_v2(v2: Project) -> None:
    name = v2.names()[0]
    assert v2.sh(name, "docker compose version --short").startswith(V2_VERSION)
    # The package replaced 1.29 (same name): no v1 is left to fall back on.
    assert v2.sh(name, "dpkg-query -W -f='${Version}' docker-compose") == "2.26.1-4"


def test_ship_change_unhealthy_and_rollback_under_v2(v2: Project) -> None:
    name = v2.names()[0]
    addr = v2.address(name)
    groups = {"app": {"hosts": [name]}}

    v2.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "one"})
    report, _, err = v2.ship()
    assert results(report) == {name: "deployed"}, err
    first = report["release"]
    assert get(addr)["greeting"] == "one"
    assert compose_versions(v2) == {V2_VERSION}, "the release was not started by compose v2"

    v2.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "two"})
    report, _, err = v2.ship()
    assert results(report) == {name: "deployed"}, err
    second = report["release"]
    assert get(addr)["greeting"] == "two"

    # A release that never gets healthy: the gate (docker inspect, same under
    # v1 and v2) sees it and the old release is started again.
    v2.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "three"},
                       host_vars={name: {"healthy": False}})
    report, _, err = v2.ship(check=1)
    assert results(report) == {name: "rolled back"}, err
    assert v2.current(name) == second
    assert get(addr)["greeting"] == "two"

    p = v2.run("-o", "json", "rollback", "sandbox")
    assert v2.current(name) == first, p.stderr
    assert get(addr)["greeting"] == "one"
    assert compose_versions(v2) == {V2_VERSION}
