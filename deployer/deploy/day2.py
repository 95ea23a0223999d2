"""Day-2 operations over the inventory: bootstrap, rollback, releases,
status, lock, unlock. Same shape as ship: a per-host job over the rollout,
one connection per host, a report per host."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deployer.commands import health, lock, release
from deployer.commands.compose import Compose
from deployer.config import Host, Project
from deployer.deploy.api import RunOptions, _now, run_over_hosts
from deployer.deploy.hostrun import HostRun
from deployer.deploy.ship import ShipSettings, ensure_docker, wait_healthy
from deployer.errors import HostError
from deployer.plan import deployer_identity
from deployer.remote.base import Executor
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter

Job = Callable[[Executor, HostRun, Host], HostReport]


def _over(project: Project, hosts: list[Host], command: str, job: Job,
          reporter: Reporter, opts: RunOptions) -> RunReport:
    t0 = time.monotonic()
    reports = run_over_hosts(
        hosts, lambda h: h, lambda ex, run, h: job(ex, run, h), reporter, opts  # type: ignore[arg-type,return-value]
    )
    return RunReport(command, project.app, project.env, None, {}, reports,
                     time.monotonic() - t0, interrupted=opts.cancel.is_set())


def bootstrap(project: Project, hosts: list[Host], reporter: Reporter,
              opts: RunOptions) -> RunReport:
    from deployer.deploy.bootstrap import bootstrap_host

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("bootstrap"):
            out = bootstrap_host(ex, host)
        return run.report("ok", detail=out.detail)

    return _over(project, hosts, "bootstrap", job, reporter, opts)


def _releases(ex: Executor, project: Project) -> release.Releases:
    return release.parse_releases(ex.run(release.list_releases(project.deploy_dir)).stdout)


def releases(project: Project, hosts: list[Host], reporter: Reporter,
             opts: RunOptions) -> tuple[RunReport, dict[str, release.Releases]]:
    found: dict[str, release.Releases] = {}

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("list releases"):
            found[host.name] = r = _releases(ex, project)
        return run.report("ok", release=r.current, detail=f"{len(r.releases)} releases")

    return _over(project, hosts, "releases", job, reporter, opts), found


def rollback(project: Project, hosts: list[Host], to: str | None, reporter: Reporter,
             opts: RunOptions) -> RunReport:
    """Back to the previous (or named) release, health-gated like ship: the
    old release is started, and ``current`` moves only once it is healthy."""
    settings = ShipSettings(deployer_identity(), _now(), project.config.health_timeout,
                            project.config.keep_releases, cancel=opts.cancel)
    d = project.deploy_dir

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        facts = ensure_docker(ex, host, run)
        with run.step("list releases"):
            rel = _releases(ex, project)
        target = to or rel.previous()
        if not target:
            return run.report("failed", release=rel.current,
                              error="no earlier release to roll back to")
        if target not in rel.releases:
            return run.report("failed", release=rel.current,
                              error=f"release {target} not found on this host "
                              f"(have: {', '.join(rel.releases) or 'none'})")
        if target == rel.current:
            return run.report("unchanged", release=target, detail="already current")
        with run.step("lock"):
            res = ex.run(lock.acquire(d, who=settings.who, when=settings.when,
                                      release=f"rollback-{target}"))
        if res.exit_code == lock.EXIT_LOCKED:
            return run.report("failed", release=rel.current,
                              error=lock.parse_lock_info(res.stdout).describe())
        try:
            now = lock.parse_current_under_lock(res.stdout)
            if now != rel.current:
                return run.report("failed", release=now,
                                  error=f"another run switched this host to {now} while "
                                  "its releases were listed; nothing changed, run the "
                                  "rollback again")
            compose = Compose(project.app, project.config.compose_file, facts.compose or "v2",
                              facts.docker_sudo, release.release_dir(d, target))
            with run.step(f"compose up {target}"):
                ex.run(compose.up(), timeout=600)
            with run.step("wait healthy"):
                services = _manifest_services(ex, d, target)
                v = wait_healthy(ex, project.app, facts, services, None,
                                 settings.health_timeout, settings.poll_interval)
            if not v.healthy:
                if rel.current:
                    with run.step(f"restore {rel.current}"):
                        cur = Compose(project.app, project.config.compose_file,
                                      facts.compose or "v2", facts.docker_sudo,
                                      release.release_dir(d, rel.current))
                        ex.run(cur.up(), timeout=600, check=False)
                return run.report("failed", release=rel.current,
                                  error=f"release {target} unhealthy: {v.describe()}")
            with run.step("switch current"):
                ex.run(release.switch_current(d, target))
            return run.report("deployed", release=target, detail=f"rolled back from {rel.current}")
        finally:
            ex.run(lock.release(d, f"rollback-{target}"), check=False)

    return _over(project, hosts, "rollback", job, reporter, opts)


def _manifest_services(ex: Executor, deploy_dir: str, rid: str) -> list[str]:
    import json

    from deployer.commands.base import Command

    res = ex.run(Command(("cat", f"{release.release_dir(deploy_dir, rid)}/manifest.json")),
                 check=False)
    try:
        data: dict[str, Any] = json.loads(res.stdout)
        return list(data.get("services") or [])
    except ValueError:
        return []


def status(project: Project, hosts: list[Host], reporter: Reporter,
           opts: RunOptions) -> tuple[RunReport, dict[str, list[health.ContainerRow]]]:
    rows: dict[str, list[health.ContainerRow]] = {}

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        from deployer.deploy.bootstrap import probe

        with run.step("status"):
            facts = probe(ex)
            res = ex.run(health.containers(project.app, sudo=facts.docker_sudo), check=False)
            rows[host.name] = health.parse_containers(res.stdout)
            st = release.parse_state(ex.run(release.read_state(project.deploy_dir)).stdout)
        return run.report("ok", release=st.current, detail=f"{len(rows[host.name])} containers")

    return _over(project, hosts, "status", job, reporter, opts), rows


def set_lock(project: Project, hosts: list[Host], message: str, reporter: Reporter,
             opts: RunOptions) -> RunReport:
    d = project.deploy_dir

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("lock"):
            st = release.parse_state(ex.run(release.read_state(d)).stdout)
            if not st.writable:
                from deployer.deploy.bootstrap import probe

                ex.run(release.prepare(d, probe(ex).user))
            res = ex.run(lock.acquire(d, who=deployer_identity(), when=_now(), message=message))
        if res.exit_code == lock.EXIT_LOCKED:
            return run.report("failed", error=lock.parse_lock_info(res.stdout).describe())
        return run.report("ok", detail="locked")

    return _over(project, hosts, "lock", job, reporter, opts)


def unlock(project: Project, hosts: list[Host], reporter: Reporter,
           opts: RunOptions) -> RunReport:
    d = project.deploy_dir

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("unlock"):
            shown = ex.run(lock.show(d))
            ex.run(lock.release(d))
        if shown.exit_code == lock.EXIT_LOCKED:
            return run.report("ok", detail="released " + lock.parse_lock_info(shown.stdout)
                              .describe())
        return run.report("ok", detail="was not locked")

    return _over(project, hosts, "unlock", job, reporter, opts)


__all__ = ["HostError", "bootstrap", "releases", "rollback", "set_lock", "status", "unlock"]
