"""The swarm health gate, on the output of the services probe as Docker
20.10 prints it, and the swarm commands as data (exact argv)."""

from __future__ import annotations

import json

from deployer.swarm import commands
from deployer.swarm.cluster import parse_info
from deployer.swarm.gate import baseline, evaluate, parse_probe, pulling

STARTED_OLD = "2026-12-01T12:00:00.1Z"
STARTED_NEW = "2026-12-01T12:22:43.6Z"


def service(name: str, *, global_mode: bool = True, replicas: int = 1,
            update: dict[str, str] | None = None) -> dict[str, object]:
    mode = {"Global": {}} if global_mode else {"Replicated": {"Replicas": replicas}}
    svc: dict[str, object] = {"Spec": {"Name": name, "Mode": mode, "TaskTemplate": {
        "ContainerSpec": {"Image": "reg/shop/web:2@sha256:abc"}}}}
    if update:
        svc["UpdateStatus"] = update
    return svc


def task(name: str, node: str, desired: str, state: str, error: str = "") -> str:
    return json.dumps({"Name": name, "Node": node, "DesiredState": desired,
                       "CurrentState": state, "Error": error})


def probe(services: list[dict[str, object]], tasks: list[str]) -> str:
    return json.dumps(services) + f"\n{commands.PROBE_MARK}\n" + "\n".join(tasks) + "\n"


RUNNING_3 = [task(f"shop_web.n{i}", f"node-{i}", "Running", "Running 5 seconds ago")
             for i in (1, 2, 3)]


def test_every_node_running_is_healthy() -> None:
    states = parse_probe(probe([service("shop_web")], RUNNING_3))
    s = states["shop_web"]
    assert (s.desired, s.running, s.image) == (3, 3, "reg/shop/web:2@sha256:abc")
    assert evaluate(states, "shop", ["web"], {}).healthy


def test_a_node_still_starting_is_pending() -> None:
    tasks = [*RUNNING_3[:2], task("shop_web.n3", "node-3", "Running", "Starting 1 second ago")]
    v = evaluate(parse_probe(probe([service("shop_web")], tasks)), "shop", ["web"], {})
    assert v.status == "pending" and v.reason == "2/3 tasks running"


def test_a_replaced_task_and_its_successor_count_once_per_node() -> None:
    tasks = [*RUNNING_3, task("shop_web.n1", "node-1", "Running", "Pending 2 seconds ago",
                              "host-mode port already in use on 1 node")]
    states = parse_probe(probe([service("shop_web")], tasks))
    assert (states["shop_web"].desired, states["shop_web"].running) == (3, 3)


def test_a_rollback_by_swarm_fails_the_gate_naming_the_service_and_task_errors() -> None:
    update = {"State": "rollback_completed", "StartedAt": STARTED_NEW,
              "Message": "rollback completed"}
    tasks = [*RUNNING_3, task("shop_web.n2", "node-2", "Shutdown", "Failed 12 seconds ago",
                              '"task: non-zero exit (137): dockerexec: unhealthy container"')]
    states = parse_probe(probe([service("shop_web", update=update)], tasks))
    v = evaluate(states, "shop", ["web"], {"shop_web": STARTED_OLD})
    assert v.status == "failed" and v.rolled_back and v.service == "web"
    assert v.describe() == ("web: swarm rolled the update back (rollback completed); task "
                            "errors: node-2: task: non-zero exit (137): dockerexec: unhealthy "
                            "container")


def test_an_old_deploys_rollback_does_not_fail_this_one() -> None:
    update = {"State": "rollback_completed", "StartedAt": STARTED_OLD, "Message": "x"}
    before = parse_probe(probe([service("shop_web", update=update)], RUNNING_3))
    assert baseline(before) == {"shop_web": STARTED_OLD}
    assert evaluate(before, "shop", ["web"], baseline(before)).healthy


def test_an_update_in_progress_and_a_missing_service_are_pending() -> None:
    update = {"State": "rollback_started", "StartedAt": STARTED_NEW,
              "Message": "update rolled back due to failure"}
    states = parse_probe(probe([service("shop_web", update=update),
                                service("shop_worker", global_mode=False, replicas=2)],
                               RUNNING_3))
    v = evaluate(states, "shop", ["web", "worker", "api"], {})
    assert v.status == "pending"
    assert v.pending == [("web", "update rolled back due to failure"),
                         ("worker", "0/2 tasks running"), ("api", "not created yet")]


def test_an_empty_stack_parses_to_nothing() -> None:
    assert parse_probe("") == {}


def test_node_state_from_docker_info() -> None:
    st = parse_info('{"NodeID":"abc","LocalNodeState":"active","ControlAvailable":false,'
                    '"RemoteManagers":[{"NodeID":"m","Addr":"10.0.0.1:2377"}]}')
    assert (st.state, st.node_id, st.control, st.managers) == ("active", "abc", False,
                                                               ("10.0.0.1:2377",))
    assert parse_info('{"NodeID":"","LocalNodeState":"inactive"}').state == "inactive"


def test_the_join_token_travels_on_stdin() -> None:
    c = commands.swarm_join("10.0.0.1:2377", "SWMTKN-1-secret")
    assert "SWMTKN-1-secret" not in " ".join(c.argv)
    assert c.stdin == "SWMTKN-1-secret\n"
    assert c.argv[-2:] == ("sh", "10.0.0.1:2377")


def test_stack_deploy_argv() -> None:
    c = commands.stack_deploy("shop", "/opt/shop/releases/r1", (("DOCKER_CONFIG", "/d"),))
    assert c.argv == ("docker", "stack", "deploy", "--with-registry-auth", "--prune", "-c",
                      "stack.yaml", "shop")
    assert c.cwd == "/opt/shop/releases/r1" and c.env == (("DOCKER_CONFIG", "/d"),)
    w = commands.stack_deploy("shop", "/r", wait=True, resolve_image=False)
    assert w.argv[5:9] == ("--detach=false", "--resolve-image", "never", "-c")


def test_a_one_shot_job_keeps_its_environment_out_of_argv() -> None:
    spec = {"image": "reg/web:1", "command": "flask db upgrade",
            "environment": {"DB_PASSWORD": "pa$$word"}, "env_file": ["./app.env"]}
    c = commands.job_create("shop_migrate_job-r1", "shop", spec, ["shop_default"], "/r")
    assert c.argv == (
        "docker", "service", "create", "--detach", "--quiet", "--name", "shop_migrate_job-r1",
        "--mode", "replicated-job", "--restart-condition", "none", "--with-registry-auth",
        "--label", "deployer.oneshot=shop", "--network", "shop_default",
        "--env-file", "./app.env", "--env-file", "/dev/stdin",
        "--", "reg/web:1", "flask", "db", "upgrade")
    assert c.stdin == "DB_PASSWORD=pa$word\n"


def test_stack_logs_of_one_service_or_all() -> None:
    one = commands.stack_logs("shop", "web", tail=5)
    assert one.argv[3:] == ("sh", "shop", "5", "--no-trunc", "shop_web")
    every = commands.stack_logs("shop", None, tail=100, follow=True)
    assert every.argv[3:] == ("sh", "shop", "100", "--follow")


def test_a_task_before_its_start_counts_as_pulling() -> None:
    tasks = [*RUNNING_3[:2], task("shop_web.n3", "node-3", "Running", "Preparing 9 seconds ago")]
    assert pulling(parse_probe(probe([service("shop_web")], tasks)))
    assert not pulling(parse_probe(probe([service("shop_web")], RUNNING_3)))
