"""The sandbox's files on this machine (``<project>/.deployer/sandbox/``):
its state, lock, CA, SSH client key and registry password."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployer.errors import DeployError
from deployer.sandbox import inventory as inventory_file
from deployer.sandbox import pki
from deployer.sandbox.model import Log, sandbox_dir


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write atomically with ``mode`` (secrets are never world-readable, even
    for a moment)."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    tmp.replace(path)


@contextlib.contextmanager
def locked(sdir: Path) -> Iterator[None]:
    """One ``up``/``down``/``reset`` at a time per project."""
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Paths:
    def __init__(self, project_dir: Path) -> None:
        self.project = Path(project_dir).resolve()
        self.dir = sandbox_dir(self.project)
        self.state = self.dir / "state.json"
        self.ca_key = self.dir / "ca.key"
        self.ca_crt = self.dir / "ca.crt"
        self.registry_dir = self.dir / "registry"
        self.ssh_key = self.dir / "id_ed25519"
        self.ssh_pub = self.dir / "id_ed25519.pub"
        self.known_hosts = self.dir / "known_hosts"
        self.registry_env = self.dir / "registry.env"
        self.inventory = self.project / "inventories" / f"{inventory_file.INVENTORY_NAME}.yaml"


def load_state(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(paths.state.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DeployError(
            f"sandbox: cannot read {paths.state}: {e}",
            "run `deployer sandbox down` and `up` again",
        ) from e
    return data if isinstance(data, dict) else None


def save_state(paths: Paths, state: dict[str, Any]) -> None:
    write_file(paths.state, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)


def read_password(paths: Paths) -> str | None:
    try:
        text = paths.registry_env.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == inventory_file.PASSWORD_VAR:
            return value.strip().strip("'\"") or None
    return None


def ensure_local_material(paths: Paths, sid: str, log: Log) -> tuple[pki.KeyPair, str]:
    """CA, SSH client key, registry password: made once, reused by every ``up``."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.dir, 0o700)
    gi = paths.dir / ".gitignore"
    if not gi.exists():
        write_file(gi, "# made by `deployer sandbox up`: keys and passwords, never commit\n*\n")
    if paths.ca_key.exists() and paths.ca_crt.exists():
        ca = pki.KeyPair(paths.ca_key.read_bytes(), paths.ca_crt.read_bytes())
    else:
        log("generating the sandbox CA")
        ca = pki.make_ca(f"deployer sandbox CA {sid}")
        write_file(paths.ca_key, ca.private, 0o600)
        write_file(paths.ca_crt, ca.public, 0o644)
    if not (paths.ssh_key.exists() and paths.ssh_pub.exists()):
        kp = pki.ssh_keypair(f"deployer-sandbox-{sid}")
        write_file(paths.ssh_key, kp.private, 0o600)
        write_file(paths.ssh_pub, kp.public, 0o644)
    password = read_password(paths)
    if not password:
        password = pki.new_password()
        write_file(
            paths.registry_env,
            "# the sandbox registry's password (read through the inventory's secrets_file)\n"
            f"{inventory_file.PASSWORD_VAR}={password}\n",
            0o600,
        )
    return ca, password
