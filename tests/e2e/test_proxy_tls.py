"""Issue 16 end to end: TLS at the edge proxy, on one sandbox host (Docker
preinstalled) with the Debian-built Caddy stand-in and the proxy e2e app
(tests/e2e/apps/proxyapp).

In order, each building on the last:

1. TLS from files: a throwaway CA and a certificate for ``files.test`` made
   here; ship serves exactly that certificate on 443 for the route's host,
   HTTP answers 308 to https, and the key is 0600 on the host (in the release
   and where the proxy reads it), never in ship's output.
2. ACME against a real ACME server: Debian's ``pebble`` runs on this machine,
   listening on the sandbox network's gateway address (which the hosts
   reach), with ``pebble-challtestsrv`` as its DNS: ``acme.test`` has an A
   record for the sandbox host, so pebble's HTTP-01 validation really
   connects to the host's http_port (no PEBBLE_VA_ALWAYS_VALID). Caddy trusts
   pebble's directory through ``proxy.acme.ca_file``; the served certificate
   must chain to pebble's issuing root (its /roots/0 management endpoint).
3. A changed redeploy serves the same certificate, and pebble saw no second
   order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "proxyapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
MARK = "\n# test overrides\n"
FILES_HOST = "files.test"
ACME_HOST = "acme.test"
PEBBLE_PORT, PEBBLE_MGMT, DNS_PORT, DNS_MGMT = 14000, 15000, 8053, 8055
PEBBLE_SECONDS = 900  # pebble and its DNS stop by themselves at the latest after this
ISSUE_WAIT = 120  # seconds the certificate may take to be ordered and served
#: What one test saw, for the next (they run in file order on one sandbox).
SEEN: dict[str, Any] = {}


def web_route(**over: Any) -> dict[str, Any]:
    return {"service": "web", "port": 8000, "hosts": [FILES_HOST], "drain_timeout": 2,
            "health": {"path": "/healthz", "interval": 1, "timeout": 3},
            "tls": {"certificate": "certs/files.crt", "key": "certs/files.key"}, **over}


API_ROUTE = {"service": "api", "port": 8000, "hosts": [ACME_HOST], "drain_timeout": 2,
             "health": {"path": "/healthz"}, "tls": "acme"}


@dataclass
class Served:
    status: int
    headers: dict[str, str]
    body: bytes
    cert_der: bytes = b""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert_der).hexdigest()

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def _exchange(sock: Any, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def https_get(address: str, host: str, ca_pem: str, path: str = "/") -> Served:
    """GET over TLS to ``address``:443 with SNI and Host ``host``, verifying
    the certificate against ``ca_pem`` and the name ``host``."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection((address, 443), timeout=15) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        der = s.getpeercert(binary_form=True) or b""
        status, headers, body = _exchange(s, host, path)
    return Served(status, headers, body, der)


def http_get(address: str, host: str, path: str = "/") -> Served:
    with socket.create_connection((address, 80), timeout=15) as s:
        return Served(*_exchange(s, host, path))


def pem_to_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


