"""``deployer bootstrap`` end to end on the sandbox: fresh Debian hosts without
Docker become Docker hosts in parallel, the deploy user runs containers over a
new SSH session without sudo, a second run is a one-command no-op on one
connection, and each SSH failure (changed host key, wrong key, stopped host,
user without sudo) fails its own host with one line while the others succeed.

One 5-host sandbox for the module, because installing Docker costs about a
minute of apt per host: hosts 1 and 2 are bootstrapped; in the failure run
host 1 stays healthy and hosts 2-5 each carry one failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import deployer_env, run_deployer

pytestmark = pytest.mark.e2e

BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
FRESH = "sandbox-1,sandbox-2"
# `[  12.3s] host: text`: the plain progress log that -o json writes to stderr.
PROGRESS = re.compile(r"^\[\s*(?P<t>\d+\.\d)s\] (?P<host>[\w.-]+): (?P<text>.*)$")


class Boot:
    """The test project, its sandbox, and a way to run deployer in it."""

    def __init__(self, project: Path, info: Any) -> None:
        self.project = project
        self.info = info
        self.env = deployer_env({"COLUMNS": "200"})
        self.inventory = Path(info.inventory)
        self.pristine_inventory = self.inventory.read_text()

    def run(self, *args: str, check: int | None = 0,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_deployer(self.project, *args, env=self.env, check=check, timeout=timeout)

    def bootstrap(self, *args: str, check: int = 0) -> tuple[dict[str, Any], str]:
        """``deployer [args] -o json bootstrap sandbox``: (report, stderr)."""
        flags = [a for a in args if a == "-v"]
        rest = [a for a in args if a != "-v"]
        p = self.run(*flags, "-o", "json", "bootstrap", "sandbox", *rest, check=check)
        return json.loads(p.stdout), p.stderr

    def host_ssh(self, **per_host: dict[str, Any]) -> None:
        """Rewrite the inventory with host-level ``ssh:`` settings."""
        inv = yaml.safe_load(self.pristine_inventory)
        for name, ssh in per_host.items():
            inv["groups"]["sandbox"]["hosts"][name]["ssh"] = ssh
        self.inventory.write_text(yaml.safe_dump(inv, sort_keys=False))

    def sh(self, host: Any, script: str) -> str:
        p = subprocess.run(["docker", "exec", host.container, "sh", "-c", script],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"{host.name}: {script}: {p.stdout}{p.stderr}"
        return p.stdout


@pytest.fixture(scope="module")
def boot(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boot]:
    from deployer.sandbox import manager

    project = tmp_path_factory.mktemp("bootproj")
    (project / "deployer.yaml").write_text("app: boot\n")
    try:
        info = manager.up(project, hosts=5, base_image=BASE_IMAGE)
        yield Boot(project, info)
    finally:
        manager.down(project)


def by_host(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON report's hosts by name (the list is in inventory order)."""
    return {h["host"]: h for h in report["hosts"]}


def progress(stderr: str) -> list[tuple[float, str, str]]:
    """(seconds since start, host, text) of each progress line: the run's own
    clock, so overlap is read from events, not from wall-clock thresholds."""
    out = []
    for line in stderr.splitlines():
        m = PROGRESS.match(line)
        if m:
            out.append((float(m["t"]), m["host"], m["text"]))
    return out


def test_fresh_hosts_bootstrap_in_parallel(boot: Boot) -> None:
    h1, h2 = boot.info.hosts[:2]
    for h in (h1, h2):
        assert boot.sh(h, "command -v docker || echo none").strip() == "none"

    report, stderr = boot.bootstrap("--limit", FRESH)

    hosts = by_host(report)
    assert set(hosts) == {h1.name, h2.name}
    for name, h in hosts.items():
        assert h["result"] == "ok", h
        assert "installed per docker.install=distro" in h["detail"], h
        assert "added deploy to the docker group" in h["detail"], h
        assert h["connections"] == 1, h
    # Overlap, from the run's own log: each host entered its bootstrap step
    # before the other one finished (run serially, one would start only after
    # the other's done line).
    events = progress(stderr)
    started = {host: t for t, host, text in events if text == "bootstrap"}
    done = {host: t for t, host, text in events if text.startswith("ok (")}
    assert set(started) == set(done) == {h1.name, h2.name}, stderr
    assert max(started.values()) < min(done.values()), stderr
    # The same from the JSON report: the run took less than its hosts' sum.
    assert report["seconds"] < sum(h["seconds"] for h in hosts.values())


