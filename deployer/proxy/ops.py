"""``deployer proxy status|logs|restart|upgrade ENV``: the edge proxy of each
host, operated.

- ``status``: the proxy container (running, stopped or absent), its image
  against the one the current release names, the app's maintenance state,
  and each of the app's routes with its upstreams: requests in flight and
  failures from Caddy's admin API (``/reverse_proxy/upstreams``, asked from
  inside the container), and health from a GET of the route's health path
  through the proxy's network (Caddy 2.6's API reports no health).
- ``logs``: the proxy container's logs.
- ``restart`` and ``upgrade`` go one host at a time, under the app's deploy
  lock, and stop at the first host that fails. Both interrupt every app on
  the host for a moment: :data:`RESTART_SEES`, :data:`UPGRADE_SEES`.
  ``upgrade`` pulls (or mirrors, for a key of ``images``) the configured
  image and recreates the container with it: same name, ports, config file
  and certificate volume, joined to the apps' networks before it starts. A
  new image that does not come up is replaced by the old one again.

A ship never upgrades the proxy: it starts one when missing and says when the
running one is not the configured image (:mod:`deployer.proxy.switch`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.commands import proxy as pc
from deployer.commands import proxy_ops as ops
from deployer.errors import ConfigError, HostError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from deployer.config import Host, Project
    from deployer.deploy.hostrun import HostRun
    from deployer.deploy.runner import Job, RunOptions
    from deployer.deploy.session import HostSession
    from deployer.remote.base import Executor
    from deployer.report.model import HostReport, RunReport
    from deployer.report.reporters import Reporter

STOP_TIMEOUT = 10
READY_TIMEOUT = 60.0
RESTART_SEES = (f"while the proxy restarts, users of every app on the host get refused "
                f"connections for a moment; requests in flight get {STOP_TIMEOUT}s to "
                "finish, then they are cut")
UPGRADE_SEES = ("while the proxy is recreated with the new image, users of every app on the "
                "host get refused connections for a few seconds and requests in flight are "
                "cut; its config and certificates are kept")


# -- status (pure parts) -----------------------------------------------------


@dataclass
class Upstream:
    address: str
    healthy: bool | None  # None: not checked (the proxy is not running)
    num_requests: int = 0
    fails: int = 0


@dataclass
class RouteStatus:
    id: str
    service: str
    match: str
    maintenance: bool = False
    health_path: str = ""
    upstreams: list[Upstream] = field(default_factory=list)

    def health(self) -> str:
        if self.maintenance:
            return "maintenance page (503)"
        if not self.upstreams:
            return "no upstream"
        if any(u.healthy is None for u in self.upstreams):
            return "unknown"
        good = sum(bool(u.healthy) for u in self.upstreams)
        return "healthy" if good == len(self.upstreams) else (
            f"{len(self.upstreams) - good} of {len(self.upstreams)} unhealthy")


@dataclass
class ProxyStatus:
    host: str
    container: str  # running | stopped | absent
    image: str
    configured: str | None  # the image the current release names
    maintenance: dict[str, str] | None = None
    routes: list[RouteStatus] = field(default_factory=list)
    other_routes: int = 0  # routes of other projects on the same proxy

    @property
    def up_to_date(self) -> bool | None:
        if not self.image or not self.configured:
            return None
        return ops.same_image(self.image, self.configured)

    def data(self) -> dict[str, Any]:
        return {
            "container": self.container, "image": self.image, "configured": self.configured,
            "up_to_date": self.up_to_date, "maintenance": self.maintenance,
            "other_routes": self.other_routes,
            "routes": [{"id": r.id, "service": r.service, "match": r.match,
                        "maintenance": r.maintenance, "health": r.health(),
                        "health_path": r.health_path,
                        "upstreams": [vars(u) for u in r.upstreams]} for r in self.routes],
        }


def describe_match(route: Mapping[str, Any]) -> str:
    """``hosts a.example, b.example; path /api`` or ``every request``."""
    match = (route.get("match") or [{}])[0]
    parts = []
    if match.get("host"):
        parts.append("hosts " + ", ".join(match["host"]))
    if match.get("path"):
        parts.append("path " + str(match["path"][0]))
    return "; ".join(parts) or "every request"


def _handler(route: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((h for h in route.get("handle") or [] if h.get("handler") == kind), None)


def health_urls(cfg: dict[str, Any] | None, app: str) -> list[str]:
    """The health URL of every upstream of ``app``'s routes."""
    from deployer.proxy.caddy import owned_by

    urls = []
    for r in ops.config_routes(cfg):
        rp = _handler(r, "reverse_proxy") if owned_by(r, app) else None
        if rp is None:
            continue
        uri = rp.get("health_checks", {}).get("active", {}).get("uri", "/")
        urls += [f"http://{u.get('dial')}{uri}" for u in rp.get("upstreams") or []]
    return urls


