"""The image stage against the real local engine and a real registry (TLS +
basic auth): build, push, skip-if-present, mirror, and the failures a user
meets (wrong password, unreachable registry, missing Dockerfile, failing RUN,
missing source).

The registry is the sandbox's (the ``sandbox`` session fixture) when the
suite provides one; otherwise this module starts its own ``docker-registry``
(Debian's registry v2) on the Docker bridge address, with a throwaway CA that
the engine trusts through ``/etc/docker/certs.d`` (not on 127.0.0.1: dockerd
treats 127.0.0.0/8 as an insecure registry and would not verify TLS there).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.config import Project, load_project
from deployer.errors import ConfigError, DeployError
from deployer.images.engine import Engine
from deployer.images.progress import PlainImageReporter
from deployer.images.push import registry_auth
from deployer.images.stage import build_and_push, build_images, push_images

pytestmark = pytest.mark.e2e

PINNED = re.compile(
    r"^(?P<name>.+):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)@(?P<digest>sha256:[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class Registry:
    server: str
    username: str
    password: str
    ca_cert: Path | None = None


# -- the registry ---------------------------------------------------------------


def _docker_client():  # type: ignore[no-untyped-def]
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:  # no engine: nothing here can run
        pytest.skip(f"no Docker engine: {e}")
    return client


def _bridge_ip(client) -> str:  # type: ignore[no-untyped-def]
    import ipaddress

    cfg = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # dockerd leaves Gateway out when it picked the default: the subnet's first host.
    return str(cfg.get("Gateway") or ipaddress.ip_network(cfg["Subnet"])[1])


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _wait_for_registry(url: str, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, context=ctx, timeout=2)
        except urllib.error.HTTPError as e:
            if e.code == 401:  # up, TLS verified, auth on
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"docker-registry did not answer on {url}")


@pytest.fixture(scope="session")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry v2 with TLS (a fresh CA, IP SAN) and bcrypt basic auth."""
    from deployer.sandbox import pki

    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry (Debian package) is not installed")
    client = _docker_client()
    ip = _bridge_ip(client)
    port = _free_port(ip)
    server = f"{ip}:{port}"
    d = tmp_path_factory.mktemp("registry")
    ca = pki.make_ca("deployer e2e images CA")
    cert = pki.make_server_cert(ca, ip, [ip])
    password = pki.new_password()
    (d / "ca.crt").write_bytes(ca.public)
    (d / "server.crt").write_bytes(cert.public)
    (d / "server.key").write_bytes(cert.private)
    (d / "htpasswd").write_text(pki.htpasswd_line("deploy", password))
    (d / "config.yml").write_text(
        textwrap.dedent(f"""\
        version: 0.1
        log: {{level: warn}}
        storage:
          filesystem: {{rootdirectory: {d}/data}}
          delete: {{enabled: true}}
        http:
          addr: {server}
          tls: {{certificate: {d}/server.crt, key: {d}/server.key}}
        auth:
          htpasswd: {{realm: deployer-e2e, path: {d}/htpasswd}}
        """)
    )
    certs_d = Path("/etc/docker/certs.d") / server
    certs_d.mkdir(parents=True, exist_ok=True)
    shutil.copy(d / "ca.crt", certs_d / "ca.crt")
    log = (d / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(d / "config.yml")], stdout=log, stderr=log)
    try:
        _wait_for_registry(f"https://{server}/v2/", d / "ca.crt", proc)
        yield Registry(server, "deploy", password, d / "ca.crt")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(certs_d, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(request: pytest.FixtureRequest) -> Registry:
    """The sandbox's registry when the suite has a ``sandbox`` fixture, else our own."""
    try:
        sandbox = request.getfixturevalue("sandbox")
    except pytest.FixtureLookupError:
        return request.getfixturevalue("own_registry")  # type: ignore[no-any-return]
    r = sandbox.registry
    return Registry(r.server, r.username, r.password, getattr(r, "ca_cert", None))


# -- projects -----------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    _docker_client()
    eng = Engine.from_env()
    yield eng
    eng.close()


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Local image refs a test created; removed afterwards (never a prune:
    the engine is shared)."""
    refs: list[str] = []
    yield refs
    client = _docker_client()
    for ref in refs:
        with contextlib.suppress(Exception):
            client.images.remove(ref, force=True, noprune=False)


def unique() -> str:
    return uuid.uuid4().hex[:10]


APP_DOCKERFILE = """\
FROM debian:bookworm
ARG GREETING=unset
ARG BUILD_ID=unset
RUN echo "greeting=$GREETING id=$BUILD_ID" > /greeting && cat /greeting
CMD ["cat", "/greeting"]
"""


def write_project(
    root: Path,
    reg: Registry,
    images: str,
    files: dict[str, str] | None = None,
    server: str | None = None,
) -> Path:
    """A project whose registry password comes from ``${REG_PASSWORD}``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deployer.yaml").write_text(
        f"app: imgtest\n"
        f"registry:\n  server: {server or reg.server}\n  username: {reg.username}\n"
        f"  password: ${{REG_PASSWORD}}\n"
        f"images:\n{textwrap.indent(textwrap.dedent(images), '  ')}"
    )
    (root / "inventories").mkdir(exist_ok=True)
    (root / "inventories" / "test.yaml").write_text("hosts:\n  web-1: {address: 192.0.2.10}\n")
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def load(root: Path, password: str) -> Project:
    return load_project(root, "test", environ={"REG_PASSWORD": password})


