"""``ship``, ``rollback`` and ``status`` with ``target: swarm``: ONE job on the
first manager (after the cluster-forming step on every node), through the
same runner, session, lock and releases layout as per-host compose.

    form the swarm (probe every node; init, join) -> read current release
    (unchanged: done) -> lock -> upload the release (files + stack.yaml +
    swarm-objects) -> registry login -> one-shots as swarm jobs (a failure
    stops here: nothing updated) -> stack deploy -> gate on UpdateStatus
    and tasks -> switch ``current`` -> prune releases, then the configs and
    secrets no kept release lists
    on failure: swarm has rolled the failing service back; deployer
    redeploys the previous release's stack (health-gated) so every service
    is back on it, ``current`` untouched -> "rolled back"
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from deployer.commands import health, registry, release
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.lease import lease_seconds
from deployer.deploy.runner import RunOptions, run_command
from deployer.deploy.session import HostSession, LockHeld
from deployer.deploy.ship import ShipSettings, check_cancel, record_failed, upload_release
from deployer.errors import ConfigError, HostError
from deployer.plan import HostPlan, build_plan
from deployer.release_files import ReleaseFile
from deployer.remote.base import Executor
from deployer.remote.ssh import UnreachableError
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter
from deployer.swarm import commands, gate
from deployer.swarm.cluster import ensure_cluster
from deployer.swarm.stack import OBJECTS_FILE, STACK_FILE, FileInfo, Stack, by_digest, convert
from deployer.swarm.topology import Topology, topology

if TYPE_CHECKING:
    from deployer.deploy.api import ImageStage, Stamp

Env = tuple[tuple[str, str], ...]


def whole_cluster(project: Project, hosts: list[Host], command: str) -> Topology:
    """The topology; ``--limit`` cannot pick nodes of one stack."""
    topo = topology(project)
    if {h.name for h in hosts} != {h.name for h in topo.nodes}:
        raise ConfigError(
            f"--limit does not apply to `{command}` with target: swarm: one stack serves "
            "every node",
            "leave out --limit (place services with deploy.placement.constraints)",
        )
    return topo


def stack_plan(project: Project, first: Host, images: dict[str, str], release_id: str,
               tag: str) -> tuple[HostPlan, Stack]:
    """The release of the first manager with the stack file and the list of
    configs and secrets added (files render once, in its context)."""
    from deployer.project import compose_context

    plan = build_plan(project, [first], images, release_id, tag)
    hp = plan.hosts[0]
    files = {f.dest: FileInfo(f.sha256, f.mode, f.secret) for f in hp.files}
    compose = next(f for f in hp.files if f.dest == project.config.compose_file)
    ctx = compose_context(project, images)
    stack = convert(
        hp.compose.text, app=project.app, files=files, where=compose.origin,
        oneshot=hp.compose.oneshot, shared_prefix=f"{project.deploy_dir}/shared",
        lookup=ctx.lookup, compose_dir=ctx.compose_dir, images=by_digest(images),
    )
    for dest in (STACK_FILE, OBJECTS_FILE):
        if dest in files:
            raise ConfigError(f"deployer.yaml: dest {dest!r} is reserved for target: swarm")
    # The stack file holds every ${VAR} resolved, secrets among them: 0600.
    hp.files = [*hp.files,
                ReleaseFile(STACK_FILE, 0o600, "deployer (stack)", data=stack.text.encode(),
                            secret=True),
                ReleaseFile(OBJECTS_FILE, 0o644, "deployer (stack)",
                            data=stack.objects_text().encode())]
    return hp, stack


def check_stack(project: Project, images: dict[str, str], release_id: str, tag: str) -> Stack:
    """``check`` with target: swarm: the stack converts (data binds refused)."""
    return stack_plan(project, topology(project).first, images, release_id, tag)[1]


def _wait_flag(version: str) -> bool:
    m = re.match(r"(\d+)", version)
    return bool(m and int(m.group(1)) >= 26)


class StackSession:
    """The first manager's side of one swarm run."""

    def __init__(self, project: Project, session: HostSession, settings: ShipSettings) -> None:
        self.nodes = len(project.hosts)
        self.project = project
        self.session = session
        self.s = settings
        self.app = project.app
        self.dir = project.deploy_dir

    @property
    def sudo(self) -> bool:
        return self.session.probe().docker_sudo

    def states(self) -> dict[str, gate.ServiceState]:
        res = self.session.ex.run(commands.services_probe(self.app, sudo=self.sudo))
        return gate.parse_probe(res.stdout)

    def deploy(self, release_id: str, env: Env, services: list[str],
               step: str = "stack deploy") -> gate.Verdict:
        """Deploy the release's stack and wait for the gate's verdict."""
        run, ex = self.session.run, self.session.ex
        before = gate.baseline(self.states())
        facts = self.session.probe()
        with run.step(step):
            ex.run(commands.stack_deploy(self.app, release.release_dir(self.dir, release_id),
                                         env, sudo=facts.docker_sudo,
                                         wait=_wait_flag(facts.docker_server_version)),
                   timeout=900)
        with run.step("wait healthy"):
            return self.wait(services, before)

    def wait(self, services: list[str], before: dict[str, str]) -> gate.Verdict:
        """Poll until the gate says healthy or failed. A rolling update
        visits the nodes one by one, each for up to ``health_timeout``, so
        the budget grows with the cluster."""
        limit = self.s.health_timeout * (self.nodes + 2)
        deadline = time.monotonic() + limit
        pull_left = gate.PULL_ALLOWANCE  # time spent pulling does not count
        while True:
            t0 = time.monotonic()
            states = self.states()
            v = gate.evaluate(states, self.app, services, before)
            if v.status != "pending":
                return v
            if gate.pulling(states) and pull_left > 0:
                spent = self.s.poll_interval + time.monotonic() - t0
                deadline += spent
                pull_left -= spent
            if time.monotonic() >= deadline:
                return gate.Verdict("failed", v.service,
                                    f"not healthy after {limit:.0f}s ({v.reason})")
            time.sleep(self.s.poll_interval)

    def show_logs(self, service: str) -> None:
        run = self.session.run
        try:
            res = self.session.ex.run(commands.service_logs(
                f"{self.app}_{service}", tail=self.s.log_tail, sudo=self.sudo), check=False)
        except HostError:
            return
        run.log(f"last {self.s.log_tail} log lines of {service}:")
        for line in (res.stdout + res.stderr).splitlines()[-self.s.log_tail:]:
            run.log(f"  | {line}")


