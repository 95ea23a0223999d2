"""The pure parts of operating the edge proxy: the maintenance page and
routes, the proxy's image comparison, the admin API's upstreams, the route
status a host's config gives, and the usage errors of the commands."""

from __future__ import annotations

import json

import pytest
from conftest import BASIC_PROJECT, MakeProject

from deployer.commands import proxy_ops as ops
from deployer.config.models import ProxyConfig
from deployer.errors import ConfigError
from deployer.proxy import caddy, maintenance
from deployer.proxy.ops import route_statuses

ROUTES = ProxyConfig.model_validate({"routes": [
    {"service": "web", "port": 8000, "health": {"path": "/up"}},
    {"service": "api", "port": 9000, "hosts": ["api.example.com"], "path_prefix": "/v1"},
]})


def live(app: str = "shop") -> list[dict[str, object]]:
    return [caddy.render_route(app, ROUTES.routes[0], ["shop-web-2:8000", "shop-web-3:8000"]),
            caddy.render_route(app, ROUTES.routes[1], ["shop-api-1:9000"])]


def test_page_escapes_html_and_caddy_placeholders() -> None:
    p = maintenance.page("<script>alert(1)</script> & {env.DB_PASSWORD}\nback at 5")
    assert "<script>" not in p and "&lt;script&gt;" in p and "&amp;" in p
    assert "{" not in p and "}" not in p  # Caddy would expand {env.*} in a body
    assert "&#123;env.DB_PASSWORD&#125;" in p and "<br>" in p


def test_maintenance_routes_keep_id_and_match_and_answer_503() -> None:
    body = maintenance.page("back soon")
    routes = maintenance.apply(live(), body)
    for before, after in zip(live(), routes, strict=True):
        assert after["@id"] == before["@id"] and after.get("match") == before.get("match")
        (h,) = after["handle"]  # type: ignore[misc]
        assert h["handler"] == "static_response" and h["status_code"] == 503
        assert h["body"] == body and h["headers"]["Content-Type"] == ["text/html; charset=utf-8"]
    assert maintenance.apply(live(), None) == live()  # off: as rendered


def test_maintenance_merges_only_into_the_apps_routes() -> None:
    blog = caddy.render_route("blog", ROUTES.routes[0], ["blog-web-1:8000"])
    host = caddy.merge(None, "blog", ROUTES, [blog])
    cfg = caddy.merge(host, "shop", ROUTES, maintenance.apply(live(), maintenance.page("x")))
    mine, others = route_statuses(cfg, "shop", {}, set())
    assert others == 1 and all(r.maintenance for r in mine)
    assert [r.health() for r in mine] == ["maintenance page (503)"] * 2
    theirs, _ = route_statuses(cfg, "blog", {}, set())
    assert [u.address for u in theirs[0].upstreams] == ["blog-web-1:8000"]  # still proxied


def test_parse_state_file() -> None:
    m = maintenance.Maintenance("back <soon>", "ci@laptop", "2026-12-01T16:00:00Z")
    assert maintenance.parse(m.dumps()) == m
    assert maintenance.parse("") is None
    # Not ours (edited by hand): still on, with the default page.
    assert maintenance.parse("garbage").message == maintenance.DEFAULT_MESSAGE  # type: ignore[union-attr]


def test_message_checks() -> None:
    assert maintenance.check_message(None) == maintenance.DEFAULT_MESSAGE
    with pytest.raises(ConfigError, match="empty"):
        maintenance.check_message("  ")
    with pytest.raises(ConfigError, match="at most"):
        maintenance.check_message("x" * (maintenance.MAX_MESSAGE + 1))


def test_same_image_compares_pinned_refs_by_digest() -> None:
    a = "10.0.0.1:5443/app/caddy:t1@sha256:" + "a" * 64
    assert ops.same_image(a, a.replace(":t1@", ":t2@"))  # a new ship's tag, same image
    assert not ops.same_image(a, a.replace("a" * 64, "b" * 64))
    assert ops.same_image("caddy:2.6", "caddy:2.6")
    assert not ops.same_image("caddy:2.6", "caddy:2.7")