def app_project(tmp_path: Path, reg: Registry, run_id: str) -> Path:
    return write_project(
        tmp_path / "app",
        reg,
        f"""\
        web:
          repository: e2e-{run_id}/web
          context: app
          args: {{GREETING: hello, BUILD_ID: "{run_id}"}}
        """,
        {"app/Dockerfile": APP_DOCKERFILE},
    )


def reporter() -> tuple[PlainImageReporter, io.StringIO]:
    buf = io.StringIO()
    return PlainImageReporter(buf, verbose=True), buf


# -- build and push -------------------------------------------------------------------


def test_build_push_and_pull_back_by_digest(
    tmp_path: Path, registry: Registry, engine: Engine, cleanup: list[str]
) -> None:
    run_id = unique()
    project = load(app_project(tmp_path, registry, run_id), registry.password)
    rep, out = reporter()

    refs = build_and_push(project, "t1", rep, engine=engine)

    target = f"{registry.server}/e2e-{run_id}/web"
    cleanup.append(f"{target}:t1")
    assert set(refs) == {"web"}
    m = PINNED.match(refs["web"])
    assert m, refs["web"]
    assert (m["name"], m["tag"]) == (target, "t1")
    text = out.getvalue()
    assert "[web] Step 4/5 : RUN echo" in text  # a line per step
    assert f"greeting=hello id={run_id}" in text  # the build arg reached the RUN step
    assert re.search(r"\[web\] layer [0-9a-f]+: Pushed", text)  # per-layer progress
    assert "already in registry" not in text

    # The registry holds that digest under the tag.
    auth = registry_auth(project.registry)
    assert engine.registry_digest(f"{target}:t1", auth) == m["digest"]

    # Drop the local image entirely, then pull it back by the pinned ref and run it.
    client = _docker_client()
    image_id = client.images.get(f"{target}:t1").id
    client.images.remove(image_id, force=True)
    assert engine.image(f"{target}:t1") is None
    pulled = list(engine.pull(refs["web"], auth))
    assert not [p for p in pulled if "error" in p], pulled
    local = engine.image(f"{target}@{m['digest']}")
    assert local is not None and local.id == image_id
    cleanup.append(f"{target}@{m['digest']}")
    output = client.containers.run(refs["web"], remove=True)
    assert output.decode().strip() == f"greeting=hello id={run_id}"


def test_second_push_of_unchanged_image_transfers_nothing(
    tmp_path: Path, registry: Registry, engine: Engine, cleanup: list[str]
) -> None:
    run_id = unique()
    project = load(app_project(tmp_path, registry, run_id), registry.password)
    target = f"{registry.server}/e2e-{run_id}/web"
    cleanup.append(f"{target}:t1")
    cleanup.append(f"{target}:t2")

    rep1, out1 = reporter()
    first = build_and_push(project, "t1", rep1, engine=engine)
    assert "Pushed" in out1.getvalue()

    rep2, out2 = reporter()
    second = build_and_push(project, "t1", rep2, engine=engine)
    assert second == first
    text = out2.getvalue()
    assert "[web] already in registry" in text
    assert " layer " not in text  # no layer was even considered for upload

    # Same bytes under a new tag: only the manifest goes up, no layer transfers.
    rep3, out3 = reporter()
    third = build_and_push(project, "t2", rep3, engine=engine)
    assert third["web"].split("@")[1] == first["web"].split("@")[1]
    statuses = set(re.findall(r"layer [0-9a-f]+: (.+)", out3.getvalue()))
    assert statuses, out3.getvalue()
    assert not statuses & {"Pushing", "Pushed"}, statuses


