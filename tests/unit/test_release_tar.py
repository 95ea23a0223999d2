"""The release as a tar stream and as a folder, the host's unpack command,
and copies in the plan: fingerprint, manifest, listing, ``plan --out``."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from conftest import ENV, MakeProject
from test_cli import assert_config_error, deployer

from deployer.commands import release
from deployer.commands.base import Command
from deployer.config import load_project
from deployer.plan import build_plan, image_refs
from deployer.release_files import SMALL_FILE, ReleaseFile
from deployer.release_tar import (
    CHUNK,
    SourceChanged,
    release_files,
    tar_stream,
    write_release,
)
from deployer.remote.base import Result


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def test_tar_stream_is_deterministic_with_modes_and_no_owners(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"\x00\xff" * 300_000)
    long = "static/" + "d" * 120 + "/file.css"
    files = [
        ReleaseFile("z.yaml", 0o644, "t.j2", data=b"a: {{ b }}\n"),
        ReleaseFile(".env", 0o600, ".env", kind="copy", data=b"PW=1\n", secret=True),
        ReleaseFile("static/big.bin", 0o755, "big.bin", kind="copy",
                    source=tmp_path / "big.bin", size=600_000),
        ReleaseFile(long, 0o640, long, kind="copy", data=b"body{}"),
    ]
    chunks = list(tar_stream(files, ["empty/dir"]))
    assert all(len(c) <= CHUNK + 2 * 1024 * 1024 for c in chunks) and len(chunks) > 1
    data = b"".join(chunks)
    assert data == b"".join(tar_stream(list(reversed(files)), ["empty/dir"]))
    ms = members(data)
    assert [m.name for m in ms] == ["empty", "empty/dir", "static", f"static/{'d' * 120}",
                                    ".env", "static/big.bin", long, "z.yaml"]
    assert {m.name: stat.S_IMODE(m.mode) for m in ms if m.isfile()} == {
        ".env": 0o600, long: 0o640, "static/big.bin": 0o755, "z.yaml": 0o644}
    assert all(m.isdir() for m in ms[:4])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in ms} == {(0, 0, 0, "", "")}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        assert tf.extractfile("z.yaml").read() == b"a: {{ b }}\n"  # type: ignore[union-attr]
        assert tf.extractfile("static/big.bin").read() == b"\x00\xff" * 300_000  # type: ignore[union-attr]


@pytest.mark.parametrize("change", [b"longer now", b"", b"54321"])
def test_a_file_that_changed_since_the_plan_is_refused(tmp_path: Path, change: bytes) -> None:
    (tmp_path / "a").write_bytes(b"12345")
    f = ReleaseFile("a", 0o644, "a", kind="copy", source=tmp_path / "a", size=5)
    assert f.sha256  # computed by the plan (the fingerprint)
    (tmp_path / "a").write_bytes(change)
    with pytest.raises(SourceChanged, match=r"^a: the file changed"):
        b"".join(tar_stream([f]))


def test_a_large_file_that_changed_size_while_shipped_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (SMALL_FILE + 1))
    f = ReleaseFile("big", 0o644, "big", kind="copy", source=big, size=SMALL_FILE + 1)
    assert f.small_content is None  # streamed, not cached
    big.write_bytes(b"x" * 10)
    with pytest.raises(SourceChanged, match="changed while it was being shipped"):
        b"".join(tar_stream([f]))


def test_unsafe_paths_never_enter_the_stream() -> None:
    for dest in ("../x", "/etc/x", "a/../../x"):
        with pytest.raises(ValueError):
            b"".join(tar_stream([ReleaseFile(dest, 0o644, "t", data=b"")]))


def test_receive_release_argv() -> None:
    c = release.receive_release("/opt/shop", "r1")
    assert c.argv == ("sh", "-c", release._RECEIVE, "sh", "/opt/shop", "r1")
    assert "tar -x -p -m --no-same-owner -f - -C \"$d\"" in release._RECEIVE
    assert not c.sudo and c.stdin is None
    with pytest.raises(ValueError):
        release.receive_release("/opt/shop", "r1.partial")


def test_receive_release_unpacks_into_the_partial_locally(tmp_path: Path) -> None:
    """The host side, run here with /bin/sh and GNU tar (the same script)."""
    import subprocess

    deploy = tmp_path / "app"
    (deploy / "releases").mkdir(parents=True)
    files = [ReleaseFile("conf/x.conf", 0o640, "x", data=b"x=1\n"),
             ReleaseFile(".env", 0o600, ".env", data=b"PW=1\n", secret=True)]
    c = release.receive_release(str(deploy), "r1")
    p = subprocess.run(["/bin/sh", "-c", "umask 022; exec \"$@\"", "sh", *c.argv],
                       input=b"".join(tar_stream(files)), capture_output=True)
    assert p.returncode == 0, p.stderr
    part = deploy / "releases" / "r1.partial"
    assert (part / "conf" / "x.conf").read_bytes() == b"x=1\n"
    assert stat.S_IMODE((part / "conf" / "x.conf").stat().st_mode) == 0o640
    assert stat.S_IMODE((part / ".env").stat().st_mode) == 0o600
    (deploy / "releases" / "r1").mkdir()
    again = subprocess.run(c.argv, input=b"", capture_output=True)
    assert again.returncode == release.EXIT_RELEASE_STATE


def test_write_release_same_bytes_and_modes(tmp_path: Path) -> None:
    files = [ReleaseFile("a/b.txt", 0o751, "s", data=b"b"),
             ReleaseFile("s", 0o600, "s", data=b"pw", secret=True)]
    write_release(files, ["e"], tmp_path / "out")
    assert (tmp_path / "out/a/b.txt").read_bytes() == b"b"
    assert stat.S_IMODE((tmp_path / "out/a/b.txt").stat().st_mode) == 0o751
    assert stat.S_IMODE((tmp_path / "out/s").stat().st_mode) == 0o600
    assert (tmp_path / "out/e").is_dir()


# -- copies in the plan ---------------------------------------------------------

COPY_PROJECT = """\
app: shop
images:
  web: {repository: shop/web, context: .}