def test_upstreams_and_route_status() -> None:
    stats = ops.parse_upstreams(json.dumps([
        {"address": "shop-web-2:8000", "num_requests": 3, "fails": 0},
        {"address": "shop-web-3:8000", "num_requests": 0, "fails": 2},
    ]))
    assert ops.parse_upstreams("wget: can't connect") == {}
    cfg = caddy.merge(None, "shop", ROUTES, live())
    routes, others = route_statuses(cfg, "shop", stats, {"http://shop-web-3:8000/up"})
    web, api = sorted(routes, key=lambda r: r.service, reverse=True)
    assert others == 0 and web.match == "every request"
    assert [(u.address, u.healthy, u.num_requests, u.fails) for u in web.upstreams] == [
        ("shop-web-2:8000", True, 3, 0), ("shop-web-3:8000", False, 0, 2)]
    assert web.health() == "1 of 2 unhealthy"
    assert api.match == "hosts api.example.com; path /v1" and api.health() == "healthy"
    # The proxy not running: nothing checked, nothing claimed.
    routes, _ = route_statuses(cfg, "shop", None, None)
    assert {r.health() for r in routes} == {"unknown"}


def test_recreate_keeps_name_volume_config_and_joins_networks_first() -> None:
    cmd = ops.recreate("reg/caddy@sha256:1", 80, 443, ["shop_default", "blog_default"],
                       sudo=True)
    assert cmd.sudo and cmd.argv[-9:] == ("deployer-proxy", "deployer-proxy-data", "80", "443",
                                          "/opt/deployer-proxy", "/etc/deployer-proxy",
                                          "reg/caddy@sha256:1", "shop_default", "blog_default")
    script = cmd.argv[cmd.argv.index("-c") + 1]
    assert script.index("network connect") < script.index("docker start")
    assert ops.parse_networks("deployer-proxy shop_default \n") == ["shop_default"]


def test_look_is_read_only_and_splits() -> None:
    cmd = ops.look("/opt/shop")
    script = cmd.argv[cmd.argv.index("-c") + 1]
    for verb in ("rm ", "mv ", "docker run", "docker start", "> "):
        assert verb not in script, verb
    state, rest = ops.split_look("proxy true img\nsha none\n@@deployer-maintenance\n{}\n")
    assert state == "proxy true img\nsha none\n" and rest == "{}\n"


def test_usage_errors_exit_2(make_project: MakeProject) -> None:
    from test_cli import assert_config_error, deployer

    plain = make_project()
    p = deployer("-C", str(plain), "maintenance", "prod", "sideways")
    assert p.returncode == 2 and "on or off" in p.stderr and "Traceback" not in p.stderr
    assert_config_error(deployer("-C", str(plain), "maintenance", "prod", "on"), "proxy.routes")
    assert_config_error(deployer("-C", str(plain), "proxy", "status", "prod"), "proxy.routes")
    proxied = make_project({"deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n"
                                                             "    - {service: web, port: 8000}\n"})
    assert_config_error(deployer("-C", str(proxied), "maintenance", "prod", "off", "-m", "x"),
                        "--message goes with")
    assert_config_error(deployer("-C", str(proxied), "maintenance", "prod", "on", "-m", " "),
                        "--message is empty")


