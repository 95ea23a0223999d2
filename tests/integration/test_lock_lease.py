"""The deploy lock with its lease, over SSH against a real sshd: acquire,
renew in the background, take over an expired lease (and say so), refuse a
live one, and release only the run's own lock.

The deploy directory is a temporary directory on this machine, which is the
sshd's host: the lease is compared on that host's clock, as on a server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.commands import lock
from deployer.commands.base import Command
from deployer.config import Project, load_project
from deployer.config.inventory import Host
from deployer.deploy.hostrun import HostRun
from deployer.deploy.lease import RUN
from deployer.deploy.session import HostSession, LockHeld
from deployer.remote.executor import SSHExecutor
from deployer.report.model import HostReport, RunReport

MakeHost = Callable[..., Host]


class Lines:
    """A reporter that keeps the host's log lines."""

    def __init__(self) -> None:
        self.logs: list[str] = []

    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...
    def step(self, host: str, step: str) -> None: ...
    def log(self, host: str, line: str) -> None:
        self.logs.append(line)
    def host_done(self, report: HostReport) -> None: ...
    def finish(self, run: RunReport) -> None: ...


@pytest.fixture
def deploy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "opt-shop"
    d.mkdir()
    return d


@pytest.fixture
def project(make_project: MakeProject, deploy_dir: Path) -> Project:
    root = make_project()
    yml = root / "deployer.yaml"
    yml.write_text(yml.read_text() + f"deploy_dir: {deploy_dir}\n")
    return load_project(root, "prod", ENV)


@pytest.fixture
def ex(make_host: MakeHost, no_agent: None) -> Iterator[SSHExecutor]:
    e = SSHExecutor(make_host(), ssh_config=None)
    yield e
    e.close()


def session(project: Project, ex: SSHExecutor, make_host: MakeHost) -> tuple[HostSession, Lines]:
    lines = Lines()
    return HostSession(project, make_host(), ex, HostRun("web-1", lines)), lines


def info(deploy_dir: Path) -> lock.LockInfo:
    return lock.parse_lock_info((deploy_dir / ".lock" / "info").read_text())


def host_now(ex: SSHExecutor) -> int:
    return int(ex.run(Command(("date", "+%s"))).stdout)


def test_acquire_renew_release_own(project: Project, ex: SSHExecutor, make_host: MakeHost,
                                   deploy_dir: Path) -> None:
    s, _ = session(project, ex, make_host)
    with s.locked("alice@laptop", "T1", "r1", lease=3) as current:
        assert current is None
        first = info(deploy_dir)
        assert (first.run, first.machine, first.pid) == (RUN.run, RUN.machine, str(RUN.pid))
        assert first.lease_end is not None and first.lease_end <= host_now(ex) + 3
        # the renewer (every lease/3 = 1 s) moves the lease on while the run lives
        deadline = time.monotonic() + 30
        while (info(deploy_dir).lease_end or 0) <= first.lease_end:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.2)
        assert info(deploy_dir).run == RUN.run
    assert not (deploy_dir / ".lock").exists()


def test_a_live_lock_is_refused_naming_its_holder(project: Project, ex: SSHExecutor,
                                                  make_host: MakeHost, deploy_dir: Path) -> None:
    ex.run(lock.acquire(str(deploy_dir), who="bob@ci", when="T0", release="r0", run="other",
                        machine="ci-7", pid=99, lease=600))
    s, _ = session(project, ex, make_host)
    with pytest.raises(LockHeld) as e, s.locked("alice@laptop", "T1", "r1"):
        pass
    text = e.value.info.describe()
    assert text.startswith("locked by bob@ci since T0 (release r0; run other, pid 99 on ci-7; "
                           "lease ends in ")
    assert info(deploy_dir).run == "other"


def test_expired_lease_is_taken_over_and_the_run_says_so(
        project: Project, ex: SSHExecutor, make_host: MakeHost, deploy_dir: Path) -> None:
    # What a run killed with kill -9 leaves: a lock whose lease has passed.
    ex.run(lock.acquire(str(deploy_dir), who="bob@ci", when="T0", release="r0", run="dead",
                        machine="ci-7", pid=99, lease=600))
    f = deploy_dir / ".lock" / "info"
    f.write_text(f.read_text().replace(f"lease_until={info(deploy_dir).lease_until}",
                                       f"lease_until={host_now(ex) - 1}"))
    s, lines = session(project, ex, make_host)
    with s.locked("alice@laptop", "T1", "r1", lease=60):
        assert info(deploy_dir).run == RUN.run
        taken = [ln for ln in lines.logs if ln.startswith("took over the deploy lock")]
        assert len(taken) == 1, lines.logs
        assert "bob@ci" in taken[0] and "run dead, pid 99 on ci-7" in taken[0]
        # the dead run, were it to come back, cannot release our lock
        back = ex.run(lock.release(str(deploy_dir), "dead"))
        assert back.exit_code == lock.EXIT_LOCKED
        assert info(deploy_dir).run == RUN.run
    assert not (deploy_dir / ".lock").exists()


def test_manual_lock_never_expires(project: Project, ex: SSHExecutor, make_host: MakeHost,
                                   deploy_dir: Path) -> None:
    s, _ = session(project, ex, make_host)
    s.acquire_lock("alice@laptop", "T1", message="db migration")  # deployer lock: no lease
    assert info(deploy_dir).lease_until == ""
    with pytest.raises(LockHeld) as e, s.locked("bob@ci", "T2", "r2"):
        pass
    assert "no lease: it stays until `deployer unlock`" in e.value.info.describe()
    assert s.break_lock() is not None
    assert not (deploy_dir / ".lock").exists()
