"""``plan --diff`` with ``target: swarm``: the prediction of what ``stack
deploy`` creates, updates and removes, from the two stack files and the
live services (pure), and the parsing of the manager's answer."""

from __future__ import annotations

import json

import yaml

from deployer.swarm import gate
from deployer.swarm.commands import PROBE_MARK
from deployer.swarm.diff import drift, parse_stack_inspect, predict, stack_inspect

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def stack(index_hash: str = "aaa", web_image: str = f"reg/app/py@{D1}",
          worker_env: str = "1") -> dict:
    return yaml.safe_load(f"""
        services:
          web:
            image: {web_image}
            configs: [{{source: site_index.html, target: /srv/index.html}}]
          worker:
            image: reg/app/py@{D1}
            environment: {{N: "{worker_env}"}}
        configs:
          site_index.html: {{file: ./site/index.html, name: app_site_index.html_{index_hash}}}
    """)


def live(*names: str, running: int = 1) -> dict[str, gate.ServiceState]:
    return {f"app_{n}": gate.ServiceState(
        f"app_{n}", "", False, 1, tasks=tuple(gate.Task("n1", "Running", "Running 1s")
                                             for _ in range(running)))
            for n in names}


def test_a_new_config_updates_only_the_service_that_mounts_it() -> None:
    c, u, r = predict("app", stack("bbb"), stack("aaa"), live("web", "worker"),
                      first_release=False)
    assert (c, u, r) == ({}, {"web": "config site_index.html changed"}, {})


def test_same_stack_updates_nothing() -> None:
    assert predict("app", stack(), stack(), live("web", "worker"),
                   first_release=False) == ({}, {}, {})


def test_definition_and_image_changes_name_the_keys_never_the_values() -> None:
    _, u, _ = predict("app", stack(web_image=f"reg/app/py@{D2}", worker_env="s3cret-value"),
                      stack(), live("web", "worker"), first_release=False)
    assert u == {"web": "image changed", "worker": "definition changed (environment)"}
    assert "s3cret" not in json.dumps(u)


def test_an_image_not_pushed_yet_may_update() -> None:
    _, u, _ = predict("app", stack(web_image="reg/app/py:c-new"), stack(),
                      live("web", "worker"), first_release=False)
    assert u["web"].startswith("image not in the registry yet")


def test_first_release_new_gone_and_unreadable() -> None:
    assert predict("app", stack(), None, {}, first_release=True)[0] == {
        "web": "new service", "worker": "new service"}
    new = stack()
    del new["services"]["worker"]
    c, u, r = predict("app", new, None, live("web", "worker", "old"), first_release=False)
    assert c == {} and u == {"web": "current stack file not readable; assumed changed"}
    assert r == {"old": "not in the new stack (stack deploy --prune)",
                 "worker": "not in the new stack (stack deploy --prune)"}


def test_drift_is_a_service_not_running_as_the_current_stack_says() -> None:
    states = {**live("web", running=0), **live("worker")}
    assert drift("app", ["web", "worker", "gone"], states) == {
        "web": "0/1 tasks running", "gone": "no such service in the swarm"}


def test_the_managers_answer_parses_and_the_command_reads_only() -> None:
    svc = [{"Spec": {"Name": "app_web", "Mode": {"Replicated": {"Replicas": 1}}}}]
    task = json.dumps({"Name": "app_web.1", "Node": "n1", "DesiredState": "Running",
                       "CurrentState": "Running 3 seconds ago"})
    out = ("@@deployer stack\nservices: {web: {image: x}}\n@@deployer objects\n"
           "config app_a_1\nsecret app_b_2\n@@deployer services\n"
           f"{json.dumps(svc)}\n{PROBE_MARK}\n{task}\n")
    st = parse_stack_inspect(out)
    assert st.stack_text == "services: {web: {image: x}}\n"
    assert st.objects == {"config app_a_1", "secret app_b_2"}
    assert st.services["app_web"].running == 1
    empty = parse_stack_inspect("@@deployer stack\n@@deployer objects\n@@deployer services\n")
    assert empty.stack_text is None and empty.objects == set() and empty.services == {}
    script = stack_inspect("app", "/opt/app").argv[2]
    for verb in (" rm ", " create ", " update ", " deploy "):
        assert verb not in script
