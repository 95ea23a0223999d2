"""Bringing a host back to a consistent state after a run was killed.

A run killed with ``kill -9`` can leave, besides its lock (whose lease ends
by itself, :mod:`deployer.deploy.lease`):

- its registry credentials, ``.docker-config-<release>/`` (base64 passwords);
- the apply marker (:mod:`deployer.commands.recovery`): it was killed during
  ``compose up`` or the health wait, so the host may run the new release's
  containers while ``current`` still points at the old one.

The state read reports both. :func:`needed` tells ``ship`` that a host whose
plan equals ``current`` (otherwise a no-op) must still be locked and
settled; :func:`reconcile` does it under the lock: the credentials are gone
by then (ship removes stale ones first), and the release ``current`` points
at is brought up again through the same health gate as a rollback. No host is
reported ``unchanged`` while it may run another release's containers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.commands import release
from deployer.commands.recovery import clear_applying
from deployer.deploy.session import HostSession
from deployer.report.model import HostReport

if TYPE_CHECKING:
    from deployer.deploy.ship import ShipSettings


def needed(state: release.RemoteState) -> bool:
    """Whether a killed run left something on the host to clean up."""
    return bool(state.applying) or state.stale_credentials


def settle(session: HostSession) -> None:
    """What runs is what ``current`` says again: remove the apply marker."""
    session.ex.run(clear_applying(session.dir))


def reconcile(session: HostSession, state: release.RemoteState, settings: ShipSettings
              ) -> HostReport:
    """Under the lock, on a host whose plan equals ``current`` but that a
    killed run left behind (stale credentials were already removed)."""
    # ship imports this module: its gate is imported when needed
    from deployer.deploy.ship import manifest_profiles, manifest_services, restore

    run, current = session.run, state.current
    if not state.applying or not current:
        return run.report("unchanged", release=current,
                          detail="nothing changed; removed what a stopped run left")
    # Even a marker naming `current` is settled through the gate: a run
    # stopped while restoring `current` leaves exactly that, over containers
    # that may still be the other release's.
    run.log(f"a stopped run was starting {state.applying} here (current: {current}): "
            f"bringing {current} up again")
    why = restore(session, current, manifest_services(state.manifest, []), (), settings,
                  manifest_profiles(state.manifest))
    if why is not None:
        return run.report("failed", release=current,
                          error=f"reconciling after a stopped run: {current} {why}")
    if state.applying == current:
        return run.report("deployed", release=current,
                          detail=f"reconciled: {current} is up and healthy again after a "
                          "stopped run")
    return run.report("rolled back", release=current, rolled_back_from=state.applying,
                      detail=f"reconciled: {current} is running again after a stopped run "
                      f"left {state.applying} half-applied")
