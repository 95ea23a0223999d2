"""The deploy API end to end against scripted hosts: the order of a run
(render before images before hosts), options left alone, day-2 rollback
through ship's gate, logs and exec through the executor and the bounded
runner."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, MakeProject

from deployer.commands.facts import MARKER
from deployer.commands.release import STATE_MARKER
from deployer.config import Host, load_project
from deployer.deploy import api, day2
from deployer.deploy.dryrun import EMPTY_STATE, PLAN_FACTS, healthy_rows
from deployer.deploy.rollout import RolloutPolicy
from deployer.deploy.runner import RunOptions
from deployer.errors import ConfigError
from deployer.remote.recording import Answers, Call, ScriptedExecutor
from deployer.report.model import HostReport, RunReport

FACTS = MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in PLAN_FACTS.items())
HEALTHY = healthy_rows("shop", ["web"], [])
UNHEALTHY = json.dumps({"name": "/shop-web-1", "service": "web", "restart_policy": "always",
                        "state": {"Status": "exited", "ExitCode": 1}}) + "\n"


class Quiet:
    def __init__(self) -> None:
        self.finished: list[RunReport] = []

    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...
    def step(self, host: str, step: str) -> None: ...
    def log(self, host: str, line: str) -> None: ...
    def host_done(self, report: HostReport) -> None: ...

    def finish(self, run: RunReport) -> None:
        self.finished.append(run)


class Hosts:
    """An executor factory of scripted hosts; remembers what each was sent."""

    def __init__(self, table: dict[str, list[Any]] | None = None) -> None:
        self.table = table or {}
        self.made: dict[str, ScriptedExecutor] = {}

    def __call__(self, host: Host) -> ScriptedExecutor:
        table = {"probe host facts": [(0, FACTS)], "check container health": [(0, HEALTHY)],
                 "read current release": [(0, EMPTY_STATE)], **self.table}
        ex = ScriptedExecutor(host.name, Answers(table))
        self.made[host.name] = ex
        return ex

    def names(self, host: str) -> list[str]:
        return [c.name for c in self.made[host].calls if isinstance(c, Call)]


def _project(root: Path) -> Any:
    return load_project(root, "prod", ENV)


def test_a_template_error_stops_the_run_before_images_and_hosts(
        make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": "{{ nope }}\n"})
    project = _project(root)
    staged: list[str] = []
    hosts = Hosts()
    with pytest.raises(ConfigError, match="undefined variable nope"):
        api.ship_hosts(project, project.hosts, Quiet, RunOptions(executor=hosts), tag="t",
                       stage=lambda p, tag: staged.append(tag) or {})
    assert staged == []
    assert hosts.made == {}  # not even the early connections


def test_ship_renders_before_the_images_and_leaves_the_options_alone(
        make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts()
    opts = RunOptions(policy=RolloutPolicy(batches=[1, "100%"]), executor=hosts)
    order: list[str] = []

    def stage(p: Any, tag: str) -> dict[str, str]:
        order.append("images")
        return {"web": f"registry.example.com:5000/shop/web:{tag}@sha256:" + "ab" * 32}

    run = api.ship_hosts(project, project.hosts, lambda: order.append("reporter") or Quiet(),
                         opts, tag="t", stage=stage)
    assert order == ["images", "reporter"]  # the live view starts after the image stage
    assert opts.executor is hosts  # not replaced by the early connections
    assert [h.result for h in run.hosts] == ["deployed", "deployed"]
    assert [h.batch for h in run.hosts] == [1, 2]
    assert run.images["web"].endswith("ab" * 32)


def test_a_refusal_after_the_state_read_names_its_own_step_not_the_audit_log(
        make_project: MakeProject) -> None:
    """The owner check runs between steps, and the audit log is written
    after it failed: the report must name the check, not the last step that
    ran (it said "audit log: ... belongs to environment ...")."""
    project = _project(make_project())
    other = (f"{STATE_MARKER}\nexists=1\nwritable=1\ncurrent=r1\n"
             "owner_app=shop\nowner_env=staging\nowner_project=shop\n")
    hosts = Hosts({"read current release": [(0, other)]})

    def connected(host: Host) -> ScriptedExecutor:  # as over SSH: the audit log is written
        ex = hosts(host)
        ex._stats.connections_opened = 1
        return ex

    run = api.ship_hosts(project, project.select("web-1"), Quiet,
                         RunOptions(executor=connected), tag="t",
                         stage=lambda p, tag: {"web": "registry.example.com:5000/shop/web:t"})
    rep = run.hosts[0]
    assert rep.result == "failed"
    assert (rep.error or "").startswith("check deploy dir owner: /opt/shop on web-1 belongs to "
                                        "environment staging of app shop"), rep.error
    assert hosts.names("web-1") == ["read current release", "append to the audit log"]


def _state(current: str) -> str:
    return f"{STATE_MARKER}\nexists=1\nwritable=1\ncurrent={current}\n"


def _releases(current: str, *ids: str) -> str:
    return f"current={current}\n" + "".join(f"release={r} fp-{r} passed T\n" for r in ids)


MANIFEST = json.dumps({"services": ["web"]})


def test_rollback_goes_through_the_health_gate_and_says_from_and_to(
        make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, _releases("r2", "r1", "r2"))],
                   "take the deploy lock": [(0, "current=r2\n")],
                   "read the manifest of r1": [(0, MANIFEST)]})
    run = day2.rollback(project, project.select("web-1"), None, Quiet(),
                        RunOptions(executor=hosts))
    rep = run.hosts[0]
    assert (rep.result, rep.release, rep.rolled_back_from) == ("rolled back", "r1", "r2")
    assert rep.error is None and rep.ok and run.ok
    assert rep.detail == "from r2 to r1"
    assert hosts.names("web-1") == [
        "probe host facts", "list releases", "take the deploy lock",
        "read the manifest of r1", "mark r1 as being applied", "compose up",
        "check container health", "switch current to r1", "clear the apply marker",
        "release the deploy lock", "append to the audit log",
    ]


def test_rollback_starts_each_release_with_the_profiles_it_ran_with(
        make_project: MakeProject) -> None:
    """A release's manifest records its compose profiles: going back to it
    (and restoring the current one) enables those, not today's config's, so
    no profile service is left on the release being left."""
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, _releases("r2", "r1", "r2"))],
                   "take the deploy lock": [(0, "current=r2\n")],
                   "read the manifest of r1": [(0, json.dumps({"services": ["web"],
                                                               "profiles": ["worker"]}))],
                   "read the manifest of r2": [(0, json.dumps({"services": ["web"],
                                                               "profiles": ["debug"]}))],
                   "check container health": [(0, UNHEALTHY), (0, HEALTHY)]})
    day2.rollback(project, project.select("web-1"), None, Quiet(), RunOptions(executor=hosts))
    ups = [c.command.argv for c in hosts.made["web-1"].calls
           if isinstance(c, Call) and c.name == "compose up" and c.command is not None]
    assert len(ups) == 2
    assert "--profile" in ups[0] and ups[0][ups[0].index("--profile") + 1] == "worker"
    assert "--profile" in ups[1] and ups[1][ups[1].index("--profile") + 1] == "debug"


def test_unhealthy_rollback_restores_the_current_release_and_waits_for_it(
        make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, _releases("r2", "r1", "r2"))],
                   "take the deploy lock": [(0, "current=r2\n")],
                   "read the manifest of r1": [(0, MANIFEST)],
                   "read the manifest of r2": [(0, MANIFEST)],
                   "check container health": [(0, UNHEALTHY), (0, HEALTHY)]})
    run = day2.rollback(project, project.select("web-1"), None, Quiet(),
                        RunOptions(executor=hosts))
    rep = run.hosts[0]
    assert (rep.result, rep.release) == ("failed", "r2")
    assert "release r1 unhealthy: web: exited with code 1; r2 restored" in (rep.error or "")
    names = hosts.names("web-1")
    assert "switch current to r1" not in names
    assert "record that r1 failed its health gate" in names
    # r2 came up again and was waited for, like ship's own rollback
    assert names[names.index("read the manifest of r2"):] == [
        "read the manifest of r2", "mark r2 as being applied", "compose up",
        "check container health", "clear the apply marker", "release the deploy lock",
        "append to the audit log",
    ]


# Review item 5: v1, v2 good, v3 failed its healthcheck, v4 interrupted
# before up, v5 good and current.
ITEM_5 = ("current=v5\nrelease=v1 fp1 passed T\nrelease=v2 fp2 passed T\n"
          "release=v3 fp3 failed T3\nrelease=v4 fp4 pending T\nrelease=v5 fp5 passed T\n")


def test_rollback_goes_to_the_newest_release_that_passed(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, ITEM_5)], "take the deploy lock": [(0, "current=v5\n")],
                   "read the manifest of v2": [(0, MANIFEST)]})
    run = day2.rollback(project, project.select("web-1"), None, Quiet(),
                        RunOptions(executor=hosts))
    assert (run.hosts[0].result, run.hosts[0].release) == ("rolled back", "v2")
    assert "switch current to v2" in hosts.names("web-1")


@pytest.mark.parametrize(("to", "why"), [
    ("v4", "release v4 never ran"),
    ("v3", "release v3 failed its health gate at T3"),
    ("v9", "release v9 not found on this host"),
])
def test_rollback_to_a_release_that_did_not_pass_is_refused(
        make_project: MakeProject, to: str, why: str) -> None:
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, ITEM_5)]})
    run = day2.rollback(project, project.select("web-1"), to, Quiet(),
                        RunOptions(executor=hosts))
    rep = run.hosts[0]
    assert (rep.result, rep.release) == ("failed", "v5")
    assert why in (rep.error or "")
    # refused before the lock: nothing changed on the host but its audit log
    assert hosts.names("web-1") == ["probe host facts", "list releases",
                                    "append to the audit log"]


def test_rollback_without_a_passed_release_says_so(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"list releases": [(0, "current=v2\nrelease=v1 fp1 pending T\n"
                                         "release=v2 fp2 passed T\n")]})
    run = day2.rollback(project, project.select("web-1"), None, Quiet(),
                        RunOptions(executor=hosts))
    assert "no earlier release that passed its health gate" in (run.hosts[0].error or "")


def test_logs_stream_through_the_executor_at_most_max_parallel_at_once(
        make_project: MakeProject) -> None:
    project = _project(make_project())
    in_flight: list[int] = [0]
    peak: list[int] = [0]
    lock = threading.Lock()

    class Slow(ScriptedExecutor):
        def stream(self, command: Any, on_line: Any, *, cancel: Any = None) -> int:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            try:
                threading.Event().wait(0.05)
                return super().stream(command, on_line, cancel=cancel)
            finally:
                with lock:
                    in_flight[0] -= 1

    def factory(host: Host) -> ScriptedExecutor:
        return Slow(host.name, Answers({"read current release": [(0, _state("r1"))],
                                        "probe host facts": [(0, FACTS)],
                                        "compose logs web": [(0, "a\nb\n")]}))

    lines: list[tuple[str, str]] = []
    run = day2.logs(project, project.hosts, "web", 10, False,
                    lambda h, line: lines.append((h, line)), Quiet(),
                    RunOptions(policy=RolloutPolicy(max_parallel=1), executor=factory))
    assert run.ok
    assert sorted(lines) == [("web-1", "a"), ("web-1", "b"), ("web-2", "a"), ("web-2", "b")]
    assert peak[0] == 1


def test_logs_of_a_host_without_a_release_fail_that_host(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"read current release": [(0, f"{STATE_MARKER}\nexists=0\ncurrent=\n")]})
    run = day2.logs(project, project.select("web-1"), None, 10, False, lambda h, ln: None,
                    Quiet(), RunOptions(executor=hosts))
    assert not run.ok
    assert run.hosts[0].error == ("find current release: no release deployed yet "
                                  "(hint: run `deployer ship` first)")


def test_exec_streams_and_returns_the_command_s_exit_code(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"read current release": [(0, _state("r1"))],
                   "compose exec web": [(3, "out\n")]})
    lines: list[str] = []
    res = day2.exec_in(project, project.hosts[0], "web", ["flask", "x"], False,
                       lambda h, ln: lines.append(ln), Quiet(), RunOptions(executor=hosts))
    assert (res.exit_code, res.handover, lines) == (3, None, ["out"])
    sent = [c for c in hosts.made["web-1"].calls if isinstance(c, Call) and c.kind == "stream"]
    assert sent[0].command is not None
    assert sent[0].command.argv[-4:] == ("-T", "web", "flask", "x")


def test_interactive_exec_hands_the_line_over_and_runs_nothing(
        make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"read current release": [(0, _state("r1"))]})
    res = day2.exec_in(project, project.hosts[0], "web", ["sh"], True, lambda h, ln: None,
                       Quiet(), RunOptions(executor=hosts))
    assert res.handover is not None
    assert res.handover.endswith("docker compose -p shop -f docker-compose.yaml exec web sh")
    assert "stream" not in [c.kind for c in hosts.made["web-1"].calls if isinstance(c, Call)]


def test_plan_is_ship_against_the_assumed_host_and_says_so(make_project: MakeProject) -> None:
    dry = api.plan(api.Target(make_project(), "prod", "web-1", environ=ENV), "t")
    assert list(dry.hosts) == ["web-1"]
    assert dry.hosts["web-1"].report.result == "deployed"
    assert "first release" in dry.assuming and "not root" in dry.assuming
    steps = {s.name: s.commands() for s in dry.hosts["web-1"].steps}
    assert steps["prepare deploy dir"][0].startswith("sudo -n -- sh -c <3-line script: prepare")
    assert steps["prepare deploy dir"][0].endswith(" sh /opt/shop deploy")  # ssh.user
    assert steps["registry login"][0].endswith("--password-stdin  <<< ******")
    assert list(steps)[-3:] == ["remove registry credentials", "unlock", "audit log"]


HELD = (3, "who=alice@laptop\nwhen=2026-01-01T10:00:00Z\nrelease=\nmessage=db migration\n")


def test_lock_prepares_a_new_tree_and_refuses_a_held_lock(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"take the deploy lock": [(0, "current=\n")]})
    run = day2.set_lock(project, project.select("web-1"), "db migration", Quiet(),
                        RunOptions(executor=hosts))
    assert (run.hosts[0].result, run.hosts[0].detail) == ("ok", "locked")
    assert hosts.names("web-1") == ["read current release", "probe host facts",
                                    "prepare /opt/shop", "take the deploy lock",
                                    "append to the audit log"]
    held = Hosts({"read current release": [(0, _state("r1"))], "take the deploy lock": [HELD]})
    run = day2.set_lock(project, project.select("web-1"), "again", Quiet(),
                        RunOptions(executor=held))
    assert run.hosts[0].result == "failed"
    assert run.hosts[0].error == ("locked by alice@laptop since 2026-01-01T10:00:00Z "
                                  "(db migration)")


def test_unlock_says_whose_lock_it_broke(make_project: MakeProject) -> None:
    project = _project(make_project())
    hosts = Hosts({"show the deploy lock": [HELD]})
    run = day2.unlock(project, project.hosts, Quiet(), RunOptions(executor=hosts))
    assert [h.detail for h in run.hosts] == [
        "released locked by alice@laptop since 2026-01-01T10:00:00Z (db migration)"] * 2
    # the owner check first: one environment's unlock never breaks another's lock
    assert hosts.names("web-2") == ["read current release", "show the deploy lock",
                                    "release the deploy lock", "append to the audit log"]
