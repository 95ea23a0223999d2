"""Remote commands for the edge proxy and the switch (pure builders).

The proxy is one container per host, ``deployer-proxy``, shared by every
app: its config file lives in :data:`PROXY_DIR` on the host (mounted read
only), its certificates in the named volume :data:`VOLUME`. Every builder
here returns a :class:`Command`; parsing their output is pure too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands.base import Command, Script
from deployer.commands.compose import Compose

NAME = "deployer-proxy"
PROXY_DIR = "/opt/deployer-proxy"
CONFIG = f"{PROXY_DIR}/caddy.json"
IN_CONTAINER = "/etc/deployer-proxy"
VOLUME = "deployer-proxy-data"
EXIT_CONFLICT = 3

_STATE = """
if state=$(docker inspect -f '{{.State.Running}} {{.Config.Image}}' "$1" 2>/dev/null); then
  echo "proxy $state"
else
  echo "proxy absent"
fi
if [ -f "$2" ]; then
  echo "sha $(sha256sum < "$2" | cut -d' ' -f1)"; cat "$2"
else
  echo "sha none"
fi
""".strip()


@dataclass(frozen=True)
class ProxyState:
    """What the host's proxy is: ``running`` (None: no container),
    ``image``, the loaded config and its sha256 (``none``: no file)."""

    running: bool | None
    image: str
    config: dict[str, Any] | None
    sha: str


def read_state(*, sudo: bool) -> Command:
    """The proxy container's state and the host's proxy config, one round trip."""
    return Script(_STATE, args=(NAME, CONFIG), sudo=sudo,
                  description="read the proxy's state").command()


def parse_state(stdout: str) -> ProxyState:
    lines = stdout.split("\n", 2)
    head = lines[0].split() if lines else []
    running: bool | None = None
    image = ""
    if len(head) >= 2 and head[1] != "absent":
        running = head[1] == "true"
        image = head[2] if len(head) > 2 else ""
    sha = lines[1].split()[1] if len(lines) > 1 and lines[1].startswith("sha ") else "none"
    config = None
    if sha != "none" and len(lines) > 2:
        try:
            data = json.loads(lines[2])
            config = data if isinstance(data, dict) else None
        except ValueError:
            config = None
    return ProxyState(running, image, config, sha)


_WRITE = """
set -e
mkdir -p "$1"
have=none
[ -f "$2" ] && have=$(sha256sum < "$2" | cut -d' ' -f1)
[ "$have" = "$3" ] || { echo "proxy config changed meanwhile ($have)"; exit 3; }
cat > "$2.tmp"
chmod 0644 "$2.tmp"
mv -f "$2.tmp" "$2"
""".strip()


def write_config(content: str, expected_sha: str) -> Command:
    """Replace the host's proxy config with ``content`` (on stdin) if it is
    still the one read (``expected_sha``); else exit 3, and the caller reads
    and merges again (two apps shipping to one host at once)."""
    return Script(_WRITE, args=(PROXY_DIR, CONFIG, expected_sha), sudo=True, stdin=content,
                  ok_codes=(0, EXIT_CONFLICT), description="write the proxy config").command()


def pull(image: str, *, sudo: bool, env: tuple[tuple[str, str], ...] = ()) -> Command:
    return Command(("docker", "pull", "--quiet", image), sudo=sudo, env=env,
                   description="pull the proxy image")


_START = """
if docker inspect "$1" >/dev/null 2>&1; then
  docker start "$1" >/dev/null
else
  docker volume create "$2" >/dev/null
  # A network of its own from the start: Docker's DNS then answers the names
  # of every app container on the networks it joins later.
  docker network inspect "$1" >/dev/null 2>&1 || docker network create "$1" >/dev/null
  docker run -d --name "$1" --network "$1" --restart unless-stopped -p "$3:$3" -p "$4:$4" \\
    -v "$2:/data" -v "$5:$6:ro" "$7" caddy run --config "$6/caddy.json" >/dev/null
