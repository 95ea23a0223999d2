"""plan equals ship: for the same inputs, the commands ``plan`` prints are
the commands a real ship runs, over SSH, against a real sshd.

The ship goes through the real SSH executor wrapped in a recorder. The sshd
here cannot run containers, so a stand-in ``docker`` (first on the SSH
session's PATH through sshd's ``SetEnv``) answers what ship asks of Docker:
its version, ``compose version``, ``login``, ``compose pull/up`` and the
health probe's ``ps``/``inspect``, as a host with Docker and compose v2
would. Everything else (the state read, prepare, the lock, the upload over
SFTP, the release directory, the switch, prune, the credential clean-up and
the unlock) runs for real in a temporary deploy directory.

plan assumes a user that is not root and sudo where needed; the sshd logs in
root, for which the executor drops the ``sudo -n`` prefix when it sends a
command. The comparison is of the commands as plan prints them
(:meth:`Command.display`), which is the same for both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.config import load_project
from deployer.deploy import api
from deployer.deploy.runner import RunOptions
from deployer.remote.executor import SSHExecutor
from deployer.remote.recording import Call, Recorder
from deployer.report.model import HostReport, RunReport

from .conftest import SSHD, SSHServer

FAKE_DOCKER = r"""#!/bin/sh
# A stand-in for docker: answers as a host with Docker and compose v2 does.
state=${FAKE_DOCKER_STATE:-/tmp}/fake-docker-up
case "$1" in
  version) echo 27.0.0 ;;
  login) cat >/dev/null; echo "Login Succeeded" ;;
  compose)
    shift
    case " $* " in
      *" version "*) echo 2.29.0 ;;
      *" up "*) touch "$state" ;;
      *" down "*) rm -f "$state" ;;
    esac ;;
  ps) [ -e "$state" ] && echo fakecontainer1 ;;
  inspect)
    printf '%s\n' '{"name":"/planeq-web-1","service":"web","oneoff":"False","workdir":"",'\
'"image":"x","restart_policy":"unless-stopped","restart_count":0,'\
'"state":{"Status":"running","ExitCode":0}}' ;;
  *) echo "fake docker: unexpected: $*" >&2; exit 2 ;;
