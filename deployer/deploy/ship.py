"""``ship`` on one host: the state machine that never leaves a host worse
than it found it.

    read current release (no-op check: done when unchanged)
    -> bootstrap (if Docker is missing) -> lock -> upload into <id>.partial
    -> rename to <id> -> login -> pull -> compose up -> wait healthy
    -> switch ``current`` -> prune -> unlock
    on failure after ``up``: logs of the failing service, previous release
    up again, wait healthy, ``current`` untouched -> "rolled back"

A release directory that exists is always complete (it is renamed into place
only after every file landed), and ``current`` only moves once the new
release is healthy.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deployer.commands import health, lock, registry, release
from deployer.commands.base import Command
from deployer.commands.compose import Compose
from deployer.commands.facts import HostFacts
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.errors import HostError
from deployer.plan import HostPlan
from deployer.release_tar import SourceChanged, release_files, tar_stream
from deployer.remote.base import Executor, Result
from deployer.report.model import HostReport


class Interrupted(HostError):
    """Ctrl-C arrived before this host reached a point of no return."""


@dataclass
class Counting:
    """Wraps an executor to count remote commands and uploaded bytes (shown in
    the JSON report and by the benchmarks)."""

    inner: Executor
    commands: int = 0
    bytes_uploaded: int = 0
    host: str = ""

    def __post_init__(self) -> None:
        self.host = self.inner.host

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self.commands += 1
        return self.inner.run(command, check=check, timeout=timeout)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self.bytes_uploaded += len(data)
        self.inner.upload(data, path, mode=mode)

    def stream_in(
        self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        self.commands += 1

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                self.bytes_uploaded += len(chunk)
                yield chunk

        return self.inner.stream_in(command, counted(), check=check, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


@dataclass
class ShipSettings:
    who: str
    when: str
    health_timeout: float
    keep_releases: int
    poll_interval: float = 1.0
    log_tail: int = 30
    cancel: threading.Event = field(default_factory=threading.Event)


def ensure_docker(ex: Executor, host: Host, run: HostRun) -> HostFacts:
    """Probe the host (one round trip); install Docker if it is missing."""
    from deployer.deploy.bootstrap import bootstrap_host

    with run.step("check docker"):
        outcome = bootstrap_host(ex, host)
    if outcome.changed:
        run.log(f"bootstrapped: {outcome.detail}")
    return outcome.facts


class HostShip:
    """One host's ship. Create it per host per run; call :meth:`run`."""

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
        self.dir = project.deploy_dir
        self.app = project.app

    # -- helpers -----------------------------------------------------------

    def _compose(
        self, facts: HostFacts, release_id: str, env: tuple[tuple[str, str], ...]
    ) -> Compose:
        return Compose(
            app=self.app,
            file=self.project.config.compose_file,
            variant=facts.compose or "v2",
            sudo=facts.docker_sudo,
            cwd=release.release_dir(self.dir, release_id),
            env=env,
            profiles=tuple(self.hp.compose.profiles),
        )

    def _read_state(self) -> release.RemoteState:
        with self.run.step("read current release"):
            return release.parse_state(self.ex.run(release.read_state(self.dir)).stdout)

    def _unchanged(self, state: release.RemoteState) -> bool:
        """The current release is exactly this plan (a broken or missing
        manifest never is)."""
        manifest = state.manifest
        return bool(state.current and manifest
                    and manifest.get("fingerprint") == self.hp.fingerprint)

    def _check_cancel(self, where: str) -> None:
        if self.s.cancel.is_set():
            raise Interrupted(self.hp.host.name, where, "interrupted; nothing was started")

    # -- the run -----------------------------------------------------------

    def ship(self) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        run.release = hp.release
        # The no-op check comes first: it needs no facts (a plain read as the
        # SSH user), and the facts probe is the costly round trip (it starts
        # `docker version` and `docker-compose version`, a Python program on
        # Debian 12). An unchanged host so costs one command instead of two,
        # which the benchmark showed as most of a no-op ship's time per host.
        state = self._read_state()
        if self._unchanged(state):
            return run.report("unchanged", release=state.current, detail="nothing changed")
        facts = ensure_docker(ex, hp.host, run)
        if not state.writable:
            with run.step("prepare deploy dir"):
                ex.run(release.prepare(self.dir, facts.user))
        self._check_cancel("lock")
        with run.step("lock"):
            res = ex.run(lock.acquire(self.dir, who=self.s.who, when=self.s.when,
                                      release=hp.release))
        if res.exit_code == lock.EXIT_LOCKED:
            info = lock.parse_lock_info(res.stdout)
            return run.report(
                "failed", release=state.current,
                error=f"{info.describe()}; run `deployer unlock {self.project.env}` "
                "if that deploy is dead",
            )
        login: registry.RegistryLogin | None = None
        try:
            if lock.parse_current_under_lock(res.stdout) != state.current:
                # Another run switched releases between our read (sent early,
                # while the images were staged) and the lock: what to roll
                # back to, and whether anything changed, must come from now.
                state = self._read_state()
                if self._unchanged(state):
                    return run.report("unchanged", release=state.current,
                                      detail="nothing changed")
            with run.step("clean up stale uploads"):
                ex.run(release.remove_partials(self.dir))
                ex.run(registry.remove_stale_configs(self.dir, sudo=facts.docker_sudo))
            self._check_cancel("upload")
            with run.step("upload release"):
                self._upload()
            if hp.compose.shared_dirs:
                with run.step("create shared dirs"):
                    ex.run(release.ensure_shared(self.dir, hp.compose.shared_dirs))
            env: tuple[tuple[str, str], ...] = ()
            reg = self.project.registry
            if reg.username and reg.password:
                login = registry.registry_login(
                    self.dir, hp.release, server=reg.server, username=reg.username,
                    password=reg.password, sudo=facts.docker_sudo,
                )
                with run.step("registry login"):
                    ex.run(login.login)
                env = login.env
            compose = self._compose(facts, hp.release, env)
            with run.step("pull images"):
                ex.run(compose.pull(), timeout=900)
            self._check_cancel("compose up")
            return self._up_and_gate(facts, compose, state.current, state.manifest, env)
        finally:
            if login is not None:
                with contextlib.suppress(HostError):
                    ex.run(login.cleanup, check=False)
            with contextlib.suppress(HostError):
                ex.run(lock.release(self.dir, hp.release), check=False)

    def _upload(self) -> None:
        """The whole release (templates, copies, manifest) as one tar stream
        into ``<id>.partial``, then the rename: two commands, whatever the
        number of files."""
        hp, ex = self.hp, self.ex
        files = release_files(hp, hp.manifest_bytes(self.s.who, self.s.when))
        try:
            ex.stream_in(release.receive_release(self.dir, hp.release),
                         tar_stream(files, hp.dirs), timeout=900)
        except SourceChanged as e:
            raise HostError(hp.host.name, "upload release", e.message, e.hint) from None
        ex.run(release.finalize(self.dir, hp.release))

    def _up_and_gate(
        self,
        facts: HostFacts,
        compose: Compose,
        previous: str | None,
        prev_manifest: dict[str, Any] | None,
        env: tuple[tuple[str, str], ...],
    ) -> HostReport:
        hp, run, ex = self.hp, self.run, self.ex
        failure: str | None = None
        try:
            with run.step("compose up"):
                ex.run(compose.up(), timeout=max(600.0, self.s.health_timeout))
            with run.step("wait healthy"):
                verdict = self._wait_healthy(facts, hp.compose.services, hp.compose.oneshot,
                                             hp.compose.may_exit)
            if verdict.healthy:
                with run.step("switch current"):
                    ex.run(release.switch_current(self.dir, hp.release))
                with run.step("prune releases"):
                    ex.run(release.prune(self.dir, self.s.keep_releases), check=False)
                return run.report("deployed")
            failure = verdict.describe()
            if verdict.service:
                self._show_logs(compose, verdict.service)
        except HostError as e:
            failure = e.message
        # The new release did not come up healthy: bring the old one back.
        if not previous:
            with run.step("stop failed release"):
                ex.run(compose.down(), check=False)
            return run.report("failed", release=None,
                              error=f"{failure} (first release: nothing to roll back to)")
        run.log(f"release {hp.release} failed ({failure}); rolling back to {previous}")
        try:
            with run.step(f"roll back to {previous}"):
                old = self._compose(facts, previous, env)
                ex.run(old.up(), timeout=600)
                services = list((prev_manifest or {}).get("services") or hp.compose.services)
                v = self._wait_healthy(facts, services, None)
            if not v.healthy:
                return run.report("failed", release=previous,
                                  error=f"{failure}; rollback to {previous} unhealthy too: "
                                  f"{v.describe()}")
        except HostError as e:
            return run.report("failed", release=previous,
                              error=f"{failure}; rollback to {previous} failed: {e.message}")
        return run.report("rolled back", release=previous, error=failure)

    def _wait_healthy(
        self, facts: HostFacts, services: list[str], oneshot: list[str] | None,
        may_exit: list[str] | None = None,
    ) -> health.HealthVerdict:
        return wait_healthy(self.ex, self.app, facts, services, oneshot,
                            self.s.health_timeout, self.s.poll_interval, may_exit or ())

    def _show_logs(self, compose: Compose, service: str) -> None:
        try:
            res = self.ex.run(compose.logs(service, tail=self.s.log_tail), check=False)
        except HostError:
            return
        self.run.log(f"last {self.s.log_tail} log lines of {service}:")
        for line in (res.stdout + res.stderr).splitlines()[-self.s.log_tail:]:
            self.run.log(f"  | {line}")


