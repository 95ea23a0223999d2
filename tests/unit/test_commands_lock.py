"""The deploy lock: atomic mkdir, holder info, release only by its owner.

The scripts run for real under ``sh`` in a temporary directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from deployer.commands import lock
from deployer.commands.base import Command


def run(cmd: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", cmd.shell(as_root=True)], capture_output=True, text=True, check=False
    )


def test_acquire_argv() -> None:
    cmd = lock.acquire("/opt/shop", who="alice@laptop", when="2026-01-01T10:00:00Z", release="r1")
    assert cmd.argv[0:2] == ("sh", "-c")
    assert cmd.argv[3:] == ("sh", "/opt/shop", "alice@laptop", "2026-01-01T10:00:00Z", "r1", "")
    assert cmd.ok_codes == (0, lock.EXIT_LOCKED)
    assert not cmd.sudo


def test_second_acquire_fails_with_the_holders_info(tmp_path: Path) -> None:
    first = run(lock.acquire(str(tmp_path), who="alice@laptop", when="T1", release="r1"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".lock" / "info").read_text() == (
        "who=alice@laptop\nwhen=T1\nrelease=r1\nmessage=\n"
    )
    second = run(lock.acquire(str(tmp_path), who="bob@ci", when="T2", release="r2"))
    assert second.returncode == lock.EXIT_LOCKED
    info = lock.parse_lock_info(second.stdout)
    assert info == lock.LockInfo(who="alice@laptop", when="T1", release="r1", message="")
    assert info.describe() == "locked by alice@laptop since T1 (release r1)"
    # the holder's info is untouched
    assert "alice" in (tmp_path / ".lock" / "info").read_text()


def test_acquire_reports_the_release_current_under_the_lock(tmp_path: Path) -> None:
    """ship and rollback read the state before they lock; the current release
    printed once the lock is held tells them whether another run switched it
    in between."""
    first = run(lock.acquire(str(tmp_path), who="a", when="T1"))
    assert first.returncode == 0 and lock.parse_current_under_lock(first.stdout) is None
    run(lock.release(str(tmp_path)))
    (tmp_path / "releases" / "r7").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/r7")
    second = run(lock.acquire(str(tmp_path), who="a", when="T2"))
    assert second.returncode == 0, second.stderr
    assert lock.parse_current_under_lock(second.stdout) == "r7"


def test_newlines_cannot_forge_fields(tmp_path: Path) -> None:
    res = run(lock.acquire(str(tmp_path), who="eve\nrelease=forged", when="T", message="a\nb"))
    assert res.returncode == 0
    info = lock.parse_lock_info((tmp_path / ".lock" / "info").read_text())
    assert info.who == "eve release=forged"
    assert info.release == ""
    assert info.message == "a b"


def test_missing_deploy_dir_is_an_error_not_locked(tmp_path: Path) -> None:
    res = run(lock.acquire(str(tmp_path / "nope"), who="a", when="t"))
    assert res.returncode == 1
    assert "cannot create" in res.stderr


def test_release_only_by_owner(tmp_path: Path) -> None:
    run(lock.acquire(str(tmp_path), who="alice", when="T1", release="r1"))
    other = run(lock.release(str(tmp_path), "r2"))
    assert other.returncode == lock.EXIT_LOCKED
    assert (tmp_path / ".lock").is_dir()
    own = run(lock.release(str(tmp_path), "r1"))
    assert own.returncode == 0
    assert not (tmp_path / ".lock").exists()
    # releasing an absent lock is fine
    assert run(lock.release(str(tmp_path), "r1")).returncode == 0


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