class SwarmShip:
    def __init__(self, project: Project, topo: Topology, hp: HostPlan, stack: Stack,
                 ex: Executor, run: HostRun, settings: ShipSettings,
                 open_executor: Callable[[Host], Executor]) -> None:
        self.project = project
        self.topo = topo
        self.hp = hp
        self.stack = stack
        self.ex = ex
        self.run = run
        self.s = settings
        self.open_executor = open_executor
        self.session = HostSession(project, topo.first, ex, run)
        self.st = StackSession(project, self.session, settings)
        self.dir = project.deploy_dir

    def ship(self) -> HostReport:
        hp, run = self.hp, self.run
        run.release = hp.release
        facts = self.session.ensure_docker()
        for line in ensure_cluster(self.topo, self.ex, facts.docker_sudo, run,
                                   self.open_executor):
            run.log(line)
        with run.step("read current release"):
            state = self.session.read_state()
        if self._unchanged(state):
            return run.report("unchanged", release=state.current, detail="nothing changed")
        self.session.ensure_writable(state)
        check_cancel(self.s, hp.host.name, "lock")
        try:
            with self.session.locked(self.s.who, self.s.when, hp.release,
                                     self.s.lease) as now:
                if now != state.current:
                    with run.step("read current release"):
                        state = self.session.read_state()
                    if self._unchanged(state):
                        return run.report("unchanged", release=state.current,
                                          detail="nothing changed")
                return self._locked(state)
        except LockHeld as e:
            return run.report("failed", release=state.current,
                              error=f"{e.reason}; run `deployer unlock {self.project.env}` "
                              "if that deploy is dead")

    def _unchanged(self, state: release.RemoteState) -> bool:
        m = state.manifest
        return bool(state.current and m and m.get("fingerprint") == self.hp.fingerprint)

    def _locked(self, state: release.RemoteState) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        sudo = self.st.sudo
        with run.step("clean up stale uploads"):
            ex.run(release.remove_partials(self.dir))
            ex.run(registry.remove_stale_configs(self.dir, sudo=sudo))
        check_cancel(self.s, hp.host.name, "upload")
        with run.step("upload release"):
            upload_release(ex, hp, self.dir, self.s)
        login: registry.RegistryLogin | None = None
        reg = self.project.registry
        if reg.username and reg.password:
            login = registry.registry_login(self.dir, hp.release, server=reg.server,
                                            username=reg.username, password=reg.password,
                                            sudo=sudo)
        try:
            env: Env = ()
            if login is not None:
                with run.step("registry login"):
                    ex.run(login.login)
                env = login.env
            failure = self._oneshots(env)
            if failure is not None:
                record_failed(self.session, hp.release, self.s.when)
                return run.report("failed", release=state.current,
                                  error=f"{failure}; nothing was updated")
            check_cancel(self.s, hp.host.name, "stack deploy")
            return self._deploy(state, env)
        finally:
            if login is not None:
                with run.step("remove registry credentials"), contextlib.suppress(HostError):
                    ex.run(login.cleanup, check=False)

    def _oneshots(self, env: Env) -> str | None:
        """Run every one-shot to completion, as a swarm job on the stack's
        networks; the first failure (with its logs) stops the ship."""
        if not self.stack.jobs:
            return None
        run, ex, sudo = self.run, self.ex, self.st.sudo
        cwd = release.release_dir(self.dir, self.hp.release)
        nets = sorted({n for j in self.stack.jobs for n in j.networks}
                      | set(self.stack.networks))
        with run.step("create networks"):
            ex.run(commands.ensure_networks(self.project.app, nets, sudo=sudo))
        for job in self.stack.jobs:
            name = commands.job_name(self.project.app, job.service, self.hp.release)
            with run.step(f"one-shot {job.service}"):
                ex.run(commands.service_rm(name, sudo=sudo), check=False)
                ex.run(commands.job_create(name, self.project.app, job.spec, job.networks, cwd,
                                           env, sudo=sudo), timeout=900)
                try:
                    outcome = self._wait_job(name)
                    if outcome is not None:
                        res = ex.run(commands.service_logs(name, tail=self.s.log_tail,
                                                           sudo=sudo), check=False)
                        run.log(f"last {self.s.log_tail} log lines of {job.service}:")
                        for line in (res.stdout + res.stderr).splitlines()[-self.s.log_tail:]:
                            run.log(f"  | {line}")
                        return f"one-shot {job.service} failed: {outcome}"
                finally:
                    ex.run(commands.service_rm(name, sudo=sudo), check=False)
        return None

    def _wait_job(self, name: str) -> str | None:
        # pulling the image on the node the job lands on counts too
        limit = max(self.s.health_timeout * 3, 180.0)
        deadline = time.monotonic() + limit
        pull_left = gate.PULL_ALLOWANCE
        while True:
            t0 = time.monotonic()
            res = self.ex.run(commands.job_tasks(name, sudo=self.st.sudo), check=False)
            tasks = [json.loads(line) for line in res.stdout.splitlines()
                     if line.strip().startswith("{")]
            states = [str(t.get("CurrentState", "")).split(" ")[0].lower() for t in tasks]
            if "complete" in states:
                return None
            for t, s in zip(tasks, states, strict=True):
                if s in ("failed", "rejected", "shutdown", "orphaned"):
                    return str(t.get("Error") or s).strip('"')
            if (not states or set(states) <= set(gate.BEFORE_START)) and pull_left > 0:
                spent = self.s.poll_interval + time.monotonic() - t0
                pull_left -= spent  # the node is pulling the image
                deadline += spent
            if time.monotonic() >= deadline:
                return f"not done after {limit:.0f}s"
            time.sleep(self.s.poll_interval)

    def _deploy(self, state: release.RemoteState, env: Env) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        try:
            verdict = self.st.deploy(hp.release, env, self.stack.services)
        except UnreachableError:
            raise  # the manager is gone: nothing can be redeployed from here
        except HostError as e:
            # `stack deploy` itself failed (the manager timed out, say): some
            # services may already run the new spec, so redeploy the previous
            # stack as for an unhealthy release rather than leave a mix.
            verdict = gate.Verdict("failed", reason=f"stack deploy failed: {e.reason}")
        if verdict.healthy:
            with run.step("switch current"):
                ex.run(release.switch_current(self.dir, hp.release, self.s.when))
            with run.step("prune releases"):
                ex.run(release.prune(self.dir, self.s.keep_releases), check=False)
                res = ex.run(commands.prune_objects(self.dir, self.project.app,
                                                    sudo=self.st.sudo), check=False)
                for line in res.stdout.splitlines():
                    run.log(line)
            return run.report("deployed", detail=self._detail())
        record_failed(self.session, hp.release, self.s.when)
        if verdict.service:
            self.st.show_logs(verdict.service)
        failure = verdict.describe()
        previous = state.current
        if not previous:
            return run.report("failed", release=None,
                              error=f"{failure} (first release: nothing to roll back to)")
        run.log(f"release {hp.release} failed ({failure}); redeploying {previous}")
        services = _stack_services(self.session, previous) or self.stack.services
        back = self.st.deploy(previous, env, services, step=f"stack deploy {previous}")
        if not back.healthy:
            return run.report("failed", release=previous,
                              error=f"{failure}; redeploying {previous}: {back.describe()}")
        return run.report("rolled back", release=previous, rolled_back_from=hp.release,
                          error=failure)

    def _detail(self) -> str:
        return (f"stack {self.project.app}: {len(self.stack.services)} services on "
                f"{len(self.topo.nodes)} nodes")


