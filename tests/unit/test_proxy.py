"""The edge proxy's pure parts: config model, Caddy config rendering and
merging (each app owns only its routes), command argv and output parsing."""

from __future__ import annotations

import json
import re

import pytest
from conftest import BASIC_PROJECT, ENV, MakeProject

from deployer.commands import proxy as pc
from deployer.commands.base import Command
from deployer.commands.compose import Compose
from deployer.config import load_project
from deployer.config.models import ProxyConfig
from deployer.errors import ConfigError
from deployer.proxy import caddy
from deployer.proxy.switch import host_proxy
from deployer.proxy.validate import check_services

ROUTES = {"routes": [
    {"service": "web", "port": 8000, "health": {"path": "/up"}, "drain_timeout": 7},
    {"service": "api", "port": 9000, "hosts": ["api.example.com"], "path_prefix": "/v1"},
]}


def cfg(**over: object) -> ProxyConfig:
    return ProxyConfig.model_validate({**ROUTES, **over})


def test_route_proxies_to_upstreams_with_active_health_check_and_no_keepalive() -> None:
    web = cfg().routes[0]
    r = caddy.render_route("shop", web, ["shop-web-2:8000"])
    assert r["@id"] == "deployer:shop:web"
    assert "match" not in r  # no hosts, prefix "/": every request
    (h,) = r["handle"]
    assert h["upstreams"] == [{"dial": "shop-web-2:8000"}]
    assert h["health_checks"]["active"] == {"uri": "/up", "interval": "1s", "timeout": "5s",
                                            "expect_status": 2}
    assert h["transport"]["keep_alive"] == {"enabled": False}


def test_route_matches_hosts_and_path_prefix() -> None:
    api = cfg().routes[1]
    r = caddy.render_route("shop", api, ["a:9000"])
    assert r["match"] == [{"host": ["api.example.com"], "path": ["/v1", "/v1/*"]}]


def test_merge_replaces_only_the_apps_own_routes() -> None:
    other = ProxyConfig.model_validate({"routes": [{"service": "web", "port": 80,
                                                    "hosts": ["blog.example.com"]}]})
    host = caddy.merge(None, "blog", other,
                       [caddy.render_route("blog", other.routes[0], ["blog-web-1:80"])])
    c = cfg()
    first = caddy.merge(host, "shop", c, [caddy.render_route("shop", r, ["old:1"])
                                          for r in c.routes])
    second = caddy.merge(first, "shop", c, [caddy.render_route("shop", c.routes[0], ["new:1"])])
    assert caddy.upstreams_of(second, "blog") == {"web": ["blog-web-1:80"]}  # untouched
    assert caddy.upstreams_of(second, "shop") == {"web": ["new:1"]}  # api route dropped
    ids = [r["@id"] for r in second["apps"]["http"]["servers"]["deployer"]["routes"]]
    assert ids == ["deployer:blog:web", "deployer:shop:web"]  # host routes first
    assert host["apps"]["http"]["servers"]["deployer"]["routes"][0]["@id"] == "deployer:blog:web"


def test_merge_sets_ports_and_a_grace_period_past_the_longest_drain() -> None:
    c = cfg(http_port=8080, https_port=8443)
    out = caddy.merge(None, "shop", c, [])
    http = out["apps"]["http"]
    assert http["servers"]["deployer"]["listen"] == [":8080"]
    assert (http["http_port"], http["https_port"]) == (8080, 8443)
    assert http["grace_period"] == "35s"  # the longest drain (api: default 30) + 5
    assert caddy.dumps(out) == caddy.dumps(json.loads(caddy.dumps(out)))


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="two routes"):
        ProxyConfig.model_validate({"routes": [{"service": "w", "port": 1}] * 2})
    with pytest.raises(ValueError, match=r"proxy\.acme is not set"):
        ProxyConfig.model_validate({"routes": [{"service": "w", "port": 1, "tls": "acme",
                                                "hosts": ["a.example"]}]})
    with pytest.raises(ValueError, match="needs hosts"):
        ProxyConfig.model_validate({"routes": [{"service": "w", "port": 1, "tls": "acme"}],
                                    "acme": {"email": "a@b.c"}})
    with pytest.raises(ValueError, match="not a DNS name"):
        ProxyConfig.model_validate({"routes": [{"service": "w", "port": 1,
                                                "hosts": ["a b"]}]})