def test_route_changes_against_the_hosts_config() -> None:
    from deployer.proxy.plan_diff import route_changes

    blog = caddy.render_route("blog", ROUTES.routes[0], ["blog-web-1:8000"])
    host = caddy.merge(caddy.merge(None, "blog", ROUTES, [blog]), "shop", ROUTES, [live()[0]])
    raw = ROUTES.model_dump()
    raw["routes"][0]["path_prefix"] = "/shop"
    moved = ProxyConfig.model_validate(raw)
    planned = caddy.merge(host, "shop", moved, [
        caddy.render_route("shop", moved.routes[0], ["shop-web-9:8000"]),  # new containers
        caddy.render_route("shop", moved.routes[1], ["shop-api-9:9000"])])
    changes = {c["id"]: c for c in route_changes(host, planned, "shop")}
    assert set(changes) == {"deployer:shop:web", "deployer:shop:api"}  # never blog's
    assert changes["deployer:shop:web"]["status"] == "changed"
    assert changes["deployer:shop:web"]["what"] == "match: every request -> path /shop"
    assert changes["deployer:shop:api"] == {"id": "deployer:shop:api", "status": "added",
                                            "what": "hosts api.example.com; path /v1"}
    # Only the containers differ: unchanged. The page instead of the app: changed.
    same = caddy.merge(host, "shop", ROUTES, [caddy.render_route(
        "shop", ROUTES.routes[0], ["shop-web-7:8000"])])
    assert [c["status"] for c in route_changes(host, same, "shop")] == ["unchanged"]
    paged = caddy.merge(host, "shop", ROUTES, maintenance.apply([live()[0]], "x"))
    (c,) = route_changes(host, paged, "shop")
    assert c["what"] == "serves the app -> the maintenance page"
    assert [c["status"] for c in route_changes(host, None, "shop")] == ["removed"]


def test_plan_diff_runs_ships_steps_against_the_hosts_proxy(make_project: MakeProject) -> None:
    """The proxy part of ``plan --diff`` comes from ship's own steps, answered
    with what the host's proxy said: no start when it runs, and the config
    ship would load compared with the host's."""
    from conftest import ENV

    from deployer.deploy import api
    from deployer.deploy.dryrun import plan_settings
    from deployer.proxy.plan_diff import host_proxy_diff
    from deployer.remote.recording import ScriptedExecutor

    root = make_project({"deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n"
                                                          "    - {service: web, port: 8000}\n"})
    plan = api.render(api.Target(root, "prod", "web-1", environ=ENV))
    (hp,) = plan.hosts
    p = plan.project
    settings = plan_settings(p, "me", "now")
    # A host whose proxy runs with another app's route and an older web route of ours.
    other = caddy.render_route("blog", ROUTES.routes[0], ["blog-web-1:8000"])
    old = caddy.render_route("shop", ROUTES.routes[0], ["shop-web-1:8000"])
    host_cfg = caddy.merge(None, "shop", ROUTES, [other, old])
    look = (f"proxy true reg/caddy@sha256:{'a' * 64}\nsha abc\n{json.dumps(host_cfg)}\n"
            "@@deployer-maintenance\n")
    ex = ScriptedExecutor("web-1", lambda c: (0, look if "read-only" in c.description else ""))
    d = host_proxy_diff(ex, p, hp, settings)
    assert d is not None and d.container == "running" and not d.maintenance
    assert "start the proxy" not in d.steps and "pull the proxy image" not in d.steps
    assert "switch the proxy" in d.steps
    (web,) = d.routes  # blog's route is not ours to list
    assert web["id"] == "deployer:shop:web" and web["status"] == "changed"
    assert "health check" in web["what"]  # /up on the host, / in the project
    # Maintenance on there: ship's switch keeps the page (it reads the state too).
    on = look + maintenance.Maintenance("later").dumps()
    ex = ScriptedExecutor("web-1", lambda c: (0, on if "read-only" in c.description else ""))
    d = host_proxy_diff(ex, p, hp, settings)
    assert d is not None and d.maintenance
    assert "the maintenance page" in d.routes[0]["what"]
    # No proxy yet: ship pulls and starts it, and every route is added.
    ex = ScriptedExecutor("web-1", lambda c: (0, "proxy absent\nsha none\n@@deployer-maintenance\n"
                                              if "read-only" in c.description else ""))
    d = host_proxy_diff(ex, p, hp, settings)
    assert d is not None and d.container == "absent"
    assert {"pull the proxy image", "start the proxy"} <= set(d.steps)
    assert [r["status"] for r in d.routes] == ["added"]


