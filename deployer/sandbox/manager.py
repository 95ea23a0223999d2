"""``deployer sandbox``: fresh "servers" and a private registry on the local
Docker engine, for trying deployer and for the end-to-end tests.

What ``up`` makes, all labelled ``deployer.sandbox=<id>`` (the id derives from
the project's absolute path, so several projects' sandboxes coexist and
``down`` finds everything by label):

- a bridge network with a fixed, uncommon subnet (first free /24 from
  10.213.0.0/24 on): a nested dockerd in a host makes its own 172.17/172.18
  networks, and a sandbox network there would break routing to the registry;
- a registry (``registry:2`` or any image with its interface) with TLS from a
  sandbox CA and htpasswd auth, published only on the network's gateway IP,
  so ``<gateway>:5443/app/web:tag`` names the same registry from the local
  engine and from inside the hosts;
- N hosts booting systemd with sshd, a ``deploy`` user with passwordless sudo,
  unique host keys generated here (so known_hosts is written from the keys
  themselves, never learned on first use), the CA trusted, no Docker unless
  asked for.

Local files live in ``<project>/.deployer/sandbox/`` (git-ignored by a
``.gitignore`` inside it); the inventory is ``inventories/sandbox.yaml``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import io
import ipaddress
import json
import os
import shutil
import socket
import ssl
import struct
import tarfile
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError, DeployError
from deployer.sandbox import hostimage, pki
from deployer.sandbox import inventory as inventory_file

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


def _quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------
# What callers get back


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


# --------------------------------------------------------------------------
# Names and paths


def sandbox_id(project_dir: Path) -> str:
    """A short id that derives from the project's absolute path."""
    return hashlib.sha256(str(Path(project_dir).resolve()).encode()).hexdigest()[:10]


def sandbox_dir(project_dir: Path) -> Path:
    return Path(project_dir).resolve() / SANDBOX_REL


def _prefix(sid: str) -> str:
    return f"deployer-sandbox-{sid}"


def _host_name(index: int) -> str:
    return f"sandbox-{index}"


def _labels(sid: str, project: Path, role: str, **extra: str) -> dict[str, str]:
    return {LABEL: sid, LABEL_PROJECT: str(project), LABEL_ROLE: role, **extra}


def _certs_d() -> Path:
    return Path(os.environ.get("DEPLOYER_DOCKER_CERTS_D", "/etc/docker/certs.d"))


# --------------------------------------------------------------------------
# Small helpers


def _client() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except (docker.errors.DockerException, OSError) as e:
        raise DeployError(
            f"sandbox: no Docker engine answers ({e})",
            "start one (Debian: apt-get install docker.io, then dockerd) or set DOCKER_HOST",
        ) from e
    return client


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
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
def _locked(sdir: Path) -> Iterator[None]:
    """One ``up``/``down``/``reset`` at a time per project."""
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tar(entries: list[tuple[str, bytes | None, int, int]]) -> bytes:
    """A tar of ``(absolute path, content or None for a directory, mode, uid)``;
    the gid equals the uid (root, or the deploy user's own group)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content, mode, uid in entries:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = mode
            info.uid = info.gid = uid
            info.mtime = int(time.time())
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _dir_entries(path: str, mode: int = 0o755, uid: int = 0) -> list[tuple[str, None, int, int]]:
    """Directory entries for ``path`` and its parents (so ownership is exact)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [("/" + "/".join(parts[: i + 1]), None, mode, uid) for i in range(len(parts))]


def _exec(container: Any, argv: list[str]) -> tuple[int, str]:
    code, out = container.exec_run(argv, stdout=True, stderr=True)
    return int(code if code is not None else -1), (out or b"").decode(errors="replace")


def _routes() -> list[ipaddress.IPv4Network]:
    """This machine's IPv4 routes except the default one (Linux only)."""
    nets: list[ipaddress.IPv4Network] = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return nets
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(f[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(f[7], 16)))
        if mask == "0.0.0.0":  # noqa: S104 - the default route, not a bind
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return nets


