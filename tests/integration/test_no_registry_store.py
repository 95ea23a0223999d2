"""``registry: none`` below the sandbox: the blob store made from the real local
Docker engine, the read-only server, and the reverse tunnel on a real sshd.

- The store: ``docker save`` of a tiny image becomes gzip blobs and a schema 2
  manifest whose digest is stable (same image, fresh store: same digest), and
  a rebuilt image with a changed last layer reuses the first layer's blob.
- The local dockerd pulls from the server on loopback by digest and gets the
  very image id that was built (so the format is one dockerd accepts).
- Through a real sshd's reverse forward, the "host" side fetches blobs by
  digest (Range too), gets 405 for writes and 404 for unknown digests, and
  after the tunnel closes nothing listens on its port.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.images.blobs import BlobStore
from deployer.images.serve import serving
from deployer.remote.executor import SSHExecutor
from deployer.remote.tunnel import reverse_tunnel

REPO = "deployer-test/noreg-store"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from deployer.images.engine import Engine

    try:
        eng = Engine.from_env()
    except Exception as e:
        pytest.fail(f"no Docker engine answers: {e}", pytrace=False)
    yield eng
    eng.close()


def build(tmp: Path, tag: str, last: str) -> str:
    """A two-layer image FROM scratch; ``last`` is the second layer's content."""
    ctx = tmp / f"ctx-{tag}"
    ctx.mkdir()
    (ctx / "base.bin").write_bytes(hashlib.sha256(b"seed").digest() * 20000)  # 640 KB
    (ctx / "last.txt").write_text(last)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY base.bin /base.bin\n"
                                    "COPY last.txt /last.txt\n")
    ref = f"{REPO}:{tag}"
    subprocess.run(["docker", "build", "-q", "-t", ref, str(ctx)], check=True,
                   capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return ref


@pytest.fixture(scope="module")
def images(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    tmp = tmp_path_factory.mktemp("noreg-images")
    refs = [build(tmp, "one", "one\n"), build(tmp, "two", "two\n")]
    yield refs
    for ref in refs:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_store_is_deterministic_and_reuses_layers(engine: Any, images: list[str],
                                                   tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "a")
    assert store.cached(engine, images[0]) is None  # nothing compressed yet
    one = store.prepare(engine, "web", images[0])
    assert store.cached(engine, images[0]) == one  # plan --diff pins what ship serves
    assert store.prepare(engine, "web", images[0]) == one
    fresh = BlobStore(tmp_path / "b").prepare(engine, "web", images[0])
    assert fresh.digest == one.digest  # the same bytes built: the same pinned digest
    manifest = store.manifest_path(one.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == one.digest
    assert one.config.digest == engine.image(images[0]).id
    for blob in (one.config, *one.layers):
        data = store.blob_path(blob.digest).read_bytes()
        assert len(data) == blob.size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
    base_blob = store.blob_path(one.layers[0].digest)
    made = base_blob.stat().st_mtime_ns
    two = store.prepare(engine, "web", images[1])
    assert two.digest != one.digest
    assert two.layers[0] == one.layers[0] and two.layers[1] != one.layers[1]
    assert base_blob.stat().st_mtime_ns == made  # not compressed again


def test_local_dockerd_pulls_by_digest(engine: Any, images: list[str], tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    served = BlobStore(store_root).prepare(engine, "web", images[0])
    with serving(store_root) as server:
        ref = f"127.0.0.1:{server.address[1]}/{REPO}@{served.digest}"
        try:
            p = subprocess.run(["docker", "pull", ref], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            got = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref],
                                 capture_output=True, text=True, check=True).stdout.strip()
            assert got == engine.image(images[0]).id
        finally:
            subprocess.run(["docker", "rmi", ref], capture_output=True)


FETCH = r"""
import hashlib, http.client, json, sys
port, digest, manifest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
def req(method, path, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read()
    return r.status, body, dict(r.getheaders())
st, body, h = req("GET", "/v2/")
out["v2"] = st
st, body, h = req("GET", f"/v2/x/blobs/{digest}")
out["blob"] = [st, "sha256:" + hashlib.sha256(body).hexdigest(), h.get("Docker-Content-Digest")]
st, body, h = req("GET", f"/v2/x/blobs/{digest}", {"Range": "bytes=10-"})
out["range"] = [st, len(body), h.get("Content-Range")]
st, body, h = req("GET", f"/v2/x/manifests/{manifest}")
out["manifest"] = [st, "sha256:" + hashlib.sha256(body).hexdigest()]
out["missing"] = req("GET", "/v2/x/blobs/sha256:" + "0" * 64)[0]
out["tag"] = req("GET", "/v2/x/manifests/latest")[0]
out["put"] = req("PUT", f"/v2/x/blobs/uploads/")[0]
print(json.dumps(out))
"""


def test_reverse_tunnel_on_a_real_sshd(engine: Any, images: list[str], tmp_path: Path,
                                       make_host: Callable[..., Host]) -> None:
    store_root = tmp_path / "store"
    served = BlobStore(store_root).prepare(engine, "web", images[0])
    layer = served.layers[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with SSHExecutor(make_host(), ssh_config=None, allow_agent=False) as ex:
        conn: Any = ex.connect()
        with serving(store_root) as server, reverse_tunnel(
                conn.transport, "web-1", port, server.address) as tunnel:
            script = f"python3 -c {shlex.quote(FETCH)} {port} {layer.digest} {served.digest}"
            res = ex.run(cmd("sh", "-c", script))
            out = json.loads(res.stdout)
            assert tunnel.sent > layer.size
        assert out["v2"] == 200
        assert out["blob"] == [200, layer.digest, layer.digest]
        assert out["range"] == [206, layer.size - 10, f"bytes 10-{layer.size - 1}/{layer.size}"]
        assert out["manifest"] == [200, served.digest]
        assert out["missing"] == 404 and out["tag"] == 404 and out["put"] == 405
        # The forward is gone with the tunnel, on the same connection.
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
        after = ex.run(cmd("sh", "-c", f"python3 -c {shlex.quote(probe)} 2>&1 || echo refused"))
        assert "refused" in after.stdout
        assert ex.stats().connections_opened == 1


def test_cancel_cuts_a_transfer(engine: Any, images: list[str], tmp_path: Path,
                                make_host: Callable[..., Host]) -> None:
    """Ctrl-C (the run's cancel event) stops a transfer in flight."""
    store_root = tmp_path / "store"
    served = BlobStore(store_root).prepare(engine, "web", images[0])
    # A blob big enough to be in flight when cancel comes: fake, by digest.
    big = os.urandom(64 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    BlobStore(store_root).blob_path(digest).write_bytes(big)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cancel = threading.Event()
    reader = (f"import http.client,sys; c=http.client.HTTPConnection('127.0.0.1',{port});"
              f"c.request('GET','/v2/x/blobs/{digest}'); r=c.getresponse(); n=0\n"
              "try:\n while (b := r.read(65536)): n += len(b)\n"
              "except Exception: pass\nprint(n)")
    with SSHExecutor(make_host(), ssh_config=None, allow_agent=False) as ex:
        conn: Any = ex.connect()
        with serving(store_root) as server, reverse_tunnel(
                conn.transport, "web-1", port, server.address, cancel) as tunnel:
            def stop_soon() -> None:
                while tunnel.sent < 1_000_000:
                    threading.Event().wait(0.01)
                cancel.set()
            threading.Thread(target=stop_soon, daemon=True).start()
            res = ex.run(cmd("python3", "-c", reader), timeout=120)
        assert int(res.stdout) < len(big)
    assert served.digest  # the store itself is untouched by the cut


def test_mirrored_image_is_served_the_same_way(engine: Any, images: list[str],
                                               tmp_path: Path) -> None:
    """``source:`` images with ``registry: none``: taken from the local engine,
    tagged under the loopback registry and pinned by the store's digest."""
    from deployer.config import load_project
    from deployer.images.loopback import loopback_server
    from deployer.images.progress import PlainImageReporter
    from deployer.images.stage import build_and_push

    (tmp_path / "deployer.yaml").write_text(
        f"app: mirrorapp\nregistry: none\nimages:\n"
        f"  base: {{repository: mirrorapp/base, source: {images[0]}}}\n")
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.yaml").write_text("hosts: {h: {}}\n")
    project = load_project(tmp_path, "prod", {})
    server = loopback_server("mirrorapp")
    try:
        with open(os.devnull, "w") as quiet:
            pinned = build_and_push(project, "t1", PlainImageReporter(quiet), engine=engine)
        name, _, digest = pinned["base"].partition("@")
        assert name == f"{server}/mirrorapp/base:t1"
        served = BlobStore(tmp_path / ".deployer" / "images").served(digest)
        assert served is not None and served.config.digest == engine.image(images[0]).id
    finally:
        subprocess.run(["docker", "rmi", f"{server}/mirrorapp/base:t1"], capture_output=True)