esac
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake_docker_sshd(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[SSHServer, Path]]:
    """A second sshd with the fixture's keys whose sessions find the fake
    docker first on PATH."""
    d = tmp_path_factory.mktemp("fake-docker-sshd")
    bin_dir = d / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    os.chmod(bin_dir / "docker", 0o755)
    os.chmod(d, 0o755)
    port = _free_port()
    cfg = []
    for line in (sshd.dir / "sshd_config").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "Port":
            line = f"Port {port}"
        elif key == "PidFile":
            line = f"PidFile {d}/sshd.pid"
        cfg.append(line)
    cfg.append(f"SetEnv PATH={bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin FAKE_DOCKER_STATE={d}")
    (d / "sshd_config").write_text("\n".join(cfg) + "\n")
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (d / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (d / "sshd.log").read_text()
                time.sleep(0.05)
        server = SSHServer(port=port, dir=d, host_key_pub=sshd.host_key_pub,
                           client_key=sshd.client_key, other_key=sshd.other_key,
                           nosudo_user=sshd.nosudo_user)
        yield server, d
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


@pytest.fixture
def project_dir(tmp_path: Path, fake_docker_sshd: tuple[SSHServer, Path]) -> Path:
    server, _ = fake_docker_sshd
    (tmp_path / "known_hosts").write_text(server.known_hosts_line())
    files = {
        "deployer.yaml": f"""\
            app: planeq
            registry:
              server: https://registry.example.com:5000/
              username: ci
              password: ${{PLANEQ_REGISTRY_PASSWORD}}
            images:
              web: {{repository: planeq/web, context: .}}
            files:
              - {{template: templates/docker-compose.yaml.j2, dest: docker-compose.yaml}}
              - {{template: templates/app.env.j2, dest: conf/app.env, mode: "0600"}}
            deploy_dir: {tmp_path}/deploy/planeq
            keep_releases: 2
            health_timeout: 20
            """,
        "templates/docker-compose.yaml.j2": """\
            services:
              web:
                image: {{ images.web }}
                env_file: [conf/app.env]
                volumes: [./data:/data]
            """,
        "templates/app.env.j2": "GREETING={{ greeting }}\n",
        "inventories/test.yaml": f"""\
            ssh: {{user: root, port: {server.port}, identity_file: {server.client_key},
                  known_hosts: {tmp_path}/known_hosts, connect_timeout: 30}}
            vars: {{greeting: hello}}
            hosts:
              web-1: {{address: 127.0.0.1}}
            """,
    }
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


class StepLog:
    """Records the steps ship enters into the same list as the commands."""

    def __init__(self, events: list[object]) -> None:
        self.events = events
        self.done: list[HostReport] = []

    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...

    def step(self, host: str, step: str) -> None:
        self.events.append(step)

    def log(self, host: str, line: str) -> None: ...

    def host_done(self, report: HostReport) -> None:
        self.done.append(report)

    def finish(self, run: RunReport) -> None: ...


def _steps(events: list[object]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for ev in events:
        if isinstance(ev, str):
            out.append((ev, []))
        elif isinstance(ev, Call):
            out[-1][1].append(ev.display())
    return [(name, cmds) for name, cmds in out if cmds]


def test_plan_prints_the_commands_ship_runs(project_dir: Path, no_agent: None) -> None:
    from deployer.cli.plan_cmd import plan_data

    environ = {"PLANEQ_REGISTRY_PASSWORD": "reg-Secret-42"}
    target = api.Target(project_dir, "test", environ=environ)
    stamp = api.Stamp("t1", "20261201T000000Z-t1", "tester@ci", "2026-12-01T00:00:00Z")

    planned = plan_data(api.plan(target, "t1", stamp))["hosts"][0]
    plan_steps = [(s["step"], s["commands"]) for s in planned["steps"]]
    # The registry given as a URL is normalised, as build and push do it.
    plan_compose = next(f["content"] for f in planned["files"]
                        if f["dest"] == "docker-compose.yaml")
    assert "image: registry.example.com:5000/planeq/web:t1\n" in plan_compose

    events: list[object] = []
    project = load_project(project_dir, "test", environ)

    def executor(host: Any) -> Recorder:
        return Recorder(SSHExecutor(host, ssh_config=None), events)

    digest = "sha256:" + "ab" * 32
    run = api.ship_hosts(
        project, project.hosts, lambda: StepLog(events), RunOptions(executor=executor),
        tag="t1", stamp=stamp,
        stage=lambda p, tag: {name: f"{ref}@{digest}"
                              for name, ref in api.image_refs(p, tag).items()},
    )
    rep = run.hosts[0]
    assert (rep.result, rep.release) == ("deployed", stamp.release), rep

    shipped = _steps(events)
    assert [name for name, _ in shipped] == [name for name, _ in plan_steps]
    assert shipped == plan_steps
    # ...and it was a real ship: the release is current, nothing is left over.
    deploy = project_dir / "deploy" / "planeq"
    assert os.readlink(deploy / "current") == f"releases/{stamp.release}"
    assert (deploy / "releases" / stamp.release / "conf" / "app.env").read_text() == \
        "GREETING=hello\n"
    assert sorted(p.name for p in deploy.iterdir()) == [
        ".deployer-owner", "audit.log", "current", "releases", "shared"]
    assert (deploy / ".deployer-owner").read_text() == "app=planeq\nenv=test\nproject=planeq\n"
    health = deploy / "releases" / stamp.release / ".deployer-health"
    assert health.read_text().startswith("passed ")
    compose = (deploy / "releases" / stamp.release / "docker-compose.yaml").read_text()
    assert f"image: registry.example.com:5000/planeq/web:t1@{digest}" in compose