# --------------------------------------------------------------------------
# Local state


class _Paths:
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


def _load_state(paths: _Paths) -> dict[str, Any] | None:
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


def _save_state(paths: _Paths, state: dict[str, Any]) -> None:
    _write(paths.state, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)


def _read_password(paths: _Paths) -> str | None:
    try:
        text = paths.registry_env.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == inventory_file.PASSWORD_VAR:
            return value.strip().strip("'\"") or None
    return None


def _ensure_local_material(paths: _Paths, sid: str, log: Log) -> tuple[pki.KeyPair, str]:
    """CA, SSH client key, registry password: made once, reused by every ``up``."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.dir, 0o700)
    gi = paths.dir / ".gitignore"
    if not gi.exists():
        _write(gi, "# made by `deployer sandbox up`: keys and passwords, never commit\n*\n")
    if paths.ca_key.exists() and paths.ca_crt.exists():
        ca = pki.KeyPair(paths.ca_key.read_bytes(), paths.ca_crt.read_bytes())
    else:
        log("generating the sandbox CA")
        ca = pki.make_ca(f"deployer sandbox CA {sid}")
        _write(paths.ca_key, ca.private, 0o600)
        _write(paths.ca_crt, ca.public, 0o644)
    if not (paths.ssh_key.exists() and paths.ssh_pub.exists()):
        kp = pki.ssh_keypair(f"deployer-sandbox-{sid}")
        _write(paths.ssh_key, kp.private, 0o600)
        _write(paths.ssh_pub, kp.public, 0o644)
    password = _read_password(paths)
    if not password:
        password = pki.new_password()
        _write(
            paths.registry_env,
            "# the sandbox registry's password (read through the inventory's secrets_file)\n"
            f"{inventory_file.PASSWORD_VAR}={password}\n",
            0o600,
        )
    return ca, password


# --------------------------------------------------------------------------
# Network


def _find_network(client: Any, sid: str) -> Any | None:
    nets = client.networks.list(filters={"label": f"{LABEL}={sid}"})
    return nets[0] if nets else None


def _network_subnet(net: Any) -> tuple[str, str]:
    configs = (net.attrs.get("IPAM") or {}).get("Config") or []
    for c in configs:
        if c.get("Subnet") and ":" not in c["Subnet"]:
            subnet = ipaddress.IPv4Network(c["Subnet"])
            gateway = c.get("Gateway") or str(subnet.network_address + 1)
            return str(subnet), gateway
    raise DeployError(
        f"sandbox: network {net.name} has no IPv4 subnet", "run `deployer sandbox down`"
    )


def _used_subnets(client: Any) -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    for net in client.networks.list():
        for c in (net.attrs.get("IPAM") or {}).get("Config") or []:
            s = c.get("Subnet")
            if s and ":" not in s:
                with contextlib.suppress(ValueError):
                    used.append(ipaddress.IPv4Network(s, strict=False))
    return used + _routes()


def _ensure_network(
    client: Any, sid: str, project: Path, subnet: str | None, log: Log
) -> tuple[Any, str, str]:
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    existing = _find_network(client, sid)
    if existing is not None:
        existing.reload()
        have_subnet, gateway = _network_subnet(existing)
        if subnet and ipaddress.IPv4Network(subnet, strict=False) != ipaddress.IPv4Network(
            have_subnet
        ):
            log(
                f"note: the sandbox network keeps its subnet {have_subnet} "
                "(down first to change it)"
            )
        return existing, have_subnet, gateway

    if subnet:
        try:
            candidates = [ipaddress.IPv4Network(subnet, strict=False)]
        except ValueError as e:
            raise ConfigError(f"sandbox: bad subnet {subnet!r}: {e}") from e
        if candidates[0].prefixlen > 26:
            raise ConfigError(f"sandbox: subnet {subnet} is too small", "use a /24")
    else:
        candidates = list(ipaddress.IPv4Network(SUBNET_POOL).subnets(new_prefix=24))
        used = _used_subnets(client)
        candidates = [c for c in candidates if not any(c.overlaps(u) for u in used)]
        if not candidates:
            raise DeployError(
                f"sandbox: no free /24 left in {SUBNET_POOL}",
                "remove unused sandboxes (`deployer sandbox down` in their projects) "
                "or pass a subnet",
            )
    name = _prefix(sid)
    last: Exception | None = None
    for cand in candidates[:20]:
        gateway = str(cand.network_address + 1)
        try:
            net = client.networks.create(
                name,
                driver="bridge",
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(cand), gateway=gateway)]),
                labels=_labels(sid, project, "network"),
                check_duplicate=True,
            )
        except docker.errors.APIError as e:
            last = e
            if subnet or "overlap" not in str(e).lower():
                raise DeployError(f"sandbox: cannot create network {name} on {cand}: {e}") from e
            continue  # another sandbox took it meanwhile: next one
        log(f"network {name} on {cand}")
        return net, str(cand), gateway
    raise DeployError(f"sandbox: cannot create network {name}: {last}")


# --------------------------------------------------------------------------
# Registry


def _registry_config() -> str:
    return """\
