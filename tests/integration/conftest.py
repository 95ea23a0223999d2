"""A real OpenSSH server for the SSH layer's tests.

``sshd`` runs in the foreground (``-D -e``) on 127.0.0.1 at a free port with
its own host key and an authorized client key, so tests exercise the same
handshake, host-key, auth, sudo and SFTP paths as a real server. It logs in
root and ``deployer-nosudo`` (a user without sudo rights, created if absent).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployer.config.inventory import Host, SSHSettings

SSHD = "/usr/sbin/sshd"
NOSUDO_USER = "deployer-nosudo"


@dataclass
class SSHServer:
    port: int
    dir: Path
    host_key_pub: str  # "ssh-ed25519 AAAA..." of the server
    client_key: Path  # authorized private key
    other_key: Path  # a valid key that is NOT authorized
    nosudo_user: str | None

    def known_hosts_line(self, name: str | None = None) -> str:
        return f"{name or f'[127.0.0.1]:{self.port}'} {self.host_key_pub}\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


def _ensure_nosudo_user() -> str | None:
    try:
        pwd.getpwnam(NOSUDO_USER)
    except KeyError:
        r = subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", NOSUDO_USER],
            capture_output=True,
        )
        if r.returncode != 0:
            return None
    # '!' (locked) makes sshd refuse even key logins without PAM; '*' = no password.
    subprocess.run(["usermod", "-p", "*", NOSUDO_USER], check=True, capture_output=True)
    return NOSUDO_USER


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture logs in several users and needs root")
    d = tmp_path_factory.mktemp("sshd")
    # sshd reads authorized_keys as the user logging in, and pytest's temp root
    # is 0700: keep that one file in a world-traversable directory.
    pub = Path(tempfile.mkdtemp(prefix="deployer-sshd-"))
    os.chmod(pub, 0o755)
    _keygen(d / "host_ed25519")
    _keygen(d / "client")
    _keygen(d / "other")
    (pub / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(pub / "authorized_keys", 0o644)
    user = _ensure_nosudo_user()
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    port = _free_port()
    sftp = next(
        (p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
         if os.path.exists(p)),
        "internal-sftp",
    )
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_ed25519
PidFile {d}/sshd.pid
AuthorizedKeysFile {pub}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxSessions 50
MaxStartups 50:30:100
LogLevel VERBOSE
Subsystem sftp {sftp}
"""
    )
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not listen: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
    try:
        yield SSHServer(
            port=port,
            dir=d,
            host_key_pub=" ".join((d / "host_ed25519.pub").read_text().split()[:2]),
            client_key=d / "client",
            other_key=d / "other",
            nosudo_user=user,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(pub, ignore_errors=True)


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: SSHServer) -> Path:
    """A known_hosts file that trusts the test server."""
    p = tmp_path / "known_hosts"
    p.write_text(sshd.known_hosts_line())
    return p


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide which keys are offered: no ssh-agent."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def make_host(sshd: SSHServer, known_hosts: Path) -> Callable[..., Host]:
    """``make_host(name="web-1", **ssh_settings)``: a Host pointing at the test sshd
    as root with the authorized key and the trusting known_hosts."""

    def make(name: str = "web-1", address: str = "127.0.0.1", **ssh: Any) -> Host:
        settings: dict[str, Any] = {
            "user": "root",
            "port": sshd.port,
            "identity_file": str(sshd.client_key),
            "known_hosts": str(known_hosts),
            "connect_timeout": 5.0,
        }
        settings.update(ssh)
        return Host(name=name, address=address, groups=(), ssh=SSHSettings(**settings))

    return make
