"""Rendering per host, the server compose rewrites, and template errors."""

from __future__ import annotations

import pytest
import yaml
from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError
from deployer.plan import build_plan, image_refs, new_release_id
from deployer.render import Renderer


def plan_for(root, env="prod", limit=None):
    p = load_project(root, env, ENV)
    return build_plan(p, p.select(limit), image_refs(p, "abc123"), "r1", "abc123")


def test_renders_per_host_with_merged_vars(make_project: MakeProject) -> None:
    pl = plan_for(make_project())
    web1, web2 = pl.hosts
    conf1 = {f.dest: f for f in web1.files}["app.conf"]
    assert conf1.content.decode() == "greeting=hello\nhost=web-1\npassword=db-pass-Qz7\n"
    assert conf1.mode == 0o600
    c1 = yaml.safe_load({f.dest: f for f in web1.files}["docker-compose.yaml"].content)
    c2 = yaml.safe_load({f.dest: f for f in web2.files}["docker-compose.yaml"].content)
    assert c1["services"]["web"]["environment"]["WORKERS"] == "4"
    assert c2["services"]["web"]["environment"]["WORKERS"] == "8"
    assert c1["services"]["web"]["image"] == "registry.example.com:5000/shop/web:abc123"


def test_builtins_in_context(make_project: MakeProject) -> None:
    tpl = "{{ app }} {{ env }} {{ host.name }} {{ host.address }} {{ host.groups|join(',') }} " \
          "{{ release }} {{ images.web }} {{ groups.web|map(attribute='name')|join(',') }}\n"
    root = make_project({"templates/app.conf.j2": tpl})
    pl = plan_for(root)
    conf = {f.dest: f for f in pl.hosts[0].files}["app.conf"].content.decode()
    assert conf == ("shop prod web-1 203.0.113.10 web r1 "
                    "registry.example.com:5000/shop/web:abc123 web-1,web-2\n")


def test_relative_bind_mount_goes_to_shared_uploaded_file_stays(make_project: MakeProject) -> None:
    pl = plan_for(make_project())
    hp = pl.hosts[0]
    c = yaml.safe_load({f.dest: f for f in hp.files}["docker-compose.yaml"].content)
    assert c["services"]["web"]["volumes"] == [
        "./app.conf:/etc/app.conf:ro",
        "/opt/shop/shared/data:/data",
    ]
    assert hp.compose.shared_dirs == ["data"]


def test_long_syntax_bind_and_named_volumes(make_project: MakeProject) -> None:
    compose = """\
    services:
      db:
        image: pg
        volumes:
          - pgdata:/var/lib/postgresql/data
          - {type: bind, source: ./pg-conf, target: /etc/pg}
          - /abs/path:/x
    volumes: {pgdata: {}}
    """
    root = make_project({"templates/docker-compose.yaml.j2": compose})
    hp = plan_for(root).hosts[0]
    c = yaml.safe_load({f.dest: f for f in hp.files}["docker-compose.yaml"].content)
    vols = c["services"]["db"]["volumes"]
    assert vols[0] == "pgdata:/var/lib/postgresql/data"
    assert vols[1] == {"type": "bind", "source": "/opt/shop/shared/pg-conf", "target": "/etc/pg"}
    assert vols[2] == "/abs/path:/x"


def test_bind_mount_escaping_release_is_refused(make_project: MakeProject) -> None:
    compose = "services:\n  web:\n    image: x\n    volumes: ['../../etc:/etc']\n"
    with pytest.raises(ConfigError, match="escapes the release folder"):
        plan_for(make_project({"templates/docker-compose.yaml.j2": compose}))


def test_roles_keep_only_group_services(make_project: MakeProject) -> None:
    compose = """\
    services:
      db: {image: pg}
      web:
        image: "{{ images.web }}"
        depends_on: {db: {condition: service_healthy}}
      worker: {image: w, depends_on: [db, web]}
    """
    inv = """\
    groups:
      db: {services: [db], hosts: {db-1: {}}}
      web: {services: [web, worker], hosts: {web-1: {}}}
    """
    root = make_project({"templates/docker-compose.yaml.j2": compose,
                         "inventories/prod.yaml": inv,
                         "templates/app.conf.j2": "x\n"})
    pl = plan_for(root)
    db, web = pl.hosts
    assert db.compose.services == ["db"]
    assert web.compose.services == ["web", "worker"]
    cw = yaml.safe_load({f.dest: f for f in web.files}["docker-compose.yaml"].content)
    assert "depends_on" not in cw["services"]["web"]
    assert cw["services"]["worker"]["depends_on"] == ["web"]


