"""``deployer maintenance ENV on|off``: the proxy answers this app's routes
with a 503 page, and ``off`` routes them to the app's containers again.

- Only this app's routes change (those whose ``@id`` it owns, see
  :mod:`deployer.proxy.caddy`); other projects on the same proxy keep serving.
- Each change is one config load, which Caddy applies gracefully: requests
  in flight finish on the containers, new ones get the page (or, for ``off``,
  the containers again). No connection is dropped.
- The state lives on the host, in ``<deploy_dir>/.maintenance`` (JSON: the
  message, who, when). Every switch (ship, rollback) reads it, so a ship while
  maintenance is on keeps the page up: the new release is started, gated and
  switched to underneath, and ``off`` shows it.
- ``on`` records the state first, then loads the page; ``off`` loads the
  routes first, then removes the state. Either way a failure in between is
  repaired by running the same command again.
- It runs under the deploy lock, so no ship or rollback of the app switches
  at the same time.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.commands import proxy_ops as ops
from deployer.errors import ConfigError

if TYPE_CHECKING:  # the switch imports this module; the deploy layer imports the switch
    from deployer.config import Host, Project
    from deployer.deploy.hostrun import HostRun
    from deployer.deploy.runner import RunOptions
    from deployer.deploy.session import HostSession
    from deployer.remote.base import Executor
    from deployer.report.model import HostReport, RunReport
    from deployer.report.reporters import Reporter

DEFAULT_MESSAGE = "This site is down for maintenance. Please try again in a few minutes."
MAX_MESSAGE = 4000
RETRY_AFTER = "120"


@dataclass(frozen=True)
class Maintenance:
    """What ``<deploy_dir>/.maintenance`` says."""

    message: str
    who: str = ""
    when: str = ""

    def dumps(self) -> str:
        return json.dumps({"message": self.message, "who": self.who, "when": self.when}) + "\n"


def parse(stdout: str) -> Maintenance | None:
    """The state file's content; None when there is none (maintenance off).
    A file that is not ours still means on (with the default page): it was
    meant to be, and ``off`` removes it."""
    if not stdout.strip():
        return None
    try:
        data = json.loads(stdout)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    msg = data.get("message")
    return Maintenance(msg if isinstance(msg, str) else DEFAULT_MESSAGE,
                       str(data.get("who") or ""), str(data.get("when") or ""))


def check_message(message: str | None) -> str:
    """``--message``, or the default; refused (exit 2) when unusable."""
    if message is None:
        return DEFAULT_MESSAGE
    if not message.strip():
        raise ConfigError("--message is empty", "give the text users should see, or leave "
                          "--message out for the default page")
    if len(message) > MAX_MESSAGE:
        raise ConfigError(f"--message is {len(message)} characters long; at most "
                          f"{MAX_MESSAGE}")
    return message


def page(message: str) -> str:
    """The 503 page: ``message`` HTML-escaped, and braces as entities too, so
    Caddy's placeholders (``{env.SECRET}``) in it stay plain text."""
    text = html.escape(message).replace("{", "&#123;").replace("}", "&#125;")
    text = text.replace("\n", "<br>\n")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Down for maintenance</title></head>\n"
            f"<body><h1>Down for maintenance</h1>\n<p>{text}</p></body></html>\n")


def _static(body: str) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": 503,
        "headers": {"Content-Type": ["text/html; charset=utf-8"],
                    "Retry-After": [RETRY_AFTER], "Cache-Control": ["no-store"]},
        "body": body,
    }


def route(live: Mapping[str, Any], body: str) -> dict[str, Any]:
    """``live`` (a route of :func:`deployer.proxy.caddy.render_route`) with its
    proxying replaced by the 503 page: the same ``@id`` and match, so exactly
    the requests the app serves get it."""
    out = dict(live)
    handlers = list(out.get("handle") or [])
    if any(h.get("handler") == "reverse_proxy" for h in handlers):
        out["handle"] = [_static(body) if h.get("handler") == "reverse_proxy" else h
                         for h in handlers]
    return out


def apply(routes: Sequence[Mapping[str, Any]], body: str | None) -> list[dict[str, Any]]:
    """``routes`` as the proxy should serve them: as they are, or (``body``)
    each one answering with the maintenance page."""
    if body is None:
        return [dict(r) for r in routes]
    return [route(r, body) for r in routes]


