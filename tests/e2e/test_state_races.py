"""Another run switches a host's release between our state read and our lock.

``ship`` reads each host's current release early (for the first batch, while
the images are staged) and takes the deploy lock later. If another run
switched releases in between, what to compare with and what to roll back to
must come from the state under the lock. These tests make that happen for
real on a sandbox host: the executor, just before our lock command, switches
``current`` the way a concurrent ``rollback`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deployer.commands.base import Command
from deployer.config import load_project
from deployer.deploy.api import RunOptions, policy_for, ship_hosts
from deployer.remote.base import Result, Wrapper
from deployer.remote.executor import SSHExecutor
from deployer.report.reporters import PlainReporter

from .test_rollout import ROLLAPP, WEB_PORT, Project, app_sandbox, get, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def race(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with app_sandbox(tmp_path_factory.mktemp("races"), ROLLAPP, 1, {}) as p:
        # Without {{ release }} in the config, equal vars render equal files:
        # a release can be "unchanged" here.
        tpl = p.root / "templates" / "config.json.j2"
        tpl.write_text('{"greeting": {{ greeting | tojson }}, '
                       '"healthy": {{ healthy | default(true) | tojson }}}\n')
        yield p


class SwitchBeforeLock(Wrapper):
    """An SSH executor that, right before our deploy lock is taken, lets
    another run happen: a real ``deployer rollback --to <target>`` (which
    takes and releases the lock itself, starts the target, switches
    ``current``)."""

    def __init__(self, inner: SSHExecutor, other_run: Callable[[], None]) -> None:
        super().__init__(inner)
        self.other_run: Callable[[], None] | None = other_run
        self.seen: list[str] = []

    def run(self, command: Command, *, check: bool = True,
            timeout: float | None = None) -> Result:
        self.seen.append(command.description or command.argv[0])
        if command.description == "take the deploy lock" and self.other_run:
            self.other_run()
            self.other_run = None
        return self.inner.run(command, check=check, timeout=timeout)

    def stream_in(self, command: Command, chunks: Any, *, check: bool = True,
                  timeout: float | None = None) -> Result:
        self.seen.append(command.description or command.argv[0])
        return self.inner.stream_in(command, chunks, check=check, timeout=timeout)


def _ship_api(p: Project, images: dict[str, str], target: str) -> tuple[Any, SwitchBeforeLock]:
    """Ship the project's current config through the API (as the CLI does),
    with another run rolling the host back to ``target`` just before our lock."""
    project = load_project(p.root, "sandbox", p.env)
    made: list[SwitchBeforeLock] = []

    def other_run() -> None:
        p.run("-o", "json", "rollback", "sandbox", "--to", target)

    def factory(host: Any) -> SwitchBeforeLock:
        ex = SwitchBeforeLock(SSHExecutor(host), other_run)
        made.append(ex)
        return ex

    opts = RunOptions(policy=policy_for(project), executor=factory)
    run = ship_hosts(project, project.hosts, PlainReporter, opts, tag="race",
                     stage=lambda _project, _tag: images)
    return run, made[0]


def test_switched_to_our_content_meanwhile_is_unchanged(race: Project) -> None:
    name = race.names()[0]
    groups = {"app": {"hosts": [name]}}
    race.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "one"})
    first, _, err = race.ship()
    assert results(first) == {name: "deployed"}, err
    race.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "two"})
    second, _, err = race.ship()
    assert results(second) == {name: "deployed"}, err

    # We ship "one" again while the host runs "two"; meanwhile another run
    # rolls the host back to the first release, which is exactly "one": under
    # the lock there is nothing left to do.
    race.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "one"})
    run, ex = _ship_api(race, first["images"], first["release"])
    rep = run.hosts[0]
    assert (rep.result, rep.release) == ("unchanged", first["release"]), json.dumps(
        run.to_json(), indent=2)
    assert ex.seen.count("read current release") == 2  # again, under the lock
    assert not any(s.startswith("docker") or "compose" in s for s in ex.seen), ex.seen
    assert race.current(name) == first["release"]
    assert get(race.address(name))["greeting"] == "one"
    assert not race.sh(name, f"ls -A /opt/{race.app}/.lock 2>/dev/null || true").strip()


def test_failed_release_goes_back_to_what_is_current_under_the_lock(race: Project) -> None:
    """The other run switched the host to the first release; our release
    fails its healthcheck; the host must end on the first release (current
    under the lock), not on the one our early read saw."""
    name = race.names()[0]
    groups = {"app": {"hosts": [name]}}
    race.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "two"})
    back, _, err = race.ship()  # current: "two" again (a new release of it)
    assert results(back) == {name: "deployed"} or results(back) == {name: "unchanged"}, err
    rel = race.run("-o", "json", "releases", "sandbox").stdout
    ids = json.loads(rel)[name]["releases"]
    first_release = ids[0]
    race.write_inventory(groups, {"web_port": WEB_PORT, "greeting": "three"},
                         host_vars={name: {"healthy": False}})
    run, ex = _ship_api(race, back["images"], first_release)
    rep = run.hosts[0]
    assert rep.result == "rolled back", json.dumps(run.to_json(), indent=2)
    assert ex.seen.count("read current release") == 2
    assert race.current(name) == first_release
    assert get(race.address(name))["greeting"] == "one"


def test_rollback_refuses_when_another_run_switched_meanwhile(race: Project) -> None:
    """Our rollback listed the releases, then another rollback switched the
    host before our lock: ours changes nothing and says so."""
    from deployer.deploy import day2

    name = race.names()[0]
    ids = json.loads(race.run("-o", "json", "releases", "sandbox").stdout)[name]["releases"]
    theirs, ours = ids[1], ids[2]
    before = race.current(name)
    assert before not in (theirs, ours)
    project = load_project(race.root, "sandbox", race.env)

    def other_run() -> None:
        race.run("-o", "json", "rollback", "sandbox", "--to", theirs)

    def factory(host: Any) -> SwitchBeforeLock:
        return SwitchBeforeLock(SSHExecutor(host), other_run)

    opts = RunOptions(policy=policy_for(project), executor=factory)
    run = day2.rollback(project, project.hosts, ours, PlainReporter(), opts)
    rep = run.hosts[0]
    assert rep.result == "failed" and rep.release == theirs, json.dumps(run.to_json(), indent=2)
    assert f"another run switched this host to {theirs}" in (rep.error or "")
    assert race.current(name) == theirs
    assert not race.sh(name, f"ls -A /opt/{race.app}/.lock 2>/dev/null || true").strip()