def test_deploy_user_runs_containers_without_sudo_over_a_new_session(
    boot: Boot, docker_client: Any, ssh_connect: Callable[..., Any],
    ssh_run: Callable[..., tuple[int, str, str]],
) -> None:
    reg = boot.info.registry
    ref = f"{reg.server}/boot/debian"
    auth = {"username": reg.username, "password": reg.password}
    docker_client.images.get(BASE_IMAGE).tag(ref, tag="e2e")
    for line in docker_client.images.push(ref, tag="e2e", auth_config=auth, stream=True,
                                          decode=True):
        assert "error" not in line, line
    for h in boot.info.hosts[:2]:
        client = ssh_connect(h.address, boot.info)  # a login after the group change
        try:
            code, out, err = ssh_run(client, "id -un; id -nG")
            assert code == 0, err
            user, groups = out.splitlines()
            assert user == "deploy" and "docker" in groups.split()
            code, out, err = ssh_run(
                client,
                f"docker login --username {reg.username} --password-stdin {reg.server} "
                f"<<'EOF'\n{reg.password}\nEOF",
            )
            assert code == 0, f"{h.name}: docker login: {out}{err}"
            code, out, err = ssh_run(
                client, f"docker run --rm {ref}:e2e sh -c 'echo ran-in-$(hostname -s)'",
                timeout=300,
            )
            assert code == 0, f"{h.name}: docker run: {out}{err}"
            assert out.strip().startswith("ran-in-"), out
        finally:
            client.close()


def test_second_bootstrap_is_a_noop_on_one_connection(boot: Boot) -> None:
    report, stderr = boot.bootstrap("-v", "--limit", FRESH)

    hosts = by_host(report)
    assert set(hosts) == {h.name for h in boot.info.hosts[:2]}
    for name, h in hosts.items():
        assert h["result"] == "ok", h
        assert h["detail"].startswith("already bootstrapped"), h
        assert h["commands"] == 1, h
        assert h["connections"] == 1, h
        # -v turns on DEBUG for deployer.remote: one opening logged per host,
        # and the one command it ran.
        opened = re.findall(
            rf"deployer\.remote DEBUG {re.escape(name)}: opened SSH connection #(\d+)", stderr)
        assert opened == ["1"], stderr
        ran = re.findall(rf"deployer\.remote DEBUG {re.escape(name)}: \$ ", stderr)
        assert len(ran) == 1, stderr


def test_each_ssh_failure_fails_only_its_host(boot: Boot, tmp_path: Path) -> None:
    from deployer.sandbox import pki

    ok, nosudo, rekeyed, wrongkey, stopped = boot.info.hosts
    # A user without sudo, logging in with the sandbox key.
    pub = Path(str(boot.info.ssh_key) + ".pub").read_text()
    boot.sh(nosudo, "useradd -m -s /bin/bash nosudo && usermod --password '*' nosudo && "
            "install -d -m 700 -o nosudo -g nosudo ~nosudo/.ssh && "
            f"printf '%s\\n' '{pub.strip()}' > ~nosudo/.ssh/authorized_keys && "
            "chown nosudo:nosudo ~nosudo/.ssh/authorized_keys")
    # A reinstalled host: new host key, known_hosts still has the old one.
    boot.sh(rekeyed, "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && "
            "systemctl restart ssh")
    # A key the host does not know.
    other = pki.ssh_keypair("not-authorized")
    key = tmp_path / "other_ed25519"
    key.write_bytes(other.private)
    key.chmod(0o600)
    subprocess.run(["docker", "stop", "-t", "1", stopped.container], check=True,
                   capture_output=True)
    boot.host_ssh(**{nosudo.name: {"user": "nosudo"},
                     wrongkey.name: {"identity_file": str(key)}})
    try:
        p = boot.run("-o", "json", "bootstrap", "sandbox", check=1)
        text = boot.run("bootstrap", "sandbox", check=1)  # the summary a person reads
    finally:
        boot.inventory.write_text(boot.pristine_inventory)
    for out in (p, text):
        assert "Traceback" not in out.stdout + out.stderr, out.stderr
    assert re.search(r"^failure: 4 failed, 1 ok in ", text.stderr, re.M), text.stderr
    report = json.loads(p.stdout)
    assert report["result"] == "failure"

    hosts = by_host(report)
    assert hosts[ok.name]["result"] == "ok", hosts[ok.name]
    assert hosts[ok.name]["connections"] == 1
    expect = {  # what the one line must say: what happened, where, and the key's print
        nosudo.name: ["user nosudo has no passwordless sudo, which bootstrap needs to add "
                      "nosudo to the docker group"],
        rekeyed.name: [f"host key for {rekeyed.address} has CHANGED", "SHA256:"],
        wrongkey.name: [f"authentication failed for deploy@{wrongkey.address}", str(key)],
        stopped.name: ["unreachable (", stopped.address],
    }
    for name, phrases in expect.items():
        h = hosts[name]
        assert h["result"] == "failed", h
        assert all(phrase in h["error"] for phrase in phrases), h
        assert "\n" not in h["error"], h
        # One line of each run's progress log says it, naming the host.
        for out in (p, text):
            lines = [ln for ln in out.stderr.splitlines()
                     if re.match(rf"^\[\s*\d+\.\ds\] {re.escape(name)}: failed \(", ln)]
            assert len(lines) == 1, out.stderr
            assert all(phrase in lines[0] for phrase in phrases), lines