def check_ship(project: Project, hosts: list[Host], stamp: Stamp) -> Topology:
    """What a swarm ship refuses before any hook runs or image is built:
    ``--limit``, and a compose file the stack cannot take."""
    topo = whole_cluster(project, hosts, "ship")
    stack_plan(project, topo.first, _offline(project, stamp.tag), stamp.release, stamp.tag)
    return topo


def ship_stack(project: Project, hosts: list[Host], reporter: Callable[[], Reporter],
               opts: RunOptions, stamp: Stamp, stage: ImageStage,
               hook: Callable[[str], None]) -> RunReport:
    """``deployer ship`` with ``target: swarm``, from the images on: the
    caller (:func:`deployer.deploy.api.ship_hosts`) checked it with
    :func:`check_ship`, runs the local hooks around it (``hook``: this one
    runs ``pre_deploy``, after the images) and finishes the reporter."""
    from deployer.audit import audited
    from deployer.audit import context as audit_context
    from deployer.deploy.interrupt import interruptible

    topo = whole_cluster(project, hosts, "ship")
    images = stage(project, stamp.tag)
    hp, stack = stack_plan(project, topo.first, images, stamp.release, stamp.tag)
    settings = ShipSettings(who=stamp.who, when=stamp.when,
                            health_timeout=project.config.health_timeout,
                            keep_releases=project.config.keep_releases, cancel=opts.cancel,
                            hosts=tuple(h.name for h in topo.nodes), lease=lease_seconds())
    rep = reporter()
    hook("pre_deploy")

    def ship_first(ex: Executor, run: HostRun, host: Host) -> HostReport:
        return SwarmShip(project, topo, hp, stack, ex, run, settings, opts.executor).ship()

    job = audited("ship", audit_context(project), ship_first)
    with interruptible(opts.cancel):
        return run_command("ship", project, [topo.first], job, rep, opts,
                           release=stamp.release, images=images)


