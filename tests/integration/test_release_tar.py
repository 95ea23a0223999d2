"""The release tar upload against a real sshd: one stream, unpacked by the
host's ``tar`` into ``<id>.partial`` with exact bytes and modes, as root and
as a user without sudo (whose umask must not widen or narrow a mode)."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer.commands import release
from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.release_files import ReleaseFile
from deployer.release_tar import tar_stream
from deployer.remote.base import Counting
from deployer.remote.executor import CommandFailed, SSHExecutor

from .conftest import SSHServer

MakeHost = Callable[..., Host]
BIG = os.urandom(3 * 1024 * 1024 + 17)  # larger than SSH windows and stream chunks


def _files(src: Path) -> list[ReleaseFile]:
    (src / "static").mkdir()
    (src / "static" / "app.bin").write_bytes(BIG)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    return [
        ReleaseFile("docker-compose.yaml", 0o644, "t.j2", data=b"services: {}\n"),
        ReleaseFile("conf/rules.yml", 0o640, "conf/rules.yml", kind="copy",
                    data=b"expr: {{ $value }}\n"),
        ReleaseFile(".env", 0o600, ".env", kind="copy", data=b"PASSWORD=s3cret\n", secret=True),
        ReleaseFile("static/app.bin", 0o644, "static/app.bin", kind="copy",
                    source=src / "static" / "app.bin", size=len(BIG)),
        ReleaseFile("bin/run.sh", 0o755, "run.sh", kind="copy", source=src / "run.sh",
                    size=18),
    ]


def _check_tree(partial: Path, files: list[ReleaseFile]) -> None:
    for f in files:
        p = partial / f.dest
        assert p.read_bytes() == f.content, f.dest
        assert stat.S_IMODE(p.stat().st_mode) == f.mode, f.dest
    assert (partial / "empty").is_dir()
    assert hashlib.sha256((partial / "static/app.bin").read_bytes()).digest() == \
        hashlib.sha256(BIG).digest()


def test_release_arrives_as_one_stream_with_exact_modes(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    deploy = tmp_path / "app"
    (deploy / "releases").mkdir(parents=True)
    files = _files(tmp_path)
    with SSHExecutor(make_host(), ssh_config=None) as ssh:
        ex = Counting(ssh)
        res = ex.stream_in(release.receive_release(str(deploy), "r1"),
                           tar_stream(files, ["empty"]))
        assert res.ok
        assert ex.commands == 1
        assert ex.bytes_uploaded > len(BIG)
        partial = deploy / "releases" / "r1.partial"
        _check_tree(partial, files)
        ssh.run(release.finalize(str(deploy), "r1", "2026-01-01T00:00:00Z"))
        assert (deploy / "releases" / "r1" / ".env").read_bytes() == b"PASSWORD=s3cret\n"
        assert ssh.connections_opened == 1


def test_modes_survive_a_user_umask(
    make_host: MakeHost, no_agent: None, tmp_path: Path, sshd: SSHServer
) -> None:
    if sshd.nosudo_user is None:
        pytest.skip("no unprivileged user")
    pw = pwd.getpwnam(sshd.nosudo_user)
    base = Path(tempfile.mkdtemp(prefix="deployer-tar-"))
    try:
        os.chmod(base, 0o755)
        deploy = base / "app"
        (deploy / "releases").mkdir(parents=True)
        os.chown(deploy, pw.pw_uid, pw.pw_gid)
        os.chown(deploy / "releases", pw.pw_uid, pw.pw_gid)
        src = base / "src"
        src.mkdir()
        files = _files(src)
        for p in src.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        with SSHExecutor(make_host(user=sshd.nosudo_user), ssh_config=None) as ex:
            # umask 077 would make everything 0600 and 0700 without -p.
            script = cmd("sh", "-c", "umask 077; exec sh -c \"$0\" \"$@\"",
                         *release.receive_release(str(deploy), "r1").argv[2:])
            ex.stream_in(script, tar_stream(files, ["empty"]))
        partial = deploy / "releases" / "r1.partial"
        _check_tree(partial, files)
        assert (partial / ".env").stat().st_uid == pw.pw_uid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_refused_release_fails_fast_mid_stream(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    deploy = tmp_path / "app"
    (deploy / "releases" / "r1").mkdir(parents=True)  # the final release exists already
    files = _files(tmp_path)
    with SSHExecutor(make_host(), ssh_config=None) as ex:
        with pytest.raises(CommandFailed) as e:
            ex.stream_in(release.receive_release(str(deploy), "r1"), tar_stream(files))
        assert e.value.result.exit_code == release.EXIT_RELEASE_STATE
        assert "release r1 already exists" in str(e.value)
        assert not (deploy / "releases" / "r1.partial").exists()
        assert ex.run(cmd("true")).ok  # the connection is still usable


def test_a_stream_that_breaks_leaves_only_a_partial(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    deploy = tmp_path / "app"
    (deploy / "releases").mkdir(parents=True)
    files = _files(tmp_path)

    def broken() -> Iterator[bytes]:
        stream = tar_stream(files)
        yield next(stream)
        raise RuntimeError("source went away")

    with SSHExecutor(make_host(), ssh_config=None) as ex:
        with pytest.raises(RuntimeError, match="source went away"):
            ex.stream_in(release.receive_release(str(deploy), "r1"), broken())
        assert not (deploy / "releases" / "r1").exists()
        ex.run(release.remove_partials(str(deploy)))
        assert list((deploy / "releases").iterdir()) == []
