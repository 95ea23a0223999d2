"""Issue 14 end to end: a compose project ships as it runs by hand, every
file compose reads reaching the host, on one sandbox host.

Three apps share one sandbox (one host, Docker preinstalled), one after the
other, each with its own ``deploy_dir`` and port:

- ``TestCopies`` (``copyfid``, tests/e2e/apps/fidelity with
  ``deployer.copies.yaml``): what ``files: [{copy: ...}]`` gives on its own.
  A conf file mount and a static directory mount (a ``{{`` in the conf, a
  binary file, an executable, a git-ignored and an excluded file) arrive
  byte for byte with their modes; ``./appdata`` is data under ``shared/``,
  kept across a change and a rollback; a second ship is ``unchanged`` in
  one command; one changed static file ships a new release, and the rollback
  restores it.
- ``TestComposeFidelity`` (``fidelity``, the same folder with its
  ``deployer.yaml``: nothing listed but the compose template, as
  ``init --from-compose`` makes it): a conf file and a static directory
  mount, a data directory named in ``.env``, an ``env_file``, a build arg
  from ``.env``, a file secret, a disabled profile service and a
  ``restart: "no"`` one-shot: deployer finds those paths itself (the
  compose-reading side of issue 14) and ships them (the copy side).
- ``TestNginxExample``: examples/nginx-app-db shipped unchanged from its
  compose file: nginx (built FROM debian:bookworm) in front of the app and
  PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import deployer_env, run_deployer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).parent / "apps" / "fidelity"
NGINX_EXAMPLE = ROOT / "examples" / "nginx-app-db"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
COPY_PORT, FULL_PORT, NGINX_PORT = 8010, 8011, 8080
TOKEN = "tok-fidelity-e2e-9931"
LOGO = bytes(range(256)) * 41  # binary, with every byte value


class Project:
    """One project folder next to the sandbox, driven through the CLI."""

    def __init__(self, root: Path, info: Any, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.info = info
        self.env = deployer_env(env)
        self.env.pop("BUILD_GREETING", None)  # only .env may set it

    @property
    def host(self) -> Any:
        return self.info.hosts[0]

    @property
    def app(self) -> str:
        return str(yaml.safe_load((self.root / "deployer.yaml").read_text())["app"])

    def set_vars(self, **values: object) -> None:
        inv = self.root / "inventories" / "sandbox.yaml"
        base = inv.read_text().split("\n# test vars\n")[0].rstrip("\n")
        lines = [f"  {k}: {json.dumps(v)}" for k, v in values.items()]
        inv.write_text(base + "\n# test vars\nvars:\n" + "\n".join(lines) + "\n")

    def run(self, *args: str, check: int | None = 0,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_deployer(self.root, *args, env=self.env, check=check, timeout=timeout)

    def json(self, *args: str, check: int | None = 0) -> dict[str, Any]:
        return json.loads(self.run("-o", "json", *args, check=check).stdout)  # type: ignore[no-any-return]

    def ship(self) -> dict[str, Any]:
        return self.json("ship", "sandbox")

    def sh(self, script: str) -> str:
        return subprocess.run(["docker", "exec", self.host.container, "sh", "-c", script],
                              capture_output=True, text=True, check=True).stdout

    def current(self) -> str:
        return self.sh(f"basename $(readlink /opt/{self.app}/current)").strip()

    def release_dir(self) -> str:
        return f"/opt/{self.app}/releases/{self.current()}"

    def mode(self, path: str) -> str:
        return self.sh(f"stat -c %a {path}").strip()


def result(report: dict[str, Any]) -> str:
    (h,) = report["hosts"]
    return str(h["result"])


def get(address: str, port: int, path: str = "/") -> Any:
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=10) as r:
        data = r.read()
    return json.loads(data) if path == "/" or path.startswith("/api") else data


def visit(address: str, port: int) -> int:
    req = urllib.request.Request(f"http://{address}:{port}/visit", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(json.loads(r.read())["visits"])


@pytest.fixture(scope="module")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    from deployer.sandbox import manager

    root = tmp_path_factory.mktemp("fidelity")
    shutil.copytree(APP, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".deployer"))
    try:
        info = manager.up(root, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        yield root, info
    finally:
        manager.down(root)


# --------------------------------------------------------------------------
# What files: copy gives on its own


@pytest.fixture(scope="class")
def copies(sandbox_dir: tuple[Path, Any]) -> Project:
    root, info = sandbox_dir
    shutil.copy(root / "deployer.copies.yaml", root / "deployer.yaml")
    (root / "static" / "logo.bin").write_bytes(LOGO)
    (root / "static" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "static" / "run.sh", 0o750)
    (root / "static" / "debug.log").write_text("git-ignored: never shipped\n")
    (root / "static" / "draft.tmp").write_text("excluded: never shipped\n")
    p = Project(root, info)
    p.set_vars(web_port=COPY_PORT)
    return p


class TestCopies:
    """In order: the first ship makes the release the rollback returns to."""

    first: str = ""

    def test_ship_serves_every_copied_file(self, copies: Project) -> None:
        report = copies.ship()
        assert result(report) == "deployed", report
        TestCopies.first = copies.current()
        body = get(copies.host.address, COPY_PORT)
        assert body["conf"] == (APP / "conf" / "app.conf").read_text()
        assert "{{ shipped as is }}" in body["conf"]  # never through Jinja
        assert body["index"] == "<h1>v1</h1>\n"
        assert body["static"] == ["css/site.css", "index.html", "logo.bin", "run.sh"]
        assert get(copies.host.address, COPY_PORT, "/static/logo.bin") == LOGO
        rel = copies.release_dir()
        assert copies.mode(f"{rel}/static/run.sh") == "750"
        assert copies.mode(f"{rel}/static/index.html") == "644"
        # ./appdata is data: under shared/, not in the release.
        assert visit(copies.host.address, COPY_PORT) == 1
        assert copies.sh("cat /opt/copyfid/shared/appdata/visits") == "1"
        assert copies.sh(f"test -e {rel}/appdata && echo yes || echo no").strip() == "no"
        manifest = json.loads(copies.sh(f"cat {rel}/manifest.json"))
        assert manifest["files"]["static/logo.bin"]["kind"] == "copy"
        assert manifest["files"]["docker-compose.yaml"]["kind"] == "template"

    def test_plan_out_is_what_the_host_got(self, copies: Project, tmp_path: Path) -> None:
        copies.run("plan", "sandbox", "--no-files", "--out", str(tmp_path / "out"))
        (host_dir,) = (tmp_path / "out").iterdir()
        rel = copies.release_dir()
        here = {
            str(p.relative_to(host_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                           f"{stat.S_IMODE(p.stat().st_mode):o}")
            for p in host_dir.rglob("*") if p.is_file() and p.name != "manifest.json"
        }
        # manifest.json differs by design; .deployer-health is the host's own
        # record of the release's health gate, written after the upload.
        lines = copies.sh(f"cd {rel} && find . -type f ! -name manifest.json "
                          "! -name .deployer-health "
                          "-exec sha256sum {} + -exec stat -c '%n %a' {} +").splitlines()
        sums = {ln.split()[1][2:]: ln.split()[0] for ln in lines if len(ln.split()[0]) == 64}
        modes = {ln.split()[0][2:]: ln.split()[1] for ln in lines
                 if len(ln.split()[0]) != 64}
        assert set(here) == set(sums)
        # Byte for byte, mode for mode; the compose file differs only in its
        # image references (plan shows tags; ship pins digests).
        copied = {n for n in here if n != "docker-compose.yaml"}
        # .env: compose reads the project's .env whatever the compose file says.
        assert copied == {".env", "conf/app.conf", "static/css/site.css", "static/index.html",
                          "static/logo.bin", "static/run.sh"}
        assert {n: here[n] for n in copied} == {n: (sums[n], modes[n]) for n in copied}

    def test_second_ship_is_unchanged_in_one_command(self, copies: Project) -> None:
        report = copies.ship()
        assert result(report) == "unchanged", report
        assert report["hosts"][0]["commands"] == 1

    def test_changed_static_file_ships_and_rollback_restores_it(self, copies: Project) -> None:
        addr = copies.host.address
        (copies.root / "static" / "index.html").write_text("<h1>v2</h1>\n")
        report = copies.ship()
        assert result(report) == "deployed", report
        assert copies.current() != TestCopies.first
        assert get(addr, COPY_PORT)["index"] == "<h1>v2</h1>\n"
        assert visit(addr, COPY_PORT) == 2  # the data survived the change
        rb = copies.json("rollback", "sandbox")
        assert result(rb) == "rolled back", rb
        assert copies.current() == TestCopies.first
        body = get(addr, COPY_PORT)
        assert body["index"] == "<h1>v1</h1>\n"
        assert body["visits"] == 2  # ... and the rollback


# --------------------------------------------------------------------------
# The whole issue: deployer finds what compose reads (needs the compose work)


@pytest.fixture(scope="class")
def full(sandbox_dir: tuple[Path, Any]) -> Project:
    root, info = sandbox_dir
    shutil.copy(APP / "deployer.yaml", root / "deployer.yaml")
    (root / "static" / "index.html").write_text("<h1>v1</h1>\n")
    (root / "static" / "debug.log").write_text("git-ignored: never shipped\n")
    p = Project(root, info)
    p.set_vars(web_port=FULL_PORT)
    return p


class TestComposeFidelity:
    first: str = ""

    def test_ship_serves_what_it_read_from_each_file(self, full: Project) -> None:
        report = full.ship()
        assert result(report) == "deployed", report
        TestComposeFidelity.first = full.current()
        body = get(full.host.address, FULL_PORT)
        assert "{{ shipped as is }}" in body["conf"]  # conf file mount
        assert body["index"] == "<h1>v1</h1>\n"  # static directory mount
        assert "debug.log" not in body["static"]  # git-ignored
        assert body["app_mode"] == "production-from-env-file"  # env_file
        assert body["build_greeting"] == "hello-from-dotenv"  # build arg from .env
        assert body["secret"] == TOKEN + "\n"  # file secret
        assert body["init"] == "ran"  # the restart: "no" one-shot ran and counted as done
        rel = full.release_dir()
        for secret in (".env", "app.env", "secrets/api_token.txt"):
            assert full.mode(f"{rel}/{secret}") == "600", secret
        # The profile service was neither started nor waited for.
        ps = full.sh("docker ps -a --filter label=com.docker.compose.project=fidelity "
                     "--format '{{.Label \"com.docker.compose.service\"}}'")
        assert "debug" not in ps.split()
        # ${DATA_DIR} from .env is data under shared/, never in the release.
        assert visit(full.host.address, FULL_PORT) == 1
        assert full.sh("cat /opt/fidelity/shared/appdata/visits") == "1"
        assert full.sh(f"test -e {rel}/appdata && echo yes || echo no").strip() == "no"
        assert TOKEN not in json.dumps(report)

    def test_second_ship_is_unchanged(self, full: Project) -> None:
        report = full.ship()
        assert result(report) == "unchanged", report
        assert report["hosts"][0]["commands"] == 1

    def test_changed_static_file_ships_and_rollback_restores_it(self, full: Project) -> None:
        addr = full.host.address
        (full.root / "static" / "index.html").write_text("<h1>v2</h1>\n")
        assert result(full.ship()) == "deployed"
        assert get(addr, FULL_PORT)["index"] == "<h1>v2</h1>\n"
        assert visit(addr, FULL_PORT) == 2
        assert result(full.json("rollback", "sandbox")) == "rolled back"
        assert full.current() == TestComposeFidelity.first
        body = get(addr, FULL_PORT)
        assert body["index"] == "<h1>v1</h1>\n"
        assert body["visits"] == 2


# --------------------------------------------------------------------------
# examples/nginx-app-db, shipped unchanged from its compose file


@pytest.fixture(scope="class")
def nginx_example(sandbox_dir: tuple[Path, Any],
                  tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The example in its own folder, aimed at this module's sandbox (the
    sandbox inventory with absolute paths to its key, known_hosts and
    registry password)."""
    root, info = sandbox_dir
    ex = tmp_path_factory.mktemp("nginx-app-db")
    shutil.copytree(NGINX_EXAMPLE, ex, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".deployer", "db-data"))
    inv = (root / "inventories" / "sandbox.yaml").read_text().split("\n# test vars\n")[0]
    (ex / "inventories" / "sandbox.yaml").write_text(
        inv.replace(".deployer/sandbox/", f"{root}/.deployer/sandbox/") + "\n")
    return Project(ex, info)