def _scripted_host(make_project: MakeProject, containers: bool) -> tuple[object, list[object],
                                                                          object]:
    """A proxied project and a scripted host running release r1 behind a
    proxy; the calls it was sent are noted in the returned list."""
    from conftest import ENV

    from deployer.commands.facts import MARKER
    from deployer.commands.release import MANIFEST_MARKER, STATE_MARKER
    from deployer.config import load_project
    from deployer.deploy.dryrun import PLAN_FACTS, healthy_rows
    from deployer.deploy.runner import RunOptions
    from deployer.remote.recording import ScriptedExecutor

    root = make_project({"deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n"
                                                          "    - {service: web, port: 8000}\n"})
    project = load_project(root, "prod", ENV)
    assert project.config.proxy is not None
    manifest = {"services": ["web"], "images": {},
                "proxy": project.config.proxy.model_dump(mode="json")}
    host_cfg = caddy.merge(None, "shop", project.config.proxy, [caddy.render_route(
        "shop", project.config.proxy.routes[0], ["shop-web-1:8000"])])
    answers = {
        "read current release": f"{STATE_MARKER}\nexists=1\nwritable=1\ncurrent=r1\n"
                                f"{MANIFEST_MARKER}\n{json.dumps(manifest)}",
        "take the deploy lock": "current=r1\n",
        "probe host facts": MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in PLAN_FACTS.items()),
        "read the proxy's state": f"proxy true img\nsha abc\n{json.dumps(host_cfg)}\n",
        "check container health": healthy_rows("shop", ["web"], []) if containers else "",
    }
    calls: list[object] = []

    def executor(host: object) -> ScriptedExecutor:
        return ScriptedExecutor("web-1", lambda c: (0, answers.get(c.description, "")),
                                calls=calls)

    return project, calls, RunOptions(executor=executor)  # type: ignore[arg-type]


def test_maintenance_job_records_then_loads_the_page(make_project: MakeProject) -> None:
    import io

    from deployer.remote.recording import Call
    from deployer.report.reporters import PlainReporter

    project, calls, opts = _scripted_host(make_project, containers=True)
    hosts = project.select("web-1")  # type: ignore[attr-defined]
    run = maintenance.run(project, hosts, True, "Back <soon>", PlainReporter(io.StringIO()),
                          opts)  # type: ignore[arg-type]
    assert run.ok and run.hosts[0].detail.startswith("maintenance on")  # type: ignore[union-attr]
    sent = [c for c in calls if isinstance(c, Call) and c.command is not None]
    names = [c.name for c in sent]
    assert names.index("take the deploy lock") < names.index("record maintenance on") \
        < names.index("write the proxy config") < names.index("reload the proxy")
    written = next(c.command for c in sent if c.name == "write the proxy config")
    (route,) = json.loads(written.stdin)["apps"]["http"]["servers"]["deployer"]["routes"]
    assert route["handle"][0]["status_code"] == 503 and "Back &lt;soon&gt;" in \
        route["handle"][0]["body"]
    state = next(c.command for c in sent if c.name == "record maintenance on")
    assert json.loads(state.stdin)["message"] == "Back <soon>"

    calls.clear()
    run = maintenance.run(project, hosts, False, None, PlainReporter(io.StringIO()), opts)  # type: ignore[arg-type]
    assert run.ok, run.hosts
    names = [c.name for c in calls if isinstance(c, Call)]
    assert names.index("write the proxy config") < names.index("record maintenance off")
    written = [c.command for c in calls if isinstance(c, Call) and c.command is not None
               and c.name == "write the proxy config"][-1]
    (route,) = json.loads(written.stdin)["apps"]["http"]["servers"]["deployer"]["routes"]
    assert route["handle"][0]["upstreams"] == [{"dial": "shop-web-1:8000"}]  # the app again


def test_maintenance_off_without_containers_changes_nothing(make_project: MakeProject) -> None:
    import io

    from deployer.remote.recording import Call
    from deployer.report.reporters import PlainReporter

    project, calls, opts = _scripted_host(make_project, containers=False)
    run = maintenance.run(project, project.select("web-1"), False, None,  # type: ignore[attr-defined]
                          PlainReporter(io.StringIO()), opts)  # type: ignore[arg-type]
    assert not run.ok and "no running container" in (run.hosts[0].error or "")
    names = [c.name for c in calls if isinstance(c, Call)]
    assert "write the proxy config" not in names and "record maintenance off" not in names
