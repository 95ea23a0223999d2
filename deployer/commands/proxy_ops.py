"""Remote commands for operating the edge proxy (pure builders): the
maintenance state file, the admin API's upstreams, the proxy's logs, a
restart, a recreate with another image (``proxy upgrade``), and the
read-only look ``plan --diff`` takes.

The proxy itself (name, config file, volume) is :mod:`deployer.commands.proxy`;
parsing the output here is pure too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands.base import Command, Script
from deployer.commands.proxy import (
    _NETWORKS,
    _STATE,
    CONFIG,
    IN_CONTAINER,
    NAME,
    PROXY_DIR,
    VOLUME,
)

MAINTENANCE_FILE = ".maintenance"
ADMIN = "http://127.0.0.1:2019"


def maintenance_path(deploy_dir: str) -> str:
    return f"{deploy_dir.rstrip('/')}/{MAINTENANCE_FILE}"


def read_maintenance(deploy_dir: str) -> Command:
    """The app's maintenance state file (exit 1, no output: maintenance is off)."""
    return Command(("cat", "--", maintenance_path(deploy_dir)), ok_codes=(0, 1),
                   description="read the maintenance state")


_WRITE_MAINTENANCE = """
set -e
cat > "$1.tmp"
mv -f "$1.tmp" "$1"
""".strip()


def write_maintenance(deploy_dir: str, content: str) -> Command:
    """Write the maintenance state (on stdin) atomically; the deploy dir is the
    SSH user's (``prepare``), so no sudo."""
    return Script(_WRITE_MAINTENANCE, args=(maintenance_path(deploy_dir),), stdin=content,
                  description="record maintenance on").command()


def clear_maintenance(deploy_dir: str) -> Command:
    return Command(("rm", "-f", "--", maintenance_path(deploy_dir)),
                   description="record maintenance off")


def upstreams(*, sudo: bool) -> Command:
    """Caddy's admin API ``/reverse_proxy/upstreams`` from inside the proxy:
    every upstream's address, requests in flight and recent failures."""
    return Command(("docker", "exec", NAME, "wget", "-q", "-O", "-",
                    f"{ADMIN}/reverse_proxy/upstreams"), sudo=sudo, ok_codes=(0, 1),
                   description="read the proxy's upstreams")


@dataclass(frozen=True)
class UpstreamStats:
    address: str
    num_requests: int
    fails: int


def parse_upstreams(stdout: str) -> dict[str, UpstreamStats]:
    """``{address: stats}`` of :func:`upstreams` (empty when it did not answer)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return {}
    out: dict[str, UpstreamStats] = {}
    for u in data if isinstance(data, list) else []:
        if isinstance(u, dict) and isinstance(u.get("address"), str):
            out[u["address"]] = UpstreamStats(u["address"], int(u.get("num_requests") or 0),
                                              int(u.get("fails") or 0))
    return out


def logs(tail: int, *, follow: bool, sudo: bool) -> Command:
    argv = ["docker", "logs", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    return Command((*argv, NAME), sudo=sudo, description="proxy logs")


def restart(*, sudo: bool, stop_timeout: int = 10) -> Command:
    """``docker restart``: the container (its networks, config and volume) is
    kept; Caddy stops its listeners, gets ``stop_timeout`` seconds for the
    requests in flight, and starts again from the config file."""
    return Command(("docker", "restart", "-t", str(stop_timeout), NAME), sudo=sudo,
                   description="restart the proxy")


_NETS = """
docker inspect -f "$2" "$1" 2>/dev/null || true
""".strip()


def networks(*, sudo: bool) -> Command:
    """The networks the proxy container is on (one line, space-separated)."""
    return Script(_NETS, args=(NAME, _NETWORKS), sudo=sudo,
                  description="read the proxy's networks").command()


def parse_networks(stdout: str) -> list[str]:
    return [n for n in stdout.split() if n != NAME]


_RECREATE = """
set -e
name=$1 vol=$2 http=$3 https=$4 dir=$5 inside=$6 image=$7; shift 7
docker rm -f "$name" >/dev/null 2>&1 || true
docker volume create "$vol" >/dev/null
docker network inspect "$name" >/dev/null 2>&1 || docker network create "$name" >/dev/null
docker create --name "$name" --network "$name" --restart unless-stopped \\
  -p "$http:$http" -p "$https:$https" -v "$vol:/data" -v "$dir:$inside:ro" \\
  "$image" caddy run --config "$inside/caddy.json" >/dev/null
for net in "$@"; do docker network connect "$net" "$name"; done
docker start "$name" >/dev/null
""".strip()


def recreate(image: str, http_port: int, https_port: int, app_networks: Sequence[str], *,
             sudo: bool) -> Command:
    """Replace the proxy container by one of ``image``: the same name, ports,
    config file and certificate volume, joined to ``app_networks`` before it
    starts (so its first request can reach every app)."""
    return Script(_RECREATE, args=(NAME, VOLUME, str(http_port), str(https_port), PROXY_DIR,
                                   IN_CONTAINER, image, *app_networks),
                  sudo=sudo, description="recreate the proxy").command()


_READY = """
docker exec "$1" wget -q -O /dev/null "$2/config/" 2>/dev/null
""".strip()


def ready(*, sudo: bool) -> Command:
    """Exit 0 once the proxy's admin API answers (its config is loaded)."""
    return Script(_READY, args=(NAME, ADMIN), sudo=sudo, ok_codes=(0, 1),
                  description="check the proxy answers").command()


# -- plan --diff: one read-only look -------------------------------------------

_LOOK_MARK = "@@deployer-maintenance"
_LOOK = """
d=$3
docker() { if command docker version >/dev/null 2>&1; then command docker "$@"; \
else sudo -n docker "$@"; fi; }
""".strip() + "\n" + _STATE + """
echo '""" + _LOOK_MARK + """'
cat -- "$d/""" + MAINTENANCE_FILE + """" 2>/dev/null || true
"""


def look(deploy_dir: str) -> Command:
    """What ``plan --diff`` reads of the proxy, without changing anything: the
    container's state, the host's proxy config (as :func:`~deployer.commands.
    proxy.read_state` prints them) and the app's maintenance state. Docker
    is asked through ``sudo -n`` when plain ``docker`` is refused."""
    return Script(_LOOK, args=(NAME, CONFIG, deploy_dir),
                  description="read the proxy's state (read-only)").command()


def split_look(stdout: str) -> tuple[str, str]:
    """(the proxy state, as :func:`~deployer.commands.proxy.read_state`
    prints it; the maintenance file's content)."""
    state, _, rest = stdout.partition(_LOOK_MARK + "\n")
    return state, rest


def config_routes(cfg: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The service routes in a host's proxy config: those of the plain
    server and of the TLS one (a route with ``tls`` lives there), without
    the HTTP -> HTTPS redirects that stand in for TLS routes on the plain one."""
    if not cfg:
        return []
    servers = cfg.get("apps", {}).get("http", {}).get("servers", {})
    out: list[dict[str, Any]] = []
    for server in servers.values() if isinstance(servers, dict) else []:
        routes = server.get("routes", []) if isinstance(server, dict) else []
        out += [r for r in routes if isinstance(r, dict) and isinstance(routes, list)
                and not str(r.get("@id", "")).endswith(":redirect")]
    return out


def same_image(running: str, configured: str) -> bool:
    """Whether the proxy container's image (as it was started) is the
    configured one. Pinned references compare by digest: every ship names a
    mirrored image with its own tag, and the same digest is the same image."""
    a, b = running.partition("@")[2], configured.partition("@")[2]
    if a and b:
        return a == b
    return running == configured