def _offline(project: Project, tag: str) -> dict[str, str]:
    from deployer.plan import image_refs

    return image_refs(project, tag)


# -- day 2 -------------------------------------------------------------------


def rollback_stack(project: Project, hosts: list[Host], to: str | None, reporter: Reporter,
                   opts: RunOptions) -> RunReport:
    """Redeploy a previous release's stack file (and so its configs), gated
    like ship; ``current`` moves only when it is healthy."""
    from deployer.plan import deployer_identity, utc_timestamp

    topo = whole_cluster(project, hosts, "rollback")
    settings = ShipSettings(deployer_identity(), utc_timestamp(),
                            project.config.health_timeout, project.config.keep_releases,
                            cancel=opts.cancel, lease=lease_seconds())

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        session.ensure_docker()
        st = StackSession(project, session, settings)
        with run.step("list releases"):
            rel = session.releases()
        target = to or rel.previous()
        if not target:
            return run.report("failed", release=rel.current,
                              error="no earlier release to roll back to")
        if target not in rel.releases:
            return run.report("failed", release=rel.current,
                              error=f"release {target} not found on {host.name} "
                              f"(have: {', '.join(rel.releases) or 'none'})")
        if target == rel.current:
            return run.report("unchanged", release=target, detail="already current")
        check_cancel(settings, host.name, "lock")
        try:
            with session.locked(settings.who, settings.when, f"rollback-{target}",
                                settings.lease):
                return _roll_back(project, session, st, rel.current, target)
        except LockHeld as e:
            return run.report("failed", release=rel.current, error=e.reason)

    return run_command("rollback", project, [topo.first], job, reporter, opts)