def read_page(session: HostSession) -> str | None:
    """The page this app's routes show (None: maintenance off), from the host."""
    res = session.ex.run(ops.read_maintenance(session.dir))
    state = parse(res.stdout) if res.exit_code == 0 else None
    return None if state is None else page(state.message)


# -- the command -------------------------------------------------------------


def run(project: Project, hosts: list[Host], on: bool, message: str | None,
        reporter: Reporter, opts: RunOptions) -> RunReport:
    """``deployer maintenance ENV on|off`` on every targeted host."""
    from deployer.audit import audited, context
    from deployer.deploy.lease import lease_seconds
    from deployer.deploy.runner import run_command
    from deployer.deploy.session import HostSession
    from deployer.plan import deployer_identity, utc_timestamp

    if project.config.proxy is None or not project.config.proxy.routes:
        raise ConfigError("maintenance needs the edge proxy: deployer.yaml has no "
                          "proxy.routes", "add proxy.routes (see the README, 'Zero-downtime "
                          "web redeploys') and ship once")
    if not on and message is not None:
        raise ConfigError("--message goes with `maintenance ENV on`, not off")
    text = check_message(message) if on else ""
    lease = lease_seconds()
    who, when = deployer_identity(), utc_timestamp()

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        return _host(project, HostSession(project, host, ex, run), on, text, who, when, lease)

    shown = "maintenance on" if on else "maintenance off"
    return run_command("maintenance", project, hosts,
                       audited("maintenance", context(project), job,
                               lambda r: f"{shown}: {r.error or r.detail or ''}"),
                       reporter, opts)


def _host(project: Project, session: HostSession, on: bool, message: str, who: str,
          when: str, lease: int) -> HostReport:
    from deployer.commands import proxy as pc
    from deployer.deploy import ownership
    from deployer.deploy.session import LockHeld
    from deployer.deploy.ship import manifest_services
    from deployer.proxy import switch as proxy_switch

    run, ex = session.run, session.ex
    with run.step("read current release"):
        st = session.read_state()
    ownership.check(project, session.host.name, st.owner)
    if not st.current:
        return run.report("failed", release=None, error="no release deployed yet: run "
                          "`deployer ship` first (the proxy starts with it)")
    manifest = st.manifest
    plan = proxy_switch.from_manifest(project, manifest, manifest_services(manifest, []))
    if plan is None:
        return run.report("ok", release=st.current,
                          detail="no proxied service on this host: nothing to do")
    try:
        with session.locked(who, when, "maintenance-on" if on else "maintenance-off",
                            lease) as now:
            compose = session.compose(now or st.current)
            switch = proxy_switch.Switch(session, compose, plan, project.config.health_timeout)
            with run.step("read proxy state"):
                state = pc.parse_state(ex.run(pc.read_state(sudo=compose.sudo)).stdout)
            if not state.running:
                return run.report("failed", release=st.current, error=(
                    "the proxy is not running on this host: nothing changed "
                    "(`deployer proxy status`; a ship or `deployer proxy restart` starts it)"))
            services = ", ".join(plan.services)
            if on:
                with run.step("record maintenance on"):
                    ex.run(ops.write_maintenance(session.dir,
                                                 Maintenance(message, who, when).dumps()))
                switch.set_page(page(message))
                with run.step("load the maintenance page"):
                    switch.apply_routes({})
                return run.report("ok", release=st.current,
                                  detail=f"maintenance on: {services} answer 503 with the page")
            upstreams: dict[str, list[str]] = {}
            with run.step("list the running containers"):
                for r in plan.routes:
                    names = switch._names(r.service)
                    if not names:
                        return run.report("failed", release=st.current, error=(
                            f"{r.service}: no running container to route to, so maintenance "
                            "stays on (ship or roll back first)"))
                    upstreams[r.service] = [f"{n}:{r.port}" for n in names]
            switch.set_page(None)
            with run.step("load the routes"):
                switch.apply_routes(upstreams)
            with run.step("record maintenance off"):
                ex.run(ops.clear_maintenance(session.dir))
            shown = "; ".join(f"{s} -> {', '.join(u)}" for s, u in upstreams.items())
            return run.report("ok", release=st.current, detail=f"maintenance off: {shown}")
    except LockHeld as e:
        return run.report("failed", release=st.current, error=e.reason)
