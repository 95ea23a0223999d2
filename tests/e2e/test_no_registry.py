"""``registry: none`` end to end (issue 17): images reach 2 sandbox hosts over
deployer's own SSH connection, with no registry running anywhere.

One sandbox (2 hosts, Docker preinstalled) for the module. Its registry
container is stopped before the first ship and checked to stay stopped; the
inventory says ``registry: none``. The tests build on each other, in order:
first ship serves -> second ship ``unchanged`` with no image bytes -> an app
change takes in under 10% of the first ship's bytes (each host's network
interface, ``/sys/class/net/*/statistics/rx_bytes`` without ``lo``) ->
rollback -> the SSH connection cut in the middle of a layer, no partial
image, and the next ship succeeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_tracked

from e2e.helpers import deployer_argv, deployer_env, results, run_deployer

pytestmark = pytest.mark.e2e

ROLLAPP = Path(__file__).parent / "apps" / "rollapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
WEB_PORT = 8000
FIRST: dict[str, int] = {}  # host -> bytes it took in on the first ship
RELEASES: dict[str, str] = {}

# Every non-loopback interface of the host: what reached it over the network.
# (The tunnel's hop from sshd to dockerd is on lo, and would count twice.)
RX = ("total=0; for i in /sys/class/net/*; do [ \"${i##*/}\" = lo ] && continue; "
      "total=$((total + $(cat $i/statistics/rx_bytes))); done; echo $total")
# The PIDs of the deploy user's sshd sessions (no ps in a minimal Debian).
# Random bytes (no compression helps): big enough that the cut lands while it
# travels even on an idle machine; at 48 MB the whole layer once arrived
# between two polls of the byte counter.
BIG_LAYER = 128 * 1024 * 1024
SSHD_SESSIONS = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
                 "case \"$c\" in 'sshd: deploy'*) echo ${p#/proc/};; esac; done")


class App:
    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.env = deployer_env()

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.info.hosts]

    def cmd(self, *args: str) -> list[str]:
        return deployer_argv(self.root, *args)

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return run_deployer(self.root, *args, env=self.env, check=check)

    def json(self, *args: str, check: int = 0) -> dict[str, Any]:
        return json.loads(self.run("-o", "json", *args, check=check).stdout)  # type: ignore[no-any-return]

    def sh(self, name: str, script: str, check: bool = True) -> str:
        return subprocess.run(
            ["docker", "exec", self.info.host(name).container, "sh", "-c", script],
            capture_output=True, text=True, check=check).stdout

    def rx(self) -> dict[str, int]:
        return {n: self.rx_of(n) for n in self.names}

    def rx_of(self, name: str) -> int:
        return int(self.sh(name, RX))

    def get(self, name: str) -> dict[str, Any]:
        url = f"http://{self.info.host(name).address}:{WEB_PORT}/"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def set_version(self, version: str, big: bool = False) -> None:
        """A change to the app itself: a new last layer of the image."""
        server = self.root / "server.py"
        text = server.read_text().split("\n# version\n")[0]
        server.write_text(text + f"\n# version\nVERSION = {version!r}\n")
        dockerfile = self.root / "Dockerfile"
        lines = [x for x in dockerfile.read_text().splitlines() if "big.bin" not in x]
        if big:
            # Incompressible, so the transfer takes long enough to be cut.
            (self.root / "big.bin").write_bytes(os.urandom(BIG_LAYER))
            lines.insert(2, "COPY big.bin /app/big.bin")
        dockerfile.write_text("\n".join(lines) + "\n")

    def version(self, name: str) -> str:
        """What the running container's server.py says (its image's bytes)."""
        out = self.sh(name, "docker exec rollapp-web-1 tail -1 /app/server.py "
                            "2>/dev/null || docker exec rollapp_web_1 tail -1 /app/server.py")
        return out.strip()

    def listening(self, name: str, port: int) -> bool:
        """Whether anything listens on ``port`` on the host (/proc/net/tcp*)."""
        out = self.sh(name, "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null")
        hexport = f":{port:04X}"
        return any(
            parts[1].endswith(hexport) and parts[3] == "0A"  # 0A: LISTEN
            for parts in (line.split() for line in out.splitlines()[1:]) if len(parts) > 3
        )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[App]:
    from deployer.sandbox import manager

    root = copy_tracked(ROLLAPP, tmp_path_factory.mktemp("noreg"))
    try:
        info = manager.up(root, hosts=2, base_image=BASE_IMAGE, with_docker=True)
        # No registry anywhere: the sandbox's own one is stopped for good.
        docker_client.containers.get(info.registry.container).stop(timeout=5)
        inv = root / "inventories" / "sandbox.yaml"
        lines = [("registry: none" if x.startswith("registry:") else x)
                 for x in inv.read_text().splitlines()]
        inv.write_text("\n".join(lines) + "\nvars: {greeting: hello, web_port: 8000}\n")
        a = App(root, info)
        a.set_version("v1")
        yield a
    finally:
        manager.down(root)


def no_registry_runs(app: App, docker_client: Any) -> None:
    from deployer.images.loopback import loopback_port

    reg = docker_client.containers.get(app.info.registry.container)
    reg.reload()
    assert reg.status != "running"
    for n in app.names:
        images = app.sh(n, "docker ps --format '{{.Image}}'").split()
        assert images and all(i.startswith("127.0.0.1:") for i in images), images
        # Nothing left on the host: the tunnel's port is closed after the ship.
        assert not app.listening(n, loopback_port("rollapp"))


def test_first_ship_serves_without_registry(app: App, docker_client: Any) -> None:
    before = app.rx()
    report = app.json("ship", "sandbox")
    after = app.rx()
    assert results(report) == {n: "deployed" for n in app.names}
    web = report["images"]["web"]
    assert web.startswith("127.0.0.1:") and "@sha256:" in web
    for h in report["hosts"]:
        assert h["connections"] == 1
    for n in app.names:
        assert app.get(n)["greeting"] == "hello"
        assert app.version(n) == "VERSION = 'v1'"
        # The host keeps the digest: the pinned reference names these bytes.
        digests = app.sh(n, f"docker image inspect -f '{{{{json .RepoDigests}}}}' {web}")
        assert web.split(":", 1)[1].split("@")[1] in digests
        FIRST[n] = after[n] - before[n]
        assert FIRST[n] > 10_000_000  # the base image came over the SSH connection
    RELEASES["v1"] = report["release"]
    no_registry_runs(app, docker_client)


def test_second_ship_is_unchanged_and_sends_no_image(app: App) -> None:
    before = app.rx()
    report = app.json("ship", "sandbox")
    after = app.rx()
    assert set(results(report).values()) == {"unchanged"}
    for h in report["hosts"]:
        assert "pull images" not in [s["step"] for s in h["steps"]]
    for n in app.names:
        # SSH handshake and one state read: a few KB, no layer.
        assert after[n] - before[n] < 100_000, (n, after[n] - before[n])


def test_app_change_takes_in_under_a_tenth(app: App, docker_client: Any) -> None:
    app.set_version("v2")
    before = app.rx()
    p = app.run("-o", "json", "ship", "sandbox")
    after = app.rx()
    report = json.loads(p.stdout)
    assert set(results(report).values()) == {"deployed"}
    for n in app.names:
        taken = after[n] - before[n]
        assert taken < FIRST[n] / 10, (n, taken, FIRST[n])
        assert app.version(n) == "VERSION = 'v2'"
    assert "bytes of images over SSH" in p.stderr
    RELEASES["v2"] = report["release"]
    no_registry_runs(app, docker_client)


def test_rollback_runs_the_old_image(app: App, docker_client: Any) -> None:
    report = app.json("rollback", "sandbox")
    assert set(results(report).values()) == {"rolled back"}
    for h in report["hosts"]:
        assert h["release"] == RELEASES["v1"] and h["rolled_back_from"] == RELEASES["v2"]
    for n in app.names:
        assert app.version(n) == "VERSION = 'v1'"
    no_registry_runs(app, docker_client)


def test_cut_connection_mid_transfer_then_next_ship_succeeds(
        app: App, docker_client: Any) -> None:
    h0 = app.names[0]
    app.set_version("v3", big=True)
    before = app.rx_of(h0)
    at_cut = 0
    proc = subprocess.Popen(app.cmd("-o", "json", "ship", "sandbox", "--limit", h0),
                            env=app.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    cut = False
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            # Some of the big layer arrived, not all of it: cut the connection.
            at_cut = app.rx_of(h0) - before
            if at_cut > 8_000_000:
                pids = app.sh(h0, SSHD_SESSIONS).split()
                assert pids
                app.sh(h0, "kill -9 " + " ".join(pids))
                cut = True
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cut, "the transfer was never caught in flight"
    assert at_cut < BIG_LAYER, f"{at_cut} bytes had arrived: the cut came after the transfer"
    assert proc.returncode == 1, err
    assert results(json.loads(out)) == {h0: "failed"}
    assert "Traceback" not in err
    # No partial image: the new image is not on the host at all, the old
    # release still runs, and the tunnel's port is gone with the connection.
    new_ref = json.loads(out)["images"]["web"]
    assert app.sh(h0, f"docker image inspect {new_ref} >/dev/null 2>&1 || echo absent",
                  check=False).strip() == "absent"
    assert app.version(h0) == "VERSION = 'v1'"
    from deployer.images.loopback import loopback_port
    assert not app.listening(h0, loopback_port("rollapp"))
    # The cut run released its lock on the way out, over a new connection
    # (remote/executor.py reconnects for the clean-up steps): no unlock, no
    # waiting for a lease, the next ship simply succeeds.
    assert app.sh(h0, "test -d /opt/rollapp/.lock && echo locked || echo free").strip() == "free"
    report = app.json("ship", "sandbox")
    assert set(results(report).values()) == {"deployed"}
    for n in app.names:
        assert app.version(n) == "VERSION = 'v3'"
    no_registry_runs(app, docker_client)
