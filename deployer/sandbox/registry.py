"""The sandbox registry: TLS from the sandbox CA, htpasswd auth, published
on the network's gateway IP so one image reference works from the local
engine and from inside the hosts."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import ssl
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

from deployer.errors import DeployError
from deployer.sandbox import pki
from deployer.sandbox.engine import (
    dir_entries,
    ensure_image,
    ensure_volume,
    find_containers,
    tar_archive,
)
from deployer.sandbox.localfiles import Paths, write_file
from deployer.sandbox.model import (
    LABEL_CONFIG,
    REGISTRY_USER,
    Log,
    certs_d,
    make_labels,
    name_prefix,
)


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


def registry_files(
    paths: Paths, ca: pki.KeyPair, password: str, ips: list[str], log: Log
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
        write_file(key, server.private, 0o600)
        write_file(crt, server.public, 0o644)
    need_htp = not (htp.exists()
                    and pki.htpasswd_matches(htp.read_text(), REGISTRY_USER, password))
    if need_htp:
        write_file(htp, pki.htpasswd_line(REGISTRY_USER, password), 0o600)
    write_file(rdir / "config.yml", _registry_config(), 0o644)
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


def ensure_registry(
    client: Any,
    sid: str,
    paths: Paths,
    network: str,
    subnet: str,
    gateway: str,
    port: int,
    image: str,
    files: dict[str, bytes],
    log: Log,
) -> Any:
    import docker.errors

    name = f"{name_prefix(sid)}-registry"
    address = str(ipaddress.IPv4Network(subnet).network_address + 2)
    config_hash = _files_hash(files) + f"-{port}-{image}"
    for c in find_containers(client, sid, "registry"):
        if c.labels.get(LABEL_CONFIG) == config_hash:
            if c.status != "running":
                log(f"starting {c.name}")
                c.start()
            return c
        log(f"replacing {c.name} (its configuration changed)")
        c.remove(force=True)
    ensure_image(
        client,
        image,
        "registry",
        "build the stand-in with .ci/build-images (it provides registry:2 from Debian's "
        "docker-registry), or pass an image with registry:2's interface",
    )
    labels = make_labels(sid, paths.project, "registry", **{LABEL_CONFIG: config_hash})
    volume = ensure_volume(client, f"{name}-data", make_labels(sid, paths.project, "volume"))
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
    entries: list[tuple[str, bytes | None, int, int]] = [*dir_entries("/etc/docker/registry")]
    for fname, data in files.items():
        mode = 0o600 if fname in {"tls.key", "htpasswd"} else 0o644
        entries.append((f"/etc/docker/registry/{fname}", data, mode, 0))
    c.put_archive("/", tar_archive(entries))
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


def wait_registry(server: str, ca_cert: Path, password: str, container: Any) -> None:
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


def install_local_ca(server: str, ca_pem: bytes, ca_path: Path) -> Path:
    """Make the local engine trust the sandbox CA for ``server``."""
    d = certs_d() / server
    f = d / "ca.crt"
    with contextlib.suppress(OSError):
        if f.read_bytes() == ca_pem:
            return f
    try:
        d.mkdir(parents=True, exist_ok=True)
        write_file(f, ca_pem, 0o644)
    except PermissionError as e:
        raise DeployError(
            f"sandbox: cannot write {f}, where the local Docker engine looks for the "
            f"registry's CA ({e.strerror})",
            f"create it once as root: sudo mkdir -p {d} && sudo cp {ca_path} {f}; "
            "then run `deployer sandbox up` again",
        ) from e
    return f


def remove_local_ca(server: str, ca_pem: bytes | None) -> None:
    d = certs_d() / server
    f = d / "ca.crt"
    with contextlib.suppress(OSError):
        if ca_pem is None or f.read_bytes() == ca_pem:
            f.unlink()
            d.rmdir()
