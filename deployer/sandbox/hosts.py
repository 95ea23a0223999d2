"""Sandbox hosts: containers booting systemd with sshd, their own host keys
written in before boot (so known_hosts comes from the keys, never from a
first connection), the CA trusted, and a ``deploy`` user."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from typing import Any

from deployer.errors import ConfigError, DeployError
from deployer.sandbox import hostimage, pki
from deployer.sandbox.engine import (
    dir_entries,
    ensure_volume,
    exec_in,
    find_containers,
    tar_archive,
)
from deployer.sandbox.localfiles import Paths, write_file
from deployer.sandbox.model import BOOT_TIMEOUT, LABEL, LABEL_HOST, Log, make_labels, name_prefix


def run_options(cap_mode: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tmpfs": {"/run": "", "/run/lock": ""},
        "cgroupns": "host",
    }
    if cap_mode == "privileged":
        # privileged also unmasks /proc and /sys paths
        return {**common, "privileged": True}
    return {
        **common,
        "cap_add": ["ALL"],
        # the kernel here withholds CAP_SYS_RESOURCE, which is why --privileged fails
        "cap_drop": ["SYS_RESOURCE"],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
        "systempaths_unconfined": True,  # see create_host
        "device_cgroup_rules": ["a *:* rwm"],
    }


def host_files(
    host_key: pki.KeyPair | None, authorized_key: bytes, ca_pem: bytes, server: str
) -> bytes:
    """What a host gets before it boots (``host_key`` None: all but the host
    key, for a host that already has one)."""
    uid = hostimage.DEPLOY_UID
    home = f"/home/{hostimage.DEPLOY_USER}"
    sshd_conf = (
        b"# written by `deployer sandbox up`: this host's own key, keys only\n"
        b"HostKey /etc/ssh/ssh_host_ed25519_key\n"
        b"PasswordAuthentication no\n"
        b"KbdInteractiveAuthentication no\n"
        b"PermitRootLogin no\n"
    )
    entries: list[tuple[str, bytes | None, int, int]] = []
    if host_key is not None:
        entries += [
            ("/etc/ssh/ssh_host_ed25519_key", host_key.private, 0o600, 0),
            ("/etc/ssh/ssh_host_ed25519_key.pub", host_key.public, 0o644, 0),
        ]
    entries += [
        ("/etc/ssh/sshd_config.d", None, 0o755, 0),
        ("/etc/ssh/sshd_config.d/50-deployer-sandbox.conf", sshd_conf, 0o644, 0),
        (f"{home}/.ssh", None, 0o700, uid),
        (f"{home}/.ssh/authorized_keys", authorized_key, 0o600, uid),
        ("/usr/local/share/ca-certificates", None, 0o755, 0),
        ("/usr/local/share/ca-certificates/deployer-sandbox-ca.crt", ca_pem, 0o644, 0),
        *dir_entries(f"/etc/docker/certs.d/{server}"),
        (f"/etc/docker/certs.d/{server}/ca.crt", ca_pem, 0o644, 0),
    ]
    return tar_archive(entries)


def create_host(
    client: Any,
    sid: str,
    paths: Paths,
    network: str,
    address: str,
    name: str,
    image: str,
    cap_mode: str,
    files: bytes,
) -> Any:
    import docker.errors

    cname = f"{name_prefix(sid)}-{name}"
    volume = ensure_volume(
        client, f"{cname}-docker", make_labels(sid, paths.project, "volume", **{LABEL_HOST: name})
    )
    opts = run_options(cap_mode)
    systempaths_unconfined = opts.pop("systempaths_unconfined", False)
    api = client.api
    host_config = api.create_host_config(
        restart_policy={"Name": "unless-stopped"},
        binds={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            # a real filesystem under a nested dockerd, so it uses overlay2, not vfs
            volume: {"bind": "/var/lib/docker", "mode": "rw"},
        },
        network_mode=network,
        **opts,
    )
    if systempaths_unconfined:
        # `--security-opt systempaths=unconfined` is a docker CLI option: the
        # CLI sends it as empty MaskedPaths/ReadonlyPaths, which the SDK lacks.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    try:
        created = api.create_container(
            image,
            name=cname,
            hostname=name,
            labels=make_labels(
                sid,
                paths.project,
                "host",
                **{LABEL_HOST: name, "deployer.sandbox.cap-mode": cap_mode},
            ),
            detach=True,
            stop_signal="SIGRTMIN+3",
            volumes=["/sys/fs/cgroup", "/var/lib/docker"],
            host_config=host_config,
            networking_config=api.create_networking_config(
                {network: api.create_endpoint_config(ipv4_address=address)}
            ),
        )
        c = client.containers.get(created["Id"])
    except docker.errors.APIError as e:
        raise DeployError(f"sandbox: cannot create host {name}: {e}") from e
    c.put_archive("/", files)
    try:
        c.start()
    except docker.errors.APIError as e:
        c.remove(force=True, v=True)
        hint = (
            "this kernel may refuse privileged containers: use --cap-mode caps"
            if cap_mode == "privileged"
            else None
        )
        raise DeployError(f"sandbox: cannot start host {name}: {e}", hint) from e
    return c


def _wait_booted(container: Any, name: str, log: Log, timeout: float = BOOT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            logs = container.logs(tail=30).decode(errors="replace")
            raise DeployError(
                f"sandbox: host {name} stopped while booting ({container.status})\n{logs}",
                "try --cap-mode privileged or caps, whichever this engine allows",
            )
        _code, out = exec_in(container, ["systemctl", "is-system-running"])
        state = out.strip().splitlines()[-1] if out.strip() else ""
        if state in ("running", "degraded"):
            if state == "degraded":
                _c, failed = exec_in(container, ["systemctl", "--failed", "--plain", "--no-legend"])
                log(f"note: {name} booted degraded: {' '.join(failed.split()[:1]) or '?'} failed")
            return
        time.sleep(0.5)
    raise DeployError(
        f"sandbox: host {name} did not finish booting in {timeout:.0f}s (systemd: {state or '?'})",
        f"look inside: docker exec {container.name} systemctl list-jobs",
    )


def _wait_ssh(address: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=3) as s:
                s.settimeout(3)
                banner = s.recv(64)
                if banner.startswith(b"SSH-"):
                    return
                last = f"unexpected banner {banner[:20]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.3)
    raise DeployError(
        f"sandbox: sshd on host {name} ({address}) does not answer: {last}",
        "is the sandbox network routed from this machine? (Linux only)",
    )


def prepare_host(container: Any, name: str, address: str, log: Log) -> None:
    """After boot: trust the CA system-wide, and wait for sshd."""
    _wait_booted(container, name, log)
    code, out = exec_in(container, ["update-ca-certificates"])
    if code != 0:
        raise DeployError(f"sandbox: update-ca-certificates failed on {name}: {out.strip()}")
    _wait_ssh(address, name)


def remove_host(client: Any, sid: str, name: str) -> None:
    """Remove a host's container and its /var/lib/docker volume."""
    import docker.errors

    for c in find_containers(client, sid, "host"):
        if c.labels.get(LABEL_HOST) == name:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
    flt = {"label": [f"{LABEL}={sid}", f"{LABEL_HOST}={name}"]}
    for v in client.volumes.list(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)


def host_address(subnet: str, index: int) -> str:
    net = ipaddress.IPv4Network(subnet)
    addr = net.network_address + 10 + index
    if addr not in net or addr == net.broadcast_address:
        raise ConfigError(f"sandbox: subnet {subnet} has no room for host {index}")
    return str(addr)


def write_known_hosts(paths: Paths, hosts: list[dict[str, Any]]) -> None:
    lines = [
        "# written by `deployer sandbox up` from the host keys it generated\n",
        *(f"{h['address']} {h['host_key']}\n" for h in hosts if h.get("host_key")),
    ]
    write_file(paths.known_hosts, "".join(lines), 0o644)
