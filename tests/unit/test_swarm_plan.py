"""``plan`` with ``target: swarm``: the swarm ship's own steps, recorded
against scripted nodes (plan equals ship), with the stack's services,
configs and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.commands.base import Command
from deployer.deploy import api

SWARM_INV = """\
ssh: {user: deploy}
target: swarm
vars: {greeting: hello, db_password: "${DB_PASSWORD}", workers: 1}
hosts:
  mgr-1: {address: 203.0.113.10}
  node-1: {address: 203.0.113.11}
  node-2: {address: 203.0.113.12}
"""

COMPOSE = """\
services:
  migrate:
    image: {{ images.web }}
    command: [migrate]
    labels: {deployer.oneshot: "true"}
  web:
    image: {{ images.web }}
    environment:
      WORKERS: "{{ workers }}"
    volumes:
      - ./app.conf:/etc/app.conf:ro
"""


def swarm_project(make_project: MakeProject) -> Path:
    return make_project({"inventories/prod.yaml": SWARM_INV,
                         "templates/docker-compose.yaml.j2": COMPOSE})


def test_plan_runs_the_swarm_ship_and_names_the_other_nodes(make_project: MakeProject) -> None:
    dry = api.plan(api.Target(swarm_project(make_project), "prod", environ=ENV), tag="v1")
    assert [hp.host.name for hp in dry.plan.hosts] == ["mgr-1"]
    (run,) = dry.hosts.values()
    assert run.report.result == "deployed"
    steps = [s.name for s in run.steps]
    assert steps == [
        "check docker", "probe swarm nodes", "swarm init", "join swarm nodes",
        "read current release", "prepare deploy dir", "lock", "clean up stale uploads",
        "upload release", "registry login", "create networks", "one-shot migrate",
        "stack deploy", "wait healthy", "switch current", "prune releases",
        "remove registry credentials", "unlock", "audit log",
    ]
    by = {s.name: s.commands() for s in run.steps}
    assert by["swarm init"] == ["docker swarm init --advertise-addr 203.0.113.10"]
    joins = by["join swarm nodes"]
    assert joins[0] == "docker swarm join-token -q worker"
    # the token travels on the joining node's stdin: shown masked, never in argv
    assert [j.split(":")[0] for j in joins[1:]] == ["on node-1", "on node-2"]
    assert all(j.endswith("203.0.113.10:2377  <<< ******") for j in joins[1:])
    assert any("docker service create" in c and "--mode replicated-job" in c
               for c in by["one-shot migrate"])
    assert by["stack deploy"][0].endswith(
        "docker stack deploy --with-registry-auth --prune --detach=false -c stack.yaml shop")
    assert not any("compose" in c for cs in by.values() for c in cs)
    assert "swarm" in dry.assuming


def test_plan_lists_the_stack_and_the_configs_and_secrets_to_create(
        make_project: MakeProject) -> None:
    dry = api.plan(api.Target(swarm_project(make_project), "prod", environ=ENV), tag="v1")
    assert dry.stack is not None
    assert dry.stack["services"] == ["web"] and dry.stack["oneshots"] == ["migrate"]
    (obj,) = dry.stack["objects"]
    assert obj["kind"] == "secret" and obj["file"] == "app.conf"  # a 0600 file
    assert obj["name"].startswith("shop_app.conf_")
    dests = [f.dest for f in dry.plan.hosts[0].files]
    assert "stack.yaml" in dests and "swarm-objects" in dests


def test_a_failed_stack_deploy_redeploys_the_previous_stack(
        make_project: MakeProject, monkeypatch: pytest.MonkeyPatch) -> None:
    # `stack deploy` itself failing (a manager timing out) used to escape the
    # ship and leave whatever services had taken the new spec on it.
    from deployer.commands.release import STATE_MARKER
    from deployer.swarm import dryrun

    scripted = dryrun.SwarmAnswer.__call__
    deploys: list[str] = []

    def answer(self: dryrun.SwarmAnswer, command: Command) -> tuple[int, str]:
        if command.description == "read current release":
            return 0, f"{STATE_MARKER}\nexists=1\nwritable=1\ncurrent=20261101T000000Z-old\n"
        if command.description == "take the deploy lock":
            return 0, "current=20261101T000000Z-old\n"
        if command.description.startswith("deploy the stack"):
            deploys.append(command.display())
            if len(deploys) == 1:
                return 1, "rpc error: code = DeadlineExceeded"
        return scripted(self, command)

    monkeypatch.setattr(dryrun.SwarmAnswer, "__call__", answer)
    dry = api.plan(api.Target(swarm_project(make_project), "prod", environ=ENV), tag="v1")
    (run,) = dry.hosts.values()
    assert run.report.result == "rolled back", run.report.error
    assert "stack deploy failed" in (run.report.error or "")
    assert len(deploys) == 2 and "20261101T000000Z-old" in deploys[1]
    assert "stack deploy 20261101T000000Z-old" in [s.name for s in run.steps]
