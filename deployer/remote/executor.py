"""The SSH executor: runs :class:`~deployer.commands.base.Command` values on one
host over one connection, uploads files atomically over SFTP.

One connection per host per deployer command: it is opened lazily on first use
and reused by every step (bootstrap, upload, compose, health polls). Each
opening is logged at debug level and counted in ``connections_opened``, so
``deployer -v`` shows the promise is kept. Only when that connection dies under
a step (which fails: "connection lost") does the next command open a new one,
for the steps that clean up after the failure (rollback, credentials, unlock).

Everything this module logs or raises goes through :func:`deployer.secrets.mask`:
remote stderr can echo a password, and one unmasked error line is a leak.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import secrets as _random
import select
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from deployer.commands.base import Command
from deployer.config.inventory import Host
from deployer.errors import HostError
from deployer.remote.base import ExecStats, LineSink, Result
from deployer.remote.ssh import DEFAULT_SSH_CONFIG, Connection, UnreachableError, connect
from deployer.secrets import MASK, mask

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("deployer.remote")

SUDO_PASSWORD_MARKERS = (
    "a password is required",
    "a terminal is required",
    "no tty present",
    "is not in the sudoers file",
    "is not allowed to run sudo",
    "may not run sudo",
)
STDERR_TAIL_LINES = 3
STDERR_TAIL_CHARS = 400
_CHUNK = 32768


class CommandFailed(HostError):
    """A command exited with a code outside its ``ok_codes``. ``result`` holds
    the (unmasked) output for callers that want to inspect it."""

    def __init__(
        self, host: str, step: str, message: str, result: Result, hint: str | None = None
    ) -> None:
        super().__init__(host, step, message, hint)
        self.result = result


class CommandTimeout(HostError):
    """A command did not finish within its timeout (the connection stays usable)."""


def _step(command: Command) -> str:
    return command.description or command.argv[0]


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def _wait(chan: paramiko.Channel, fd: int, timeout: float) -> None:
    """Until ``chan`` has more to read, its exit status, or ``timeout``.

    paramiko's pipe (``fd``) is readable while stdout is buffered, and for
    good once EOF arrived; sshd sends EOF before the exit status, so from
    then on a select returns at once and the caller's loop would spin until
    the status comes. A changed 200-host ship spent most of its CPU that way
    (about 170 turns per command under load, issue 19), and each spinning
    thread delayed the others' status further. After EOF only the status
    (or the close) is left to wait for, and it has its own event.
    """
    if chan.eof_received:
        chan.status_event.wait(timeout)
    else:
        select.select([fd], [], [], timeout)


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    tail = "; ".join(lines[-STDERR_TAIL_LINES:])
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "..." + tail[-STDERR_TAIL_CHARS:]
    return mask(tail)


class SSHExecutor:
    """Implements :class:`deployer.remote.base.Executor` over SSH for one host.

    ``ssh_config``: the OpenSSH client config to honour (None: none).
    ``allow_agent``: offer ssh-agent keys.
    ``as_root``: whether commands already run as root (so ``sudo`` is skipped);
    default: the resolved SSH user is ``root``.
    """

    def __init__(
        self,
        host: Host,
        *,
        ssh_config: str | None = DEFAULT_SSH_CONFIG,
        allow_agent: bool = True,
        as_root: bool | None = None,
    ) -> None:
        self.target = host
        self.host: str = host.name
        self.ssh_config = ssh_config
        self.allow_agent = allow_agent
        self._as_root = as_root
        self.connections_opened = 0
        self._commands = 0
        self._bytes = 0
        self._conn: Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._failed: HostError | None = None

    # -- connection --------------------------------------------------------

    def connect(self) -> Connection:
        """The one connection to this host, opened on first call."""
        with self._lock:
            if self._conn is not None:
                if self._conn.active:
                    return self._conn
                # The connection died under a step, which failed with
                # "connection lost". What runs next is the way out (roll back,
                # remove the run's credentials, unlock): it gets a new
                # connection, so a cut never leaves a lock or a password behind.
                log.debug("%s: SSH connection lost; reconnecting", self.host)
                self._drop_connection()
            if self._closed:
                raise RuntimeError(f"{self.host}: executor is closed")
            if self._failed is not None:
                # One attempt per host per run: later steps (cleanup, unlock)
                # fail at once instead of waiting out the timeout again.
                raise self._failed
            started = time.monotonic()
            try:
                self._conn = connect(self.target, ssh_config=self.ssh_config,
                                     allow_agent=self.allow_agent)
            except HostError as e:
                self._failed = e
                log.debug("%s: SSH connection failed: %s", self.host, mask(e.message))
                raise
            self.connections_opened += 1
            via = f" via {len(self._conn.jumps)} jump host(s)" if self._conn.jumps else ""
            log.debug(
                "%s: opened SSH connection #%d to %s%s in %.2fs",
                self.host, self.connections_opened, self._conn.endpoint, via,
                time.monotonic() - started,
            )
            return self._conn

    @property
    def user(self) -> str:
        """The SSH user (resolved through ssh_config); connects if needed."""
        return self.connect().endpoint.user

    @property
    def as_root(self) -> bool:
        if self._as_root is None:
            return self.user == "root"
        return self._as_root

    def stats(self) -> ExecStats:
        return ExecStats(self.connections_opened, self._commands, self._bytes)

    def _drop_connection(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # closing a dead session is fine
                self._sftp.close()
            self._sftp = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            log.debug("%s: closed SSH connection", self.host)
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> SSHExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ----------------------------------------------------------

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        """Run ``command``; see :class:`deployer.remote.base.Executor`.

        ``timeout`` (else ``ssh.command_timeout``, else none) bounds the whole
        command; on expiry the channel is closed and :class:`CommandTimeout`
        raised, leaving the connection usable for the next step.
        """
        conn = self.connect()
        self._commands += 1
        line = command.shell(as_root=self.as_root)
        shown = mask(line) + (f"  <<< {MASK}" if command.stdin is not None else "")
        limit = timeout if timeout is not None else self.target.ssh.command_timeout
        step = _step(command)
        started = time.monotonic()
        try:
            code, out, err = self._exec(conn, line, command.stdin, limit, step)
        except CommandTimeout:
            log.debug("%s: $ %s -> timed out after %.2fs", self.host, shown,
                      time.monotonic() - started)
            raise
        duration = time.monotonic() - started
        result = Result(command=command, exit_code=code, stdout=out, stderr=err,
                        duration=duration)
        log.debug("%s: $ %s -> exit %d in %.2fs", self.host, shown, code, duration)
        return self._checked(result, step, check)

    def _checked(self, result: Result, step: str, check: bool) -> Result:
        """A failed result: log its stderr, name a sudo problem, and with
        ``check`` raise with the (masked) tail of its output."""
        if not result.ok:
            if result.stderr.strip():
                log.debug("%s: stderr: %s", self.host, mask(result.stderr.strip()))
            self._check_sudo(result.command, result, step)
            if check:
                tail = _tail(result.stderr) or _tail(result.stdout)
                raise CommandFailed(
                    self.host, step,
                    f"exit code {result.exit_code}" + (f": {tail}" if tail else ""),
                    result,
                )
        return result

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        """Run ``command`` and hand each output line (stdout and stderr
        merged, decoded) to ``on_line`` as it arrives; return the exit code,
        or -1 when ``cancel`` was set (the channel is closed then). For
        ``logs -f`` and ``exec``: the output is the point, not a result."""

        conn = self.connect()
        self._commands += 1
        line = command.shell(as_root=self.as_root)
        log.debug("%s: $ %s (streamed)", self.host, mask(line))
        # stdout and stderr each have their own line buffer, so a line of one
        # is never cut by a line of the other.
        bufs = {False: b"", True: b""}

        def take(data: bytes, err: bool) -> None:
            *lines, bufs[err] = (bufs[err] + data).split(b"\n")
            for raw in lines:
                on_line(raw.decode("utf-8", "replace"))

        with self._channel(conn, _step(command)) as chan:
            chan.exec_command(line)
            if command.stdin is not None:
                chan.sendall(command.stdin.encode())
            chan.shutdown_write()
            fd = chan.fileno()
            while True:
                if cancel is not None and cancel.is_set():
                    return -1
                if chan.recv_ready():
                    take(chan.recv(_CHUNK), False)
                    continue
                if chan.recv_stderr_ready():
                    take(chan.recv_stderr(_CHUNK), True)
                    continue
                if (chan.exit_status_ready() and chan.eof_received) or chan.closed:
                    break
                if not conn.active:
                    raise UnreachableError(self.host, f"connection lost during {_step(command)}")
                _wait(chan, fd, 0.2)
            for rest in bufs.values():
                if rest:
                    on_line(rest.decode("utf-8", "replace"))
            return chan.recv_exit_status()

    def _check_sudo(self, command: Command, result: Result, step: str) -> None:
        """sudo's own failures are raised whatever ``check`` says: the step did
        not even start, so its exit code means nothing to the caller."""
        if not command.sudo or self.as_root:
            return
        err = result.stderr.lower()
        user = self._conn.endpoint.user if self._conn else "?"
        if result.exit_code == 127 and "sudo" in err and "not found" in err:
            raise HostError(
                self.host, step, f"sudo is not installed, and user {user!r} is not root",
                "install sudo and grant passwordless sudo, or connect as root (ssh.user)",
            )
        if any(ln.startswith("sudo:") for ln in err.splitlines()) and any(
            m in err for m in SUDO_PASSWORD_MARKERS
        ):
            raise HostError(
                self.host, step,
                f"user {user!r} has no passwordless sudo (sudo -n: {_tail(result.stderr)})",
                f"grant it, e.g. `{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/{user}, "
                "or connect as root (ssh.user)",
            )

    def _exec(
        self, conn: Connection, line: str, stdin: str | None, limit: float | None, step: str
    ) -> tuple[int, str, str]:

        deadline = None if limit is None else time.monotonic() + limit
        out: list[bytes] = []
        err: list[bytes] = []
        with self._channel(conn, step) as chan:
            chan.exec_command(line)
            pending = memoryview(stdin.encode()) if stdin is not None else memoryview(b"")
            if not pending:
                chan.shutdown_write()
            fd = chan.fileno()
            while True:
                # Interleave stdin writes with reads so neither side's window fills up.
                if pending and chan.send_ready():
                    try:
                        n = chan.send(bytes(pending[:_CHUNK]))
                    except OSError:
                        # The command ended (and its channel closed) before it
                        # read all its stdin: its exit code says how it went.
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        chan.shutdown_write()
                while chan.recv_ready():
                    out.append(chan.recv(_CHUNK))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(_CHUNK))
                if chan.exit_status_ready() and chan.eof_received and not (
                    chan.recv_ready() or chan.recv_stderr_ready()
                ):
                    break
                if chan.closed and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    break
                if not conn.active:
                    raise UnreachableError(self.host, f"connection lost during {step}")
                wait = 0.5
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise CommandTimeout(
                            self.host, step, f"timed out after {limit:g}s",
                            "raise the step's timeout (or ssh.command_timeout), or check "
                            "what the command waits for",
                        )
                    wait = min(wait, left)
                if pending:
                    wait = min(wait, 0.01)
                _wait(chan, fd, wait)
            code = self._exit_code(chan, conn, step)
        return code, _text(out), _text(err)

    # -- streamed stdin ------------------------------------------------------

    def stream_in(
        self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run ``command`` with ``chunks`` (binary, e.g. a release tar)
        streamed to its stdin over the one connection; see
        :class:`deployer.remote.base.Executor`. Output is drained between
        chunks, so a chatty command cannot stall the stream."""
        conn = self.connect()
        self._commands += 1
        line = command.shell(as_root=self.as_root)
        limit = timeout if timeout is not None else self.target.ssh.command_timeout
        step = _step(command)
        started = time.monotonic()
        code, out, err, sent = self._exec_stream(conn, line, iter(chunks), limit, step)
        self._bytes += sent
        duration = time.monotonic() - started
        result = Result(command=command, exit_code=code, stdout=out, stderr=err,
                        duration=duration)
        log.debug("%s: $ %s  <<< %d bytes streamed -> exit %d in %.2fs", self.host,
                  mask(line), sent, code, duration)
        return self._checked(result, step, check)

    def _exec_stream(
        self, conn: Connection, line: str, chunks: Iterator[bytes], limit: float | None,
        step: str,
    ) -> tuple[int, str, str, int]:

        deadline = None if limit is None else time.monotonic() + limit
        out: list[bytes] = []
        err: list[bytes] = []
        sent = 0

        def drain() -> None:
            while chan.recv_ready():
                out.append(chan.recv(_CHUNK))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_CHUNK))

        def left() -> float | None:
            if deadline is None:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(
                    self.host, step, f"timed out after {limit:g}s",
                    "raise the step's timeout (or ssh.command_timeout), or check the "
                    "connection's speed",
                )
            return remaining

        with self._channel(conn, step) as chan:
            chan.exec_command(line)
            for chunk in chunks:
                if chan.exit_status_ready():
                    break  # the command ended early (it failed): its exit code says why
                chan.settimeout(left())
                try:
                    chan.sendall(chunk)
                except TimeoutError:
                    left()
                    raise CommandTimeout(self.host, step, "the upload stalled") from None
                except OSError:
                    break  # channel closed by the other side: read why below
                sent += len(chunk)
                drain()
            else:
                chan.shutdown_write()
            while True:
                drain()
                if chan.exit_status_ready() and chan.eof_received and not (
                    chan.recv_ready() or chan.recv_stderr_ready()
                ):
                    break
                if chan.closed and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    break
                if not conn.active:
                    raise UnreachableError(self.host, f"connection lost during {step}")
                remaining = left()
                _wait(chan, chan.fileno(), 0.5 if remaining is None else min(0.5, remaining))
            code = self._exit_code(chan, conn, step)
        return code, _text(out), _text(err), sent

    @contextlib.contextmanager
    def _channel(self, conn: Connection, step: str) -> Iterator[paramiko.Channel]:
        """A session channel for one command, closed afterwards. paramiko
        reports a connection that dies under a command as EOFError or
        SSHException from whichever call noticed (exec, send, recv); that is
        one :class:`UnreachableError` naming the step here, never an
        internal error, so the clean-up steps after it still run."""
        import paramiko

        try:
            chan = conn.transport.open_session(timeout=self.target.ssh.connect_timeout)
        except (EOFError, OSError) as e:  # the socket itself is gone
            raise UnreachableError(
                self.host, f"connection lost during {step} (cannot open a channel: {e})"
            ) from None
        except paramiko.SSHException as e:  # the server refused a channel
            raise UnreachableError(self.host, f"cannot open a channel for {step}: {e}") from None
        try:
            yield chan
        except (paramiko.SSHException, EOFError) as e:
            raise UnreachableError(
                self.host, f"connection lost during {step} ({type(e).__name__}: {e})"
            ) from None
        finally:
            chan.close()

    def _exit_code(self, chan: paramiko.Channel, conn: Connection, step: str) -> int:
        """The finished command's exit code; -1 when none arrived, which is
        an unreachable host when the connection died under it."""
        code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        if code == -1 and not conn.active:
            raise UnreachableError(self.host, f"connection lost during {step}")
        return code

    # -- files ---------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        """One SFTP session per executor, on the one connection."""
        with self._lock:
            if self._sftp is None:
                conn = self.connect()
                try:
                    self._sftp = conn.client.open_sftp()
                except Exception as e:
                    raise HostError(
                        self.host, "upload", f"cannot start SFTP: {mask(str(e))}",
                        "enable the sftp Subsystem in sshd_config",
                    ) from None
            return self._sftp

    def upload(
        self, data: bytes, path: str, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        """Write ``data`` to ``path`` atomically with ``mode``.

        The data goes to ``<dir>/.<name>.tmp-<random>`` (created, then chmodded
        before any byte is written, so a secret is never readable by others),
        then ``posix-rename`` replaces ``path`` in one step: a reader sees the
        old file or the new one, never half of one. ``owner`` (``user`` or
        ``user:group``) chowns the temporary file first, with sudo if needed.
        """
        sftp = self.sftp()
        started = time.monotonic()
        self._bytes += len(data)
        directory, name = posixpath.split(path)
        tmp = posixpath.join(directory, f".{name}.tmp-{_random.token_hex(6)}")
        try:
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)
                f.set_pipelined(True)
                f.write(data)
            if owner:
                self.run(Command(("chown", owner, tmp), sudo=True,
                                 description=f"chown {path}"))
            sftp.posix_rename(tmp, path)
        except HostError:
            self._remove_quietly(tmp)
            raise
        except (OSError, EOFError) as e:
            self._remove_quietly(tmp)
            reason = mask(str(e) or type(e).__name__)
            raise HostError(
                self.host, f"upload {path}", reason,
                "does the directory exist and is it writable by the SSH user?",
            ) from None
        log.debug("%s: uploaded %d bytes to %s (mode %o) in %.2fs", self.host, len(data),
                  path, mode, time.monotonic() - started)

    def _remove_quietly(self, path: str) -> None:
        try:
            if self._sftp is not None:
                self._sftp.remove(path)
        except (OSError, EOFError):
            pass
