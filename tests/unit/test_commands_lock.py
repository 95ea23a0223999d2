"""The deploy lock: atomic mkdir, holder info, a lease on the host's clock,
takeover of an expired lease, release only by its owner.

The scripts run for real under ``sh`` in a temporary directory (the host's
clock is this machine's ``date``; a lease "in the past" is written into the
info file the way a run killed with ``kill -9`` leaves it).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from deployer.commands import lock
from deployer.commands.base import Command


def run(cmd: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", cmd.shell(as_root=True)], capture_output=True, text=True, check=False
    )


def take(d: Path, run_id: str, lease: int = 60, **kw: str) -> subprocess.CompletedProcess[str]:
    return run(lock.acquire(str(d), who=kw.pop("who", "alice@laptop"), when=kw.pop("when", "T1"),
                            release=kw.pop("release", "r1"), run=run_id, machine="laptop",
                            pid=4242, lease=lease, **kw))


def info_of(d: Path) -> lock.LockInfo:
    return lock.parse_lock_info((d / ".lock" / "info").read_text())


def expire(d: Path, seconds_ago: int = 5) -> None:
    """What a run killed with ``kill -9`` leaves: its lease ran out."""
    f = d / ".lock" / "info"
    lines = [ln for ln in f.read_text().splitlines() if not ln.startswith("lease_until=")]
    f.write_text("\n".join([*lines, f"lease_until={int(time.time()) - seconds_ago}"]) + "\n")


def test_acquire_argv() -> None:
    cmd = lock.acquire("/opt/shop", who="alice@laptop", when="2026-01-01T10:00:00Z", release="r1",
                       run="abc", machine="laptop", pid=12, lease=60)
    assert cmd.argv[0:2] == ("sh", "-c")
    assert cmd.argv[3:] == ("sh", "/opt/shop", "alice@laptop", "2026-01-01T10:00:00Z", "r1", "",
                            "abc", "laptop", "12", "60")
    assert cmd.ok_codes == (0, lock.EXIT_LOCKED)
    assert not cmd.sudo


def test_second_acquire_fails_with_the_holders_info(tmp_path: Path) -> None:
    before = int(time.time())
    first = take(tmp_path, "run-a", lease=60)
    assert first.returncode == 0, first.stderr
    info = info_of(tmp_path)
    assert (info.who, info.when, info.release, info.run, info.machine, info.pid) == (
        "alice@laptop", "T1", "r1", "run-a", "laptop", "4242")
    # the lease is on the host's clock: its `date +%s` plus the lease
    assert info.lease_end is not None and before + 60 <= info.lease_end <= int(time.time()) + 60
    second = take(tmp_path, "run-b", who="bob@ci", when="T2", release="r2")
    assert second.returncode == lock.EXIT_LOCKED
    held = lock.parse_lock_info(second.stdout)
    assert held.run == "run-a" and held.now is not None
    left = held.lease_left()
    assert left is not None and 0 < left <= 60
    assert held.describe().startswith("locked by alice@laptop since T1 (release r1; "
                                      "run run-a, pid 4242 on laptop; lease ends in ")
    # the holder's info is untouched
    assert info_of(tmp_path).run == "run-a"


def test_acquire_reports_the_release_current_under_the_lock(tmp_path: Path) -> None:
    """ship and rollback read the state before they lock; the current release
    printed once the lock is held tells them whether another run switched it
    in between."""
    first = run(lock.acquire(str(tmp_path), who="a", when="T1"))
    assert first.returncode == 0 and lock.parse_current_under_lock(first.stdout) is None
    assert lock.parse_previous(first.stdout) is None
    run(lock.release(str(tmp_path)))
    (tmp_path / "releases" / "r7").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/r7")
    second = run(lock.acquire(str(tmp_path), who="a", when="T2"))
    assert second.returncode == 0, second.stderr
    assert lock.parse_current_under_lock(second.stdout) == "r7"


def test_newlines_cannot_forge_fields(tmp_path: Path) -> None:
    res = run(lock.acquire(str(tmp_path), who="eve\nrelease=forged", when="T", message="a\nb",
                           run="r\nlease_until=1"))
    assert res.returncode == 0
    info = info_of(tmp_path)
    assert info.who == "eve release=forged"
    assert info.release == ""
    assert info.message == "a b"
    assert info.run == "r lease_until=1" and info.lease_until == ""


def test_missing_deploy_dir_is_an_error_not_locked(tmp_path: Path) -> None:
    res = run(lock.acquire(str(tmp_path / "nope"), who="a", when="t"))
    assert res.returncode == 1
    assert "cannot create" in res.stderr


def test_expired_lease_is_taken_over_and_says_from_whom(tmp_path: Path) -> None:
    assert take(tmp_path, "dead-run").returncode == 0
    expire(tmp_path)
    res = take(tmp_path, "next-run", who="bob@ci", when="T2", release="r2")
    assert res.returncode == 0, res.stdout + res.stderr
    prev = lock.parse_previous(res.stdout)
    assert prev is not None and (prev.run, prev.who, prev.pid) == ("dead-run", "alice@laptop",
                                                                  "4242")
    assert info_of(tmp_path).run == "next-run"
    assert not (tmp_path / ".lock" / "takeover").exists()
    # the dead run cannot release the lock it lost
    assert run(lock.release(str(tmp_path), "dead-run")).returncode == lock.EXIT_LOCKED
    assert info_of(tmp_path).run == "next-run"


def test_a_live_lease_is_not_taken_over(tmp_path: Path) -> None:
    take(tmp_path, "live-run", lease=60)
    res = take(tmp_path, "other")
    assert res.returncode == lock.EXIT_LOCKED
    assert info_of(tmp_path).run == "live-run"


def test_no_lease_never_expires(tmp_path: Path) -> None:
    """``deployer lock`` (lease 0), and a lock from a deployer before leases."""
    assert take(tmp_path, "manual", lease=0).returncode == 0
    assert info_of(tmp_path).lease_until == ""
    held = take(tmp_path, "other")
    assert held.returncode == lock.EXIT_LOCKED
    assert "no lease: it stays until `deployer unlock`" in lock.parse_lock_info(
        held.stdout).describe()
    run(lock.release(str(tmp_path)))
    (tmp_path / ".lock").mkdir()
    (tmp_path / ".lock" / "info").write_text("who=old@box\nwhen=T0\nrelease=r0\nmessage=\n")
    held = take(tmp_path, "other")
    assert held.returncode == lock.EXIT_LOCKED
    assert lock.parse_lock_info(held.stdout).describe() == (
        "locked by old@box since T0 (release r0)")


def test_two_takers_of_one_expired_lease_one_wins(tmp_path: Path) -> None:
    """Both saw the lease expired; only one may hold the lock after."""
    take(tmp_path, "dead")
    expire(tmp_path)
    cmds = [lock.acquire(str(tmp_path), who=w, when="T", run=w, lease=60) for w in ("a", "b")]
    procs = [subprocess.Popen(["sh", "-c", c.shell(as_root=True)], stdout=subprocess.PIPE,
                              text=True) for c in cmds * 5]
    codes = [p.wait() for p in procs]
    assert codes.count(0) == 1, codes
    assert set(codes) == {0, lock.EXIT_LOCKED}
    assert info_of(tmp_path).run in ("a", "b")


def test_a_stale_takeover_guard_is_removed(tmp_path: Path) -> None:
    """A run killed in the moment it held the guard cannot block the lock
    forever: a guard older than a minute is removed."""
    take(tmp_path, "dead")
    expire(tmp_path)
    guard = tmp_path / ".lock" / "takeover"
    guard.mkdir()
    assert take(tmp_path, "next").returncode == lock.EXIT_LOCKED  # fresh guard: wait
    old = time.time() - 120
    os.utime(guard, (old, old))
    assert take(tmp_path, "next").returncode == 0
    assert info_of(tmp_path).run == "next"


def test_renew_extends_own_lease_only(tmp_path: Path) -> None:
    take(tmp_path, "me", lease=5)
    expire(tmp_path, 1)  # even a lease that just ran out, as long as nobody took it
    res = run(lock.renew(str(tmp_path), "me", 60))
    assert res.returncode == 0, res.stderr
    end = info_of(tmp_path).lease_end
    assert end is not None and end >= int(time.time()) + 59
    assert f"lease_until={end}" in res.stdout
    other = run(lock.renew(str(tmp_path), "someone-else", 60))
    assert other.returncode == lock.EXIT_LOCKED
    assert lock.parse_lock_info(other.stdout).run == "me"
    (tmp_path / ".lock" / "takeover").mkdir()
    assert run(lock.renew(str(tmp_path), "me", 60)).returncode == lock.EXIT_BUSY
    (tmp_path / ".lock" / "takeover").rmdir()
    run(lock.release(str(tmp_path)))
    assert run(lock.renew(str(tmp_path), "me", 60)).returncode == lock.EXIT_LOCKED


def test_release_only_by_owner(tmp_path: Path) -> None:
    take(tmp_path, "run-1")
    other = run(lock.release(str(tmp_path), "run-2"))
    assert other.returncode == lock.EXIT_LOCKED
    assert (tmp_path / ".lock").is_dir()
    assert not (tmp_path / ".lock" / "takeover").exists()
    own = run(lock.release(str(tmp_path), "run-1"))
    assert own.returncode == 0
    assert not (tmp_path / ".lock").exists()
    # releasing an absent lock is fine
    assert run(lock.release(str(tmp_path), "run-1")).returncode == 0


def test_unlock_unconditionally_and_show(tmp_path: Path) -> None:
    assert run(lock.show(str(tmp_path))).returncode == 0
    run(lock.acquire(str(tmp_path), who="alice", when="T1", release="r1", message="db upgrade"))
    shown = run(lock.show(str(tmp_path)))
    assert shown.returncode == lock.EXIT_LOCKED
    assert lock.parse_lock_info(shown.stdout).describe() == (
        "locked by alice since T1 (release r1: db upgrade)"
    )
    assert run(lock.release(str(tmp_path))).returncode == 0
    assert not (tmp_path / ".lock").exists()
    # free again
    assert run(lock.acquire(str(tmp_path), who="bob", when="T2")).returncode == 0


def test_lock_taken_but_info_not_yet_written() -> None:
    info = lock.parse_lock_info("")
    assert info.describe() == "locked by unknown since unknown time"
    assert info.lease_left() is None


def test_a_reader_that_went_away_leaves_no_guard(tmp_path: Path) -> None:
    """A renewal the caller gave up on (the channel closed: a timeout) still
    removes its guard, or the lock could never be released by its owner."""
    take(tmp_path, "me")
    renew = lock.renew(str(tmp_path), "me", 60).shell(as_root=True)
    read, write = os.pipe()
    os.close(read)  # every write to stdout now raises SIGPIPE in the script
    try:
        subprocess.run(["sh", "-c", renew], stdout=write, stderr=subprocess.DEVNULL, check=False)
    finally:
        os.close(write)
    assert not (tmp_path / ".lock" / "takeover").exists()
    assert run(lock.release(str(tmp_path), "me")).returncode == 0
    assert not (tmp_path / ".lock").exists()
