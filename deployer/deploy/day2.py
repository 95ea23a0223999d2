"""Day-2 operations over the inventory: bootstrap, rollback, releases,
status, lock, unlock, logs and exec. Same shape as ship: a per-host job over
the one bounded runner, one connection per host, a report per host, remote
state through :class:`~deployer.deploy.session.HostSession`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployer.audit import audited, context
from deployer.commands import health, release
from deployer.config import Host, Project
from deployer.deploy import ownership, recovery
from deployer.deploy.hostrun import HostRun
from deployer.deploy.lease import lease_seconds
from deployer.deploy.runner import RunOptions, run_command
from deployer.deploy.session import HostSession, LockHeld
from deployer.deploy.ship import (
    ShipSettings,
    check_cancel,
    manifest_profiles,
    manifest_services,
    mark_applying_step,
    record_failed,
    restore,
    start_and_gate,
)
from deployer.plan import deployer_identity, utc_timestamp
from deployer.proxy import switch as proxy_switch
from deployer.remote.base import Executor
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter


def bootstrap(project: Project, hosts: list[Host], reporter: Reporter,
              opts: RunOptions) -> RunReport:
    from deployer.deploy.bootstrap import bootstrap_host

    if project.inventory.target == "swarm":  # Docker on every node, then the swarm
        from deployer.swarm.day2 import bootstrap_stack

        return bootstrap_stack(project, hosts, reporter, opts)

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("bootstrap"):
            out = bootstrap_host(ex, host, step=run.step)
        return run.report("ok", detail=out.detail)

    return run_command("bootstrap", project, hosts, job, reporter, opts)


def releases(project: Project, hosts: list[Host], reporter: Reporter,
             opts: RunOptions) -> tuple[RunReport, dict[str, release.Releases]]:
    found: dict[str, release.Releases] = {}
    if project.inventory.target == "swarm":  # recorded on the first manager
        from deployer.swarm.topology import topology

        hosts = [topology(project).first]

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("list releases"):
            found[host.name] = r = HostSession(project, host, ex, run).releases()
        return run.report("ok", release=r.current, detail=f"{len(r.releases)} releases")

    return run_command("releases", project, hosts, job, reporter, opts), found


def rollback(project: Project, hosts: list[Host], to: str | None, reporter: Reporter,
             opts: RunOptions) -> RunReport:
    """Back to the previous (or named) release through ship's own health
    gate: the old release is started, ``current`` moves only once it is
    healthy, and an unhealthy one is replaced by the release that was current
    (waited for as well). A host that went back reports ``rolled back``, with
    the release it left in ``rolled_back_from``."""
    if project.inventory.target == "swarm":
        from deployer.swarm.ship import rollback_stack

        return rollback_stack(project, hosts, to, reporter, opts)
    settings = ShipSettings(deployer_identity(), utc_timestamp(),
                            project.config.health_timeout, project.config.keep_releases,
                            cancel=opts.cancel, abort=opts.abort, lease=lease_seconds())

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        session.ensure_docker()
        with run.step("list releases"):
            rel = session.releases()
        ownership.check(project, host.name, rel.owner)
        target = to or rel.previous()
        if not target:
            return run.report("failed", release=rel.current,
                              error="no earlier release that passed its health gate to "
                              "roll back to (see `deployer releases`)")
        refused = rel.refuse_target(target)
        if refused:
            return run.report("failed", release=rel.current, error=refused)
        if target == rel.current:
            return run.report("unchanged", release=target, detail="already current")
        check_cancel(settings, host.name, "lock")
        try:
            with session.locked(settings.who, settings.when, f"rollback-{target}",
                                settings.lease) as now:
                if now != rel.current:
                    return run.report("failed", release=now,
                                      error=f"another run switched this host to {now} while "
                                      "its releases were listed; nothing changed, run the "
                                      "rollback again")
                return _roll_back(session, rel.current, target, settings)
        except LockHeld as e:
            return run.report("failed", release=rel.current, error=e.reason)

    return run_command("rollback", project, hosts, audited("rollback", context(project), job),
                       reporter, opts)


def _roll_back(session: HostSession, current: str | None, target: str,
               settings: ShipSettings) -> HostReport:
    run, ex = session.run, session.ex
    with run.step(f"read the manifest of {target}"):
        manifest = session.manifest(target)
    services = manifest_services(manifest, [])
    compose = session.compose(target, profiles=manifest_profiles(manifest))
    proxied = proxy_switch.from_manifest(session.project, manifest, services)
    mark_applying_step(session, target)
    if proxied is not None:  # the same switch as ship's, the other way
        failure = proxy_switch.Switch(session, compose, proxied, settings.health_timeout,
                                      settings.poll_interval).run(
            services, None, (), (), step=f"compose up {target}")
    else:
        failure = start_and_gate(session, compose, services, None, settings,
                                 step=f"compose up {target}")
    if failure is None:
        with run.step("switch current"):
            ex.run(release.switch_current(session.dir, target, settings.when))
            recovery.settle(session)
        return run.report("rolled back", release=target, rolled_back_from=current,
                          detail=f"from {current or 'none'} to {target}")
    record_failed(session, target, settings.when)
    error = f"release {target} unhealthy: {failure}"
    if current:
        with run.step(f"read the manifest of {current}"):
            cur_manifest = session.manifest(current)
        back = manifest_services(cur_manifest, services)
        if proxied is not None:  # its proxied containers were never touched
            back = proxied.not_proxied(back)
        why = None if proxied is not None and not back else restore(
            session, current, back, (), settings, manifest_profiles(cur_manifest),
            only=proxied is not None)
        error += f"; {current} restored" if why is None else f"; restoring {current} {why}"
    return run.report("failed", release=current, error=error)


def status(project: Project, hosts: list[Host], reporter: Reporter,
           opts: RunOptions, proxies: dict[str, Any] | None = None,
           ) -> tuple[RunReport, dict[str, list[health.ContainerRow]]]:
    """``proxies``: filled with each host's edge proxy and the app's routes
    (:class:`deployer.proxy.ops.ProxyStatus`) when the project has routes."""
    if project.inventory.target == "swarm":
        from deployer.swarm.ship import status_stack

        return status_stack(project, hosts, reporter, opts)
    rows: dict[str, list[health.ContainerRow]] = {}

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("status"):
            facts = session.probe()
            res = ex.run(health.containers(project.project_name, sudo=facts.docker_sudo),
                         check=False)
            st = session.read_owned_state()
            rows[host.name] = health.parse_containers(res.stdout)
        if proxies is not None and project.config.proxy and project.config.proxy.routes:
            from deployer.proxy.ops import current_image, read_status

            with run.step("proxy status"):
                proxies[host.name] = read_status(session, current_image(session)[1])
        return run.report("ok", release=st.current, detail=f"{len(rows[host.name])} containers")

    return run_command("status", project, hosts, job, reporter, opts), rows


def set_lock(project: Project, hosts: list[Host], message: str, reporter: Reporter,
             opts: RunOptions) -> RunReport:
    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("read current release"):
            st = session.read_owned_state()
        session.ensure_writable(st)
        try:
            session.acquire_lock(deployer_identity(), utc_timestamp(), message=message)
        except LockHeld as e:
            return run.report("failed", error=e.reason)
        return run.report("ok", detail="locked")

    return run_command("lock", project, hosts,
                       audited("lock", context(project), job, lambda _r: message),
                       reporter, opts)


def unlock(project: Project, hosts: list[Host], reporter: Reporter,
           opts: RunOptions) -> RunReport:
    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("read current release"):
            session.read_owned_state()
        info = session.break_lock()
        if info is not None:
            return run.report("ok", detail="released " + info.describe())
        return run.report("ok", detail="was not locked")

    return run_command("unlock", project, hosts, audited("unlock", context(project), job),
                       reporter, opts)


HostLine = Callable[[str, str], None]  # (host, line)


def logs(project: Project, hosts: list[Host], service: str | None, tail: int, follow: bool,
         on_line: HostLine, reporter: Reporter, opts: RunOptions) -> RunReport:
    """``compose logs`` of the current release on every host, each line
    handed to ``on_line`` as it arrives (at most ``max_parallel`` hosts at
    once). Ctrl-C (``opts.cancel``) ends the streams."""
    if project.inventory.target == "swarm":
        from deployer.swarm.ship import logs_stack

        return logs_stack(project, service, tail, follow, on_line, reporter, opts)

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("find current release"):
            compose = session.current_compose()
        with run.step("logs"):
            code = ex.stream(compose.logs(service, tail=tail, follow=follow),
                             lambda line: on_line(host.name, line), cancel=opts.cancel)
        if code not in (0, -1):
            return run.report("failed", error=f"compose logs exited {code}")
        return run.report("ok")

    return run_command("logs", project, hosts, job, reporter, opts)


@dataclass(frozen=True)
class ExecResult:
    """``exit_code`` of the command (non-interactive), or, for ``-i``, the
    shell line to hand to an interactive ``ssh -t`` (``handover``)."""

    report: RunReport
    exit_code: int = 0
    handover: str | None = None


def exec_in(project: Project, host: Host, service: str, argv: list[str], interactive: bool,
            on_line: HostLine, reporter: Reporter, opts: RunOptions) -> ExecResult:
    """Run ``argv`` in ``service``'s container on one host. Interactive runs
    need a terminal, which only OpenSSH gives: the result carries the line
    for it, and nothing is run here."""
    codes: list[int] = []
    lines: list[str] = []

    def job(ex: Executor, run: HostRun, h: Host) -> HostReport:
        session = HostSession(project, h, ex, run)
        with run.step("find current release"):
            compose = session.current_compose()
        cmd = compose.exec(service, argv, interactive=interactive)
        if interactive:
            lines.append(cmd.shell(as_root=session.probe().is_root))
            return run.report("ok")
        with run.step(f"exec in {service}"):
            codes.append(ex.stream(cmd, lambda line: on_line(h.name, line), cancel=opts.cancel))
        return run.report("ok")

    shown = f"exec in {service}: {shlex.join(argv)}" + (" (interactive)" if interactive else "")
    rep = run_command("exec", project, [host],
                      audited("exec", context(project), job, lambda _r: shown), reporter, opts)
    if not rep.ok:
        return ExecResult(rep, 1)
    return ExecResult(rep, codes[0] if codes else 0, lines[0] if lines else None)