def test_inventory_overrides_proxy_keys(make_project: MakeProject) -> None:
    root = make_project({
        "deployer.yaml": BASIC_PROJECT + "proxy:\n  http_port: 8080\n  routes:\n"
                         "    - {service: web, port: 8000}\n",
    })
    inv = root / "inventories" / "prod.yaml"
    inv.write_text(inv.read_text() + "proxy:\n  routes: [{service: web, port: 8000, "
                   "hosts: [staging.example.com]}]\n")
    p = load_project(root, "prod", ENV)
    assert p.config.proxy is not None
    assert p.config.proxy.http_port == 8080  # kept from deployer.yaml
    assert p.config.proxy.routes[0].hosts == ["staging.example.com"]  # the inventory's


def test_proxied_service_with_ports_is_refused() -> None:
    text = "services:\n  web:\n    image: x\n    ports: ['8000:8000']\n  db:\n    image: y\n"
    with pytest.raises(ConfigError) as e:
        check_services(cfg(), text, "docker-compose.yaml (web-1)")
    assert "'web' is proxied" in e.value.message and "ports" in e.value.message
    check_services(cfg(), "services:\n  web: {image: x}\n  db: {image: y, ports: ['5432']}\n",
                   "x")  # only proxied services matter


def test_host_proxy_only_for_routes_of_the_hosts_services() -> None:
    assert host_proxy(cfg(), ["db"], {}) is None
    hp = host_proxy(cfg(image="proxy"), ["web", "db"], {"proxy": "reg/caddy@sha256:1"})
    assert hp is not None and hp.services == ["web"] and hp.image == "reg/caddy@sha256:1"
    assert hp.not_proxied(["web", "db", "migrate"]) == ["db", "migrate"]


def test_scale_up_keeps_the_old_containers_v1_and_v2() -> None:
    for variant, program in (("v2", ["docker", "compose"]), ("v1", ["docker-compose"])):
        c = Compose(app="shop", variant=variant, cwd="/opt/shop/releases/r2")  # type: ignore[arg-type]
        cmd = pc.scale_up(c, "web", 4)
        assert list(cmd.argv) == [*program, "-p", "shop", "-f", "docker-compose.yaml", "up",
                                  "-d", "--no-deps", "--no-recreate", "--scale", "web=4", "web"]
        assert cmd.cwd == "/opt/shop/releases/r2"


def test_parse_state() -> None:
    st = pc.parse_state('proxy true caddy:2.6\nsha abc\n{"apps": {}}\n')
    assert (st.running, st.image, st.sha, st.config) == (True, "caddy:2.6", "abc", {"apps": {}})
    st = pc.parse_state("proxy absent\nsha none\n")
    assert (st.running, st.config, st.sha) == (None, None, "none")
    assert pc.parse_state("").running is None  # the recording executor of `plan`


def test_write_config_sends_the_content_on_stdin_and_checks_what_it_read() -> None:
    cmd = pc.write_config('{"apps": {}}\n', "abc")
    assert cmd.stdin == '{"apps": {}}\n' and cmd.sudo
    assert cmd.argv[-3:] == (pc.PROXY_DIR, pc.CONFIG, "abc")
    assert pc.EXIT_CONFLICT in cmd.ok_codes