class TestNginxExample:
    def test_ships_and_serves_through_nginx(self, nginx_example: Project) -> None:
        p = nginx_example
        report = p.ship()
        assert result(report) == "deployed", report
        addr = p.host.address
        body = get(addr, NGINX_PORT, "/api")
        assert body["greeting"] == "hello from nginx-app-db"  # app.env, via nginx -> app
        assert "PostgreSQL" in body["database"] and body["visits"] == 1
        css = get(addr, NGINX_PORT, "/static/style.css")
        assert css == (NGINX_EXAMPLE / "static" / "style.css").read_bytes()
        rel = p.release_dir()
        assert p.sh(f"cat {rel}/nginx/default.conf") == \
            (NGINX_EXAMPLE / "nginx" / "default.conf").read_text()
        assert p.mode(f"{rel}/.env") == "600" and p.mode(f"{rel}/app.env") == "600"
        # The database lives in shared/, not in the release.
        assert p.sh("test -f /opt/shop/shared/db-data/PG_VERSION && echo yes").strip() == "yes"
        assert p.sh(f"test -e {rel}/db-data && echo yes || echo no").strip() == "no"

    def test_second_ship_is_unchanged_and_data_stays(self, nginx_example: Project) -> None:
        report = nginx_example.ship()
        assert result(report) == "unchanged", report
        assert get(nginx_example.host.address, NGINX_PORT, "/api")["visits"] == 2
