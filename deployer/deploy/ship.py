"""``ship`` on one host: the state machine that never leaves a host worse
than it found it.

    read current release (no-op check: done when unchanged)
    -> check docker (bootstrap if missing) -> prepare deploy dir (if needed)
    -> lock (state read again if another run switched releases meanwhile)
    -> clean up stale uploads -> check free space
    -> upload into <id>.partial -> rename to <id>
    -> shared dirs -> registry login -> pull
    -> (pre_up hook) -> compose up -> wait healthy -> (post_up hook)
    -> switch ``current`` -> prune releases -> prune images
    -> remove the run's credentials -> unlock
    on failure after ``up`` (or of post_up): logs of the failing service, previous release
    up again, wait healthy, ``current`` untouched -> "rolled back"

A release directory that exists is always complete (it is renamed into place
only after every file landed), and ``current`` only moves once the new
release is healthy. ``deployer plan`` runs this same machine against a
recording executor (:mod:`deployer.deploy.dryrun`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer import diskspace, hooks
from deployer.commands import health, registry, release
from deployer.commands.compose import Compose
from deployer.commands.recovery import mark_applying
from deployer.config import Project
from deployer.deploy import ownership, recovery
from deployer.deploy.hostrun import HostRun
from deployer.deploy.lease import DEFAULT_LEASE, lock_hint
from deployer.deploy.session import HostSession, LockHeld
from deployer.errors import HostError
from deployer.plan import HostPlan
from deployer.proxy import switch as proxy_switch
from deployer.prune import prune_after_switch
from deployer.release_tar import SourceChanged, release_files, tar_stream
from deployer.remote.base import Executor
from deployer.report.model import HostReport


class StoppedBeforeStep(HostError):
    """Ctrl-C arrived before this host reached a point of no return: it keeps
    its old release and is reported ``skipped``."""


@dataclass
class ShipSettings:
    who: str
    when: str
    health_timeout: float
    keep_releases: int
    poll_interval: float = 1.0
    log_tail: int = 30
    cancel: threading.Event = field(default_factory=threading.Event)
    # The second interrupt: stop waiting for health, roll back (deploy/interrupt.py).
    abort: threading.Event = field(default_factory=threading.Event)
    lease: int = DEFAULT_LEASE  # seconds of the deploy lock's lease (deploy/lease.py)
    hosts: tuple[str, ...] = ()  # the run's targeted hosts (hooks' DEPLOYER_HOSTS)
    #: ref -> bytes, for the free-space check (looked up when first needed)
    image_sizes: Callable[[], Mapping[str, int]] = dict


def check_cancel(settings: ShipSettings, host: str, where: str) -> None:
    if settings.cancel.is_set():
        raise StoppedBeforeStep(host, where, "interrupted; nothing was started")


def mark_applying_step(session: HostSession, release_id: str) -> None:
    """Note ``release_id`` in the apply marker (deploy/recovery.py) before
    anything of it starts: its own step, so a host lost here is reported as
    lost here, not as a failed ``compose up``."""
    with session.run.step(f"mark {release_id} as being applied"):
        session.ex.run(mark_applying(session.dir, release_id))


def start_and_gate(
    session: HostSession,
    compose: Compose,
    services: list[str],
    oneshot: list[str] | None,
    settings: ShipSettings,
    step: str = "compose up",
    may_exit: Collection[str] = (),
) -> str | None:
    """``compose up`` and wait until healthy: the health gate of ship and
    rollback. Returns None when healthy, else why not (after printing the
    failing service's last log lines). The caller notes the release in the
    apply marker first (:func:`mark_applying_step`) and settles it once
    ``current`` points at what runs."""
    run, ex = session.run, session.ex
    try:
        with run.step(step):
            ex.run(compose.up(), timeout=max(600.0, settings.health_timeout))
    except HostError as e:
        return _why_up_failed(session, compose, services, oneshot, may_exit, settings, e.message)
    try:
        with run.step("wait healthy"):
            verdict = wait_healthy(ex, compose.app, compose.sudo, services, oneshot,
                                   settings.health_timeout, settings.poll_interval, may_exit,
                                   abort=settings.abort)
    except HostError as e:
        return e.message
    if verdict.healthy:
        return None
    if settings.abort.is_set():
        return "interrupted: stopped waiting for health"
    if verdict.service:
        _show_logs(session, compose, verdict.service, settings.log_tail)
    return verdict.describe()


def restore(
    session: HostSession,
    previous: str,
    services: list[str],
    env: tuple[tuple[str, str], ...],
    settings: ShipSettings,
    profiles: tuple[str, ...] | None = None,
    only: bool = False,
) -> str | None:
    """Bring ``previous`` up again, with the compose profiles it ran with,
    and wait until it is healthy (``current`` still points at it). Returns
    None when it is (and the apply marker is cleared: the host is
    consistent), else why not (the marker stays for the next ship).
    ``only``: start just ``services`` (the others, behind the proxy, were
    never touched)."""
    run, ex = session.run, session.ex
    try:
        with run.step(f"roll back to {previous}"):
            old = session.compose(previous, env, profiles)
            ex.run(mark_applying(session.dir, previous))
            ex.run(old.up(services if only else ()), timeout=600)
            v = wait_healthy(ex, old.app, old.sudo, services, None,
                             settings.health_timeout, settings.poll_interval)
            if v.healthy:
                recovery.settle(session)
    except HostError as e:
        return f"failed: {e.message}"
    return None if v.healthy else f"unhealthy too: {v.describe()}"


def record_failed(session: HostSession, release_id: str, when: str) -> None:
    """Note on the host that ``release_id`` failed its health gate, so
    rollback never goes there and prune does not keep it. Best effort: the
    host may be the reason it failed, and then rolling back matters more."""
    with contextlib.suppress(HostError):
        session.ex.run(release.record_health(session.dir, release_id, release.FAILED, when),
                       check=False)


def manifest_services(manifest: dict[str, Any] | None, default: list[str]) -> list[str]:
    return list((manifest or {}).get("services") or default)


def manifest_profiles(manifest: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The compose profiles a release ran with (None: a manifest from before
    deployer recorded them, so the caller's own apply)."""
    profiles = (manifest or {}).get("profiles")
    if not isinstance(profiles, list):
        return None
    return tuple(str(p) for p in profiles)


class HostShip:
    """One host's ship. Create it per host per run; call :meth:`ship`."""

    def __init__(
        self,
        project: Project,
        hp: HostPlan,
        ex: Executor,
        run: HostRun,
        settings: ShipSettings,
    ) -> None:
        self.project = project
        self.hp = hp
        self.ex = ex
        self.run = run
        self.s = settings
        self.session = HostSession(project, hp.host, ex, run, tuple(hp.compose.profiles))
        self.dir = project.deploy_dir

    def _read_state(self) -> release.RemoteState:
        with self.run.step("read current release"):
            return self.session.read_state()

    def _unchanged(self, state: release.RemoteState) -> bool:
        """The current release is exactly this plan (a broken or missing
        manifest never is)."""
        manifest = state.manifest
        return bool(state.current and manifest
                    and manifest.get("fingerprint") == self.hp.fingerprint)

    def _check_cancel(self, where: str) -> None:
        check_cancel(self.s, self.hp.host.name, where)

    # -- the run -----------------------------------------------------------

    def ship(self) -> HostReport:
        hp, run = self.hp, self.run
        run.release = hp.release
        # The no-op check comes first: it needs no facts (a plain read as the
        # SSH user), and the facts probe is the costly round trip (it starts
        # `docker version` and `docker-compose version`, a Python program on
        # Debian 12). An unchanged host so costs one command instead of two,
        # which the benchmark showed as most of a no-op ship's time per host.
        state = self._read_state()
        ownership.check(self.project, hp.host.name, state.owner)
        if self._unchanged(state) and not recovery.needed(state):
            return run.report("unchanged", release=state.current, detail="nothing changed")
        self.session.ensure_docker()
        if not state.owner:
            ownership.guard_unowned(self.session)
        self.session.ensure_writable(state)
        self._check_cancel("lock")
        try:
            with self.session.locked(self.s.who, self.s.when, hp.release, self.s.lease) as now:
                if now != state.current:
                    # Another run switched releases between our read (sent
                    # early, while the images were staged) and the lock: what
                    # to roll back to, and whether anything changed, must
                    # come from now.
                    state = self._read_state()
                    ownership.check(self.project, hp.host.name, state.owner)
                    if self._unchanged(state) and not recovery.needed(state):
                        return run.report("unchanged", release=state.current,
                                          detail="nothing changed")
                if not state.owner:
                    ownership.claim(self.session)
                return self._locked_ship(state)
        except LockHeld as e:
            if self._unchanged(state) and not state.applying:
                # A live run holds the lock: the credentials are its own.
                return run.report("unchanged", release=state.current, detail="nothing changed")
            return run.report("failed", release=state.current,
                              error=e.reason + lock_hint(e.info, self.project.env))

    def _locked_ship(self, state: release.RemoteState) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        facts = self.session.probe()
        with run.step("clean up stale uploads"):
            ex.run(release.remove_partials(self.dir))
            ex.run(registry.remove_stale_configs(self.dir, sudo=facts.docker_sudo))
        if self._unchanged(state):  # only a stopped run's leftovers to settle
            return recovery.reconcile(self.session, state, self.s)
        with run.step("check free space"):  # before the upload and the pull
            sizes = self.s.image_sizes()
            diskspace.check(ex, hp.host.name, self.dir,
                            {r: sizes.get(r, 0) for r in hp.images.values()},
                            sum(f.length for f in hp.files), int(self.project.config.min_free),
                            sudo=facts.docker_sudo)
        self._check_cancel("upload")
        with run.step("upload release"):
            self._upload()
        if hp.compose.shared_dirs:
            with run.step("create shared dirs"):
                ex.run(release.ensure_shared(self.dir, hp.compose.shared_dirs))
        login: registry.RegistryLogin | None = None
        reg = self.project.registry
        if reg.username and reg.password:
            login = registry.registry_login(
                self.dir, hp.release, server=reg.server, username=reg.username,
                password=reg.password, sudo=facts.docker_sudo,
            )
        try:
            env: tuple[tuple[str, str], ...] = ()
            if login is not None:
                with run.step("registry login"):
                    ex.run(login.login)
                env = login.env
            compose = self.session.compose(hp.release, env)
            with run.step("pull images"):
                self._pull(compose)
            self._check_cancel("compose up")
            why = hooks.run_remote(ex, run, self.project, "pre_up", hp.release, self.s.hosts)
            if why is not None:  # nothing started yet: the host keeps its release
                raise HostError(hp.host.name, "hook pre_up", why)
            return self._up_and_gate(compose, state, env)
        finally:
            if login is not None:
                with run.step("remove registry credentials"), contextlib.suppress(HostError):
                    ex.run(login.cleanup, check=False)

    def _pull(self, compose: Compose) -> None:
        """``compose pull``; with ``registry: none`` through a reverse tunnel
        to deployer's own image server (only for the pull: nothing stays)."""
        from deployer.images.carry import images_to_host

        with images_to_host(self.project, self.ex, self.hp.host.name, self.s.cancel) as tunnel:
            try:
                self.ex.run(compose.pull(), timeout=900)
            except HostError:
                if tunnel is not None and self.s.cancel.is_set():
                    raise StoppedBeforeStep(self.hp.host.name, "pull images",
                                            "interrupted during the image transfer; "
                                            "nothing was started") from None
                raise
            finally:
                if tunnel is not None:
                    self.run.log(f"sent {tunnel.sent} bytes of images over SSH")

    def _upload(self) -> None:
        upload_release(self.ex, self.hp, self.dir, self.s)

    def _up_and_gate(
        self, compose: Compose, state: release.RemoteState, env: tuple[tuple[str, str], ...]
    ) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        # Proxied services (proxy.routes) switch without downtime instead.
        proxied = proxy_switch.host_proxy(self.project.config.proxy if hp.proxy else None,
                                          hp.compose.services, hp.images)
        mark_applying_step(self.session, hp.release)
        if proxied is not None:
            failure = proxy_switch.Switch(self.session, compose, proxied, self.s.health_timeout,
                                          self.s.poll_interval).run(
                hp.compose.services, hp.compose.oneshot, hp.compose.may_exit, env)
        else:
            failure = start_and_gate(self.session, compose, hp.compose.services,
                                     hp.compose.oneshot, self.s, may_exit=hp.compose.may_exit)
        if failure is None:  # healthy; post_up fails it as a healthcheck would
            failure = hooks.run_remote(ex, run, self.project, "post_up", hp.release,
                                       self.s.hosts)
        if failure is None:
            with run.step("switch current"):
                ex.run(release.switch_current(self.dir, hp.release, self.s.when))
                recovery.settle(self.session)
            with run.step("prune releases"):
                pruned = ex.run(release.prune(self.dir, self.s.keep_releases), check=False)
            for kept in release.parse_prune_failures(pruned.stdout):
                run.log(f"prune: could not remove release {kept}")
            with run.step("prune images"):  # those no kept release uses
                prune_after_switch(ex, run, self.project, sudo=self.session.probe().docker_sudo)
            return run.report("deployed")
        # The new release did not come up healthy: record it, bring the old one back.
        record_failed(self.session, hp.release, self.s.when)
        previous = state.current
        if not previous:
            with run.step("stop failed release"):
                ex.run(compose.down(), check=False)
                recovery.settle(self.session)
            return run.report("failed", release=None,
                              error=f"{failure} (first release: nothing to roll back to)")
        run.log(f"release {hp.release} failed ({failure}); rolling back to {previous}")
        services = manifest_services(state.manifest, hp.compose.services)
        if proxied is not None:
            # The old proxied containers were never touched: restore the rest.
            services = proxied.not_proxied(services)
            if not services:
                return run.report("rolled back", release=previous,
                                  rolled_back_from=hp.release, error=failure)
        why = restore(self.session, previous, services, env, self.s,
                      manifest_profiles(state.manifest), only=proxied is not None)
        if why is not None:
            return run.report("failed", release=previous,
                              error=f"{failure}; rollback to {previous} {why}")
        return run.report("rolled back", release=previous, rolled_back_from=hp.release,
                          error=failure)


def _why_up_failed(
    session: HostSession,
    compose: Compose,
    services: list[str],
    oneshot: list[str] | None,
    may_exit: Collection[str],
    settings: ShipSettings,
    message: str,
) -> str:
    """``compose up`` failed with ``message``. When a container failed under
    it (a migration that ``web`` waits for exited 1), name that service and
    show its last log lines: compose names only the service that waited, and
    a container id."""
    try:
        rows = health.parse_containers(
            session.ex.run(health.containers(compose.app, sudo=compose.sudo)).stdout)
    except HostError:
        return message  # the host or dockerd is gone: compose's words are all there is
    verdict = health.evaluate(rows, services, oneshot=oneshot, may_exit=may_exit)
    if not verdict.failed or not verdict.service:
        return message
    _show_logs(session, compose, verdict.service, settings.log_tail)
    return f"{verdict.describe()} ({message})"


def upload_release(ex: Executor, hp: HostPlan, deploy_dir: str, settings: ShipSettings) -> None:
    """The whole release (templates, copies, manifest) as one tar stream
    into ``<id>.partial``, then the rename: two commands, whatever the
    number of files. Shared by the compose and the Swarm targets."""
    files = release_files(hp, hp.manifest_bytes(settings.who, settings.when))
    try:
        ex.stream_in(release.receive_release(deploy_dir, hp.release),
                     tar_stream(files, hp.dirs), timeout=900)
    except SourceChanged as e:
        raise HostError(hp.host.name, "upload release", e.message, e.hint) from None
    ex.run(release.finalize(deploy_dir, hp.release, settings.when))


def _show_logs(session: HostSession, compose: Compose, service: str, tail: int) -> None:
    try:
        res = session.ex.run(compose.logs(service, tail=tail), check=False)
    except HostError:
        return
    session.run.log(f"last {tail} log lines of {service}:")
    for line in (res.stdout + res.stderr).splitlines()[-tail:]:
        session.run.log(f"  | {line}")


def wait_healthy(
    ex: Executor,
    app: str,
    sudo: bool,
    services: list[str],
    oneshot: list[str] | None,
    timeout: float,
    poll_interval: float = 1.0,
    may_exit: Collection[str] = (),
    abort: threading.Event | None = None,
) -> health.HealthVerdict:
    """Poll the project's containers (one command per poll) until every
    service is ready, one fails, or ``timeout`` passes. Done by deployer, not
    by compose, so it behaves the same on compose v1 and v2. ``sudo``:
    docker needs it in this session.

    The first second is polled four times as often, the next one twice: a
    service with a short healthcheck interval is often ready about a second
    after ``up``, and a flat 1 s poll overshot that by half a second on
    average, a visible share of a small changed ship (bench/results). Later
    polls stay at ``poll_interval``: each one costs the host a ``docker ps``.

    ``abort`` set (a second interrupt): stop waiting, return the verdict so far."""
    deadline = time.monotonic() + timeout
    probe = health.containers(app, sudo=sudo)
    waits = [poll_interval / 4] * 4 + [poll_interval / 2] * 2
    while True:
        rows = health.parse_containers(ex.run(probe).stdout)
        verdict = health.evaluate(rows, services, oneshot=oneshot, may_exit=may_exit)
        if verdict.healthy or verdict.failed or (abort is not None and abort.is_set()):
            return verdict
        if time.monotonic() >= deadline:
            first = verdict.pending[0] if verdict.pending else ("?", "not ready")
            return health.HealthVerdict(
                "failed", service=first[0],
                reason=f"not healthy after {timeout:.0f}s ({first[1]})",
            )
        pause = waits.pop(0) if waits else poll_interval
        if abort is None:
            time.sleep(pause)
        else:
            abort.wait(pause)