class App:
    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.host = info.hosts[0]
        self.env = {**os.environ, "NO_COLOR": "1"}
        self.env.pop("GITHUB_ACTIONS", None)
        self.outputs: list[str] = []  # every command's stdout + stderr

    def deployer(self, *args: str, check: int = 0) -> dict[str, Any]:
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(self.root), "-o", "json",
                            *args], capture_output=True, text=True, env=self.env, timeout=900)
        self.outputs.append(p.stdout + p.stderr)
        assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}"
        assert "Traceback" not in p.stderr, p.stderr[-4000:]
        return dict(json.loads(p.stdout))

    def configure(self, proxy: dict[str, Any], **vars: Any) -> None:
        """The inventory's vars and its override of ``proxy`` keys."""
        inv = self.root / "inventories" / "sandbox.yaml"
        base = inv.read_text().split(MARK)[0]
        inv.write_text(base + MARK + "vars: " + json.dumps(vars) + "\nproxy: "
                       + json.dumps(proxy) + "\n")

    def ship(self) -> str:
        (h,) = self.deployer("ship", "sandbox")["hosts"]
        assert h["result"] == "deployed", h
        return str(h["release"])

    def sh(self, script: str) -> str:
        return subprocess.run(["docker", "exec", self.host.container, "sh", "-c", script],
                              capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from deployer.sandbox import manager, pki

    root = tmp_path_factory.mktemp("proxytls")
    shutil.copytree(APP, root, dirs_exist_ok=True)
    certs = root / "certs"
    certs.mkdir()
    ca = pki.make_ca("deployer e2e files CA")
    pair = pki.make_server_cert(ca, FILES_HOST, [], [FILES_HOST])
    (certs / "files-ca.pem").write_bytes(ca.public)
    (certs / "files.crt").write_bytes(pair.public)
    (certs / "files.key").write_bytes(pair.private)
    try:
        info = manager.up(root, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        yield App(root, info)
    finally:
        manager.down(root)


class Pebble:
    """pebble and pebble-challtestsrv on the sandbox gateway address, each
    bounded by ``timeout``; stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, gateway: str, host_address: str) -> None:
        from deployer.sandbox import pki

        self.gateway = gateway
        self.log = workdir / "pebble.log"
        ca = pki.make_ca("deployer e2e pebble directory CA")
        server = pki.make_server_cert(ca, "pebble", [gateway])
        self.ca_pem = ca.public.decode()
        (workdir / "cert.pem").write_bytes(server.public)
        (workdir / "key.pem").write_bytes(server.private)
        (workdir / "config.json").write_text(json.dumps({"pebble": {
            "listenAddress": f"{gateway}:{PEBBLE_PORT}",
            "managementListenAddress": f"{gateway}:{PEBBLE_MGMT}",
            "certificate": str(workdir / "cert.pem"), "privateKey": str(workdir / "key.pem"),
            # HTTP-01 goes to the proxy's http_port; TLS-ALPN-01 is off in deployer's issuer
            "httpPort": 80, "tlsPort": 443,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        self.procs: list[subprocess.Popen[bytes]] = []
        with open(workdir / "dns.log", "wb") as dns_log:
            self.procs.append(subprocess.Popen(
                ["timeout", str(PEBBLE_SECONDS), "pebble-challtestsrv",
                 "-dns01", f"{gateway}:{DNS_PORT}", "-management", f"{gateway}:{DNS_MGMT}",
                 "-http01", "", "-https01", "", "-tlsalpn01", "",
                 # no answer for any other name
                 "-defaultIPv4", "", "-defaultIPv6", ""],
                stdout=dns_log, stderr=subprocess.STDOUT))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        with open(self.log, "wb") as log:
            self.procs.append(subprocess.Popen(
                ["timeout", str(PEBBLE_SECONDS), "pebble", "-config",
                 str(workdir / "config.json"), "-dnsserver", f"{gateway}:{DNS_PORT}"],
                stdout=log, stderr=subprocess.STDOUT, env=env))
        self._ctx = ssl.create_default_context(cadata=self.ca_pem)
        self._wait_up()
        # The route's name resolves to the sandbox host, as public DNS would.
        self._post(f"http://{gateway}:{DNS_MGMT}/add-a",
                   {"host": f"{ACME_HOST}.", "addresses": [host_address]})

    @property
    def directory(self) -> str:
        return f"https://{self.gateway}:{PEBBLE_PORT}/dir"

    def _post(self, url: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60  # pebble makes its keys first
        while True:
            try:
                with urllib.request.urlopen(self.directory, timeout=5, context=self._ctx) as r:
                    json.loads(r.read())
                break
            except OSError as e:
                dead = [p.args for p in self.procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    pytest.fail(f"pebble did not start ({e}; exited: {dead}):\n"
                                f"{self.log.read_text()[-2000:]}")
                time.sleep(0.5)
        # The DNS server's management port, too.
        while True:
            try:
                socket.create_connection((self.gateway, DNS_MGMT), timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("pebble-challtestsrv did not start")
                time.sleep(0.2)

    def root_pem(self) -> str:
        """Pebble's issuing root (new on every start of pebble)."""
        url = f"https://{self.gateway}:{PEBBLE_MGMT}/roots/0"
        with urllib.request.urlopen(url, timeout=10, context=self._ctx) as r:
            return str(r.read().decode())

    def lines(self, needle: str) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if needle in ln]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def pebble(app: App, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        pytest.fail("pebble is not installed (`bash .ci/setup` installs Debian's package)",
                    pytrace=False)
    p = Pebble(tmp_path_factory.mktemp("pebble"), app.info.gateway, app.host.address)
    try:
        yield p
    finally:
        p.stop()


def test_tls_from_files_with_redirect(app: App) -> None:
    app.configure({"routes": [web_route()]}, version="v1")
    release = app.ship()
    ca = (app.root / "certs" / "files-ca.pem").read_text()
    s = https_get(app.host.address, FILES_HOST, ca)
    assert s.status == 200 and s.json()["version"] == "v1", s
    assert s.cert_der == pem_to_der((app.root / "certs" / "files.crt").read_text())
    # HTTP for the TLS host: 308 to the same URI on https.
    r = http_get(app.host.address, FILES_HOST, "/slow?x=1")
    assert r.status == 308 and r.headers["location"] == f"https://{FILES_HOST}/slow?x=1", r
    # The key: 0600 in the release and where the proxy reads it (root only).
    modes = app.sh(f"stat -c '%a %U %n' /opt/proxyapp/releases/{release}/.proxy-tls/web.key "
                   f"/opt/deployer-proxy/tls/proxyapp/{release}/web.key "
                   f"/opt/deployer-proxy/tls/proxyapp")
    (in_release, for_proxy, folder) = (ln.split()[:2] for ln in modes.splitlines())
    assert in_release[0] == "600" and for_proxy == ["600", "root"], modes
    assert folder == ["700", "root"], modes
    key = (app.root / "certs" / "files.key").read_text().splitlines()
    assert not any(line in out for line in key[1:-1] for out in app.outputs)


def test_acme_certificate_is_issued_by_http01_and_served(app: App, pebble: Pebble) -> None:
    (app.root / "certs" / "pebble-ca.pem").write_text(pebble.ca_pem)
    proxy = {"routes": [web_route(), API_ROUTE],
             "acme": {"email": "ops@example.com", "directory": pebble.directory,
                      "ca_file": "certs/pebble-ca.pem"}}
    app.configure(proxy, version="v2", with_api=True)
    release = app.ship()
    root = pebble.root_pem()
    deadline = time.monotonic() + ISSUE_WAIT
    while True:  # Caddy orders in the background after the switch
        try:
            s = https_get(app.host.address, ACME_HOST, root)
            break
        except (ssl.SSLError, OSError) as e:
            if time.monotonic() > deadline:
                logs = app.sh("docker logs --tail 30 deployer-proxy 2>&1")
                pytest.fail(f"no certificate from pebble served for {ACME_HOST} after "
                            f"{ISSUE_WAIT}s: {e}\nproxy:\n{logs}\npebble:\n"
                            f"{pebble.log.read_text()[-3000:]}")
            time.sleep(1)
    assert s.status == 200 and s.json()["role"] == "api" and s.json()["version"] == "v2", s
    # HTTP-01 really ran against the host's http_port, for an order of ours.
    assert pebble.lines(f"Attempting to validate w/ HTTP: http://{ACME_HOST}:80/"), \
        pebble.log.read_text()[-3000:]
    assert len(pebble.lines("Added order")) == 1
    assert len(pebble.lines("Issued certificate serial")) == 1
    # The files route is untouched; both TLS hosts redirect HTTP.
    files = https_get(app.host.address, FILES_HOST,
                      (app.root / "certs" / "files-ca.pem").read_text())
    assert files.json()["version"] == "v2" and files.json()["role"] == "web"
    r = http_get(app.host.address, ACME_HOST, "/x")
    assert r.status == 308 and r.headers["location"] == f"https://{ACME_HOST}/x", r
    # The ACME CA's certificate went to the proxy with the release's files.
    assert app.sh(f"ls /opt/deployer-proxy/tls/proxyapp/{release}").split() == [
        "acme-ca.pem", "web.crt", "web.key"]
    SEEN["acme"] = s


def test_changed_redeploy_keeps_the_certificate(app: App, pebble: Pebble) -> None:
    first = SEEN.get("acme")
    assert first is not None, "needs the test before it (an issued certificate)"
    proxy = {"routes": [web_route(), API_ROUTE],
             "acme": {"email": "ops@example.com", "directory": pebble.directory,
                      "ca_file": "certs/pebble-ca.pem"}}
    app.configure(proxy, version="v3", with_api=True)
    release = app.ship()
    s = https_get(app.host.address, ACME_HOST, pebble.root_pem())
    assert s.json()["version"] == "v3", s  # the new release, behind the same certificate
    assert s.fingerprint == first.fingerprint
    assert len(pebble.lines("Added order")) == 1, "pebble got a second order"
    assert len(pebble.lines("Issued certificate serial")) == 1
    # Only this release's TLS files are left where the proxy reads them.
    assert app.sh("ls /opt/deployer-proxy/tls/proxyapp").split() == [release]