def route_statuses(cfg: dict[str, Any] | None, app: str,
                   stats: Mapping[str, ops.UpstreamStats] | None,
                   failed: set[str] | None) -> tuple[list[RouteStatus], int]:
    """``app``'s routes in a host's proxy config with their upstreams
    (``stats`` from the admin API, ``failed`` health URLs; None: not
    asked), and how many routes other projects have there."""
    from deployer.proxy.caddy import owned_by

    mine: list[RouteStatus] = []
    others = 0
    for r in ops.config_routes(cfg):
        if not owned_by(r, app):
            others += 1
            continue
        rid = str(r.get("@id"))
        rs = RouteStatus(rid, [*rid.split(":"), "", ""][2], describe_match(r))
        rp = _handler(r, "reverse_proxy")
        if rp is None:
            rs.maintenance = _handler(r, "static_response") is not None
            mine.append(rs)
            continue
        rs.health_path = rp.get("health_checks", {}).get("active", {}).get("uri", "/")
        for u in rp.get("upstreams") or []:
            dial = str(u.get("dial"))
            st = (stats or {}).get(dial)
            healthy = None if failed is None else f"http://{dial}{rs.health_path}" not in failed
            rs.upstreams.append(Upstream(dial, healthy, st.num_requests if st else 0,
                                         st.fails if st else 0))
        mine.append(rs)
    return mine, others


# -- status (on a host) --------------------------------------------------------


def read_status(session: HostSession, configured: str | None = None) -> ProxyStatus:
    """The proxy on ``session``'s host, as it is now (reads only)."""
    from deployer.proxy.maintenance import parse

    ex = session.ex
    sudo = session.probe().docker_sudo
    app = session.project.project_name
    state = pc.parse_state(ex.run(pc.read_state(sudo=sudo)).stdout)
    container = {True: "running", False: "stopped", None: "absent"}[state.running]
    stats: dict[str, ops.UpstreamStats] | None = None
    failed: set[str] | None = None
    if state.running:
        res = ex.run(ops.upstreams(sudo=sudo), check=False)
        stats = ops.parse_upstreams(res.stdout) if res.exit_code == 0 else {}
        urls = health_urls(state.config, app)
        failed = set()
        if urls:
            probe = ex.run(pc.probe_http(urls, 3, sudo=sudo), timeout=60 + 5 * len(urls),
                           check=False)
            failed = set(pc.probe_failures(probe.exit_code, probe.stdout))
    routes, others = route_statuses(state.config, app, stats, failed)
    res = ex.run(ops.read_maintenance(session.dir))
    m = parse(res.stdout) if res.exit_code == 0 else None
    return ProxyStatus(session.host.name, container, state.image, configured,
                       vars(m) if m else None, routes, others)


def current_image(session: HostSession) -> tuple[str | None, str | None]:
    """(the current release, the proxy image it names; None when it has no
    proxied service)."""
    from deployer.deploy.ship import manifest_services
    from deployer.proxy.switch import from_manifest

    st = session.read_state()
    if not st.current:
        return None, None
    plan = from_manifest(session.project, st.manifest, manifest_services(st.manifest, []))
    return st.current, plan.image if plan else None


def needs_proxy(project: Project) -> None:
    if project.config.proxy is None or not project.config.proxy.routes:
        raise ConfigError("deployer.yaml has no proxy.routes: there is no edge proxy to "
                          "operate", "add proxy.routes (see the README, 'Zero-downtime web "
                          "redeploys') and ship once")


