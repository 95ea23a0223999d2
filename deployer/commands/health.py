"""Health gating: one remote command per poll, and a pure verdict.

deployer waits for health itself instead of ``compose up --wait`` so that
compose v1 and v2 behave the same. Both label every container with
``com.docker.compose.project`` and ``com.docker.compose.service``; the probe
lists the project's containers (exited ones included) with ``docker ps`` and
prints one JSON object per container from ``docker inspect`` with a Go
template. ``docker ps --format`` has no health or exit code; the template uses
only ``json`` and ``index``, which Docker 20.10 (Debian 12's docker.io) has,
and prints no environment (it may hold secrets).

:func:`evaluate` turns the rows into healthy / waiting / failed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from deployer.commands.base import Command, Script

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"

# Only fields whose names are the same in the CLI's typed structs and in the
# raw JSON: newer CLIs fall back to the raw JSON when a typed lookup fails
# (`.Id` is `.ID` in the typed struct), and in the raw JSON an absent
# `.State.Health` is a template error. `.State` as a whole is safe in both, and
# its Health (with the last healthcheck outputs) is read in Python.
INSPECT_TEMPLATE = (
    "{"
    '"name":{{json .Name}},'
    f'"service":{{{{json (index .Config.Labels "{SERVICE_LABEL}")}}}},'
    f'"oneoff":{{{{json (index .Config.Labels "{ONEOFF_LABEL}")}}}},'
    f'"workdir":{{{{json (index .Config.Labels "{WORKDIR_LABEL}")}}}},'
    '"image":{{json .Config.Image}},'
    '"restart_policy":{{json .HostConfig.RestartPolicy.Name}},'
    '"restart_count":{{json .RestartCount}},'
    '"state":{{json .State}}'
    "}"
)

# `docker ps` then `docker inspect` of its ids: a container removed in between
# makes inspect complain about that one id; the others are still printed, and
# the next poll sees the new state. An unreachable daemon fails `docker ps`.
_PROBE = """
ids=$(docker ps -aq --no-trunc --filter "label=$1") || exit $?
[ -n "$ids" ] || exit 0
docker inspect --format "$2" $ids 2>/dev/null
exit 0
""".strip()


def containers(app: str, *, sudo: bool = False) -> Command:
    """The poll: every container of project ``app`` as a JSON line."""
    return Script(
        _PROBE,
        args=(f"{PROJECT_LABEL}={app}", INSPECT_TEMPLATE),
        sudo=sudo,
        description="check container health",
    ).command()


@dataclass(frozen=True)
class ContainerRow:
    """One container of the project, as the probe saw it."""

    name: str
    service: str
    status: str  # created, running, restarting, exited, paused, dead, removing
    exit_code: int = 0
    health: str | None = None  # starting, healthy, unhealthy; None: no healthcheck
    health_output: str = ""  # the last healthcheck's output, for the failure message
    restart_policy: str = ""
    restart_count: int = 0
    image: str = ""
    oneoff: bool = False  # `compose run` container, not part of the deployment
    workdir: str = ""
    started_at: str = ""
    error: str = ""  # the daemon's error starting it (e.g. a port in use)
    oom_killed: bool = False


#: How much of a failing healthcheck's output the failure message keeps:
#: its last lines, where a traceback or a curl error says what went wrong.
HEALTH_OUTPUT_LINES = 3
HEALTH_OUTPUT_CHARS = 300


def last_lines(text: str, lines: int = HEALTH_OUTPUT_LINES,
               chars: int = HEALTH_OUTPUT_CHARS) -> str:
    """The last ``lines`` non-blank lines of ``text``, whitespace collapsed,
    joined by `` | ``, and at most the last ``chars`` characters of that
    (cut at the front, marked ``...``): a Python healthcheck's traceback
    ends with the error, so its end is what the message must show."""
    kept = [" ".join(line.split()) for line in text.splitlines() if line.strip()][-lines:]
    out = " | ".join(kept)
    return out if len(out) <= chars else "..." + out[len(out) - chars + 3:]


def _last_health_output(health: dict[str, Any]) -> str:
    log = health.get("Log")
    if isinstance(log, list) and log and isinstance(log[-1], dict):
        return last_lines(str(log[-1].get("Output") or ""))
    return ""


def _row(obj: dict[str, Any]) -> ContainerRow:
    raw_state = obj.get("state")
    state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
    raw_health = state.get("Health")
    health: dict[str, Any] | None = raw_health if isinstance(raw_health, dict) else None
    return ContainerRow(
        name=str(obj.get("name") or "").lstrip("/"),
        service=str(obj.get("service") or ""),
        status=str(state.get("Status") or ""),
        exit_code=int(state.get("ExitCode") or 0),
        health=(str(health.get("Status") or "") or None) if health else None,
        health_output=_last_health_output(health) if health else "",
        restart_policy=str(obj.get("restart_policy") or ""),
        restart_count=int(obj.get("restart_count") or 0),
        image=str(obj.get("image") or ""),
        oneoff=str(obj.get("oneoff") or "").lower() == "true",
        workdir=str(obj.get("workdir") or ""),
        started_at=str(state.get("StartedAt") or ""),
        error=str(state.get("Error") or ""),
        oom_killed=bool(state.get("OOMKilled")),
    )


def parse_containers(stdout: str) -> list[ContainerRow]:
    """Rows from the probe's output; lines that are not JSON objects are
    skipped (a daemon warning must not break the poll)."""
    rows: list[ContainerRow] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            rows.append(_row(obj))
    return rows


Status = Literal["healthy", "waiting", "failed"]


@dataclass(frozen=True)
class HealthVerdict:
    """``failed``: ``service`` and ``reason`` say which and why (stop waiting,
    roll back). ``waiting``: ``pending`` lists ``(service, what)`` still not
    ready; at the deadline the caller reports them as the failure."""

    status: Status
    service: str | None = None
    reason: str = ""
    pending: tuple[tuple[str, str], ...] = ()

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def describe(self) -> str:
        if self.status == "healthy":
            return "healthy"
        if self.status == "failed":
            return f"{self.service}: {self.reason}"
        return "waiting for " + ", ".join(f"{s} ({why})" for s, why in self.pending)


# Restart policies under which a container that exited 0 stays exited: such
# a container is a finished one-shot (a migration), not a crashed server.
_STAYS_EXITED = {"", "no", "on-failure"}


def _check(row: ContainerRow, oneshot: bool | None, max_restarts: int) -> tuple[str, str]:
    """("ok"|"wait"|"fail", why) for one container."""
    if row.status == "running":
        if row.health == "unhealthy":
            last = f": {row.health_output}" if row.health_output else ""
            return "fail", f"unhealthy (healthcheck failing{last})"
        if row.health == "starting":
            return "wait", "health: starting"
        if oneshot:
            return "wait", "one-shot still running"
        return "ok", ""
    if row.status == "exited":
        if row.exit_code != 0:
            extra = " (out of memory)" if row.oom_killed else ""
            extra += f": {row.error}" if row.error else ""
            return "fail", f"exited with code {row.exit_code}{extra}"
        is_oneshot = oneshot if oneshot is not None else row.restart_policy in _STAYS_EXITED
        if is_oneshot:
            return "ok", ""
        return "fail", "exited with code 0 but is not a one-shot service"
    if row.status == "restarting":
        if row.restart_count >= max_restarts:
            return "fail", f"restarting (restarted {row.restart_count} times)"
        return "wait", "restarting"
    if row.status == "dead":
        return "fail", f"dead{': ' + row.error if row.error else ''}"
    if row.status == "created" and row.error:
        return "fail", f"could not start: {row.error}"
    return "wait", row.status or "unknown state"


def evaluate(
    rows: Iterable[ContainerRow],
    expected_services: Collection[str],
    *,
    oneshot: Collection[str] | None = None,
    max_restarts: int = 3,
    may_exit: Collection[str] = (),
) -> HealthVerdict:
    """Judge one poll.

    Healthy: every expected service has a container, and each of them is
    running (and healthy, if it has a healthcheck) or is a one-shot that
    exited 0. Failed, at once: a container exited non-zero, is unhealthy, is
    dead, or keeps restarting (``max_restarts``). Otherwise waiting; a service
    with no container yet is waiting ("no container"), and becomes the failure
    the caller reports if the deadline passes.

    ``oneshot``: the services known to be one-shots (from the compose file,
    :attr:`deployer.project.ServerCompose.oneshot`); with None, a
    container that exited 0 under restart policy ``no``/``on-failure`` counts
    as a finished one-shot. ``may_exit``: services judged that way even with
    ``oneshot`` given (``restart: "no"``: running or exited 0 are both fine,
    :attr:`deployer.project.ServerCompose.may_exit`). Containers of other
    services and ``compose run``
    containers are ignored.
    """
    expected = list(dict.fromkeys(expected_services))
    by_service: dict[str, list[ContainerRow]] = {s: [] for s in expected}
    for row in rows:
        if row.oneoff or row.service not in by_service:
            continue
        by_service[row.service].append(row)

    pending: list[tuple[str, str]] = []
    for service in sorted(by_service):
        found = by_service[service]
        if not found:
            pending.append((service, "no container"))
            continue
        is_oneshot = None if oneshot is None or service in may_exit else service in oneshot
        for row in sorted(found, key=lambda r: r.name):
            verdict, why = _check(row, is_oneshot, max_restarts)
            if verdict == "fail":
                return HealthVerdict("failed", service=service, reason=why)
            if verdict == "wait":
                pending.append((service, why))
                break
    if pending:
        return HealthVerdict("waiting", pending=tuple(pending))
    return HealthVerdict("healthy")
