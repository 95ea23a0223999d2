"""The lease's length from the environment, and the renewer's reactions to
what the host answers (scripted: the real renewal runs in
tests/integration/test_lock_lease.py)."""

from __future__ import annotations

import pytest

from deployer.commands import lock
from deployer.deploy.lease import DEFAULT_LEASE, Renewer, lease_seconds, lock_hint
from deployer.errors import ConfigError
from deployer.remote.recording import Answers, Call, ScriptedExecutor
from deployer.remote.ssh import UnreachableError


def test_lease_from_the_environment() -> None:
    assert lease_seconds({}) == DEFAULT_LEASE
    assert lease_seconds({"DEPLOYER_LOCK_LEASE": " 90 "}) == 90
    for bad in ("0", "2", "-5", "1.5", "soon", "9" * 30):
        with pytest.raises(ConfigError) as e:
            lease_seconds({"DEPLOYER_LOCK_LEASE": bad})
        assert "DEPLOYER_LOCK_LEASE" in e.value.message and len(e.value.message) < 120


def renewer(answers: list[object], lost: list[lock.LockInfo]) -> tuple[Renewer, ScriptedExecutor]:
    ex = ScriptedExecutor("web-1", Answers({"renew the deploy lock": answers}))  # type: ignore[dict-item]
    return Renewer(ex, "/opt/shop", "run-a", 30, lost.append), ex


def test_renewal_sends_the_runs_id_and_lease() -> None:
    lost: list[lock.LockInfo] = []
    r, ex = renewer([(0, "lease_until=1000\n")], lost)
    assert r.renew_once() and not lost
    (call,) = [c for c in ex.calls if isinstance(c, Call)]
    assert call.command is not None and call.command.argv[-3:] == ("/opt/shop", "run-a", "30")
    assert r.every == 10


def test_a_lock_taken_over_is_reported_once_and_renewal_stops() -> None:
    lost: list[lock.LockInfo] = []
    r, _ = renewer([(lock.EXIT_LOCKED, "who=bob@ci\nrun=other\n")], lost)
    assert not r.renew_once()
    assert [i.run for i in lost] == ["other"]


def test_an_unreachable_host_or_a_busy_guard_is_tried_again() -> None:
    lost: list[lock.LockInfo] = []
    r, _ = renewer([UnreachableError("web-1", "connection reset")], lost)
    assert r.renew_once() and not lost
    r, _ = renewer([(lock.EXIT_BUSY, "")], lost)
    assert r.renew_once() and not lost


def test_the_hint_for_a_held_lock() -> None:
    assert "deployer unlock prod" in lock_hint(lock.LockInfo(who="a"), "prod")
    leased = lock_hint(lock.LockInfo(who="a", run="x", lease_until="100"), "prod")
    assert "taken over once the lease ends" in leased and "unlock" not in leased
