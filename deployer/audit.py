"""The audit trail: one JSON line per action in every host's
``<deploy_dir>/audit.log``, and the merged, newest-first view of it.

Each action that changes or touches a host's deployment (``ship``,
``rollback``, ``lock``, ``unlock``, ``prune``, ``exec``) appends one line on
that host when it is done: the time, the action, the user and machine that
acted, the git commit of the project, the release, the result, the duration
and a detail (an error, a lock message, an exec's command), masked. A ship
that finds a host ``unchanged`` changes nothing and records nothing (a
no-op ship stays one command per host). Writing the log never fails the
action: a host that cannot be written to gets a log line saying so.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from deployer.commands import audit as cmds
from deployer.config import Host
from deployer.deploy.hostrun import HostRun
from deployer.errors import ConfigError, HostError
from deployer.remote.base import Executor
from deployer.report.model import HostReport
from deployer.secrets import mask_data

ACTIONS = ("ship", "rollback", "lock", "unlock", "prune", "exec")
Job = Callable[[Executor, HostRun, Host], HostReport]


@dataclass(frozen=True)
class AuditContext:
    """What every line of one run shares."""

    app: str
    env: str
    deploy_dir: str
    user: str
    commit: str | None


def git_commit(root: Path) -> str | None:
    """The project's git commit (``+dirty`` when the work tree has changes),
    or None outside git."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                               text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def now_stamp() -> str:
    """UTC, to the millisecond: lines of two hosts merge in the order they happened."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(ctx: AuditContext, action: str, host: str, result: str, release: str | None,
         seconds: float, detail: str | None = None) -> str:
    """One audit line: a JSON object, every string masked."""
    entry: dict[str, Any] = {
        "time": now_stamp(), "action": action, "app": ctx.app, "env": ctx.env,
        "host": host, "user": ctx.user, "commit": ctx.commit, "release": release,
        "result": result, "duration": round(seconds, 3),
    }
    if detail:
        entry["detail"] = detail
    return json.dumps(mask_data(entry), separators=(",", ":"), ensure_ascii=True)


def record(ex: Executor, run: HostRun, ctx: AuditContext, action: str, result: str,
           release: str | None, seconds: float, detail: str | None = None) -> None:
    """Append one line on ``run``'s host (step ``audit log``); a failure is
    logged, never raised."""
    try:
        with run.step("audit log"):
            res = ex.run(cmds.append(
                ctx.deploy_dir, line(ctx, action, run.host, result, release, seconds, detail)),
                check=False, timeout=60)
    except HostError as e:
        run.log(f"audit log not written: {e.reason}")
        return
    if res.exit_code != 0:
        run.log(f"audit log not written: {(res.stderr or res.stdout).strip()[-200:]}")


def audited(action: str, ctx: AuditContext, job: Job,
            detail: Callable[[HostReport], str | None] | None = None) -> Job:
    """``job`` that records its outcome in the host's audit log."""

    def wrapped(ex: Executor, run: HostRun, host: Host) -> HostReport:
        from deployer.deploy.ship import StoppedBeforeStep

        t0 = time.monotonic()
        try:
            rep = job(ex, run, host)
        except StoppedBeforeStep:
            raise
        except HostError as e:
            # A host no connection reached (unreachable, a changed host key)
            # changed nothing and has no log to write to; connecting again
            # would only repeat the refusal.
            if ex.stats().connections_opened:
                record(ex, run, ctx, action, "failed", run.release, time.monotonic() - t0,
                       e.message)
            raise
        if action == "ship" and rep.result == "unchanged":
            return rep
        extra = detail(rep) if detail else None
        record(ex, run, ctx, action, rep.result, rep.release, time.monotonic() - t0,
               extra or rep.error or rep.detail)
        return rep

    return wrapped


# -- reading -------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``30m``, ``2h``, ``7d``, ``1w``)
    or a UTC date or time (``2026-12-01``, ``2026-12-01T10:00``, ``...Z``)."""
    now = now or datetime.now(timezone.utc)
    m = _RELATIVE.match(text.strip())
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text[:60]!r} is neither a duration nor a date",
                          "e.g. --since 2h, --since 7d, --since 2026-12-01T10:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _when(entry: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def parse_log(text: str, host: str) -> list[dict[str, Any]]:
    """The entries of one host's log, oldest first. A line that is not a JSON
    object with a time (a hand edit, a torn disk) is kept as ``unreadable``."""
    out: list[dict[str, Any]] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or _when(entry) is None:
            out.append({"time": None, "host": host, "action": "unreadable",
                        "detail": raw[:200]})
            continue
        entry["host"] = host  # where it was read, whatever the line says
        out.append(entry)
    return out


def merge(per_host: Iterable[list[dict[str, Any]]], since: datetime | None = None,
          limit: int | None = None) -> list[dict[str, Any]]:
    """Every host's entries in one list, newest first (unreadable lines last)."""
    floor = datetime.min.replace(tzinfo=timezone.utc)
    entries = [e for es in per_host for e in es]
    if since is not None:
        entries = [e for e in entries if (w := _when(e)) is not None and w >= since]
    entries.sort(key=lambda e: (_when(e) or floor, e.get("host", "")), reverse=True)
    return entries[:limit] if limit is not None else entries


def context(project: Any) -> AuditContext:
    """The audit context of one run on ``project`` (a :class:`~deployer.config.Project`)."""
    from deployer.plan import deployer_identity

    return AuditContext(project.app, project.env, project.deploy_dir, deployer_identity(),
                        git_commit(project.root))


def read_job(deploy_dir: str, lines: int, found: dict[str, list[dict[str, Any]]]) -> Job:
    """A per-host job that reads the last ``lines`` lines of the host's log into ``found``."""

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("read the audit log"):
            res = ex.run(cmds.read(deploy_dir, lines))
        found[host.name] = entries = parse_log(res.stdout, host.name)
        return run.report("ok", release=None, detail=f"{len(entries)} entries")

    return job