def test_build_then_push_as_separate_steps(
    tmp_path: Path, registry: Registry, engine: Engine, cleanup: list[str]
) -> None:
    run_id = unique()
    project = load(app_project(tmp_path, registry, run_id), registry.password)
    target = f"{registry.server}/e2e-{run_id}/web"
    cleanup.append(f"{target}:t1")

    with pytest.raises(DeployError, match="is not in the local engine; build it first"):
        push_images(project, "t1", reporter()[0], engine=engine)
    ids = build_images(project, "t1", reporter()[0], engine=engine)
    assert ids["web"].startswith("sha256:")
    pinned = push_images(project, "t1", reporter()[0], engine=engine)
    assert PINNED.match(pinned["web"])
    assert pinned["web"].startswith(f"{target}:t1@")


# -- mirror ---------------------------------------------------------------------------


def test_mirror_of_a_local_image(
    tmp_path: Path, registry: Registry, engine: Engine, cleanup: list[str]
) -> None:
    run_id = unique()
    client = _docker_client()
    base = client.images.get("debian:bookworm")
    src = f"deployer-e2e-mirror-src:{run_id}"
    base.tag("deployer-e2e-mirror-src", run_id)
    cleanup.append(src)
    root = write_project(
        tmp_path / "m", registry, f"db:\n  repository: e2e-{run_id}/db\n  source: {src}\n"
    )
    project = load(root, registry.password)
    target = f"{registry.server}/e2e-{run_id}/db"
    cleanup.append(f"{target}:t1")
    rep, out = reporter()

    refs = build_and_push(project, "t1", rep, engine=engine)

    m = PINNED.match(refs["db"])
    assert m and m["name"] == target and m["tag"] == "t1", refs
    assert f"using the local engine's {src}" in out.getvalue()
    assert engine.registry_digest(f"{target}:t1", registry_auth(project.registry)) == m["digest"]
    local = engine.image(f"{target}:t1")
    assert local is not None and local.id == base.id
    assert f"{target}@{m['digest']}" in local.repo_digests


def test_missing_source_image_is_a_clear_error(
    tmp_path: Path, registry: Registry, engine: Engine
) -> None:
    run_id = unique()
    src = f"{registry.server}/e2e-{run_id}/nothing-here:1"
    root = write_project(
        tmp_path / "m", registry, f"db:\n  repository: e2e-{run_id}/db\n  source: {src}\n"
    )
    project = load(root, registry.password)
    with pytest.raises(DeployError) as exc:
        build_and_push(project, "t1", reporter()[0], engine=engine)
    msg = exc.value.message
    assert msg.startswith(f"image 'db': source {src} is not in the local engine and pulling it")
    assert "not found" in msg or "manifest unknown" in msg
    assert "\n" not in msg
    assert exc.value.exit_code == 1


# -- build failures -----------------------------------------------------------------------


def test_missing_dockerfile_fails_before_anything(
    tmp_path: Path, registry: Registry, engine: Engine
) -> None:
    root = write_project(
        tmp_path / "p",
        registry,
        "web:\n  repository: e2e/web\n  context: app\n  dockerfile: web.Dockerfile\n",
        {"app/Dockerfile": APP_DOCKERFILE},  # there, but not the one named
    )
    # A wrong password too: the input check comes first, no login is tried.
    project = load(root, "not-the-password")
    rep, out = reporter()
    with pytest.raises(ConfigError) as exc:
        build_and_push(project, "t1", rep, engine=engine)
    assert exc.value.message.startswith(
        "image 'web': Dockerfile 'web.Dockerfile' not found in context 'app'"
    )
    assert exc.value.exit_code == 2
    assert out.getvalue() == ""

    (root / "deployer.yaml").write_text(
        (root / "deployer.yaml").read_text().replace("context: app", "context: nope")
    )
    with pytest.raises(ConfigError, match="image 'web': build context 'nope' is not a directory"):
        build_and_push(load(root, registry.password), "t1", rep, engine=engine)


