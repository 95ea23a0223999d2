"""The proxy-switch strategy: how ship and rollback bring up a release whose
services are routed by the edge proxy, without dropping a request.

    services not proxied: compose up (migrations run here) -> wait healthy
    proxied: start N new containers beside the old (--scale, --no-recreate)
    -> wait for their container healthcheck -> the proxy's HTTP check on
    health.path -> switch the routes' upstreams (one atomic, graceful reload)
    -> drain: wait until no request is in flight on the old containers (up to
    drain_timeout) -> stop and remove the old containers

On a failure before the switch the new containers are removed and the old
ones were never touched, so a failing release never receives a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from deployer.commands import health, proxy_tls
from deployer.commands import proxy as pc
from deployer.commands.compose import Compose
from deployer.commands.proxy_ops import same_image
from deployer.config import Project
from deployer.config.models import ProxyConfig, RouteConfig
from deployer.deploy.session import HostSession
from deployer.errors import HostError
from deployer.proxy import caddy, maintenance, tls

WRITE_ATTEMPTS = 5


@dataclass(frozen=True)
class ProxyPlan:
    """The proxy's part of one host's release: ``routes`` this host serves
    (services it runs) and the proxy image to start when it is missing."""

    config: ProxyConfig
    routes: tuple[RouteConfig, ...]
    image: str

    @property
    def services(self) -> list[str]:
        return [r.service for r in self.routes]

    def not_proxied(self, services: Collection[str]) -> list[str]:
        mine = set(self.services)
        return [s for s in services if s not in mine]


def host_proxy(config: ProxyConfig | None, services: Collection[str],
               images: dict[str, str]) -> ProxyPlan | None:
    """The host's :class:`ProxyPlan`, or None when no route is for one of its
    ``services`` (then ship runs plain ``compose up``)."""
    if config is None:
        return None
    routes = tuple(r for r in config.routes if r.service in services)
    if not routes:
        return None
    return ProxyPlan(config, routes, images.get(config.image, config.image))


def from_manifest(project: Project, manifest: dict[str, Any] | None,
                  services: Collection[str]) -> ProxyPlan | None:
    """The proxy plan a release was shipped with (rollback switches back to
    exactly its routes); the project's for a manifest without one."""
    raw = (manifest or {}).get("proxy")
    config = ProxyConfig.model_validate(raw) if isinstance(raw, dict) else project.config.proxy
    return host_proxy(config, services, dict((manifest or {}).get("images") or {}))