def wait_healthy(
    ex: Executor,
    app: str,
    facts: HostFacts,
    services: list[str],
    oneshot: list[str] | None,
    timeout: float,
    poll_interval: float = 1.0,
    may_exit: Collection[str] = (),
) -> health.HealthVerdict:
    """Poll the project's containers (one command per poll) until every
    service is ready, one fails, or ``timeout`` passes. Done by deployer, not
    by compose, so it behaves the same on compose v1 and v2.

    The first second is polled four times as often, the next one twice: a
    service with a short healthcheck interval is often ready about a second
    after ``up``, and a flat 1 s poll overshot that by half a second on
    average, a visible share of a small changed ship (bench/results). Later
    polls stay at ``poll_interval``: each one costs the host a ``docker ps``."""
    deadline = time.monotonic() + timeout
    probe = health.containers(app, sudo=facts.docker_sudo)
    waits = [poll_interval / 4] * 4 + [poll_interval / 2] * 2
    while True:
        rows = health.parse_containers(ex.run(probe).stdout)
        verdict = health.evaluate(rows, services, oneshot=oneshot, may_exit=may_exit)
        if verdict.healthy or verdict.failed:
            return verdict
        if time.monotonic() >= deadline:
            first = verdict.pending[0] if verdict.pending else ("?", "not ready")
            return health.HealthVerdict(
                "failed", service=first[0],
                reason=f"not healthy after {timeout:.0f}s ({first[1]})",
            )
        time.sleep(waits.pop(0) if waits else poll_interval)