def _stack_services(session: HostSession, release_id: str) -> list[str]:
    """The services of a release's stack file on the manager."""
    from deployer.project.yaml12 import load_fast

    path = f"{release.release_dir(session.dir, release_id)}/{STACK_FILE}"
    res = session.ex.run(commands.Command(("cat", "--", path), ok_codes=(0, 1),
                                          description=f"read the stack file of {release_id}"))
    try:
        doc = load_fast(res.stdout)
    except Exception:
        return []
    svcs = doc.get("services") if isinstance(doc, dict) else None
    return [str(s) for s in svcs] if isinstance(svcs, dict) else []


def _roll_back(project: Project, session: HostSession, st: StackSession, current: str | None,
               target: str) -> HostReport:
    run, ex = session.run, session.ex
    services = _stack_services(session, target)
    if not services:
        return run.report("failed", release=current,
                          error=f"release {target} has no stack file (was it shipped with "
                          "target: swarm?)")
    env: Env = ()
    login = None
    reg = project.registry
    if reg.username and reg.password:
        login = registry.registry_login(session.dir, f"rollback-{target}", server=reg.server,
                                        username=reg.username, password=reg.password,
                                        sudo=st.sudo)
    try:
        if login is not None:
            with run.step("registry login"):
                ex.run(login.login)
            env = login.env
        verdict = st.deploy(target, env, services, step=f"stack deploy {target}")
        if verdict.healthy:
            with run.step("switch current"):
                ex.run(release.switch_current(session.dir, target, st.s.when))
            return run.report("rolled back", release=target, rolled_back_from=current,
                              detail=f"from {current or 'none'} to {target}")
        if verdict.service:
            st.show_logs(verdict.service)
        error = f"release {target} unhealthy: {verdict.describe()}"
        if current:
            back = st.deploy(current, env, _stack_services(session, current),
                             step=f"stack deploy {current}")
            error += (f"; {current} restored" if back.healthy
                      else f"; restoring {current}: {back.describe()}")
        return run.report("failed", release=current, error=error)
    finally:
        if login is not None:
            with run.step("remove registry credentials"), contextlib.suppress(HostError):
                ex.run(login.cleanup, check=False)


def status_stack(project: Project, hosts: list[Host], reporter: Reporter, opts: RunOptions
                 ) -> tuple[RunReport, dict[str, list[health.ContainerRow]]]:
    """``status`` of the stack, read on the first manager: one row per task
    that should run (its node and state) with the service's replicas running
    and desired, its update state and image."""
    topo = topology(project)
    rows: dict[str, list[health.ContainerRow]] = {}
    settings = ShipSettings("", "", project.config.health_timeout, project.config.keep_releases)

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        st = StackSession(project, session, settings)
        with run.step("status"):
            states = st.states()
            current = session.read_state().current
        rows[host.name] = service_rows(project.app, states)
        return run.report("ok", release=current, detail=f"{len(states)} services")

    return run_command("status", project, [topo.first], job, reporter, opts), rows


def service_rows(app: str, states: dict[str, gate.ServiceState]) -> list[health.ContainerRow]:
    out: list[health.ContainerRow] = []
    for name, s in sorted(states.items()):
        svc = name.removeprefix(f"{app}_")
        summary = f"{s.running}/{s.desired} running, update {s.update_state or '-'}"
        tasks: list[gate.Task | None] = [t for t in s.tasks if t.desired.lower() == "running"]
        tasks = tasks or [None]
        for t in tasks:
            out.append(health.ContainerRow(
                name=f"{name}.{t.node}" if t else name,
                service=f"{svc} @ {t.node}" if t else svc,
                status=t.state.split(" ")[0].lower() if t else "no tasks",
                health=summary, image=s.image, error=t.error if t else ""))
    return out


def logs_stack(project: Project, service: str | None, tail: int, follow: bool,
               on_line: Callable[[str, str], None], reporter: Reporter,
               opts: RunOptions) -> RunReport:
    """``logs`` with target: swarm: ``docker service logs`` on the first
    manager (each line names its task and node)."""
    topo = topology(project)

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("logs"):
            code = ex.stream(commands.stack_logs(project.app, service, tail=tail, follow=follow,
                                                 sudo=session.probe().docker_sudo),
                             lambda line: on_line(host.name, line), cancel=opts.cancel)
        if code not in (0, -1):
            return run.report("failed", error=f"docker service logs exited {code}")
        return run.report("ok")

    return run_command("logs", project, [topo.first], job, reporter, opts)
