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
