"""End-to-end fixtures: the sandbox (real systemd hosts with sshd, a real
registry with TLS and auth) on the local Docker engine.

- ``sandbox`` (session): one sandbox of 2 fresh hosts for the whole run, in a
  temporary project with a minimal ``deployer.yaml``; ``down`` at the end.
  Tests that change hosts for good (installing Docker, say) should bring up
  their own with ``manager.up(their_folder, ...)`` and ``down`` it, or call
  ``manager.reset_host`` afterwards.
- ``ssh_to``: a paramiko connection to a sandbox host with strict host-key
  checking (RejectPolicy + the sandbox's known_hosts); ``ssh_connect`` and
  ``ssh_run`` for hosts of other sandboxes.

No Docker engine is a failure here, never a skip: these tests are the proof
that deployer works on real servers. Every test in this folder is marked
``e2e`` (``pytest -m "not e2e"`` leaves them out).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


def _engine() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        pytest.fail(
            f"e2e: no Docker engine answers ({e}); start dockerd (`bash .ci/setup` does) "
            'or deselect these tests with -m "not e2e"',
            pytrace=False,
        )
    return client


def _ensure_images(client: Any) -> None:
    """The base and registry images, built by .ci/build-images when missing
    (no Docker Hub here); a warm engine spends nothing."""
    import docker.errors

    needed = [BASE_IMAGE, os.environ.get("DEPLOYER_SANDBOX_REGISTRY_IMAGE", "registry:2")]
    missing = []
    for image in needed:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        script = ROOT / ".ci" / "build-images"
        p = subprocess.run(["bash", str(script), "registry"], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.fail(f"e2e: cannot build {missing}: {p.stderr[-2000:]}", pytrace=False)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    client = _engine()
    _ensure_images(client)
    return client


@pytest.fixture(scope="session")
def sandbox(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``SandboxInfo`` of a 2-host sandbox shared by the whole session."""
    from deployer.sandbox import manager

    project = tmp_path_factory.mktemp("sandbox-project")
    (project / "deployer.yaml").write_text("app: e2e\n")
    try:
        info = manager.up(project, hosts=2, base_image=BASE_IMAGE)
    except BaseException:
        manager.down(project)
        raise
    yield info
    manager.down(project)


def _ssh_connect(host_address: str, info: Any, known_hosts: Path | None = None, **kw: Any) -> Any:
    """A paramiko client connected as the sandbox user, refusing any host key
    that is not in ``known_hosts`` (default: the sandbox's)."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or info.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host_address,
        username=info.ssh_user,
        key_filename=str(info.ssh_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=15,
        banner_timeout=15,
        auth_timeout=15,
        **kw,
    )
    return client


def _ssh_run(client: Any, command: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``command`` over an open paramiko client: (exit code, stdout, stderr)."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


@pytest.fixture(scope="session")
def ssh_connect() -> Callable[..., Any]:
    """``ssh_connect(address, info, known_hosts=None)`` -> a connected paramiko
    client with strict host-key checking; the caller closes it."""
    return _ssh_connect


@pytest.fixture(scope="session")
def ssh_run() -> Callable[..., tuple[int, str, str]]:
    """``ssh_run(client, "command")`` -> (exit code, stdout, stderr)."""
    return _ssh_run


@pytest.fixture
def ssh_to(sandbox: Any) -> Iterator[Callable[..., Any]]:
    """``ssh_to("sandbox-1")`` -> a connected paramiko client (closed after the test)."""
    opened: list[Any] = []

    def connect(name: str, **kw: Any) -> Any:
        c = _ssh_connect(sandbox.host(name).address, sandbox, **kw)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()