def status(project: Project, hosts: list[Host], reporter: Reporter,
           opts: RunOptions) -> tuple[RunReport, dict[str, ProxyStatus]]:
    from deployer.deploy.runner import run_command
    from deployer.deploy.session import HostSession

    needs_proxy(project)
    found: dict[str, ProxyStatus] = {}

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("read current release"):
            current, image = current_image(session)
        with run.step("proxy status"):
            found[host.name] = s = read_status(session, image)
        unhealthy = [r.service for r in s.routes if r.health() not in (
            "healthy", "maintenance page (503)")]
        detail = f"proxy {s.container}" + (f"; not healthy: {', '.join(unhealthy)}"
                                           if unhealthy else "")
        return run.report("ok", release=current, detail=detail)

    return run_command("proxy status", project, hosts, job, reporter, opts), found


# -- logs ------------------------------------------------------------------------


def logs(project: Project, hosts: list[Host], tail: int, follow: bool,
         on_line: Callable[[str, str], None], reporter: Reporter,
         opts: RunOptions) -> RunReport:
    from deployer.deploy.runner import run_command
    from deployer.deploy.session import HostSession

    needs_proxy(project)
    if tail < 0:
        raise ConfigError("--lines must be 0 or more")

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        sudo = HostSession(project, host, ex, run).probe().docker_sudo
        with run.step("proxy logs"):
            code = ex.stream(ops.logs(tail, follow=follow, sudo=sudo),
                             lambda line: on_line(host.name, line), cancel=opts.cancel)
        if code not in (0, -1):
            return run.report("failed", error=f"docker logs {pc.NAME} exited {code} "
                              "(no proxy on this host?)")
        return run.report("ok")

    return run_command("proxy logs", project, hosts, job, reporter, opts)


# -- restart and upgrade -----------------------------------------------------------


def one_at_a_time(opts: RunOptions) -> RunOptions:
    """``opts`` rolled out one host per batch, stopping at the first failure."""
    import dataclasses

    from deployer.deploy.rollout import RolloutPolicy

    p = opts.policy
    return dataclasses.replace(opts, policy=RolloutPolicy(
        batches=[1], max_parallel=1, max_fail_percentage=0, pause=0,
        max_connecting=p.max_connecting))


