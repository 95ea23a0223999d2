"""Issue 16 end to end, around the switch: maintenance on and off, two
projects on one proxy, ``deployer proxy status|logs|restart|upgrade``, the
proxy in ``status`` and ``plan --diff``, and a ship that never upgrades the
proxy. One sandbox host (Docker preinstalled) shared by the whole module;
the tests build on each other, in order:

1. project A (``proxyapp``, Host ``a.example``) and project B (``proxyb``,
   Host ``b.example``) ship to the same host: one proxy serves both;
2. B ships again under load on A: A's clients see 0 failed requests;
3. maintenance on for A under load: A's clients get either the app or the
   503 page (no connection error; a 2-second request in flight at the
   switch finishes with 200), B's clients 0 failed;
4. A ships while in maintenance: the page stays up; status shows it;
5. maintenance off under load: A's clients get the page, then the release
   shipped during maintenance; no connection error; B untouched;
6. ``proxy status`` and ``status`` show the routes' upstreams and health,
   ``proxy logs`` the proxy's log, ``plan --diff`` the route changes;
7. a ship with a changed proxy image says the proxy is out of date and
   leaves it; ``proxy upgrade`` recreates it with the new image, both
   projects' routes and the certificate volume kept; ``proxy restart``.

The load client is test_proxy.py's, sending a Host header.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Answer and Load are test_proxy's (whether it defines them or imports them).
from .test_proxy import APP, BASE_IMAGE, MARK, WEB_ROUTE, Answer, App, Load

pytestmark = pytest.mark.e2e

PORT = 80  # proxyapp's http_port
A_HOST, B_HOST = "a.example", "b.example"
MESSAGE = "<b>Back</b> at 5 {env.HOME}"
SHOWN = "&lt;b&gt;Back&lt;/b&gt; at 5 &#123;env.HOME&#125;"
NEXT_PROXY = "caddy:2.6-next"  # the stand-in with one more label: another digest


@dataclass
class Reply(Answer):
    body: str = ""
    retry_after: str | None = None

    @property
    def page(self) -> bool:
        """The maintenance page, with the message HTML-escaped."""
        return self.status == 503 and SHOWN in self.body


def request(address: str, host: str, path: str, timeout: float = 15) -> Reply:
    a = Reply(path, time.monotonic(), 0.0)
    conn = http.client.HTTPConnection(address, PORT, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = conn.getresponse()
        a.status, a.body = r.status, r.read().decode(errors="replace")
        a.retry_after = r.getheader("Retry-After")
        if r.status == 200:
            data = json.loads(a.body)
            a.version, a.served_by, a.role = data["version"], data["served_by"], data["role"]
        else:
            a.error = f"HTTP {r.status}: {a.body[:200]!r}"
    except Exception as e:  # a failed request is what this test counts
        a.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
        a.end = time.monotonic()
    return a


class HostLoad(Load):
    """test_proxy's load (``CLIENTS`` concurrent clients, two in ``/slow``),
    for one Host name on the sandbox host."""

    def __init__(self, address: str, host: str) -> None:
        super().__init__([address])
        self.host = host

    def _client(self, address: str, path: str) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            a = request(address, self.host, path)
            with self._lock:
                self.answers.append(a)
            if path == "/" or not a.ok:
                time.sleep(0.02)

    def not_app_nor_page(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok and not a.page]  # type: ignore[attr-defined]


class Both:
    """Load on A and on B at once."""

    def __init__(self, address: str) -> None:
        self.a = HostLoad(address, A_HOST)
        self.b = HostLoad(address, B_HOST)

    def __enter__(self) -> Both:
        threads = [threading.Thread(target=x.__enter__) for x in (self.a, self.b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self

    def __exit__(self, *exc: object) -> None:
        threads = [threading.Thread(target=x.__exit__) for x in (self.a, self.b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class Project(App):
    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(self.root), *args],
                           capture_output=True, text=True, env=self.env, timeout=900)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}"
        assert "Traceback" not in p.stderr, p.stderr[-4000:]
        return p

    def route(self, host: str, *, image: str | None = None,
              route: dict[str, Any] | None = None, **vars: Any) -> None:
        """The inventory's vars and its ``proxy`` override: the one web route,
        for Host ``host`` (and another proxy ``image``)."""
        inv = self.root / "inventories" / "sandbox.yaml"
        # A generous check timeout: on a loaded CI machine a 3 s check failed
        # and Caddy answered 503 for want of a healthy upstream.
        health = {**WEB_ROUTE["health"], "timeout": 10}  # type: ignore[dict-item]
        proxy: dict[str, Any] = {"routes": [{**WEB_ROUTE, "health": health, "hosts": [host],
                                             **(route or {})}]}
        if image:
            proxy["image"] = image
        inv.write_text(inv.read_text().split(MARK)[0] + MARK + "vars: " + json.dumps(vars)
                       + "\nproxy: " + json.dumps(proxy) + "\n")

    def get(self, path: str = "/", host: str = A_HOST) -> Reply:  # type: ignore[override]
        return request(self.host.address, host, path)


def result(report: dict[str, Any]) -> str:
    (h,) = report["hosts"]
    return str(h["result"])


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Project]]:
    from deployer.sandbox import manager

    root = tmp_path_factory.mktemp("proxya")
    shutil.copytree(APP, root, dirs_exist_ok=True)
    b_root = tmp_path_factory.mktemp("proxyb")
    shutil.copytree(APP, b_root, dirs_exist_ok=True)
    cfg = b_root / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace("app: proxyapp", "app: proxyb")
                   .replace("repository: proxyapp/", "repository: proxyb/"))
    try:
        info = manager.up(root, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        # B reaches the same sandbox: A's inventory, its paths made absolute.
        inv = (root / "inventories" / "sandbox.yaml").read_text().split(MARK)[0]
        (b_root / "inventories").mkdir(exist_ok=True)
        (b_root / "inventories" / "sandbox.yaml").write_text(
            inv.replace(".deployer/sandbox/", f"{root}/.deployer/sandbox/"))
        yield Project(root, info), Project(b_root, info)
    finally:
        manager.down(root)


def test_two_projects_share_one_proxy(projects: tuple[Project, Project]) -> None:
    a, b = projects
    a.route(A_HOST, version="a1")
    assert result(a.deployer("ship", "sandbox")) == "deployed"
    b.route(B_HOST, version="b1")
    assert result(b.deployer("ship", "sandbox")) == "deployed"
    assert a.get(host=A_HOST).version == "a1" and a.get(host=B_HOST).version == "b1"
    assert a.sh("docker ps -q --filter name=deployer-proxy").split().__len__() == 1
    cfg = json.loads(a.sh("cat /opt/deployer-proxy/caddy.json"))
    ids = sorted(r["@id"] for r in cfg["apps"]["http"]["servers"]["deployer"]["routes"])
    assert ids == ["deployer:proxyapp:web", "deployer:proxyb:web"]


def test_b_ship_leaves_a_serving(projects: tuple[Project, Project]) -> None:
    a, b = projects
    b.route(B_HOST, version="b2")
    with HostLoad(a.host.address, A_HOST) as load:
        assert result(b.deployer("ship", "sandbox")) == "deployed"
    load.assert_clean()
    assert load.versions() == {"a1"}
    assert a.get(host=B_HOST).version == "b2"


def test_maintenance_on_serves_the_page_to_a_only(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    with Both(a.host.address) as load:
        report = a.deployer("maintenance", "sandbox", "on", "--message", MESSAGE)
    assert result(report) == "ok", report
    assert report["command"] == "maintenance"
    # No request of A failed: each got the app or the page; none after the change got the app.
    assert not load.a.not_app_nor_page(), load.a.not_app_nor_page()[:5]
    pages = [x for x in load.a.answers if x.page]  # type: ignore[attr-defined]
    assert pages, "no request got the maintenance page"
    first_page = min(x.start for x in pages)
    crossing = [x for x in load.a.answers if x.ok and x.path == "/slow" and x.end > first_page]
    assert crossing, "no 2-second request was in flight across the change"
    assert all(x.page for x in load.a.answers  # type: ignore[attr-defined]
               if x.start > max(x.end for x in crossing))
    load.b.assert_clean()  # B kept serving, untouched
    assert load.b.versions() == {"b2"}
    r = a.get(host=A_HOST)
    assert r.page and r.body.count("Back") == 1 and r.retry_after, (r.body, r.retry_after)
    state = json.loads(a.sh("cat /opt/proxyapp/.maintenance"))
    assert state["message"] == MESSAGE


def test_ship_in_maintenance_keeps_the_page(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    a.route(A_HOST, version="a2")
    assert result(a.deployer("ship", "sandbox")) == "deployed"
    assert a.get(host=A_HOST).page  # still the page: a ship keeps maintenance on
    assert a.get(host=B_HOST).version == "b2"
    status = a.deployer("proxy", "status", "sandbox")
    (host,) = status.values()
    assert host["maintenance"]["message"] == MESSAGE
    assert [r["maintenance"] for r in host["routes"]] == [True]


def test_maintenance_off_restores_the_new_release(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    with Both(a.host.address) as load:
        report = a.deployer("maintenance", "sandbox", "off")
    assert result(report) == "ok", report
    assert not load.a.not_app_nor_page(), load.a.not_app_nor_page()[:5]
    served = [x for x in load.a.answers if x.ok]
    assert served and {x.version for x in served} == {"a2"}  # shipped during maintenance
    last_page = max(x.end for x in load.a.answers if x.page)  # type: ignore[attr-defined]
    assert all(x.ok for x in load.a.answers if x.start > last_page)
    load.b.assert_clean()
    assert a.sh("ls -a /opt/proxyapp").split().count(".maintenance") == 0
    # A second off changes nothing and still succeeds.
    assert result(a.deployer("maintenance", "sandbox", "off")) == "ok"


def test_proxy_status_logs_and_status(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    for _ in range(3):
        assert a.get(host=A_HOST).ok
    (host,) = a.deployer("proxy", "status", "sandbox").values()
    assert host["container"] == "running" and host["up_to_date"] is True
    assert host["other_routes"] == 1 and host["maintenance"] is None  # B's route
    (web,) = host["routes"]
    assert web["match"] == f"hosts {A_HOST}" and web["health"] == "healthy"
    (up,) = web["upstreams"]
    assert up["healthy"] is True and up["address"].endswith(":8000")
    assert up["address"].split(":")[0] in a.sh("docker ps --format '{{.Names}}'").split()
    text = a.run("status", "sandbox").stdout
    assert f"route web (hosts {A_HOST}): healthy" in text and up["address"] in text
    logs = a.run("proxy", "logs", "sandbox", "-n", "5").stdout
    lines = [ln for ln in logs.splitlines() if " | " in ln]
    assert lines and {ln.split(" | ")[0].strip() for ln in lines} == {a.host.name}


def test_plan_diff_shows_route_changes(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    a.route(A_HOST, version="a2", route={"path_prefix": "/shop"})
    diff = a.deployer("plan", "sandbox", "--diff")
    (h,) = diff["hosts"]
    proxy = h["proxy"]
    assert proxy["container"] == "running"
    assert [s for s in proxy["steps"] if "start the proxy" in s] == []  # it runs already
    assert "switch the proxy" in proxy["steps"]
    assert proxy["routes"] == [{"id": "deployer:proxyapp:web", "status": "changed",
                                "what": proxy["routes"][0]["what"]}]
    assert "path" in proxy["routes"][0]["what"]
    text = a.run("plan", "sandbox", "--diff").stdout
    assert "changed   deployer:proxyapp:web" in text, text
    a.route(A_HOST, version="a2")


def test_ship_never_upgrades_the_proxy(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    # Another proxy image: the stand-in with one more label (another digest).
    subprocess.run(["docker", "build", "-q", "-t", NEXT_PROXY, "-"], check=True,
                   input="FROM caddy:2.6\nLABEL deployer.test=next\n", text=True,
                   capture_output=True)
    cfg = a.root / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace(
        "images:\n",
        f"images:\n  proxy2: {{repository: proxyapp/caddy2, source: \"{NEXT_PROXY}\"}}\n"))
    before = a.sh("docker inspect -f '{{.Image}}' deployer-proxy").strip()
    a.route(A_HOST, version="a3", image="proxy2")
    p = a.run("-o", "json", "ship", "sandbox")
    assert result(json.loads(p.stdout)) == "deployed"
    assert "the proxy is out of date" in p.stderr and "deployer proxy upgrade sandbox" in p.stderr
    assert a.sh("docker inspect -f '{{.Image}}' deployer-proxy").strip() == before  # left
    assert a.get(host=A_HOST).version == "a3"
    (host,) = a.deployer("proxy", "status", "sandbox").values()
    assert host["up_to_date"] is False and "caddy2" in host["configured"]

    with Both(a.host.address) as load:
        p = a.run("-o", "json", "proxy", "upgrade", "sandbox")
    assert result(json.loads(p.stdout)) == "ok", p.stdout
    assert "refused connections" in p.stderr  # it says what users see
    after = a.sh("docker inspect -f '{{.Image}} {{range .Mounts}}{{.Name}} {{end}}' "
                 "deployer-proxy").split()
    assert after[0] != before and "deployer-proxy-data" in after[1:]
    # Both projects' routes kept, the proxy on both networks again.
    assert a.get(host=A_HOST).version == "a3" and a.get(host=B_HOST).version == "b2"
    failed = len(load.a.failed()) + len(load.b.failed())
    print(f"proxy upgrade: {failed} of {len(load.a.answers) + len(load.b.answers)} "
          "requests failed while the proxy was recreated")
    (host,) = a.deployer("proxy", "status", "sandbox").values()
    assert host["up_to_date"] is True
    # A second upgrade has nothing to do.
    assert result(a.deployer("proxy", "upgrade", "sandbox")) == "unchanged"


def test_proxy_restart(projects: tuple[Project, Project]) -> None:
    a, _b = projects
    p = a.run("-o", "json", "proxy", "restart", "sandbox")
    assert result(json.loads(p.stdout)) == "ok"
    assert "requests in flight" in p.stderr
    assert a.get(host=A_HOST).version == "a3" and a.get(host=B_HOST).version == "b2"

