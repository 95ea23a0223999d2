"""The sandbox's bridge network: the first free /24 of 10.213.0.0/16.

A nested dockerd in a host makes its own 172.17/172.18 networks, and a
sandbox network there would break routing to the registry; routes of this
machine are avoided as well."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

from deployer.errors import ConfigError, DeployError
from deployer.sandbox.model import LABEL, SUBNET_POOL, Log, make_labels, name_prefix


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


def ensure_network(
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
    name = name_prefix(sid)
    last: Exception | None = None
    for cand in candidates[:20]:
        gateway = str(cand.network_address + 1)
        try:
            net = client.networks.create(
                name,
                driver="bridge",
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(cand), gateway=gateway)]),
                labels=make_labels(sid, project, "network"),
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