fi
""".strip()


def start(image: str, http_port: int, https_port: int, *, sudo: bool) -> Command:
    """Start the proxy (create it when missing). Caddy listens on the host's
    port numbers inside the container too, so its redirects name them."""
    return Script(_START, args=(NAME, VOLUME, str(http_port), str(https_port), PROXY_DIR,
                                IN_CONTAINER, image),
                  sudo=sudo, description="start the proxy").command()


def reload(*, sudo: bool) -> Command:
    """Load the config file: atomic and graceful in Caddy (in-flight requests
    finish on the old upstreams)."""
    return Command(("docker", "exec", NAME, "caddy", "reload", "--config",
                    f"{IN_CONTAINER}/caddy.json"),
                   sudo=sudo, description="reload the proxy")


_NETWORKS = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
_CONNECT = """
proxy=$1; fmt=$2; shift 2
have=$(docker inspect -f "$fmt" "$proxy")
for c in "$@"; do
  for net in $(docker inspect -f "$fmt" "$c"); do
    case " $have " in *" $net "*) continue ;; esac
    docker network connect "$net" "$proxy"
    have="$have $net"
  done
done
""".strip()


def connect_networks(containers: Sequence[str], *, sudo: bool) -> Command:
    """Join the proxy to every network of ``containers`` it is not on yet."""
    return Script(_CONNECT, args=(NAME, _NETWORKS, *containers), sudo=sudo,
                  description="join the proxy to the app's networks").command()


def scale_up(compose: Compose, service: str, total: int) -> Command:
    """Start new containers of ``service`` beside the running ones (which are
    kept as they are: ``--no-recreate``), ``total`` in all. Compose v1 and v2
    both create the added containers from the release's file."""
    return Command((*compose.base, "up", "-d", "--no-deps", "--no-recreate", "--scale",
                    f"{service}={total}", service),
                   sudo=compose.sudo, cwd=compose.cwd, env=compose.env,
                   description=f"start new {service} containers")


_PROBE = """
proxy=$1; t=$2; shift 2
rc=0
for url in "$@"; do
  docker exec "$proxy" wget -q -O /dev/null -T "$t" "$url" 2>/dev/null \
    || { echo "fail $url"; rc=1; }
done
exit $rc
""".strip()


def probe_http(urls: Sequence[str], timeout: float, *, sudo: bool) -> Command:
    """GET each URL from inside the proxy container (its network view).
    Exit 0 when every one answered 2xx; else 1, and a line ``fail URL`` each."""
    return Script(_PROBE, args=(NAME, str(max(1, round(timeout))), *urls), sudo=sudo,
                  ok_codes=(0, 1), description="check health through the proxy's network",
                  ).command()


def probe_failures(exit_code: int, stdout: str) -> list[str]:
    """The URLs that did not answer 2xx (empty: all healthy)."""
    if exit_code == 0:
        return []
    failed = [line.partition(" ")[2] for line in stdout.splitlines() if line.startswith("fail ")]
    return failed or ["?"]


_CONNS = """
for c in "$@"; do
  echo "== $c"
  docker exec "$c" cat /proc/net/tcp /proc/net/tcp6 2>/dev/null || echo "gone"
done
""".strip()


def connections(containers: Sequence[str], *, sudo: bool) -> Command:
    """Each container's TCP table (``/proc/net/tcp``), for the drain."""
    return Script(_CONNS, args=tuple(containers), sudo=sudo,
                  description="count requests in flight").command()


def count_established(stdout: str, port: int) -> int:
    """Established TCP connections to local ``port`` in :func:`connections`'
    output: the requests still in flight on the old containers."""
    want = f":{port:04X}"
    n = 0
    for line in stdout.splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[1].upper().endswith(want) and cols[3] == "01":
            n += 1
    return n


_REMOVE = """
t=$1; shift
docker stop -t "$t" "$@" >/dev/null 2>&1 || true
docker rm -f "$@" >/dev/null 2>&1 || true
""".strip()


def remove(containers: Sequence[str], *, sudo: bool, stop_timeout: int = 10,
           description: str = "remove containers") -> Command:
    """Stop (gracefully, up to ``stop_timeout`` s) and remove ``containers``."""
    return Script(_REMOVE, args=(str(stop_timeout), *containers), sudo=sudo,
                  description=description).command()
