"""The second interrupt, the signal handlers, and what ship does on a host a
killed run left behind (the apply marker, stale credentials), against the
scripted executor of the ship state-machine table."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from test_ship_state_machine import (
    BEFORE_LOCK,
    CLEANUP,
    FAILED_RECORD,
    HEALTHY,
    LOCK_HELD,
    LOCKED,
    NEW,
    OLD,
    STATE_MARKER,
    StepHook,
    hp,  # noqa: F401  (the fixture)
    ship,
)

from deployer.commands import recovery as marker
from deployer.commands import release
from deployer.commands.base import Command
from deployer.plan import HostPlan

STARTING = json.dumps({"name": "/shop-web-1", "service": "web", "restart_policy": "always",
                       "state": {"Status": "running", "Health": {"Status": "starting"}}}) + "\n"
LOCK_EXPIRED_TAKEN = (0, "previous.who=bob@ci\nprevious.run=dead\ncurrent=r1\n")


def left_behind(current: str, fingerprint: str, applying: str | None = None,
                credentials: bool = False) -> str:
    text = f"{STATE_MARKER}\nexists=1\nwritable=1\ncurrent={current}\n"
    text += "owner_app=shop\nowner_env=prod\nowner_project=shop\n"  # deployed by this deployer
    if applying:
        text += f"applying={applying}\n"
    if credentials:
        text += "stale_credentials=1\n"
    return text + "--- manifest\n" + json.dumps(
        {"release": current, "fingerprint": fingerprint, "services": ["web"]}) + "\n"


CLEAN = ["take the deploy lock", "remove stale partial uploads",
         "remove stale registry credentials"]


# -- kill -9 recovery ------------------------------------------------------


def test_leftover_credentials_are_removed_on_an_unchanged_host(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    project, plan = hp
    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, credentials=True))],
        "take the deploy lock": [LOCK_EXPIRED_TAKEN]})
    assert names == [*BEFORE_LOCK, *CLEAN, "release the deploy lock"]
    assert (rep.result, rep.release) == ("unchanged", OLD)


def test_half_applied_host_is_reconciled_through_the_health_gate(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    """Killed during compose up of r9: its containers may run while current
    is r1, which is also what this ship wants. It is not `unchanged`: r1 is
    brought up again and waited for."""
    project, plan = hp
    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, "r9", True))],
        "take the deploy lock": [LOCK_EXPIRED_TAKEN],
        "check container health": [(0, STARTING), (0, HEALTHY)]})
    assert names == [*BEFORE_LOCK, *CLEAN, f"mark {OLD} as being applied", "compose up",
                     "check container health", "check container health",
                     "clear the apply marker", "release the deploy lock"]
    assert (rep.result, rep.release, rep.rolled_back_from) == ("rolled back", OLD, "r9")
    assert rep.error is None and rep.ok
    assert "reconciled" in (rep.detail or "")


def test_reconcile_that_fails_is_a_failure_and_keeps_the_marker(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    project, plan = hp
    unhealthy = json.dumps({"name": "/shop-web-1", "service": "web", "restart_policy": "always",
                            "state": {"Status": "exited", "ExitCode": 1}}) + "\n"
    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, "r9"))],
        "take the deploy lock": [(0, f"current={OLD}\n")],
        "check container health": [(0, unhealthy)]})
    assert "clear the apply marker" not in names
    assert rep.result == "failed" and "reconciling" in (rep.error or "")


def test_marker_of_the_current_release_is_settled_through_the_gate(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    """Killed while restoring r1 (or right after switching to it): the
    marker names `current`, but what runs may still be the other release."""
    project, plan = hp
    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, OLD))],
        "take the deploy lock": [(0, f"current={OLD}\n")]})
    assert names == [*BEFORE_LOCK, *CLEAN, f"mark {OLD} as being applied", "compose up",
                     "check container health", "clear the apply marker",
                     "release the deploy lock"]
    assert (rep.result, rep.release) == ("deployed", OLD)
    assert "reconciled" in (rep.detail or "")


def test_a_live_holder_keeps_its_credentials_but_a_half_applied_host_is_not_unchanged(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    project, plan = hp
    _, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, credentials=True))],
        "take the deploy lock": [LOCK_HELD]})
    assert (rep.result, rep.release) == ("unchanged", OLD)
    _, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, plan.fingerprint, "r9"))],
        "take the deploy lock": [LOCK_HELD]})
    assert rep.result == "failed" and "locked by alice@laptop" in (rep.error or "")


def sh(cmd: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", cmd.shell(as_root=True)], capture_output=True, text=True,
                          check=True)


def test_the_state_read_reports_what_a_killed_run_left(tmp_path: Path) -> None:
    d = str(tmp_path)
    (tmp_path / "releases" / "r1").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "current").symlink_to("releases/r1")
    clean = release.parse_state(sh(release.read_state(d)).stdout)
    assert (clean.current, clean.applying, clean.stale_credentials) == ("r1", None, False)
    sh(marker.mark_applying(d, "r2"))
    (tmp_path / ".docker-config-r2").mkdir()
    (tmp_path / ".docker-config-r2" / "config.json").write_text("{}")
    left = release.parse_state(sh(release.read_state(d)).stdout)
    assert (left.current, left.applying, left.stale_credentials) == ("r1", "r2", True)
    sh(marker.clear_applying(d))
    assert release.parse_state(sh(release.read_state(d)).stdout).applying is None


# -- the second interrupt --------------------------------------------------


def test_second_interrupt_stops_waiting_and_rolls_back(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    project, plan = hp
    cancel, abort = threading.Event(), threading.Event()

    def on_step(step: str) -> None:
        if step == "wait healthy":
            cancel.set()
            abort.set()

    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, "other"))],
        "take the deploy lock": [(0, f"current={OLD}\n")],
        "check container health": [(0, STARTING), (0, HEALTHY)]},
        StepHook(on_step), cancel, abort)
    # one poll, then no more waiting: the old release is restored, health-gated
    assert names == [*BEFORE_LOCK, *LOCKED, FAILED_RECORD, f"mark {OLD} as being applied",
                     "compose up",
                     "check container health", "clear the apply marker", *CLEANUP]
    assert (rep.result, rep.release, rep.rolled_back_from) == ("rolled back", OLD, NEW)
    assert "interrupted" in (rep.error or "")


def test_second_interrupt_before_compose_up_skips_the_host(
        hp: tuple[Any, HostPlan]) -> None:  # noqa: F811
    project, plan = hp
    cancel, abort = threading.Event(), threading.Event()

    def on_step(step: str) -> None:
        if step == "pull images":
            cancel.set()
            abort.set()

    names, rep = ship(project, plan, {
        "read current release": [(0, left_behind(OLD, "other"))],
        "take the deploy lock": [(0, f"current={OLD}\n")]}, StepHook(on_step), cancel, abort)
    assert rep.result == "skipped"
    assert "compose up" not in names and names[-len(CLEANUP):] == CLEANUP


SIGNALS_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    from deployer.deploy.interrupt import interruptible
    cancel, abort = threading.Event(), threading.Event()
    signal.signal(signal.SIGHUP, signal.SIG_IGN) if sys.argv[1] == "nohup" else None
    with interruptible(cancel, abort):
        os.kill(os.getpid(), signal.SIGTERM)
        print("after 1:", cancel.is_set(), abort.is_set(), flush=True)
        os.kill(os.getpid(), signal.SIGHUP)
        print("after 2:", cancel.is_set(), abort.is_set(), flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        print("still running", flush=True)
""")


def test_sigterm_sighup_sigint_first_second_third() -> None:
    p = subprocess.run([sys.executable, "-c", SIGNALS_SCRIPT, "plain"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 130, p.stderr
    assert p.stdout.splitlines() == ["after 1: True False", "after 2: True True"]
    assert "SIGTERM: starting no more hosts" in p.stderr
    assert "SIGHUP again: rolling the hosts in flight back" in p.stderr
    assert "SIGINT again: exiting now" in p.stderr


def test_an_ignored_sighup_stays_ignored() -> None:
    """Under ``nohup``, SIGHUP is not an interrupt."""
    p = subprocess.run([sys.executable, "-c", SIGNALS_SCRIPT, "nohup"], capture_output=True,
                       text=True, timeout=60)
    assert p.stdout.splitlines()[:2] == ["after 1: True False", "after 2: True False"]
    assert p.returncode == 130 and "SIGINT again: rolling the hosts in flight back" in p.stderr
