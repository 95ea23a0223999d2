"""``bootstrap`` and ``exec`` with ``target: swarm``.

- ``bootstrap`` makes every node a Docker host (installing it where it is
  missing, as for compose) and forms the swarm
  (:func:`~deployer.swarm.cluster.ensure_cluster`): one job on the first
  manager, which reaches the other nodes over their own connections. Run
  again, it changes nothing.
- ``exec`` asks the first manager where the service's tasks run, then runs
  the command in a task's container on that node: the first node in
  inventory order that runs one, or, with ``--limit``, the first selected
  node that does.
"""

from __future__ import annotations

import shlex

from deployer.audit import audited, context
from deployer.config import Host, Project
from deployer.deploy.day2 import ExecResult, HostLine
from deployer.deploy.hostrun import HostRun
from deployer.deploy.runner import RunOptions, run_command
from deployer.deploy.session import HostSession
from deployer.remote.base import Executor
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter
from deployer.swarm import commands
from deployer.swarm.cluster import ensure_cluster
from deployer.swarm.topology import topology


def bootstrap_stack(project: Project, hosts: list[Host], reporter: Reporter,
                    opts: RunOptions) -> RunReport:
    """Docker on every node, then the swarm formed; reported on the first
    manager, with what was done on each node in its detail."""
    from deployer.deploy.bootstrap import bootstrap_host
    from deployer.swarm.ship import whole_cluster

    topo = whole_cluster(project, hosts, "bootstrap")

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("bootstrap"):
            out = bootstrap_host(ex, host, step=run.step)
        notes: list[str] = []

        def note(line: str) -> None:
            notes.append(line)
            run.log(line)

        done = ensure_cluster(topo, ex, out.facts.docker_sudo, run, opts.executor,
                              on_bootstrap=note)
        swarm = "; ".join(done) if done else (
            f"swarm: all {len(topo.nodes)} nodes already members")
        return run.report("ok", detail="; ".join([f"{host.name}: {out.detail}", *notes, swarm]))

    return run_command("bootstrap", project, [topo.first], job, reporter, opts)


def _pick(nodes: list[tuple[str, str]], candidates: list[Host]) -> Host | None:
    """The first of ``candidates`` (inventory order) that is one of
    ``nodes`` (``(hostname, address)`` from swarm), by name or by address."""
    for h in candidates:
        if any(h.name == name or h.address in (name, addr) for name, addr in nodes):
            return h
    return None


def exec_stack(project: Project, hosts: list[Host], service: str, argv: list[str],
               interactive: bool, on_line: HostLine, reporter: Reporter,
               opts: RunOptions) -> tuple[Host, ExecResult]:
    """``deployer exec ENV SERVICE -- CMD`` on a swarm (see the module doc)."""
    topo = topology(project)
    name = f"{project.app}_{service}"
    limited = {h.name for h in hosts} != {h.name for h in topo.nodes}
    chosen: list[Host] = []
    shown = f"exec in {service}: {shlex.join(argv)}" + (" (interactive)" if interactive else "")

    def find(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step(f"find the tasks of {service}"):
            res = ex.run(commands.task_nodes(name, sudo=session.probe().docker_sudo))
        if res.exit_code == 3:
            return run.report("failed", error=f"the stack has no service {service!r}")
        nodes = [(p[0], p[1] if len(p) > 1 else "") for p in
                 (line.split() for line in res.stdout.splitlines()) if p]
        if not nodes:
            return run.report("failed", error=f"no task of {service} is running")
        pick = _pick(nodes, list(hosts) if limited else list(topo.nodes))
        if pick is None:
            where = ", ".join(n for n, _ in nodes)
            if limited:
                return run.report("failed", error=f"no task of {service} runs on "
                                  f"{', '.join(h.name for h in hosts)} (its tasks run on {where})")
            return run.report("failed", error=f"the tasks of {service} run on {where}, "
                              "which match no inventory host by name or address")
        chosen.append(pick)
        return run.report("ok", detail=f"{shown} on {pick.name}")

    found = run_command("exec", project, [topo.first],
                        audited("exec", context(project), find), reporter, opts)
    if not found.ok or not chosen:
        return topo.first, ExecResult(found, 1)
    node = chosen[0]
    codes: list[int] = []
    lines: list[str] = []

    def job(ex: Executor, run: HostRun, h: Host) -> HostReport:
        session = HostSession(project, h, ex, run)
        facts = session.probe()
        cmd = commands.task_exec(name, argv, interactive=interactive, sudo=facts.docker_sudo)
        if interactive:
            lines.append(cmd.shell(as_root=facts.is_root))
            return run.report("ok")
        with run.step(f"exec in {service}"):
            codes.append(ex.stream(cmd, lambda line: on_line(h.name, line), cancel=opts.cancel))
        return run.report("ok")

    rep = run_command("exec", project, [node], job, reporter, opts)
    if not rep.ok:
        return node, ExecResult(rep, 1)
    return node, ExecResult(rep, codes[0] if codes else 0, lines[0] if lines else None)