files:
  - template: templates/docker-compose.yaml.j2
    dest: docker-compose.yaml
  - copy: static
  - copy: conf/rules.yml
    dest: prometheus/rules.yml
    mode: "0640"
  - copy: conf
    dest: etc
    exclude: ["*.bak"]
  - template: templates/app.conf.j2
    dest: etc/app.conf
"""

COPY_COMPOSE = """\
services:
  web:
    image: {{ images.web }}
    volumes:
      - ./static:/srv/static:ro
      - ./prometheus/rules.yml:/etc/prometheus/rules.yml:ro
      - ./data:/data
"""


@pytest.fixture
def copy_project(make_project: MakeProject) -> Path:
    root = make_project({
        "deployer.yaml": COPY_PROJECT,
        "templates/docker-compose.yaml.j2": COPY_COMPOSE,
        "templates/app.conf.j2": "rendered={{ host.name }}\n",
        "static/index.html": "<h1>{{ not jinja }}</h1>\n",
        "static/css/site.css": "body{}\n",
        "conf/rules.yml": "expr: {{ $value }} > 1\n",
        "conf/app.conf": "replaced by the template\n",
        "conf/old.bak": "excluded\n",
    })
    os.chmod(root / "static" / "index.html", 0o604)
    return root


def plan_for(root: Path, env: str = "prod"):
    p = load_project(root, env, ENV)
    return build_plan(p, p.select(None), image_refs(p, "abc123"), "r1", "abc123")


def test_plan_carries_copies_byte_for_byte(copy_project: Path) -> None:
    pl = plan_for(copy_project)
    hp = pl.hosts[0]
    by = {f.dest: f for f in hp.files}
    assert [f.dest for f in hp.files] == sorted(by)
    assert set(by) == {"docker-compose.yaml", "etc/app.conf", "etc/rules.yml",
                       "prometheus/rules.yml", "static/css/site.css", "static/index.html"}
    assert by["static/index.html"].content == b"<h1>{{ not jinja }}</h1>\n"
    assert by["static/index.html"].mode == 0o604
    assert by["prometheus/rules.yml"].mode == 0o640
    assert by["etc/app.conf"].kind == "template"  # a template wins over a copied file
    assert by["etc/app.conf"].content == b"rendered=web-1\n"
    assert hp.dirs == ["etc", "static"]
    # Copied paths are uploaded: only ./data becomes shared data.
    assert hp.compose.shared_dirs == ["data"]
    manifest = json.loads(hp.manifest_bytes("me", "now"))
    assert manifest["files"]["static/index.html"] == {
        "kind": "copy", "mode": "0604", "size": 25, "sha256": by["static/index.html"].sha256}
    # Hosts share the copied files' objects (hashed once per plan).
    other = {f.dest: f for f in pl.hosts[1].files}
    assert other["static/index.html"] is by["static/index.html"]


def test_fingerprint_follows_every_copied_byte_and_mode(copy_project: Path) -> None:
    before = plan_for(copy_project).hosts[0].fingerprint
    assert plan_for(copy_project).hosts[0].fingerprint == before
    (copy_project / "static" / "css" / "site.css").write_text("body{color:red}\n")
    changed = plan_for(copy_project).hosts[0].fingerprint
    assert changed != before
    os.chmod(copy_project / "static" / "css" / "site.css", 0o600)
    assert plan_for(copy_project).hosts[0].fingerprint != changed
    (copy_project / "static" / "css" / "site.css").write_text("body{}\n")
    os.chmod(copy_project / "static" / "css" / "site.css", 0o644 & ~_umask())
    assert plan_for(copy_project).hosts[0].fingerprint == before


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_group_files_with_a_copy(copy_project: Path) -> None:
    (copy_project / "inventories" / "prod.yaml").write_text(
        "groups:\n  web:\n    hosts: {web-1: {address: 10.0.0.1}}\n"
        "    files:\n"
        "      - {template: templates/docker-compose.yaml.j2, dest: docker-compose.yaml}\n"
        "      - {copy: static}\n"
        "      - {copy: prometheus-missing}\n"
    )
    p = deployer("-C", str(copy_project), "check", "prod")
    assert_config_error(p, "inventories/prod.yaml: groups.web.files[2]: "
                           "'prometheus-missing' not found in the project")


def test_secret_files_are_marked_and_the_manifest_is_0600(copy_project: Path) -> None:
    (copy_project / "deployer.yaml").write_text(
        COPY_PROJECT.replace("dest: etc/app.conf\n", "dest: etc/app.conf\n    mode: \"0600\"\n"))
    hp = plan_for(copy_project).hosts[0]
    manifest = json.loads(hp.manifest_bytes("me", "now"))
    conf = {f.dest: f for f in hp.files}["etc/app.conf"]
    assert manifest["files"]["etc/app.conf"] == {"kind": "template", "mode": "0600",
                                                 "size": 15, "secret": True,
                                                 "sha256": conf.sha256}
    assert "secret" not in manifest["files"]["static/index.html"]
    (m,) = [f for f in release_files(hp, b"{}") if f.dest == "manifest.json"]
    assert m.mode == 0o600  # it holds secret files' hashes: the SSH user's only


def test_plan_lists_every_file_and_data_path(copy_project: Path) -> None:
    p = deployer("-C", str(copy_project), "plan", "prod", "--no-files", "--limit", "web-1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    row = next(ln for ln in lines if ln.endswith("static/index.html"))
    assert row.split()[:2] == ["0604", "25"] and row.split()[3] == "copy"
    assert any(ln.split()[-3:] == ["prometheus/rules.yml", "(from", "conf/rules.yml)"]
               for ln in lines)
    assert "  data     /opt/shop/shared/data  (kept across releases, never uploaded)" in lines
    assert "upload release (one tar stream: 6 files + manifest.json" in p.stdout
    j = deployer("-C", str(copy_project), "-o", "json", "plan", "prod", "--limit", "web-1")
    rows = {f["dest"]: f for f in json.loads(j.stdout)["hosts"][0]["files"]}
    assert rows["static/index.html"]["kind"] == "copy"
    assert "content" not in rows["static/index.html"]
    assert rows["static/index.html"]["size"] == 25
    assert rows["etc/app.conf"]["content"] == "rendered=web-1\n"


def test_plan_out_writes_each_release_folder(copy_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = deployer("-C", str(copy_project), "plan", "prod", "--no-files", "--tag", "abc123",
                 "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert f"wrote {out}/web-1/" in p.stdout
    hp = plan_for(copy_project).hosts[1]
    folder = out / "web-2"
    for f in hp.files:
        assert (folder / f.dest).read_bytes() == f.content
        assert stat.S_IMODE((folder / f.dest).stat().st_mode) == f.mode
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == hp.fingerprint
    assert set(manifest["files"]) == {f.dest for f in hp.files}
    # A second run replaces its own output; a foreign folder is never deleted.
    (folder / "stale").write_text("x")
    assert deployer("-C", str(copy_project), "plan", "prod", "--out", str(out)).returncode == 0
    assert not (folder / "stale").exists()
    (out / "web-1" / "manifest.json").unlink()
    assert_config_error(deployer("-C", str(copy_project), "plan", "prod", "--out", str(out)),
                        "is not a release folder from an earlier `plan --out`")


class TarRecorder:
    """An executor that unpacks what is streamed to it, as the host would."""

    host = "web-1"

    def __init__(self) -> None:
        self.ran: list[Command] = []
        self.tars: list[bytes] = []

    def run(self, command: Command, *, check: bool = True,
            timeout: float | None = None) -> Result:
        self.ran.append(command)
        return Result(command, 0)

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        self.ran.append(command)
        self.tars.append(b"".join(chunks))
        return Result(command, 0)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        raise AssertionError("a release is one tar stream, never per-file uploads")

    def close(self) -> None:
        pass


def test_ship_uploads_the_release_as_one_stream_then_renames(copy_project: Path) -> None:
    from deployer.deploy.hostrun import HostRun
    from deployer.deploy.ship import HostShip, ShipSettings
    from deployer.remote.base import Counting
    from deployer.report.reporters import PlainReporter

    project = load_project(copy_project, "prod", ENV)
    hp = build_plan(project, project.hosts[:1], image_refs(project, "t"), "r1", "t").hosts[0]
    rec = TarRecorder()
    ex = Counting(rec)  # type: ignore[arg-type]
    settings = ShipSettings(who="me@here", when="2026-12-01T00:00:00Z", health_timeout=1,
                            keep_releases=2)
    HostShip(project, hp, ex, HostRun("web-1", PlainReporter()), settings)._upload()
    assert [c.description for c in rec.ran] == [
        "unpack the release into releases/r1.partial", "finalize release r1"]
    assert ex.commands == 2 and ex.bytes_uploaded == len(rec.tars[0])
    with tarfile.open(fileobj=io.BytesIO(rec.tars[0]), mode="r:") as tf:
        names = {m.name: m for m in tf.getmembers()}
        for f in hp.files:
            assert tf.extractfile(f.dest).read() == f.content  # type: ignore[union-attr]
            assert stat.S_IMODE(names[f.dest].mode) == f.mode
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["fingerprint"] == hp.fingerprint
    assert manifest["created_by"] == "me@here"


def test_plan_out_refuses_a_host_name_that_is_not_a_folder_name(copy_project: Path,
                                                                 tmp_path: Path) -> None:
    (copy_project / "inventories" / "prod.yaml").write_text(
        'hosts: {"../escape": {address: 10.0.0.1}}\n')
    p = deployer("-C", str(copy_project), "plan", "prod", "--out", str(tmp_path / "out"))
    assert_config_error(p, "host name '../escape'")  # the inventory refuses it already
    assert not (tmp_path / "escape").exists()


def test_plan_out_into_a_file_is_one_clear_error(copy_project: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    p = deployer("-C", str(copy_project), "plan", "prod", "--out", str(not_a_dir))
    assert_config_error(p, f"--out {not_a_dir}: cannot write")
    assert "internal error" not in p.stderr and not_a_dir.read_text() == "x"
