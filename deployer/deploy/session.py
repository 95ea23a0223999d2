"""One host's remote state during one run: its facts, the compose of a
release, the state read, the releases and the deploy lock.

Every per-host job (ship, rollback, status, logs, exec, lock) goes through a
:class:`HostSession` instead of building these from the command builders
itself, so "which compose, with sudo or not, in which directory" and "take
the lock, release it whatever happens" are written once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from deployer.commands import lock, release
from deployer.commands.base import Command
from deployer.commands.compose import Compose
from deployer.commands.facts import HostFacts
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.lease import DEFAULT_LEASE
from deployer.errors import HostError
from deployer.remote.base import Executor


class LockHeld(HostError):
    """Another run (or ``deployer lock``) holds the deploy lock."""

    def __init__(self, host: str, info: lock.LockInfo) -> None:
        super().__init__(host, "lock", info.describe())
        self.info = info


class HostSession:
    """The remote state of ``host`` for one run, over ``ex``. ``profiles``:
    the compose profiles to enable (a ship's, from its plan)."""

    def __init__(self, project: Project, host: Host, ex: Executor, run: HostRun,
                 profiles: tuple[str, ...] = ()) -> None:
        self.project = project
        self.profiles = profiles
        self.host = host
        self.ex = ex
        self.run = run
        self.dir = project.deploy_dir
        self.facts: HostFacts | None = None

    # -- facts ---------------------------------------------------------------

    def ensure_docker(self) -> HostFacts:
        """Probe the host (one round trip); install Docker if it is missing."""
        from deployer.deploy.bootstrap import bootstrap_host

        with self.run.step("check docker"):
            outcome = bootstrap_host(self.ex, self.host, step=self.run.step)
        if outcome.changed:
            self.run.log(f"bootstrapped: {outcome.detail}")
        self.facts = outcome.facts
        return outcome.facts

    def probe(self) -> HostFacts:
        """The host's facts, probed once per session; installs nothing."""
        if self.facts is None:
            from deployer.deploy.bootstrap import probe

            self.facts = probe(self.ex)
        return self.facts

    def compose(self, release_id: str, env: tuple[tuple[str, str], ...] = (),
                profiles: tuple[str, ...] | None = None) -> Compose:
        """Compose commands for ``release_id``, run in its directory, the way
        this host runs docker (compose v1 or v2, with sudo or not).
        ``profiles``: that release's (from its manifest); default the session's."""
        facts = self.probe()
        return Compose(
            app=self.project.project_name,
            file=self.project.config.compose_file,
            variant=facts.compose or "v2",
            sudo=facts.docker_sudo,
            cwd=release.release_dir(self.dir, release_id),
            env=env,
            profiles=self.profiles if profiles is None else profiles,
        )

    # -- state ---------------------------------------------------------------

    def read_state(self) -> release.RemoteState:
        """Which release is current, with its manifest (one round trip)."""
        return release.parse_state(self.ex.run(release.read_state(self.dir)).stdout)

    def read_owned_state(self) -> release.RemoteState:
        """:meth:`read_state`, refused (:class:`HostError`, nothing changed)
        when the deploy dir belongs to another environment or compose project
        (:mod:`deployer.deploy.ownership`): ``lock``, ``unlock`` and ``status``
        of one environment must not act on, or report, another's."""
        from deployer.deploy import ownership

        state = self.read_state()
        ownership.check(self.project, self.host.name, state.owner)
        return state

    def releases(self) -> release.Releases:
        return release.parse_releases(self.ex.run(release.list_releases(self.dir)).stdout)

    def manifest(self, release_id: str) -> dict[str, Any] | None:
        """The manifest of a release on the host (None: absent or unreadable)."""
        path = f"{release.release_dir(self.dir, release_id)}/{release.MANIFEST}"
        res = self.ex.run(Command(("cat", "--", path), ok_codes=(0, 1),
                                  description=f"read the manifest of {release_id}"))
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def current_compose(self) -> Compose:
        """Compose of the current release (``logs``, ``exec``); a host with no
        release yet fails."""
        st = self.read_state()
        if not st.current:
            raise HostError(self.host.name, "find current release", "no release deployed yet",
                            "run `deployer ship` first")
        return self.compose(st.current)

    def ensure_writable(self, state: release.RemoteState) -> None:
        """Create the deploy tree (with sudo) and give it to the SSH user when
        the state read found it missing or not the user's."""
        if state.writable:
            return
        user = self.probe().user
        with self.run.step("prepare deploy dir"):
            self.ex.run(release.prepare(self.dir, user))

    # -- the lock ------------------------------------------------------------

    def acquire_lock(self, who: str, when: str, release_id: str = "",
                     message: str = "", lease: int = 0) -> str | None:
        """Take the deploy lock for this run (:data:`deployer.deploy.lease.RUN`)
        with a lease of ``lease`` seconds (0: none, it never expires), or take
        over a lock whose lease has passed (and say so in the host's log);
        return the release current under it. Raises :class:`LockHeld` when
        another run holds it."""
        from deployer.deploy.lease import RUN

        with self.run.step("lock"):
            res = self.ex.run(lock.acquire(self.dir, who=who, when=when, release=release_id,
                                           message=message, run=RUN.run, machine=RUN.machine,
                                           pid=RUN.pid, lease=lease))
        if res.exit_code == lock.EXIT_LOCKED:
            raise LockHeld(self.host.name, lock.parse_lock_info(res.stdout))
        previous = lock.parse_previous(res.stdout)
        if previous is not None:
            self.run.log("took over the deploy lock, its lease had ended: was "
                         + previous.describe())
        return lock.parse_current_under_lock(res.stdout)

    def break_lock(self) -> lock.LockInfo | None:
        """Remove the lock whoever holds it (``deployer unlock``); what it
        said, or None when there was no lock."""
        with self.run.step("unlock"):
            shown = self.ex.run(lock.show(self.dir))
            self.ex.run(lock.release(self.dir))
        if shown.exit_code == lock.EXIT_LOCKED:
            return lock.parse_lock_info(shown.stdout)
        return None

    @contextlib.contextmanager
    def locked(self, who: str, when: str, release_id: str,
               lease: int = DEFAULT_LEASE) -> Iterator[str | None]:
        """``with session.locked(...) as current:`` the lock is held inside,
        its lease renewed in the background, and released on the way out
        whatever happened (only if this run still holds it: see
        :func:`deployer.commands.lock.release`)."""
        from deployer.deploy.lease import RUN, Renewer

        current = self.acquire_lock(who, when, release_id, lease=lease)

        def lost(info: lock.LockInfo) -> None:
            self.run.log(f"lost the deploy lock (its lease ended): now {info.describe()}")

        renewer = Renewer(self.ex, self.dir, RUN.run, lease, lost).start() if lease else None
        try:
            yield current
        finally:
            if renewer is not None:
                renewer.stop()
            with self.run.step("unlock"), contextlib.suppress(HostError):
                self.ex.run(lock.release(self.dir, RUN.run), check=False)
