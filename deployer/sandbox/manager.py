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
import ipaddress
import os
import shutil
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError
from deployer.sandbox import hostimage, pki
from deployer.sandbox import inventory as inventory_file
from deployer.sandbox.engine import engine_client, find_containers
from deployer.sandbox.hosts import (
    create_host,
    host_address,
    host_files,
    prepare_host,
    remove_host,
    write_known_hosts,
)
from deployer.sandbox.localfiles import (
    Paths,
    ensure_local_material,
    load_state,
    locked,
    read_password,
    save_state,
)
from deployer.sandbox.model import (
    CAP_MODES,
    DEFAULT_BASE_IMAGE,
    DEFAULT_REGISTRY_IMAGE,
    LABEL,
    LABEL_HOST,
    MAX_HOSTS,
    REGISTRY_PORT,
    REGISTRY_USER,
    SANDBOX_REL,
    Log,
    SandboxHost,
    SandboxInfo,
    SandboxRegistry,
    host_name,
    quiet,
    sandbox_dir,
    sandbox_id,
)
from deployer.sandbox.network import ensure_network
from deployer.sandbox.registry import (
    ensure_registry,
    install_local_ca,
    registry_files,
    remove_local_ca,
    wait_registry,
)


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
    say = log or quiet
    if not 0 <= hosts <= MAX_HOSTS:
        raise ConfigError(f"sandbox: --hosts must be between 0 and {MAX_HOSTS} (got {hosts})")
    project = Path(project_dir).resolve()
    if not project.is_dir():
        raise ConfigError(f"sandbox: project folder {project} does not exist")
    paths = Paths(project)
    sid = sandbox_id(project)
    client = engine_client()
    with locked(paths.dir):
        state = load_state(paths) or {}
        base, docker_, mode, reg_image = _resolve_options(
            state, base_image, with_docker, cap_mode, registry_image
        )
        ca, password = ensure_local_material(paths, sid, say)
        net, net_subnet, gateway = ensure_network(
            client, sid, project, subnet or os.environ.get("DEPLOYER_SANDBOX_SUBNET"), say
        )
        server = f"{gateway}:{registry_port}"
        reg_address = str(ipaddress.IPv4Network(net_subnet).network_address + 2)
        files = registry_files(paths, ca, password, [gateway, reg_address], say)
        registry = ensure_registry(
            client, sid, paths, net.name, net_subnet, gateway, registry_port, reg_image, files, say
        )
        install_local_ca(server, ca.public, paths.ca_crt)
        wait_registry(server, paths.ca_crt, password, registry)

        # hosts: keep every existing one, add up to `hosts`
        known: dict[str, dict[str, Any]] = {h["name"]: h for h in state.get("hosts", [])}
        existing = {c.labels.get(LABEL_HOST, ""): c for c in find_containers(client, sid, "host")}
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
            save_state(
                paths,
                _state(sid, project, net, net_subnet, gateway, server, registry, reg_image,
                       base, docker_, mode, records),
            )  # fmt: skip
            write_known_hosts(paths, records)

        for i in range(1, count + 1):
            name = host_name(i)
            address = host_address(net_subnet, i)
            c = existing.get(name)
            rec = known.get(name, {})
            if c is not None and rec.get("host_key") and rec.get("address") == address:
                if c.status != "running":
                    say(f"starting {c.name}")
                    c.start()
                # the CA, the registry address or the client key may be new
                c.put_archive("/", host_files(None, authorized, ca.public, server))
                records.append(rec)
                started.append((c, rec))
                continue
            if c is not None:  # not in our records: recreate it to know its key
                say(f"replacing {c.name} (its host key is not recorded)")
                remove_host(client, sid, name)
            if not image:
                image = hostimage.ensure_host_image(client, base, docker_, say)
            host_key = pki.ssh_keypair(f"root@{name}")
            blob = host_files(host_key, authorized, ca.public, server)
            say(f"host {name} at {address}")
            c = create_host(client, sid, paths, net.name, address, name, image, mode, blob)
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
            prepare_host(c, rec["name"], rec["address"], say)
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


def _info(client: Any, paths: Paths) -> SandboxInfo | None:
    state = load_state(paths)
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
            password=read_password(paths) or "",
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
    paths = Paths(Path(project_dir))
    if not paths.state.exists():
        return None
    return _info(engine_client(), paths)


def leftovers(project_dir: Path) -> list[str]:
    """Containers, networks and volumes on the engine that carry this
    project's sandbox label (``down`` removes them all)."""
    sid = sandbox_id(Path(project_dir))
    client = engine_client()
    flt = {"label": f"{LABEL}={sid}"}
    return (
        [f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
        + [f"network {n.name}" for n in client.networks.list(filters=flt)]
        + [f"volume {v.name}" for v in client.volumes.list(filters=flt)]
    )


def remove_engine_objects(client: Any, sid: str, say: Log) -> int:
    """Remove sandbox ``sid``'s containers, networks and volumes (found by
    label); returns how many. Also what .ci/orphan-sandboxes calls for a
    sandbox whose project folder is gone (``down`` would re-create it)."""
    import docker.errors

    removed = 0
    flt = {"label": f"{LABEL}={sid}"}
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
    return removed


def down(project_dir: Path, log: Log | None = None) -> int:
    """Remove everything the sandbox made: containers, network, volumes (found
    by label), the local engine's trust in its CA, and ``.deployer/sandbox/``.
    Returns how many engine objects were removed; safe to run twice."""

    say = log or quiet
    project = Path(project_dir).resolve()
    paths = Paths(project)
    sid = sandbox_id(project)
    client = engine_client()
    with locked(paths.dir):
        state = load_state(paths)
        removed = remove_engine_objects(client, sid, say)
        if state and state.get("registry", {}).get("server"):
            ca_pem = None
            with contextlib.suppress(OSError):
                ca_pem = paths.ca_crt.read_bytes()
            if ca_pem is not None:
                remove_local_ca(state["registry"]["server"], ca_pem)
        shutil.rmtree(paths.dir, ignore_errors=True)
    # locked re-created the folder for its lock file; leave nothing behind
    shutil.rmtree(paths.dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.dir.parent.rmdir()  # .deployer/, when the sandbox was all it held
    return removed


def reset_host(project_dir: Path, name: str, log: Log | None = None) -> SandboxHost:
    """Throw one host away and boot a fresh one in its place (same name and
    address, new container, new host key, known_hosts updated): for tests that
    need a never-touched server."""
    say = log or quiet
    paths = Paths(Path(project_dir))
    client = engine_client()
    with locked(paths.dir):
        state = load_state(paths)
        if not state:
            raise ConfigError("sandbox: there is no sandbox here", "run `deployer sandbox up`")
        recs = {h["name"]: h for h in state["hosts"]}
        if name not in recs:
            raise ConfigError(
                f"sandbox: no host {name!r}", f"hosts: {', '.join(sorted(recs)) or 'none'}"
            )
        sid = state["id"]
        remove_host(client, sid, name)
        opts = state["options"]
        image = hostimage.ensure_host_image(client, opts["base_image"], opts["with_docker"], say)
        ca_pem = paths.ca_crt.read_bytes()
        server = state["registry"]["server"]
        host_key = pki.ssh_keypair(f"root@{name}")
        rec = recs[name]
        blob = host_files(host_key, paths.ssh_pub.read_bytes(), ca_pem, server)
        c = create_host(
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
        save_state(paths, state)
        write_known_hosts(paths, state["hosts"])
        prepare_host(c, name, rec["address"], say)
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