# written by `deployer sandbox up`
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  tls:
    certificate: /etc/docker/registry/tls.crt
    key: /etc/docker/registry/tls.key
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: deployer-sandbox
    path: /etc/docker/registry/htpasswd
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def _registry_files(
    paths: _Paths, ca: pki.KeyPair, password: str, ips: list[str], log: Log
) -> dict[str, bytes]:
    """config.yml, tls.crt, tls.key, htpasswd; reused while still valid."""
    rdir = paths.registry_dir
    crt, key, htp = rdir / "tls.crt", rdir / "tls.key", rdir / "htpasswd"
    need_cert = True
    if crt.exists() and key.exists():
        pem = crt.read_bytes()
        need_cert = not (
            set(ips) <= pki.cert_ip_sans(pem)
            and pki.cert_issued_by(pem, ca.public)
            and pki.cert_days_left(pem) > 30
        )
    if need_cert:
        log(f"registry certificate for {', '.join(ips)}")
        server = pki.make_server_cert(ca, "deployer sandbox registry", ips, ["localhost"])
        _write(key, server.private, 0o600)
        _write(crt, server.public, 0o644)
    need_htp = True
    if htp.exists():
        import bcrypt

        user, _, hashed = htp.read_text().strip().partition(":")
        with contextlib.suppress(ValueError):
            need_htp = not (
                user == REGISTRY_USER and bcrypt.checkpw(password.encode(), hashed.encode())
            )
    if need_htp:
        _write(htp, pki.htpasswd_line(REGISTRY_USER, password), 0o600)
    _write(rdir / "config.yml", _registry_config(), 0o644)
    return {
        "config.yml": (rdir / "config.yml").read_bytes(),
        "tls.crt": crt.read_bytes(),
        "tls.key": key.read_bytes(),
        "htpasswd": htp.read_bytes(),
    }