def _wait_ready(ex: Executor, sudo: bool, timeout: float = READY_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if ex.run(ops.ready(sudo=sudo)).exit_code == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _locked_job(project: Project, action: str,
                body: Callable[[HostSession, pc.ProxyState], HostReport]) -> Job:
    """A per-host job that reads the proxy under the app's deploy lock and
    hands it to ``body``; a host without a proxy container fails."""
    from deployer.deploy.lease import lease_seconds
    from deployer.deploy.session import HostSession, LockHeld
    from deployer.plan import deployer_identity, utc_timestamp

    lease = lease_seconds()
    who, when = deployer_identity(), utc_timestamp()

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        session = HostSession(project, host, ex, run)
        with run.step("read current release"):
            st = session.read_state()
        if not st.current:
            return run.report("failed", release=None, error=(
                "no release deployed yet, so no proxy: nothing changed (a ship starts it)"))
        try:
            with session.locked(who, when, action, lease):
                sudo = session.probe().docker_sudo
                with run.step("read proxy state"):
                    state = pc.parse_state(ex.run(pc.read_state(sudo=sudo)).stdout)
                if state.running is None:
                    return run.report("failed", release=st.current, error=(
                        "no proxy on this host yet: nothing changed (a ship starts it)"))
                return body(session, state)
        except LockHeld as e:
            return run.report("failed", release=st.current, error=e.reason)

    return job


def restart(project: Project, hosts: list[Host], reporter: Reporter,
            opts: RunOptions) -> RunReport:
    from deployer.audit import audited, context
    from deployer.deploy.runner import run_command

    needs_proxy(project)

    def body(session: HostSession, state: pc.ProxyState) -> HostReport:
        run, ex = session.run, session.ex
        sudo = session.probe().docker_sudo
        with run.step("restart the proxy"):
            ex.run(ops.restart(sudo=sudo, stop_timeout=STOP_TIMEOUT), timeout=120)
        with run.step("wait for the proxy"):
            if not _wait_ready(ex, sudo):
                return run.report("failed", error=f"the proxy did not answer within "
                                  f"{READY_TIMEOUT:.0f}s of its restart (`deployer proxy logs`)")
        return run.report("ok", detail="restarted")

    job = audited("proxy restart", context(project), _locked_job(project, "proxy-restart", body))
    return run_command("proxy restart", project, hosts, job, reporter, one_at_a_time(opts))


def resolve_image(project: Project, tag: str) -> str:
    """The configured proxy image as hosts pull it: a reference as it is, or,
    for a key of ``images``, mirrored (or built) and pushed like a ship's
    image stage does, pinned by digest."""
    from deployer.images.build import build_image
    from deployer.images.engine import Engine
    from deployer.images.mirror import mirror_image
    from deployer.images.progress import make_reporter
    from deployer.images.push import login, push_image
    from deployer.images.refs import pinned_ref, repository_name

    assert project.config.proxy is not None
    name = project.config.proxy.image
    image = project.config.images.get(name)
    if image is None:
        return name
    reg = project.registry
    if reg.none:
        raise ConfigError(f"proxy upgrade: proxy.image {name!r} is an image of the project, "
                          "and with `registry: none` it is carried by a ship only",
                          "set proxy.image to a reference the hosts can pull, or ship")
    target = repository_name(reg.server, image.repository)
    reporter = make_reporter()
    eng = Engine.from_env()
    try:
        login(eng, reg)
        if image.source:
            mirror_image(eng, name, image, target, tag, reg, reporter)
        else:
            build_image(eng, name, image, project.root, f"{target}:{tag}", reporter)
        digest = push_image(eng, name, target, tag, reg, reporter)
    finally:
        reporter.close()
        eng.close()
    return pinned_ref(reg.server, image.repository, tag, digest)


def upgrade(project: Project, hosts: list[Host], reporter: Reporter, opts: RunOptions,
            image: str) -> RunReport:
    """Recreate the proxy with ``image`` (:func:`resolve_image`) on each host."""
    from deployer.audit import audited, context
    from deployer.commands import registry
    from deployer.deploy.runner import run_command

    needs_proxy(project)
    cfg = project.config.proxy
    assert cfg is not None
    reg = project.registry
    stamp = f"proxy-{int(time.time())}"

    def body(session: HostSession, state: pc.ProxyState) -> HostReport:
        run, ex = session.run, session.ex
        sudo = session.probe().docker_sudo
        if ops.same_image(state.image, image) and state.running:
            return run.report("unchanged", detail=f"already runs {image}")
        login = None
        if reg.username and reg.password:
            login = registry.registry_login(session.dir, stamp, server=reg.server,
                                            username=reg.username, password=reg.password,
                                            sudo=sudo)
        try:
            env: tuple[tuple[str, str], ...] = ()
            if login is not None:
                with run.step("registry login"):
                    ex.run(login.login)
                env = login.env
            with run.step("pull the proxy image"):
                ex.run(pc.pull(image, sudo=sudo, env=env), timeout=600)
        finally:
            if login is not None:
                with run.step("remove registry credentials"):
                    ex.run(login.cleanup, check=False)
        with run.step("read the proxy's networks"):
            nets = ops.parse_networks(ex.run(ops.networks(sudo=sudo)).stdout)
        run.log(f"recreating the proxy: {UPGRADE_SEES}")
        try:
            with run.step("recreate the proxy"):
                ex.run(ops.recreate(image, cfg.http_port, cfg.https_port, nets, sudo=sudo),
                       timeout=300)
            with run.step("wait for the proxy"):
                if _wait_ready(ex, sudo):
                    return run.report("ok", detail=f"upgraded: {state.image} -> {image}")
            failure = f"did not answer within {READY_TIMEOUT:.0f}s"
        except HostError as e:
            failure = e.reason
        run.log(f"the proxy with {image} failed ({failure}); going back to {state.image}")
        try:
            with run.step("recreate the proxy with its old image"):
                ex.run(ops.recreate(state.image, cfg.http_port, cfg.https_port, nets,
                                    sudo=sudo), timeout=300)
                back = _wait_ready(ex, sudo)
        except HostError as e:
            back, why = False, e.reason
        else:
            why = "it did not answer either"
        error = f"the proxy with {image}: {failure}; "
        error += f"back on {state.image}" if back else f"going back to {state.image} failed: {why}"
        return run.report("failed", error=error)

    job = audited("proxy upgrade", context(project), _locked_job(project, "proxy-upgrade", body),
                  lambda r: f"proxy upgrade to {image}: {r.error or r.detail or r.result}")
    return run_command("proxy upgrade", project, hosts, job, reporter, one_at_a_time(opts))