def test_probe_and_drain_parsing() -> None:
    assert pc.probe_failures(1, "fail http://b:1/up\nnoise\n") == ["http://b:1/up"]
    assert pc.probe_failures(0, "") == []
    tcp = (
        "  sl  local_address rem_address   st\n"
        "   0: 00000000:1F40 00000000:0000 0A 0\n"  # listening on 8000
        "   1: 0B00A8C0:1F40 0C00A8C0:D2C4 01 0\n"  # a request in flight
        "   2: 0B00A8C0:1F40 0C00A8C0:D2C6 06 0\n"  # TIME_WAIT: done
        "   3: 0B00A8C0:9C40 0C00A8C0:D2C8 01 0\n"  # another port
    )
    assert pc.count_established(f"== web-1\n{tcp}", 8000) == 1
    assert pc.count_established("== web-1\ngone\n", 8000) == 0


def test_plan_shows_the_switch_and_check_refuses_ports(make_project: MakeProject) -> None:
    from test_cli import deployer

    compose = ("services:\n  web:\n    image: {{ images.web }}\n  db:\n    image: postgres\n"
               "    ports: ['5432:5432']\n")
    root = make_project({
        "deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n    - {service: web, port: 8000}\n",
        "templates/docker-compose.yaml.j2": compose,
    })
    p = deployer("-C", str(root), "plan", "prod", "--limit", "web-1", "--no-files")
    assert p.returncode == 0, p.stderr
    numbered = [m.group(1).split(" (")[0] for ln in p.stdout.splitlines()
                if (m := re.match(r"\s+\d+\. (.*)", ln))]
    i = numbered.index("pull images")
    # the apply marker first (kill -9 recovery), as for a plain compose up
    assert re.fullmatch(r"mark \S+ as being applied", numbered[i + 1]), numbered[i + 1]
    assert numbered[i + 2:numbered.index("switch current")] == [
        "read proxy state", "pull the proxy image", "write the proxy config", "start the proxy",
        "read proxy state", "compose up", "wait healthy", "start new web containers",
        "wait healthy", "proxy health check", "switch the proxy",
    ]
    assert "up -d --no-deps --no-recreate --scale web=1 web" in p.stdout
    # A proxied service that publishes a port is refused before any host is touched.
    (root / "templates" / "docker-compose.yaml.j2").write_text(
        compose.replace("image: {{ images.web }}",
                        "image: {{ images.web }}\n    ports: ['80:8000']"))
    p = deployer("-C", str(root), "check", "prod")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "'web' is proxied" in p.stderr and "remove its ports" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_refused_reload_puts_the_config_file_back(
        make_project: MakeProject, monkeypatch: pytest.MonkeyPatch) -> None:
    # Caddy keeps running the old config when it refuses a reload; the file
    # must say the same, or the next proxy restart loads the refused one.
    import hashlib

    from deployer.deploy import api, dryrun

    root = make_project({
        "deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n    - {service: web, port: 8000}\n",
    })
    before = caddy.dumps(caddy.merge(None, "other", ProxyConfig(), []))
    sha = hashlib.sha256(before.encode()).hexdigest()
    scripted = dryrun.ScriptedAnswer.__call__
    writes: list[tuple[str, str]] = []

    def answer(self: dryrun.ScriptedAnswer, command: Command) -> tuple[int, str]:
        if command.description == "read the proxy's state":
            return 0, f"proxy true {pc.NAME}-image\nsha {sha}\n{before}"
        if command.description == "write the proxy config":
            writes.append((command.argv[-1], command.stdin or ""))
            return 0, ""
        if command.description == "reload the proxy":
            return 1, "loading new config: invalid"
        return scripted(self, command)

    monkeypatch.setattr(dryrun.ScriptedAnswer, "__call__", answer)
    dry = api.plan(api.Target(root, "prod", limit="web-1", environ=ENV), tag="v1")
    (run,) = dry.hosts.values()
    assert run.report.result != "deployed"
    new, back = writes[-2], writes[-1]
    assert new[0] == sha and new[1] != before  # the new config, over the one read
    assert back == (hashlib.sha256(new[1].encode()).hexdigest(), before)