def _files_hash(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    return h.hexdigest()[:16]


def _ensure_image(client: Any, image: str, what: str, hint: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.APIError as e:
        raise DeployError(
            f"sandbox: the {what} image {image!r} is not on the engine and cannot be pulled "
            f"({getattr(e, 'explanation', None) or e})",
            hint,
        ) from e


def _find(client: Any, sid: str, role: str) -> list[Any]:
    return list(
        client.containers.list(
            all=True, filters={"label": [f"{LABEL}={sid}", f"{LABEL_ROLE}={role}"]}
        )
    )


def _volume(client: Any, name: str, labels: dict[str, str]) -> str:
    import docker.errors

    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(name=name, labels=labels)
    return name


def _ensure_registry(
    client: Any,
    sid: str,
    paths: _Paths,
    network: str,
    subnet: str,
    gateway: str,
    port: int,
    image: str,
    files: dict[str, bytes],
    log: Log,
) -> Any:
    import docker.errors

    name = f"{_prefix(sid)}-registry"
    address = str(ipaddress.IPv4Network(subnet).network_address + 2)
    config_hash = _files_hash(files) + f"-{port}-{image}"
    for c in _find(client, sid, "registry"):
        if c.labels.get(LABEL_CONFIG) == config_hash:
            if c.status != "running":
                log(f"starting {c.name}")
                c.start()
            return c
        log(f"replacing {c.name} (its configuration changed)")
        c.remove(force=True)
    _ensure_image(
        client,
        image,
        "registry",
        "build the stand-in with .ci/build-images (it provides registry:2 from Debian's "
        "docker-registry), or pass an image with registry:2's interface",
    )
    labels = _labels(sid, paths.project, "registry", **{LABEL_CONFIG: config_hash})
    volume = _volume(client, f"{name}-data", _labels(sid, paths.project, "volume"))
    try:
        c = client.containers.create(
            image,
            name=name,
            hostname="registry",
            labels=labels,
            detach=True,
            restart_policy={"Name": "unless-stopped"},
            volumes={volume: {"bind": "/var/lib/registry", "mode": "rw"}},
            ports={"5000/tcp": (gateway, port)},
            network=network,
            networking_config={network: client.api.create_endpoint_config(ipv4_address=address)},
        )
    except docker.errors.APIError as e:
        raise DeployError(f"sandbox: cannot create the registry container: {e}") from e
    entries: list[tuple[str, bytes | None, int, int]] = [*_dir_entries("/etc/docker/registry")]
    for fname, data in files.items():
        mode = 0o600 if fname in {"tls.key", "htpasswd"} else 0o644
        entries.append((f"/etc/docker/registry/{fname}", data, mode, 0))
    c.put_archive("/", _tar(entries))
    try:
        c.start()
    except docker.errors.APIError as e:
        c.remove(force=True)
        raise DeployError(
            f"sandbox: cannot start the registry on {gateway}:{port}: {e}",
            "is that port taken? pass another registry port",
        ) from e
    log(f"registry {name} at {gateway}:{port}")
    return c


def _wait_registry(server: str, ca_cert: Path, password: str, container: Any) -> None:
    """Until the registry answers /v2/ over TLS (verified with the sandbox CA)
    and accepts the password."""
    host, _, port = server.rpartition(":")
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    auth = "Basic " + b64encode(f"{REGISTRY_USER}:{password}".encode()).decode()
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
            conn.request("GET", "/v2/", headers={"Authorization": auth})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            last = str(e)
        time.sleep(0.5)
    with contextlib.suppress(Exception):
        last += "\n" + container.logs(tail=20).decode(errors="replace")
    raise DeployError(f"sandbox: the registry at {server} did not answer: {last}")


def _install_local_ca(server: str, ca_pem: bytes, ca_path: Path) -> Path:
    """Make the local engine trust the sandbox CA for ``server``."""
    d = _certs_d() / server
    f = d / "ca.crt"
    with contextlib.suppress(OSError):
        if f.read_bytes() == ca_pem:
            return f
    try:
        d.mkdir(parents=True, exist_ok=True)
        _write(f, ca_pem, 0o644)
    except PermissionError as e:
        raise DeployError(
            f"sandbox: cannot write {f}, where the local Docker engine looks for the "
            f"registry's CA ({e.strerror})",
            f"create it once as root: sudo mkdir -p {d} && sudo cp {ca_path} {f}; "
            "then run `deployer sandbox up` again",
        ) from e
    return f


def _remove_local_ca(server: str, ca_pem: bytes | None) -> None:
    d = _certs_d() / server
    f = d / "ca.crt"
    with contextlib.suppress(OSError):
        if ca_pem is None or f.read_bytes() == ca_pem:
            f.unlink()
            d.rmdir()


# --------------------------------------------------------------------------
# Hosts


def _run_options(cap_mode: str) -> dict[str, Any]:
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
        "systempaths_unconfined": True,  # see _create_host
        "device_cgroup_rules": ["a *:* rwm"],
    }


def _host_files(
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
        *_dir_entries(f"/etc/docker/certs.d/{server}"),
        (f"/etc/docker/certs.d/{server}/ca.crt", ca_pem, 0o644, 0),
    ]
    return _tar(entries)


def _create_host(
    client: Any,
    sid: str,
    paths: _Paths,
    network: str,
    address: str,
    name: str,
    image: str,
    cap_mode: str,
    files: bytes,
) -> Any:
    import docker.errors

    cname = f"{_prefix(sid)}-{name}"
    volume = _volume(
        client, f"{cname}-docker", _labels(sid, paths.project, "volume", **{LABEL_HOST: name})
    )
    opts = _run_options(cap_mode)
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
            labels=_labels(
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
        _code, out = _exec(container, ["systemctl", "is-system-running"])
        state = out.strip().splitlines()[-1] if out.strip() else ""
        if state in ("running", "degraded"):
            if state == "degraded":
                _c, failed = _exec(container, ["systemctl", "--failed", "--plain", "--no-legend"])
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


def _prepare_host(container: Any, name: str, address: str, log: Log) -> None:
    """After boot: trust the CA system-wide, and wait for sshd."""
    _wait_booted(container, name, log)
    code, out = _exec(container, ["update-ca-certificates"])
    if code != 0:
        raise DeployError(f"sandbox: update-ca-certificates failed on {name}: {out.strip()}")
    _wait_ssh(address, name)


def _remove_host(client: Any, sid: str, name: str) -> None:
    """Remove a host's container and its /var/lib/docker volume."""
    import docker.errors

    for c in _find(client, sid, "host"):
        if c.labels.get(LABEL_HOST) == name:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
    flt = {"label": [f"{LABEL}={sid}", f"{LABEL_HOST}={name}"]}
    for v in client.volumes.list(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)


def _host_address(subnet: str, index: int) -> str:
    net = ipaddress.IPv4Network(subnet)
    addr = net.network_address + 10 + index
    if addr not in net or addr == net.broadcast_address:
        raise ConfigError(f"sandbox: subnet {subnet} has no room for host {index}")
    return str(addr)


def _write_known_hosts(paths: _Paths, hosts: list[dict[str, Any]]) -> None:
    lines = [
        "# written by `deployer sandbox up` from the host keys it generated\n",
        *(f"{h['address']} {h['host_key']}\n" for h in hosts if h.get("host_key")),
    ]
    _write(paths.known_hosts, "".join(lines), 0o644)


# --------------------------------------------------------------------------
# The public API


def _resolve_options(
    state: dict[str, Any] | None,
    base_image: str | None,
    with_docker: bool | None,
    cap_mode: str | None,
    registry_image: str | None,
) -> tuple[str, bool, str, str]:
    opts = (state or {}).get("options", {})
    base = (
        base_image
        or opts.get("base_image")
        or os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE")
        or DEFAULT_BASE_IMAGE
    )
    docker_ = with_docker if with_docker is not None else bool(opts.get("with_docker", False))
    mode = cap_mode or opts.get("cap_mode") or os.environ.get("DEPLOYER_SANDBOX_CAP_MODE") or "caps"
    if mode not in CAP_MODES:
        raise ConfigError(
            f"sandbox: unknown cap mode {mode!r}", f"use one of: {', '.join(CAP_MODES)}"
        )
    reg = (
        registry_image
        or opts.get("registry_image")
        or os.environ.get("DEPLOYER_SANDBOX_REGISTRY_IMAGE")
        or DEFAULT_REGISTRY_IMAGE
    )
    return base, docker_, mode, reg


def up(
    project_dir: Path,
    hosts: int = 2,
    base_image: str | None = None,
    with_docker: bool | None = None,
    *,
    cap_mode: str | None = None,
    subnet: str | None = None,
    registry_image: str | None = None,
    registry_port: int = REGISTRY_PORT,
    log: Log | None = None,
) -> SandboxInfo:
    """Bring the sandbox up, or make an existing one whole again.

    Idempotent: what exists is reused (same containers, same keys, same
    password); a larger ``hosts`` adds hosts; a smaller one removes none (use
    :func:`down`). Options left ``None`` keep what the sandbox was made with,
    then the environment (``DEPLOYER_SANDBOX_BASE_IMAGE``,
    ``DEPLOYER_SANDBOX_CAP_MODE``, ``DEPLOYER_SANDBOX_REGISTRY_IMAGE``,
    ``DEPLOYER_SANDBOX_SUBNET``), then the defaults.
    """
    say = log or _quiet
    if not 0 <= hosts <= MAX_HOSTS:
        raise ConfigError(f"sandbox: --hosts must be between 0 and {MAX_HOSTS} (got {hosts})")
    project = Path(project_dir).resolve()
    if not project.is_dir():
        raise ConfigError(f"sandbox: project folder {project} does not exist")
    paths = _Paths(project)
    sid = sandbox_id(project)
    client = _client()
    with _locked(paths.dir):
        state = _load_state(paths) or {}
        base, docker_, mode, reg_image = _resolve_options(
            state, base_image, with_docker, cap_mode, registry_image
        )
        ca, password = _ensure_local_material(paths, sid, say)
        net, net_subnet, gateway = _ensure_network(
            client, sid, project, subnet or os.environ.get("DEPLOYER_SANDBOX_SUBNET"), say
        )
        server = f"{gateway}:{registry_port}"
        reg_address = str(ipaddress.IPv4Network(net_subnet).network_address + 2)
        files = _registry_files(paths, ca, password, [gateway, reg_address], say)
        registry = _ensure_registry(
            client, sid, paths, net.name, net_subnet, gateway, registry_port, reg_image, files, say
        )
        _install_local_ca(server, ca.public, paths.ca_crt)
        _wait_registry(server, paths.ca_crt, password, registry)

        # hosts: keep every existing one, add up to `hosts`
        known: dict[str, dict[str, Any]] = {h["name"]: h for h in state.get("hosts", [])}
        existing = {c.labels.get(LABEL_HOST, ""): c for c in _find(client, sid, "host")}
        indices = [int(n.rsplit("-", 1)[1]) for n in existing if n.rsplit("-", 1)[-1].isdigit()]
        count = max([hosts, *indices])
        if hosts < count:
            say(f"note: {count} hosts exist; up never removes hosts (down does)")
        image = ""
        records: list[dict[str, Any]] = []
        started: list[tuple[Any, dict[str, Any]]] = []
        authorized = paths.ssh_pub.read_bytes()

        def save() -> None:
            # after every host, so a failure later still leaves its key known
            _save_state(
                paths,
                _state(sid, project, net, net_subnet, gateway, server, registry, reg_image,
                       base, docker_, mode, records),
            )  # fmt: skip
            _write_known_hosts(paths, records)

        for i in range(1, count + 1):
            name = _host_name(i)
            address = _host_address(net_subnet, i)
            c = existing.get(name)
            rec = known.get(name, {})
            if c is not None and rec.get("host_key") and rec.get("address") == address:
                if c.status != "running":
                    say(f"starting {c.name}")
                    c.start()
                # the CA, the registry address or the client key may be new
                c.put_archive("/", _host_files(None, authorized, ca.public, server))
                records.append(rec)
                started.append((c, rec))
                continue
            if c is not None:  # not in our records: recreate it to know its key
                say(f"replacing {c.name} (its host key is not recorded)")
                _remove_host(client, sid, name)
            if not image:
                image = hostimage.ensure_host_image(client, base, docker_, say)
            host_key = pki.ssh_keypair(f"root@{name}")
            blob = _host_files(host_key, authorized, ca.public, server)
            say(f"host {name} at {address}")
            c = _create_host(client, sid, paths, net.name, address, name, image, mode, blob)
            rec = {
                "name": name,
                "address": address,
                "container": c.name,
                "image": image,
                "host_key": " ".join(pki.public_key_fields(host_key.public)),
            }
            records.append(rec)
            started.append((c, rec))
            save()
        save()
        for c, rec in started:
            _prepare_host(c, rec["name"], rec["address"], say)
        inventory_file.write(
            project,
            inventory_file.render(
                sandbox_rel=SANDBOX_REL,
                registry_server=server,
                registry_username=REGISTRY_USER,
                hosts=[(r["name"], r["address"]) for r in records],
            ),
        )
    info = _info(client, paths)
    assert info is not None
    return info


def _state(
    sid: str,
    project: Path,
    net: Any,
    subnet: str,
    gateway: str,
    server: str,
    registry: Any,
    registry_image: str,
    base: str,
    with_docker: bool,
    cap_mode: str,
    hosts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "version": 1,
        "id": sid,
        "project": str(project),
        "network": net.name,
        "subnet": subnet,
        "gateway": gateway,
        "registry": {
            "server": server,
            "username": REGISTRY_USER,
            "container": registry.name,
            "address": str(ipaddress.IPv4Network(subnet).network_address + 2),
            "image": registry_image,
        },
        "options": {
            "base_image": base,
            "with_docker": with_docker,
            "cap_mode": cap_mode,
            "registry_image": registry_image,
        },
        "hosts": hosts,
    }


def _info(client: Any, paths: _Paths) -> SandboxInfo | None:
    state = _load_state(paths)
    if not state:
        return None
    containers = {
        c.name: c
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={state['id']}"})
    }

    def st(name: str) -> tuple[str, str]:
        c = containers.get(name)
        return (c.status, c.id) if c is not None else ("missing", "")

    reg = state["registry"]
    reg_state, _ = st(reg["container"])
    hosts = []
    for h in state.get("hosts", []):
        s, cid = st(h["container"])
        hosts.append(
            SandboxHost(
                name=h["name"],
                address=h["address"],
                container=h["container"],
                container_id=cid,
                state=s,
                image=h.get("image", ""),
                host_key=h.get("host_key", ""),
            )
        )
    opts = state.get("options", {})
    return SandboxInfo(
        id=state["id"],
        project_dir=paths.project,
        sandbox_dir=paths.dir,
        network=state["network"],
        subnet=state["subnet"],
        gateway=state["gateway"],
        hosts=hosts,
        registry=SandboxRegistry(
            server=reg["server"],
            username=reg["username"],
            password=_read_password(paths) or "",
            ca_cert=paths.ca_crt,
            container=reg["container"],
            address=reg.get("address", ""),
            image=reg.get("image", ""),
            state=reg_state,
        ),
        ssh_key=paths.ssh_key,
        known_hosts=paths.known_hosts,
        inventory=paths.inventory,
        base_image=opts.get("base_image", ""),
        with_docker=bool(opts.get("with_docker", False)),
        cap_mode=opts.get("cap_mode", "caps"),
    )


def status(project_dir: Path) -> SandboxInfo | None:
    """The sandbox as recorded and as the engine sees it now (each host's and
    the registry's ``state``), or None when there is none."""
    paths = _Paths(Path(project_dir))
    if not paths.state.exists():
        return None
    return _info(_client(), paths)


def leftovers(project_dir: Path) -> list[str]:
    """Containers, networks and volumes on the engine that carry this
    project's sandbox label (``down`` removes them all)."""
    sid = sandbox_id(Path(project_dir))
    client = _client()
    flt = {"label": f"{LABEL}={sid}"}
    return (
        [f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
        + [f"network {n.name}" for n in client.networks.list(filters=flt)]
        + [f"volume {v.name}" for v in client.volumes.list(filters=flt)]
    )


def down(project_dir: Path, log: Log | None = None) -> int:
    """Remove everything the sandbox made: containers, network, volumes (found
    by label), the local engine's trust in its CA, and ``.deployer/sandbox/``.
    Returns how many engine objects were removed; safe to run twice."""
    import docker.errors

    say = log or _quiet
    project = Path(project_dir).resolve()
    paths = _Paths(project)
    sid = sandbox_id(project)
    client = _client()
    removed = 0
    flt = {"label": f"{LABEL}={sid}"}
    with _locked(paths.dir):
        state = _load_state(paths)
        for c in client.containers.list(all=True, filters=flt):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
                say(f"removed container {c.name}")
                removed += 1
        for n in client.networks.list(filters=flt):
            with contextlib.suppress(docker.errors.NotFound):
                n.remove()
                say(f"removed network {n.name}")
                removed += 1
        for v in client.volumes.list(filters=flt):
            with contextlib.suppress(docker.errors.NotFound):
                v.remove(force=True)
                say(f"removed volume {v.name}")
                removed += 1
        if state and state.get("registry", {}).get("server"):
            ca_pem = None
            with contextlib.suppress(OSError):
                ca_pem = paths.ca_crt.read_bytes()
            if ca_pem is not None:
                _remove_local_ca(state["registry"]["server"], ca_pem)
        shutil.rmtree(paths.dir, ignore_errors=True)
    # _locked re-created the folder for its lock file; leave nothing behind
    shutil.rmtree(paths.dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.dir.parent.rmdir()  # .deployer/, when the sandbox was all it held
    return removed


def reset_host(project_dir: Path, name: str, log: Log | None = None) -> SandboxHost:
    """Throw one host away and boot a fresh one in its place (same name and
    address, new container, new host key, known_hosts updated): for tests that
    need a never-touched server."""
    say = log or _quiet
    paths = _Paths(Path(project_dir))
    client = _client()
    with _locked(paths.dir):
        state = _load_state(paths)
        if not state:
            raise ConfigError("sandbox: there is no sandbox here", "run `deployer sandbox up`")
        recs = {h["name"]: h for h in state["hosts"]}
        if name not in recs:
            raise ConfigError(
                f"sandbox: no host {name!r}", f"hosts: {', '.join(sorted(recs)) or 'none'}"
            )
        sid = state["id"]
        _remove_host(client, sid, name)
        opts = state["options"]
        image = hostimage.ensure_host_image(client, opts["base_image"], opts["with_docker"], say)
        ca_pem = paths.ca_crt.read_bytes()
        server = state["registry"]["server"]
        host_key = pki.ssh_keypair(f"root@{name}")
        rec = recs[name]
        blob = _host_files(host_key, paths.ssh_pub.read_bytes(), ca_pem, server)
        c = _create_host(
            client,
            sid,
            paths,
            state["network"],
            rec["address"],
            name,
            image,
            opts["cap_mode"],
            blob,
        )
        rec.update(
            container=c.name,
            image=image,
            host_key=" ".join(pki.public_key_fields(host_key.public)),
        )
        _save_state(paths, state)
        _write_known_hosts(paths, state["hosts"])
        _prepare_host(c, name, rec["address"], say)
    info = _info(client, paths)
    assert info is not None
    return info.host(name)


__all__ = [
    "SandboxHost",
    "SandboxInfo",
    "SandboxRegistry",
    "down",
    "leftovers",
    "reset_host",
    "sandbox_dir",
    "sandbox_id",
    "status",
    "up",
]