def test_failing_run_step_names_the_step_and_its_output(
    tmp_path: Path, registry: Registry, engine: Engine
) -> None:
    marker = f"marker-{unique()}"
    root = write_project(
        tmp_path / "p",
        registry,
        "web:\n  repository: e2e/failing\n  context: .\n",
        {
            "Dockerfile": (
                "FROM debian:bookworm\n"
                "RUN echo fine\n"
                f"RUN echo '{marker} about to fail' && echo 'second line' && exit 3\n"
                "RUN echo never\n"
            )
        },
    )
    project = load(root, registry.password)
    rep, out = reporter()
    with pytest.raises(DeployError) as exc:
        build_and_push(project, "t1", rep, engine=engine)
    lines = exc.value.message.splitlines()
    assert lines[0].startswith(f"image 'web': build failed at Step 3/4 : RUN echo '{marker}")
    assert "returned a non-zero code: 3" in lines[0]
    assert f"    {marker} about to fail" in lines
    assert "    second line" in lines
    assert "    fine" not in lines  # only the failing step's output
    assert exc.value.exit_code == 1
    assert "Step 4/4" not in out.getvalue()


# -- registry failures, through the CLI --------------------------------------------------


CLI = """\
import sys
from deployer.cli import main, images
names = {c.name or c.callback.__name__ for c in main.app.registered_commands}
for fn in (images.build, images.push):
    if fn.__name__ not in names:
        main.app.command()(fn)
main.main()
"""


def run_cli(root: Path, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (``deployer.cli.main.main``) with the image
    commands registered, as a user runs it."""
    env = {**os.environ, "REG_PASSWORD": password, "CI": "true"}
    return subprocess.run(
        [sys.executable, "-c", CLI, "-C", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_build_and_push(tmp_path: Path, registry: Registry, cleanup: list[str]) -> None:
    run_id = unique()
    root = app_project(tmp_path, registry, run_id)
    target = f"{registry.server}/e2e-{run_id}/web"
    cleanup.append(f"{target}:cli1")
    built = run_cli(root, registry.password, "-o", "json", "build", "test", "--tag", "cli1")
    assert built.returncode == 0, built.stderr
    assert f'"web": "{target}:cli1"' in built.stdout
    pushed = run_cli(root, registry.password, "push", "test", "--tag", "cli1")
    assert pushed.returncode == 0, pushed.stderr
    assert re.fullmatch(rf"web: {re.escape(target)}:cli1@sha256:[0-9a-f]{{64}}\n", pushed.stdout)
    assert registry.password not in pushed.stdout + pushed.stderr


def test_wrong_password_is_one_line_and_exit_1(tmp_path: Path, registry: Registry) -> None:
    run_id = unique()
    root = app_project(tmp_path, registry, run_id)
    wrong = f"not-the-password-{run_id}"
    proc = run_cli(root, wrong, "push", "test", "--tag", "t1")
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: registry {registry.server}: login refused for user '{registry.username}': "
        "wrong username or password (check registry.username/password)"
    ], proc.stderr
    assert wrong not in proc.stderr


def test_wrong_password_fails_before_any_build(
    tmp_path: Path, registry: Registry, engine: Engine
) -> None:
    project = load(app_project(tmp_path, registry, unique()), "not-the-password")
    rep, out = reporter()
    with pytest.raises(DeployError, match="wrong username or password") as exc:
        build_and_push(project, "t1", rep, engine=engine)
    assert exc.value.exit_code == 1
    assert out.getvalue() == ""  # nothing was built


def test_unreachable_registry_is_one_line_and_exit_1(
    tmp_path: Path, registry: Registry
) -> None:
    host = registry.server.rsplit(":", 1)[0]
    dead = f"{host}:{_free_port(host)}"  # nothing listens there
    root = write_project(
        tmp_path / "p",
        registry,
        "web:\n  repository: e2e/web\n  context: app\n",
        {"app/Dockerfile": APP_DOCKERFILE},
        server=dead,
    )
    proc = run_cli(root, registry.password, "push", "test", "--tag", "t1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: registry {dead} is unreachable (login): ")
    assert "connection refused" in lines[0]