def test_roles_unknown_service(make_project: MakeProject) -> None:
    inv = "vars: {workers: 1}\ngroups:\n  web: {services: [wbe], hosts: {h: {}}}\n"
    root = make_project({"inventories/prod.yaml": inv, "templates/app.conf.j2": "x\n"})
    with pytest.raises(ConfigError, match=r"services wbe .* not in the compose file"):
        plan_for(root)


def test_template_syntax_error_names_file_and_line(make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": "a\nb\n{% if x %}\nno end\n"})
    with pytest.raises(ConfigError) as e:
        plan_for(root)
    assert str(e.value).startswith("templates/app.conf.j2:")
    assert "template syntax error" in str(e.value)


def test_undefined_variable_names_template_line_var_host(make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": "line1\nvalue={{ missing_var }}\n"})
    with pytest.raises(ConfigError) as e:
        plan_for(root)
    assert str(e.value).startswith(
        "templates/app.conf.j2:2: undefined variable missing_var (host web-1)"
    )


def test_undefined_attribute(make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": "{{ images.api }}\n"})
    with pytest.raises(ConfigError, match=r"app.conf.j2:1: undefined variable .*api.* \(host"):
        plan_for(root)


def test_missing_template_file(make_project: MakeProject) -> None:
    cfg = "app: shop\nfiles:\n  - {template: templates/nope.j2, dest: docker-compose.yaml}\n"
    with pytest.raises(ConfigError, match=r"templates/nope\.j2: template not found"):
        plan_for(make_project({"deployer.yaml": cfg}))


def test_compose_file_must_be_rendered(make_project: MakeProject) -> None:
    cfg = "app: shop\nfiles:\n  - {template: templates/app.conf.j2, dest: app.conf}\n"
    with pytest.raises(ConfigError, match=r"compose_file 'docker-compose\.yaml' is not the dest"):
        plan_for(make_project({"deployer.yaml": cfg}))


def test_reserved_var_name_refused(make_project: MakeProject) -> None:
    inv = "vars: {release: x}\nhosts: {h: {}}\n"
    with pytest.raises(ConfigError, match="'release' clashes with a built-in"):
        plan_for(make_project({"inventories/prod.yaml": inv}))


def test_limit_matches_names_groups_globs(make_project: MakeProject) -> None:
    root = make_project()
    assert [h.host.name for h in plan_for(root, limit="web-2").hosts] == ["web-2"]
    assert [h.host.name for h in plan_for(root, limit="web").hosts] == ["web-1", "web-2"]
    assert [h.host.name for h in plan_for(root, limit="web-*").hosts] == ["web-1", "web-2"]
    with pytest.raises(ConfigError, match="'db' matches no host or group"):
        plan_for(root, limit="web-1,db")


def test_fingerprint_stable_and_sensitive(make_project: MakeProject) -> None:
    root = make_project()
    a = plan_for(root).hosts[0].fingerprint
    assert plan_for(root).hosts[0].fingerprint == a
    p = load_project(root, "prod", {**ENV, "DB_PASSWORD": "changed"})
    b = build_plan(p, p.hosts, image_refs(p, "abc123"), "r2", "abc123").hosts[0].fingerprint
    assert b != a
    c = build_plan(p, p.hosts, image_refs(p, "other"), "r2", "other").hosts[0].fingerprint
    assert c != b


def test_templates_parsed_once_per_run(make_project: MakeProject) -> None:
    p = load_project(make_project(), "prod", ENV)
    r = Renderer(p)
    r.render(p.hosts[0], {"web": "x"}, "r")
    r.render(p.hosts[1], {"web": "x"}, "r")
    assert len(r._cache) == 2


def test_release_id_format() -> None:
    from datetime import datetime, timezone

    rid = new_release_id("abc", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert rid == "20260102T030405Z-abc"
