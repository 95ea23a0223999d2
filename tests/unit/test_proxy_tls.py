"""TLS at the edge proxy, the pure parts: the Caddy config for routes with
TLS (an HTTPS server, 308 redirects, certificates from files or by ACME,
each app owning only its own), the checks of certificate files, what a
release carries for them and the commands that install them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import BASIC_PROJECT, MakeProject

from deployer.commands import proxy_tls
from deployer.config.models import ProxyConfig
from deployer.errors import ConfigError
from deployer.proxy import caddy, tls
from deployer.sandbox import pki

FILES = {"certificate": "certs/shop.crt", "key": "certs/shop.key"}
ACME = {"email": "ops@shop.example", "directory": "https://acme.example/dir",
        "ca_file": "certs/acme-ca.pem"}


def proxy(*routes: dict[str, Any], **over: Any) -> ProxyConfig:
    return ProxyConfig.model_validate({"routes": list(routes), **over})


def web(**over: Any) -> dict[str, Any]:
    return {"service": "web", "port": 8000, "hosts": ["shop.example"], "tls": FILES, **over}


def render(cfg: dict[str, Any] | None, app: str, p: ProxyConfig,
           release: str = "r1") -> dict[str, Any]:
    """What the switch writes: caddy.merge, then tls.apply."""
    routes = [caddy.render_route(app, r, [f"{app}-{r.service}-1:{r.port}"]) for r in p.routes]
    return tls.apply(caddy.merge(cfg, app, p, routes), app, p, p.routes, release)


def servers(cfg: dict[str, Any]) -> dict[str, Any]:
    return dict(cfg["apps"]["http"]["servers"])


def ids(server: dict[str, Any]) -> list[str]:
    return [r["@id"] for r in server["routes"]]


def test_route_with_files_is_served_on_https_and_redirected_on_http() -> None:
    p = proxy(web(), {"service": "api", "port": 9000})
    out = render(None, "shop", p, "20261201T1-abc")
    s = servers(out)
    secure = s[tls.TLS_SERVER]
    assert secure["listen"] == [":443"]
    assert secure["tls_connection_policies"] == [{}]
    assert secure["automatic_https"] == {"disable": True}
    assert ids(secure) == ["deployer:shop:web"]
    assert secure["routes"][0]["handle"][0]["upstreams"] == [{"dial": "shop-web-1:8000"}]
    # On HTTP: the TLS route's match redirects; the plain route stays plain.
    assert ids(s[caddy.SERVER]) == ["deployer:shop:web:redirect", "deployer:shop:api"]
    (redirect, _) = s[caddy.SERVER]["routes"]
    assert redirect["match"] == [{"host": ["shop.example"]}]
    (h,) = redirect["handle"]
    assert (h["handler"], h["status_code"]) == ("static_response", 308)
    assert h["headers"]["Location"] == ["https://{http.request.host}{http.request.uri}"]
    # The certificate and key from the release's folder on the host, as the
    # proxy container sees it.
    (load,) = out["apps"]["tls"]["certificates"]["load_files"]
    base = "/etc/deployer-proxy/tls/shop/20261201T1-abc"
    assert load == {"@id": "deployer:shop:web:certificate",
                    "certificate": f"{base}/web.crt", "key": f"{base}/web.key"}
    assert "automation" not in out["apps"]["tls"]  # nothing to order
    assert caddy.upstreams_of(out, "shop") == {"api": ["shop-api-1:9000"],  # both servers
                                               "web": ["shop-web-1:8000"]}


def test_redirect_names_a_non_default_https_port() -> None:
    out = render(None, "shop", proxy(web(path_prefix="/app"), https_port=8443))
    (redirect,) = servers(out)[caddy.SERVER]["routes"]
    assert redirect["handle"][0]["headers"]["Location"] == [
        "https://{http.request.host}:8443{http.request.uri}"]
    # Only what is served over HTTPS redirects: the same host and path.
    assert redirect["match"] == [{"host": ["shop.example"], "path": ["/app", "/app/*"]}]
    assert servers(out)[tls.TLS_SERVER]["listen"] == [":8443"]


def test_acme_route_gets_a_policy_with_the_apps_issuer_and_is_automated() -> None:
    p = proxy(web(tls="acme", hosts=["shop.example", "www.shop.example"]), acme=ACME)
    out = render(None, "shop", p)
    t = out["apps"]["tls"]
    assert t["certificates"] == {"automate": ["shop.example", "www.shop.example"]}
    (policy,) = t["automation"]["policies"]
    assert policy == {
        "@id": "deployer:shop:acme",
        "subjects": ["shop.example", "www.shop.example"],
        "issuers": [{"module": "acme", "ca": "https://acme.example/dir",
                     "email": "ops@shop.example",
                     # HTTP-01 on http_port only
                     "challenges": {"tls-alpn": {"disabled": True}},
                     "trusted_roots_pem_files": ["/etc/deployer-proxy/tls/shop/r1/acme-ca.pem"]}],
    }
    assert ids(servers(out)[tls.TLS_SERVER]) == ["deployer:shop:web"]
    no_ca = proxy(web(tls="acme"), acme={"email": "ops@shop.example"})
    (issuer,) = render(None, "shop", no_ca)["apps"]["tls"]["automation"]["policies"][0][
        "issuers"]
    assert "trusted_roots_pem_files" not in issuer
    assert issuer["ca"] == "https://acme-v02.api.letsencrypt.org/directory"


def test_an_http_only_app_renders_exactly_what_it_did_without_tls() -> None:
    p = proxy({"service": "web", "port": 8000})
    routes = [caddy.render_route("shop", p.routes[0], ["a:8000"])]
    plain = caddy.merge(None, "shop", p, routes)
    assert caddy.dumps(tls.apply(json.loads(caddy.dumps(plain)), "shop", p, p.routes, "r1")) \
        == caddy.dumps(plain)


def test_apps_on_one_proxy_keep_each_others_tls() -> None:
    blog = proxy(web(hosts=["blog.example"], tls="acme"),
                 acme={"email": "ops@blog.example"})
    host = render(None, "blog", blog)
    shop = proxy(web(), {"service": "api", "port": 9000, "hosts": ["api.shop.example"],
                         "tls": "acme"}, acme=ACME)
    both = render(host, "shop", shop)
    t = both["apps"]["tls"]
    assert t["certificates"]["automate"] == ["api.shop.example", "blog.example"]
    assert [p["@id"] for p in t["automation"]["policies"]] == ["deployer:blog:acme",
                                                               "deployer:shop:acme"]
    assert ids(servers(both)[tls.TLS_SERVER]) == ["deployer:blog:web", "deployer:shop:api",
                                                  "deployer:shop:web"]
    assert tls.references_files(both, "shop") and tls.references_files(both, "blog")
    # shop ships again without TLS: blog's server routes, policy and names stay.
    plain = render(both, "shop", proxy({"service": "web", "port": 8000,
                                        "hosts": ["shop.example"]}))
    t = plain["apps"]["tls"]
    assert t == host["apps"]["tls"]
    assert ids(servers(plain)[tls.TLS_SERVER]) == ["deployer:blog:web"]
    assert ids(servers(plain)[caddy.SERVER]) == ["deployer:blog:web:redirect",
                                                 "deployer:shop:web"]
    assert not tls.references_files(plain, "shop")
    # and blog without TLS too: no HTTPS server, no tls app left at all.
    empty = render(plain, "blog", proxy({"service": "web", "port": 8000}))
    assert tls.TLS_SERVER not in servers(empty) and "tls" not in empty["apps"]


def test_release_carries_the_files_for_the_hosts_routes_the_key_as_a_secret() -> None:
    p = proxy(web(), {"service": "api", "port": 9000, "hosts": ["api.example"],
                      "tls": "acme"}, acme=ACME)
    specs = {s.dest: s for s in tls.release_specs(p, ["web", "api", "db"])}
    assert sorted(specs) == [".proxy-tls/acme-ca.pem", ".proxy-tls/web.crt",
                             ".proxy-tls/web.key"]
    key = specs[".proxy-tls/web.key"]
    assert key.secret and key.source == "certs/shop.key"
    assert "proxy.routes[0].tls.key" in key.origin
    assert specs[".proxy-tls/web.crt"].mode == 0o644 and not specs[".proxy-tls/web.crt"].secret
    # A host that runs only api gets only the ACME CA; one with neither, nothing.
    assert [s.dest for s in tls.release_specs(p, ["api"])] == [".proxy-tls/acme-ca.pem"]
    assert tls.release_specs(p, ["db"]) == [] and tls.release_specs(None, ["web"]) == []
    assert tls.shipped(p.routes, p.acme) == [("web.crt", 0o644), ("web.key", 0o600),
                                             ("acme-ca.pem", 0o644)]


def test_tls_paths_must_stay_in_the_project() -> None:
    with pytest.raises(ValueError, match=r"key '/etc/ssl/k\.pem' must be a relative path"):
        proxy(web(tls={"certificate": "c.pem", "key": "/etc/ssl/k.pem"}))
    with pytest.raises(ValueError, match=r"ca_file '\.\./ca\.pem' escapes"):
        proxy(web(tls="acme"), acme={"email": "a@b.c", "ca_file": "../ca.pem"})


def test_install_and_prune_commands() -> None:
    cmd = proxy_tls.install("/opt/shop/releases/r1", ".proxy-tls",
                            "/opt/deployer-proxy/tls/shop/r1",
                            [("web.crt", 0o644), ("web.key", 0o600)])
    assert cmd.sudo and cmd.stdin is None  # nothing secret in argv: paths only
    assert cmd.argv[-6:] == ("/opt/shop/releases/r1/.proxy-tls",
                             "/opt/deployer-proxy/tls/shop/r1",
                             "web.crt", "0644", "web.key", "0600")
    assert 'install -m "$2"' in cmd.argv[2] and "umask 077" in cmd.argv[2]
    cmd = proxy_tls.prune("/opt/deployer-proxy/tls/shop", "r1")
    assert cmd.sudo and cmd.argv[-2:] == ("/opt/deployer-proxy/tls/shop", "r1")


# -- the checks of certificate files (exit 2 before any host is touched) ------


def write_pair(root: Path, names: list[str], *, other_key: bool = False) -> None:
    ca = pki.make_ca("test CA")
    pair = pki.make_server_cert(ca, names[0], [], names)
    (root / "certs").mkdir(parents=True, exist_ok=True)
    (root / "certs" / "shop.crt").write_bytes(pair.public + ca.public)
    key = pki.make_server_cert(ca, "x", [], ["x.example"]).private if other_key else pair.private
    (root / "certs" / "shop.key").write_bytes(key)


def test_check_files_accepts_a_matching_pair_for_the_hosts(tmp_path: Path) -> None:
    write_pair(tmp_path, ["shop.example", "*.shop.example"])
    tls.check_files(tmp_path, proxy(web(hosts=["shop.example", "www.shop.example"])))


@pytest.mark.parametrize("case, needle", [
    ("not a cert", r"tls\.certificate: 'certs/shop\.crt' is not a PEM certificate"),
    ("not a key", r"tls\.key: 'certs/shop\.key' is not a PEM private key"),
    ("other key", r"tls\.key: 'certs/shop\.key' is not the key of 'certs/shop\.crt'"),
    ("other host", r"is not valid for deep\.www\.shop\.example \(it names \*\.shop\.example, "
                   r"shop\.example\)"),
    ("missing", r"tls\.key: 'certs/shop\.key' not found in the project"),
])
def test_check_files_refuses(tmp_path: Path, case: str, needle: str) -> None:
    write_pair(tmp_path, ["shop.example", "*.shop.example"], other_key=case == "other key")
    key = (tmp_path / "certs" / "shop.key").read_bytes()
    hosts = ["shop.example"]
    if case == "not a cert":
        (tmp_path / "certs" / "shop.crt").write_text("hello\n")
    elif case == "not a key":
        (tmp_path / "certs" / "shop.key").write_bytes(key.replace(b"PRIVATE KEY", b"KEY"))
    elif case == "other host":
        hosts = ["shop.example", "deep.www.shop.example"]
    elif case == "missing":
        (tmp_path / "certs" / "shop.key").unlink()
    with pytest.raises(ConfigError) as e:
        tls.check_files(tmp_path, proxy(web(hosts=hosts)))
    assert re.search(needle, e.value.message), e.value.message
    assert "proxy.routes[0]" in e.value.message
    assert "BEGIN" not in e.value.message + (e.value.hint or "").replace("-----BEGIN", "")


def test_check_files_refuses_an_encrypted_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    write_pair(tmp_path, ["shop.example"])
    path = tmp_path / "certs" / "shop.key"
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ConfigError, match="is encrypted"):
        tls.check_files(tmp_path, proxy(web()))


def test_covers() -> None:
    names = {"shop.example", "*.shop.example"}
    assert tls.covers(names, "shop.example") and tls.covers(names, "WWW.shop.example")
    assert not tls.covers(names, "a.b.shop.example") and not tls.covers(names, "example")
    assert not tls.covers({"*.example"}, "*.example.")


# -- through the CLI: plan shows the files, the key as a secret -------------------


def test_plan_ships_the_files_and_never_prints_the_key(make_project: MakeProject) -> None:
    from test_cli import deployer

    root = make_project({
        "deployer.yaml": BASIC_PROJECT + "proxy:\n  routes:\n    - service: web\n"
                         "      port: 8000\n      hosts: [shop.example]\n"
                         "      tls: {certificate: certs/shop.crt, key: certs/shop.key}\n",
    })
    write_pair(root, ["shop.example"])
    key = (root / "certs" / "shop.key").read_text()
    p = deployer("-C", str(root), "plan", "prod", "--limit", "web-1")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    body = "".join(key.splitlines()[1:-1])
    assert body[:40] not in out.replace("\n", "")  # not a line of the key
    # "  0600   241 secret   copy   .proxy-tls/web.key  (from certs/shop.key)"
    lines = {t: ln for ln in p.stdout.splitlines() for t in ln.split()
             if t.startswith(".proxy-tls/")}
    assert set(lines) == {".proxy-tls/web.crt", ".proxy-tls/web.key"}, p.stdout
    assert "secret" in lines[".proxy-tls/web.key"] and "0600" in lines[".proxy-tls/web.key"]
    assert "secret" not in lines[".proxy-tls/web.crt"]
    steps = [m.group(1).split(" (")[0] for ln in p.stdout.splitlines()
             if (m := re.match(r"\s+\d+\. (.*)", ln))]
    assert steps.index("install TLS files") + 1 == steps.index("switch the proxy")
    # A key that is not the certificate's: exit 2, nothing touched.
    write_pair(root, ["shop.example"], other_key=True)
    p = deployer("-C", str(root), "check", "prod")
    assert p.returncode == 2 and "is not the key of" in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stderr


def test_status_and_plan_diff_see_tls_routes_but_not_their_redirects() -> None:
    from deployer.commands.proxy_ops import config_routes

    out = render(None, "shop", proxy(web(), {"service": "api", "port": 9000}))
    assert sorted(r["@id"] for r in config_routes(out)) == [
        "deployer:shop:api", "deployer:shop:web"]


def test_maintenance_page_reaches_a_tls_route_on_https() -> None:
    from deployer.proxy import maintenance

    p = proxy(web())
    routes = [caddy.render_route("shop", r, ["shop-web-1:8000"]) for r in p.routes]
    paged = maintenance.apply(routes, "<p>back soon</p>")
    out = tls.apply(caddy.merge(None, "shop", p, paged), "shop", p, p.routes, "r1")
    secure = servers(out)[tls.TLS_SERVER]["routes"]
    assert [r["@id"] for r in secure] == ["deployer:shop:web"]
    assert "back soon" in json.dumps(secure[0]) and "upstreams" not in json.dumps(secure[0])
