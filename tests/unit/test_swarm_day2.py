"""``exec`` and ``bootstrap`` with ``target: swarm``, against scripted
nodes: which node exec runs on, and a bootstrap of a formed swarm that
changes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import ENV, MakeProject
from test_swarm_plan import SWARM_INV

from deployer.commands.base import Command
from deployer.commands.facts import MARKER
from deployer.config import Host, Project, load_project
from deployer.deploy.dryrun import PLAN_FACTS
from deployer.deploy.runner import RunOptions
from deployer.remote.recording import Call, ScriptedExecutor
from deployer.report.reporters import PlainReporter
from deployer.swarm.day2 import bootstrap_stack, exec_stack

FACTS = MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in PLAN_FACTS.items())
TASKS = "node-2 203.0.113.12\nnode-1 203.0.113.11\n"  # swarm's order, not the inventory's


class Cluster:
    """One scripted executor per host; every call noted as (host, call)."""

    def __init__(self, answers: dict[str, dict[str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Call]] = []

    def executor(self, host: Host) -> ScriptedExecutor:
        table = {"probe host facts": FACTS, **self.answers.get(host.name, {})}

        def answer(command: Command) -> tuple[int, str]:
            return 0, table.get(command.description, "")

        return ScriptedExecutor(host.name, answer,
                                before=lambda c: self.calls.append((host.name, c)))

    def ran(self, description: str) -> list[str]:
        return [h for h, c in self.calls if c.name == description]


def project(make_project: MakeProject) -> Project:
    root: Path = make_project({"inventories/prod.yaml": SWARM_INV})
    return load_project(root, "prod", ENV)


def run_exec(p: Project, cluster: Cluster, hosts: list[Host]) -> tuple[Host, int, str]:
    opts = RunOptions(executor=cluster.executor)
    out = io.StringIO()
    host, res = exec_stack(p, hosts, "web", ["echo", "hi"], False, lambda h, ln: None,
                           PlainReporter(out), opts)
    return host, res.exit_code, out.getvalue()


def test_exec_runs_on_the_first_inventory_node_that_runs_a_task(
        make_project: MakeProject) -> None:
    p = project(make_project)
    cluster = Cluster({"mgr-1": {"find the tasks of shop_web": TASKS}})
    host, code, _ = run_exec(p, cluster, p.hosts)
    assert host.name == "node-1" and code == 0
    assert cluster.ran("find the tasks of shop_web") == ["mgr-1"]  # asked on the manager
    (where,) = cluster.ran("exec in shop_web")
    assert where == "node-1"
    (call,) = [c for h, c in cluster.calls if c.name == "exec in shop_web"]
    assert call.kind == "stream" and call.command is not None
    assert call.command.argv[-3:] == ("plain", "echo", "hi")


def test_exec_with_limit_uses_the_selected_node(make_project: MakeProject) -> None:
    p = project(make_project)
    cluster = Cluster({"mgr-1": {"find the tasks of shop_web": TASKS}})
    host, code, _ = run_exec(p, cluster, p.select("node-2"))
    assert host.name == "node-2" and code == 0 and cluster.ran("exec in shop_web") == ["node-2"]


def test_exec_on_a_node_without_a_task_says_where_they_run(make_project: MakeProject) -> None:
    p = project(make_project)
    cluster = Cluster({"mgr-1": {"find the tasks of shop_web": TASKS}})
    host, code, out = run_exec(p, cluster, p.select("mgr-1"))
    assert host.name == "mgr-1" and code == 1 and cluster.ran("exec in shop_web") == []
    assert "no task of web runs on mgr-1 (its tasks run on node-2, node-1)" in out


def test_bootstrap_of_a_formed_swarm_changes_nothing(make_project: MakeProject) -> None:
    p = project(make_project)
    info = {"mgr-1": {"LocalNodeState": "active", "NodeID": "m1", "ControlAvailable": True},
            "node-1": {"LocalNodeState": "active", "NodeID": "n1"},
            "node-2": {"LocalNodeState": "active", "NodeID": "n2"}}
    cluster = Cluster({h: {"read the node's swarm state": json.dumps(i)}
                       for h, i in info.items()})
    cluster.answers["mgr-1"]["list the swarm's nodes"] = "m1 mgr-1\nn1 node-1\nn2 node-2\n"
    out = io.StringIO()
    run = bootstrap_stack(p, p.hosts, PlainReporter(out), RunOptions(executor=cluster.executor))
    (rep,) = run.hosts
    assert rep.result == "ok", rep
    assert rep.detail.endswith("swarm: all 3 nodes already members")
    assert "node-1: already bootstrapped" in rep.detail
    changing = {"form the swarm", "join the swarm", "read the worker join token"}
    assert not [c for _h, c in cluster.calls if c.name in changing]
