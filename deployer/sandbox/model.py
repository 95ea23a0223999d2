"""What the sandbox is made of, and what its callers get back: labels,
names, defaults and the ``Sandbox*`` records."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deployer.sandbox import hostimage

# Every engine object the sandbox makes carries these labels: `down` finds
# them by label, never by name.
LABEL = "deployer.sandbox"
LABEL_PROJECT = "deployer.sandbox.project"
LABEL_ROLE = "deployer.sandbox.role"
LABEL_HOST = "deployer.sandbox.host"
LABEL_CONFIG = "deployer.sandbox.config"

DEFAULT_BASE_IMAGE = "ubuntu:24.04"
DEFAULT_REGISTRY_IMAGE = "registry:2"
SUBNET_POOL = "10.213.0.0/16"  # auto mode takes the first free /24 of it
REGISTRY_PORT = 5443
REGISTRY_USER = "deployer"
CAP_MODES = ("caps", "privileged")
MAX_HOSTS = 200
BOOT_TIMEOUT = 300.0  # generous: a loaded 2-core CI machine boots many systemd hosts at once

SANDBOX_REL = ".deployer/sandbox"

Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    pass


@dataclass
class SandboxHost:
    name: str
    address: str
    container: str
    container_id: str = ""
    state: str = "unknown"  # the container's state: running, exited, missing, ...
    image: str = ""
    host_key: str = ""  # "ssh-ed25519 AAAA..."


@dataclass
class SandboxRegistry:
    server: str  # host:port, the prefix of every image reference
    username: str
    password: str = field(repr=False)
    ca_cert: Path
    container: str = ""
    address: str = ""  # the registry container's own IP on the sandbox network
    image: str = ""
    state: str = "unknown"


@dataclass
class SandboxInfo:
    id: str
    project_dir: Path
    sandbox_dir: Path
    network: str
    subnet: str
    gateway: str
    hosts: list[SandboxHost]
    registry: SandboxRegistry
    ssh_key: Path
    known_hosts: Path
    inventory: Path
    ssh_user: str = hostimage.DEPLOY_USER
    base_image: str = ""
    with_docker: bool = False
    cap_mode: str = "caps"

    def host(self, name: str) -> SandboxHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def sandbox_id(project_dir: Path) -> str:
    """A short id that derives from the project's absolute path."""
    return hashlib.sha256(str(Path(project_dir).resolve()).encode()).hexdigest()[:10]


def sandbox_dir(project_dir: Path) -> Path:
    return Path(project_dir).resolve() / SANDBOX_REL


def name_prefix(sid: str) -> str:
    return f"deployer-sandbox-{sid}"


def host_name(index: int) -> str:
    return f"sandbox-{index}"


def make_labels(sid: str, project: Path, role: str, **extra: str) -> dict[str, str]:
    return {LABEL: sid, LABEL_PROJECT: str(project), LABEL_ROLE: role, **extra}


def certs_d() -> Path:
    return Path(os.environ.get("DEPLOYER_DOCKER_CERTS_D", "/etc/docker/certs.d"))
