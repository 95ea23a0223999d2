"""The SSH executor against a real sshd: commands, stdin, timeouts, sudo,
masking, atomic uploads, and the one-connection promise."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.commands.base import Command, Script, cmd
from deployer.config.inventory import Host
from deployer.errors import HostError
from deployer.remote.executor import (
    CommandFailed,
    CommandTimeout,
    SSHExecutor,
)
from deployer.remote.ssh import UnreachableError
from deployer.secrets import Secret, masker

from .conftest import SSHServer

MakeHost = Callable[..., Host]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory (tmp_path itself holds the test's known_hosts)."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def ex(make_host: MakeHost, no_agent: None) -> SSHExecutor:
    e = SSHExecutor(make_host(), ssh_config=None)
    yield e  # type: ignore[misc]
    e.close()


def test_quoting_arrives_verbatim(ex: SSHExecutor) -> None:
    nasty = ["with space", "it's \"quoted\"", "$(touch /tmp/pwned)", "a;b", "`x`", "*", "\\n"]
    r = ex.run(cmd("printf", "%s\\0", *nasty))
    assert r.stdout.split("\0")[:-1] == nasty


def test_env_and_cwd(ex: SSHExecutor) -> None:
    r = ex.run(Command(("sh", "-c", 'echo "$GREETING $(pwd)"'), env=(("GREETING", "hi"),),
                       cwd="/tmp"))
    assert r.stdout == "hi /tmp\n"


def test_script_positional_args(ex: SSHExecutor) -> None:
    r = ex.run(Script('printf "%s|%s" "$1" "$2"', args=("a b", "$HOME")).command())
    assert r.stdout == "a b|$HOME"


def test_failure_raises_with_masked_stderr_tail(
    ex: SSHExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "deployer.remote")
    masker.add("hunter2-secret")
    c = Command(("sh", "-c", "echo line1 >&2; echo bad password hunter2-secret >&2; exit 3"),
                description="docker login")
    with pytest.raises(CommandFailed) as e:
        ex.run(c)
    assert str(e.value) == "web-1: docker login: exit code 3: line1; bad password ******"
    assert e.value.result.exit_code == 3
    assert "hunter2-secret" not in caplog.text
    # check=False hands back the result instead.
    r = ex.run(c, check=False)
    assert (r.ok, r.exit_code) == (False, 3)
    assert ex.run(Command(("sh", "-c", "exit 1"), ok_codes=(0, 1))).ok


def test_stdin_delivered_and_secret_never_logged(
    ex: SSHExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "deployer.remote")
    secret = Secret("s3cr3t-registry-password")
    masker.add(secret)
    r = ex.run(Command(("cat",), stdin=secret, description="read password"))
    assert r.stdout == secret.value
    # Stdin bigger than the SSH window while the same bytes flow back: writing
    # all of stdin before reading would deadlock here.
    big = "0123456789abcdef" * 200_000  # 3.2 MB
    started = time.monotonic()
    r = ex.run(Command(("cat",), stdin=big))
    assert r.stdout == big
    assert time.monotonic() - started < 5
    assert "$ cat  <<< ******" in caplog.text
    assert secret.value not in caplog.text


def test_command_timeout_fails_fast_and_connection_survives(ex: SSHExecutor) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        ex.run(cmd("sleep", "30", description="wait for health"), timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert str(e.value).startswith("web-1: wait for health: timed out after 0.5s")
    assert ex.run(cmd("echo", "still here")).stdout == "still here\n"
    assert ex.connections_opened == 1


def test_command_timeout_from_settings(make_host: MakeHost, no_agent: None) -> None:
    with SSHExecutor(make_host(command_timeout=0.5), ssh_config=None) as ex:
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            ex.run(cmd("sleep", "30"))
        assert time.monotonic() - started < 2.5


def test_one_connection_for_many_commands(
    make_host: MakeHost, no_agent: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "deployer.remote")
    host = make_host(name="counted-host")
    with SSHExecutor(host, ssh_config=None) as ex:
        assert ex.connections_opened == 0  # lazy
        ex.run(cmd("true"))
        fds = len(os.listdir("/proc/self/fd"))
        for i in range(6):
            assert ex.run(cmd("echo", str(i))).stdout == f"{i}\n"
        assert len(os.listdir("/proc/self/fd")) == fds  # no descriptor leaks per command
        ex.upload(b"x", "/tmp/deployer-count-test")
        assert ex.connections_opened == 1
        assert ex.stats().connections_opened == 1
        assert ex.stats().commands == 7
        assert ex.stats().bytes_uploaded == 1
    assert caplog.text.count("counted-host: opened SSH connection #1") == 1


def test_atomic_upload_mode_and_no_temp_left(ex: SSHExecutor, workdir: Path) -> None:
    target = workdir / "app.env"
    target.write_text("old")
    os.chmod(target, 0o644)
    ex.upload(b"PASSWORD=new\n", str(target), mode=0o600)
    assert target.read_bytes() == b"PASSWORD=new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in workdir.iterdir()) == ["app.env"]


def test_upload_failure_is_a_host_error_and_cleans_up(ex: SSHExecutor, workdir: Path) -> None:
    with pytest.raises(HostError) as e:
        ex.upload(b"x", str(workdir / "missing-dir" / "f"))
    assert str(e.value).startswith(f"web-1: upload {workdir}/missing-dir/f:")
    # Renaming onto a directory fails after the temp file was written: it is removed.
    (workdir / "adir").mkdir()
    (workdir / "adir" / "x").write_text("keep")
    with pytest.raises(HostError):
        ex.upload(b"x", str(workdir / "adir"))
    assert sorted(p.name for p in workdir.iterdir()) == ["adir"]


def test_stream_hands_over_lines_as_they_come_and_the_exit_code(ex: SSHExecutor) -> None:
    lines: list[str] = []
    code = ex.stream(cmd("sh", "-c", "echo one; echo two; echo err >&2; printf three; exit 3"),
                     lines.append)
    assert code == 3
    # stdout and stderr are merged; their relative order is the network's
    assert [ln for ln in lines if ln != "err"] == ["one", "two", "three"]
    assert lines.count("err") == 1
    assert ex.stats().commands == 1


def test_stream_ends_when_cancelled(ex: SSHExecutor) -> None:
    import threading

    cancel = threading.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        cancel.set()  # like Ctrl-C during `logs -f`

    assert ex.stream(cmd("sh", "-c", "echo first; sleep 30"), on_line, cancel=cancel) == -1
    assert lines == ["first"]
    assert ex.run(cmd("echo", "still usable")).stdout == "still usable\n"


def test_root_skips_sudo(ex: SSHExecutor) -> None:
    r = ex.run(cmd("id", "-u", sudo=True))
    assert r.stdout.strip() == "0"


def test_user_without_passwordless_sudo(
    make_host: MakeHost, sshd: SSHServer, no_agent: None
) -> None:
    if sshd.nosudo_user is None:
        pytest.skip("could not create the non-root test user")
    host = make_host(user=sshd.nosudo_user)
    with SSHExecutor(host, ssh_config=None) as ex:
        assert ex.run(cmd("id", "-un")).stdout.strip() == sshd.nosudo_user
        with pytest.raises(HostError) as e:
            # check=False does not hide it: the step never ran.
            ex.run(cmd("systemctl", "enable", "docker", sudo=True,
                       description="enable docker"), check=False)
    text = str(e.value)
    if shutil.which("sudo"):  # the server is this machine
        assert text.startswith(
            f"web-1: enable docker: user '{sshd.nosudo_user}' has no passwordless sudo (sudo -n: "
        )
        assert f"{sshd.nosudo_user} ALL=(ALL) NOPASSWD:ALL" in text
    else:
        assert text.startswith("web-1: enable docker: sudo is not installed")


def test_upload_with_owner(ex: SSHExecutor, workdir: Path, sshd: SSHServer) -> None:
    if sshd.nosudo_user is None:
        pytest.skip("could not create the non-root test user")
    import pwd

    ex.upload(b"x", str(workdir / "owned"), mode=0o640, owner=sshd.nosudo_user)
    st = (workdir / "owned").stat()
    assert st.st_uid == pwd.getpwnam(sshd.nosudo_user).pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert sorted(p.name for p in workdir.iterdir()) == ["owned"]


def test_closed_executor_refuses(make_host: MakeHost, no_agent: None) -> None:
    ex = SSHExecutor(make_host(), ssh_config=None)
    ex.run(cmd("true"))
    ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        ex.run(cmd("true"))


def test_connection_dropped_mid_command_is_unreachable_then_reopened(
    make_host: MakeHost, no_agent: None
) -> None:
    with SSHExecutor(make_host(), ssh_config=None) as ex:
        with pytest.raises(UnreachableError) as e:
            # The parent of the remote shell is the connection's sshd process.
            # "connection lost", not a timeout: the cut is seen, not waited out.
            ex.run(cmd("sh", "-c", "kill -9 $PPID; sleep 30", description="compose up"),
                   timeout=10)
        assert str(e.value) == "web-1: unreachable (connection lost during compose up)"
        # The steps that clean up after it (rollback, unlock) get a new connection.
        assert ex.run(cmd("echo", "again")).stdout == "again\n"
        assert ex.connections_opened == 2


def test_a_connection_dying_under_a_command_is_unreachable_not_an_internal_error(
        make_host: Callable[..., Host]) -> None:
    # paramiko reports a transport that died mid-command as EOFError or
    # SSHException from exec/send/recv (the cut-during-upload fault scenario
    # once ended in "internal error: EOFError"): every command path must turn
    # it into the host's UnreachableError naming the step.
    import types

    import paramiko

    from deployer.commands.base import cmd
    from deployer.remote.executor import SSHExecutor
    from deployer.remote.ssh import UnreachableError

    closed: list[bool] = []

    class DyingChannel:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def exec_command(self, line: str) -> None:
            raise self.error

        def close(self) -> None:
            closed.append(True)

    for exc in (EOFError(), paramiko.SSHException("Channel closed.")):
        ex = SSHExecutor(make_host(), ssh_config=None)
        ex._conn = types.SimpleNamespace(  # type: ignore[assignment]
            active=True, endpoint=types.SimpleNamespace(user="deploy"),
            transport=types.SimpleNamespace(
                open_session=lambda timeout=None, e=exc: DyingChannel(e)))
        with pytest.raises(UnreachableError, match="connection lost during"):
            ex.run(cmd("true"))
        with pytest.raises(UnreachableError, match="connection lost during"):
            ex.stream_in(cmd("cat"), [b"x"])
        with pytest.raises(UnreachableError, match="connection lost during"):
            ex.stream(cmd("true"), lambda line: None)
    assert len(closed) == 6  # every channel closed on the way out
