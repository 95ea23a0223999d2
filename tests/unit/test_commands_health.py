"""The health poll command and the verdict on its rows."""

from __future__ import annotations

import json

import pytest

from deployer.commands.health import (
    INSPECT_TEMPLATE,
    ContainerRow,
    containers,
    evaluate,
    last_lines,
    parse_containers,
)

# Real lines printed by the probe (Docker 20.10.24 engine), trimmed.
REAL_LINES = [
    '{"name":"/shop-web-1","service":"web","oneoff":"False","workdir":"/opt/shop/releases/r2",'
    '"image":"reg/shop/web:abc","restart_policy":"unless-stopped","restart_count":0,'
    '"state":{"Status":"running","Running":true,"Paused":false,"Restarting":false,'
    '"OOMKilled":false,"Dead":false,"Pid":4786,"ExitCode":0,"Error":"",'
    '"StartedAt":"2026-11-30T09:41:18.641312941Z","FinishedAt":"0001-01-01T00:00:00Z",'
    '"Health":{"Status":"healthy","FailingStreak":0,"Log":[{"ExitCode":0,"Output":"ok\\n"}]}}}',
    '{"name":"/shop-migrate-1","service":"migrate","oneoff":"False","workdir":"",'
    '"image":"reg/shop/web:abc","restart_policy":"no","restart_count":0,'
    '"state":{"Status":"exited","Running":false,"ExitCode":0,"Error":"",'
    '"StartedAt":"2026-11-30T09:41:18.889898334Z"}}',
    '{"name":"/shop-db-1","service":"db","oneoff":"False","workdir":"",'
    '"image":"postgres:16","restart_policy":"unless-stopped","restart_count":0,'
    '"state":{"Status":"running","ExitCode":0,"Error":"",'
    '"Health":{"Status":"healthy","Log":[]}}}',
]


def row(service: str, status: str = "running", **kw: object) -> ContainerRow:
    return ContainerRow(name=f"shop-{service}-1", service=service, status=status, **kw)  # type: ignore[arg-type]


def test_command_is_one_script_with_the_project_label() -> None:
    cmd = containers("shop", sudo=True)
    assert cmd.sudo
    assert cmd.argv[3:] == ("sh", "com.docker.compose.project=shop", INSPECT_TEMPLATE)
    assert "docker ps -aq --no-trunc --filter" in cmd.argv[2]
    assert "docker inspect --format" in cmd.argv[2]
    assert cmd.shell().startswith("sudo -n -- sh -c ")


def test_template_avoids_fields_that_break_on_some_clients() -> None:
    # `.Id` is `.ID` in the CLI's typed struct and `.State.Health` is absent
    # from raw JSON without a healthcheck: either breaks newer CLIs.
    assert ".Id" not in INSPECT_TEMPLATE
    assert ".State.Health" not in INSPECT_TEMPLATE
    assert ".Config.Env" not in INSPECT_TEMPLATE  # may hold secrets
    assert '"state":{{json .State}}' in INSPECT_TEMPLATE


def test_parse_real_lines() -> None:
    rows = parse_containers("\n".join(["WARNING: something", *REAL_LINES, "", "{broken"]))
    assert [r.service for r in rows] == ["web", "migrate", "db"]
    web = rows[0]
    assert web.name == "shop-web-1"
    assert web.status == "running" and web.health == "healthy"
    assert web.health_output == "ok"
    assert web.restart_policy == "unless-stopped"
    assert web.workdir == "/opt/shop/releases/r2"
    assert not web.oneoff
    assert rows[1].health is None and rows[1].status == "exited" and rows[1].exit_code == 0
    assert evaluate(rows, ["web", "migrate", "db"]).healthy


def test_parse_unhealthy_with_output_and_oneoff() -> None:
    line = json.dumps(
        {
            "name": "/x",
            "service": "api",
            "oneoff": "True",
            "state": {
                "Status": "running",
                "ExitCode": 0,
                "Health": {"Status": "unhealthy", "Log": [{"Output": "curl: (7)\n refused"}]},
            },
        }
    )
    (r,) = parse_containers(line)
    assert r.health == "unhealthy" and r.health_output == "curl: (7) | refused" and r.oneoff


def test_healthy_when_all_running_healthy_or_oneshots_done() -> None:
    rows = [
        row("web", health="healthy"),
        row("worker"),  # no healthcheck: running is enough
        row("migrate", "exited", exit_code=0, restart_policy="no"),
    ]
    v = evaluate(rows, ["web", "worker", "migrate"])
    assert v.healthy and v.describe() == "healthy"


