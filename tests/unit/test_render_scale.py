"""Rendering a fleet costs the same per host whatever the fleet's size
(issue 19): the ``groups`` built-in is built once per plan, not once per host.
Measured by counting the work done, never by timing it."""

from __future__ import annotations

import pytest
from conftest import ENV, MakeProject

from deployer import render
from deployer.config import Host, load_project
from deployer.plan import build_plan, image_refs


def inventory(n: int) -> str:
    web = "".join(f"      web-{i}: {{address: 198.51.100.{i % 250 + 1}}}\n" for i in range(n - 1))
    return ("ssh: {user: deploy}\n"
            'vars: {greeting: hello, db_password: "${DB_PASSWORD}", workers: 1}\n'
            "groups:\n"
            f"  web:\n    hosts:\n{web}"
            "  db:\n    hosts:\n      db-1: {address: 203.0.113.50}\n")


@pytest.mark.parametrize("n", [10, 40, 160])
def test_work_per_host_does_not_grow_with_the_fleet(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    # Every host's template reaches the db host through ``groups``.
    root = make_project({"inventories/prod.yaml": inventory(n),
                         "templates/app.conf.j2": "db={{ groups.db[0].address }} "
                                                  "peers={{ groups.web | length }}\n"})
    project = load_project(root, "prod", ENV)
    infos = 0
    groupings = 0
    real_info, real_groups = Host.template_info, render.group_hosts

    def counted_info(self: Host) -> dict[str, object]:
        nonlocal infos
        infos += 1
        return real_info(self)

    def counted_groups(p: object) -> dict[str, list[dict[str, object]]]:
        nonlocal groupings
        groupings += 1
        return real_groups(p)  # type: ignore[arg-type]

    monkeypatch.setattr(Host, "template_info", counted_info)
    monkeypatch.setattr(render, "group_hosts", counted_groups)
    plan = build_plan(project, project.select(None), image_refs(project, "t"), "r1", "t")
    assert len(plan.hosts) == n
    conf = {f.dest: f for f in plan.hosts[0].files}["app.conf"].content.decode()
    assert conf == f"db=203.0.113.50 peers={n - 1}\n"
    # One walk of the inventory for ``groups`` (n hosts), then each host's own
    # ``host`` built-in (n): 2n in all. Per host it was n + 1: n * (n + 1).
    assert groupings == 1
    assert infos == 2 * n