class SwitchFailed(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Switch:
    """One host's switch to the release of ``compose``."""

    def __init__(self, session: HostSession, compose: Compose, plan: ProxyPlan,
                 health_timeout: float, poll_interval: float = 1.0) -> None:
        self.session = session
        self.compose = compose
        self.plan = plan
        self.timeout = health_timeout
        self.poll = poll_interval
        self.sudo = compose.sudo
        # The compose project (the app, or the environment's project_name):
        # its containers' label, and the owner of its routes on a shared proxy.
        self.app = compose.app
        # The release being switched to (its directory holds its TLS files).
        self.release = posixpath.basename(compose.cwd or "")
        # The 503 page this app's routes show instead (``deployer maintenance``;
        # None: off), read from the host at the first switch unless set.
        self._page: tuple[str | None] | None = None

    # -- small pieces ------------------------------------------------------

    def _rows(self, description: str = "") -> list[health.ContainerRow]:
        cmd = health.containers(self.app, sudo=self.sudo)
        if description:
            cmd = dataclasses.replace(cmd, description=description)
        out = self.session.ex.run(cmd).stdout
        return [r for r in health.parse_containers(out) if not r.oneoff]

    def _names(self, service: str, description: str = "") -> list[str]:
        return sorted(r.name for r in self._rows(description)
                      if r.service == service and r.status in ("running", "restarting",
                                                              "created", "paused"))

    def ensure_proxy(self, env: tuple[tuple[str, str], ...]) -> pc.ProxyState:
        """Start the proxy when it is not running (pulling its image when it
        has no container). A running proxy is never upgraded here."""
        ex, run = self.session.ex, self.session.run
        with run.step("read proxy state"):
            state = pc.parse_state(ex.run(pc.read_state(sudo=self.sudo)).stdout)
        if state.running:
            if state.image and not same_image(state.image, self.plan.image):
                run.log(f"the proxy is out of date: it runs {state.image}, the configuration "
                        f"names {self.plan.image}; a ship never upgrades it (users would see "
                        f"a gap): `deployer proxy upgrade {self.session.project.env}` does, "
                        "one host at a time")
            return state
        cfg = self.plan.config
        if state.running is None:
            with run.step("pull the proxy image"):
                ex.run(pc.pull(self.plan.image, sudo=self.sudo, env=env), timeout=600)
        if state.config is None:
            with run.step("write the proxy config"):
                content = caddy.dumps(caddy.merge(None, self.app, cfg, []))
                ex.run(pc.write_config(content, state.sha))
        with run.step("start the proxy"):
            ex.run(pc.start(self.plan.image, cfg.http_port, cfg.https_port, sudo=self.sudo))
        with run.step("read proxy state"):
            return pc.parse_state(ex.run(pc.read_state(sudo=self.sudo)).stdout)

    def apply_routes(self, upstreams: dict[str, list[str]]) -> None:
        """Merge this app's routes (to ``upstreams``) into the host's config
        and reload the proxy; retried when another app wrote in between."""
        ex = self.session.ex
        for _ in range(WRITE_ATTEMPTS):
            state = pc.parse_state(ex.run(pc.read_state(sudo=self.sudo)).stdout)
            routes = [caddy.render_route(self.app, r, upstreams.get(r.service, []))
                      for r in self.plan.routes]
            routes = maintenance.apply(routes, self._maintenance_page())
            merged = caddy.merge(state.config, self.app, self.plan.config, routes)
            merged = tls.apply(merged, self.app, self.plan.config, self.plan.routes,
                               self.release)
            content = caddy.dumps(merged)
            res = ex.run(pc.write_config(content, state.sha))
            if res.exit_code != pc.EXIT_CONFLICT:
                try:
                    ex.run(pc.reload(sudo=self.sudo))
                except HostError:
                    self._restore_file(state.config, content)
                    raise
                has = tls.references_files(merged, self.app)
                if has or tls.references_files(state.config, self.app):
                    ex.run(proxy_tls.prune(tls.host_dir(self.app), self.release if has else ""),
                           check=False)
                return
        raise HostError(self.session.host.name, "switch",
                        "the proxy config kept changing under this run (another deploy?)",
                        "run the command again")

    def _restore_file(self, before: dict[str, Any] | None, written: str) -> None:
        """Put the config file back as it was read when the proxy refused to
        load the new one: Caddy keeps running the old config, and a later
        proxy restart must not load the refused one. Best effort (a config
        another app wrote meanwhile is left alone: its sha differs)."""
        if before is None:
            return
        sha = hashlib.sha256(written.encode()).hexdigest()
        self.session.ex.run(pc.write_config(caddy.dumps(before), sha), check=False)

    def _install_tls(self) -> None:
        """Put the release's certificates and keys where the proxy reads
        them (before the switch: the new config names them)."""
        files = tls.shipped(self.plan.routes, self.plan.config.acme)
        if files and self.compose.cwd:
            with self.session.run.step("install TLS files"):
                self.session.ex.run(proxy_tls.install(
                    self.compose.cwd, tls.RELEASE_DIR,
                    f"{tls.host_dir(self.app)}/{self.release}", files))

    def set_page(self, page: str | None) -> None:
        """Switch to the maintenance ``page`` (None: to the containers),
        whatever the host's maintenance state says."""
        self._page = (page,)

    def _maintenance_page(self) -> str | None:
        if self._page is None:
            self._page = (maintenance.read_page(self.session),)
        return self._page[0]

    def _wait_new_healthy(self, new: dict[str, list[str]]) -> str | None:
        """The container healthcheck of the new containers, then the proxy's
        HTTP check on ``health.path``; None when both pass."""
        names = {n for ns in new.values() for n in ns}
        deadline = time.monotonic() + self.timeout
        run, ex = self.session.run, self.session.ex
        with run.step("wait healthy"):
            while True:
                rows = [r for r in self._rows() if r.name in names]
                v = health.evaluate(rows, list(new))
                if v.failed:
                    return v.describe()
                if v.healthy:
                    break
                if time.monotonic() >= deadline:
                    return f"not healthy after {self.timeout:.0f}s ({v.describe()})"
                time.sleep(self.poll / 2)
        urls = {f"http://{n}:{r.port}{r.health.path}": r for r in self.plan.routes
                for n in new.get(r.service, [])}
        with run.step("proxy health check"):
            ex.run(pc.connect_networks(sorted(names), sudo=self.sudo))
            while True:
                res = ex.run(pc.probe_http(sorted(urls),
                                           max(r.health.timeout for r in self.plan.routes),
                                           sudo=self.sudo), timeout=self.timeout + 60)
                bad = pc.probe_failures(res.exit_code, res.stdout)
                if not bad:
                    return None
                if time.monotonic() >= deadline:
                    service = urls[bad[0]].service if bad[0] in urls else "?"
                    return f"{service}: {bad[0]} did not answer 2xx within {self.timeout:.0f}s"
                time.sleep(min(r.health.interval for r in self.plan.routes))

    def _drain(self, old: dict[str, list[str]]) -> None:
        ex, run = self.session.ex, self.session.run
        by_service = {r.service: r for r in self.plan.routes}
        pending = {s: ns for s, ns in old.items() if ns}
        if not pending:
            return
        with run.step("drain old containers"):
            start = time.monotonic()
            while pending:
                for s in list(pending):
                    route = by_service[s]
                    out = ex.run(pc.connections(pending[s], sudo=self.sudo)).stdout
                    busy = pc.count_established(out, route.port)
                    if busy == 0:
                        del pending[s]
                    elif time.monotonic() - start >= route.drain_timeout:
                        run.log(f"{s}: {busy} request(s) still in flight after "
                                f"drain_timeout {route.drain_timeout:g}s; stopping anyway")
                        del pending[s]
                if pending:
                    time.sleep(0.25)

    # -- the strategy ------------------------------------------------------

    def run(self, services: list[str], oneshot: list[str] | None,
            may_exit: Collection[str], env: tuple[tuple[str, str], ...],
            step: str = "compose up") -> str | None:
        """Bring the release up behind the proxy. None when it serves every
        route, else why not (the new containers are gone again then)."""
        from deployer.deploy.ship import wait_healthy

        ex, run = self.session.ex, self.session.run
        others = self.plan.not_proxied(services)
        try:
            self.ensure_proxy(env)
            if others:
                with run.step(step):
                    ex.run(self.compose.up(others), timeout=max(600.0, self.timeout))
                with run.step("wait healthy (not proxied)"):
                    v = wait_healthy(ex, self.app, self.sudo, others, oneshot, self.timeout,
                                     self.poll, may_exit)
                if not v.healthy:
                    return v.describe()
        except HostError as e:
            return e.message
        old = {s: self._names(s, "list the running containers") for s in self.plan.services}
        new: dict[str, list[str]] = {}
        try:
            for r in self.plan.routes:
                with run.step(f"start new {r.service} containers"):
                    ex.run(pc.scale_up(self.compose, r.service, len(old[r.service]) + r.replicas),
                           timeout=max(600.0, self.timeout))
                new[r.service] = [n for n in self._names(r.service) if n not in old[r.service]]
            failure = self._wait_new_healthy(new)
        except HostError as e:
            failure = e.message
        if failure is None:
            try:
                self._install_tls()
                with run.step("switch the proxy"):
                    self.apply_routes({r.service: [f"{n}:{r.port}" for n in new[r.service]]
                                       for r in self.plan.routes})
            except HostError as e:
                failure = f"switch failed: {e.message}"
        if failure is not None:
            gone = [n for ns in new.values() for n in ns]
            if gone:
                with run.step("remove the new containers"):
                    ex.run(pc.remove(gone, sudo=self.sudo, stop_timeout=1), check=False)
            return failure
        self._drain(old)
        stale = [n for ns in old.values() for n in ns]
        if stale:
            with run.step("remove the old containers"):
                ex.run(pc.remove(stale, sudo=self.sudo), check=False)
        return None