def test_waiting_while_starting_created_or_missing() -> None:
    rows = [row("web", health="starting"), row("migrate", "created")]
    v = evaluate(rows, ["web", "migrate", "db"])
    assert v.status == "waiting"
    assert v.pending == (
        ("db", "no container"),
        ("migrate", "created"),
        ("web", "health: starting"),
    )
    assert v.describe() == (
        "waiting for db (no container), migrate (created), web (health: starting)"
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            row("web", "exited", exit_code=137, oom_killed=True),
            "exited with code 137 (out of memory)",
        ),
        (row("web", "exited", exit_code=2), "exited with code 2"),
        (
            row("web", health="unhealthy", health_output="503"),
            "unhealthy (healthcheck failing: 503)",
        ),
        (row("web", "restarting", restart_count=3), "restarting (restarted 3 times)"),
        (row("web", "dead"), "dead"),
        (
            row("web", "created", error="port is already allocated"),
            "could not start: port is already allocated",
        ),
        (
            row("web", "exited", exit_code=0, restart_policy="always"),
            "exited with code 0 but is not a one-shot service",
        ),
    ],
)
def test_failed_names_service_and_reason(bad: ContainerRow, reason: str) -> None:
    v = evaluate([bad, row("db", health="starting")], ["db", "web"])
    assert v.failed
    assert (v.service, v.reason) == ("web", reason)
    assert v.describe() == f"web: {reason}"


def test_failure_wins_over_waiting() -> None:
    v = evaluate([row("a", health="starting"), row("b", "exited", exit_code=1)], ["a", "b"])
    assert v.failed and v.service == "b"


def test_a_few_restarts_are_still_waiting() -> None:
    v = evaluate([row("web", "restarting", restart_count=1)], ["web"])
    assert v.status == "waiting" and v.pending == (("web", "restarting"),)
    assert evaluate([row("web", "restarting", restart_count=1)], ["web"], max_restarts=1).failed


def test_explicit_oneshots() -> None:
    done = row("migrate", "exited", exit_code=0, restart_policy="always")
    assert evaluate([done], ["migrate"], oneshot=["migrate"]).healthy
    running = row("migrate")
    v = evaluate([running], ["migrate"], oneshot=["migrate"])
    assert v.pending == (("migrate", "one-shot still running"),)
    # a server that exited 0 is not done when the compose file says it is no one-shot
    server_done = row("web", "exited", exit_code=0, restart_policy="no")
    assert evaluate([server_done], ["web"], oneshot=[]).failed
    assert evaluate(
        [row("migrate", "exited", exit_code=1)], ["migrate"], oneshot=["migrate"]
    ).failed


def test_other_services_and_compose_run_containers_are_ignored() -> None:
    rows = [
        row("web"),
        row("web", "exited", exit_code=1, oneoff=True),  # `compose run web ...`
        row("legacy", "exited", exit_code=1),  # not expected on this host
    ]
    assert evaluate(rows, ["web"]).healthy


def test_every_replica_counts() -> None:
    rows = [
        row("web"),
        ContainerRow(name="shop-web-2", service="web", status="exited", exit_code=1),
    ]
    v = evaluate(rows, ["web"])
    assert v.failed and v.service == "web"


def test_no_expected_services_is_trivially_healthy() -> None:
    assert evaluate([], []).healthy


def test_failing_python_healthcheck_is_reported_by_its_last_lines() -> None:
    # A Python healthcheck fails with a traceback: its first 200 characters
    # are frames, the error is the last line.
    frames = "".join(
        f'  File "/usr/lib/python3.12/urllib/request.py", line {n}, in open\n'
        f"    response = meth(req, response)\n" for n in range(500, 510))
    output = ("Traceback (most recent call last):\n" + frames
              + "urllib.error.HTTPError: HTTP Error 503: Service Unavailable\n")
    line = json.dumps({"name": "/w", "service": "web", "state": {
        "Status": "running", "ExitCode": 0,
        "Health": {"Status": "unhealthy", "Log": [{"Output": "old"}, {"Output": output}]}}})
    (r,) = parse_containers(line)
    assert r.health_output.endswith("urllib.error.HTTPError: HTTP Error 503: Service Unavailable")
    assert "Traceback" not in r.health_output
    assert len(r.health_output) <= 300
    v = evaluate([r], ["web"])
    assert v.failed and "HTTP Error 503" in v.describe()


def test_last_lines_cuts_at_the_front() -> None:
    assert last_lines("a\n\n  b  c \nd\ne\n") == "b c | d | e"
    long = "x" * 400 + "\nthe error"
    out = last_lines(long)
    assert out.startswith("...") and out.endswith(" | the error") and len(out) == 300
    assert last_lines("") == ""
