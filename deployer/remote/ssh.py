"""Opening one SSH connection to one inventory host.

Built on paramiko directly, not fabric: fabric's ``Connection`` installs
``AutoAddPolicy`` and loads ``~/.ssh/known_hosts`` regardless of the
inventory's ``known_hosts``, and its invoke runners spend threads per stream
and hide when stdin is closed. We need exact control over host keys, stdin
EOF and timeouts, and paramiko already parses ``ssh_config`` for us.

Deployer connects the way ``ssh -l USER -p PORT -i IDENTITY -J JUMP ADDRESS``
would: ``ADDRESS`` (the inventory address, else the host name) is looked up in
``~/.ssh/config`` for HostName, User, Port, IdentityFile, ProxyJump,
ProxyCommand and HostKeyAlias, and every setting the inventory gives wins over
the file. Authentication tries the identity file(s), then the ssh-agent, then
(only when no identity is configured) the default ``~/.ssh/id_*`` keys.
Jump hosts (``bastion``, ``user@bastion:port``, or a comma-separated chain) are
resolved through ssh_config too and verified against the same known_hosts with
the same policy.

A run opens each jump host ONCE: the targets behind it are direct-tcpip
channels multiplexed over that one shared, thread-safe Transport
(:class:`JumpPool`), so a bastion sees one SSH connection whatever the fleet's
size. A shared jump connection lives while a target uses it, and while a run
keeps it (:func:`run_scope`) until the run ends. Every transport is a
:mod:`deployer.remote.closed_channels` one: a message paramiko would send on
a channel after its CLOSE is dropped, since OpenSSH answers it by dropping
the whole connection, every target behind a bastion with it.

Opening handshakes are bounded: at most ``rollout.max_connecting`` of them are
in flight at once, whatever ``max_parallel`` is, and a handshake the server
resets before it sent its banner (OpenSSH's ``MaxStartups`` drops such
connections at random beyond its first 10) is retried with backoff, each retry
logged at debug level (``-v``).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.config.inventory import Host, SSHSettings
from deployer.errors import ConfigError, DeployError, HostError
from deployer.remote.closed_channels import transport_class
from deployer.remote.hostkeys import HostKeyError, KnownHosts, known_hosts_name, make_policy

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("deployer.remote")
# paramiko logs every failed handshake at ERROR with a traceback; deployer
# reports the same failure as one line per host. Whoever wants paramiko's own
# logs sets its level explicitly (then NOTSET no longer applies).
if logging.getLogger("paramiko").level == logging.NOTSET:
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

DEFAULT_SSH_CONFIG = "~/.ssh/config"
MAX_JUMPS = 8
# A dead peer (pulled cable, crashed VM) must not hang a run forever: TCP
# keepalives kill the socket after about KEEPIDLE + KEEPINTVL * KEEPCNT seconds
# of silence from the peer, and the SSH-level keepalive keeps NATs open.
TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT = 30, 10, 3
SSH_KEEPALIVE = 30
#: Handshakes in flight at once by default: sshd's MaxStartups starts dropping
#: unauthenticated connections beyond 10 (``10:30:100``).
DEFAULT_MAX_CONNECTING = 10
#: A handshake reset by the server is tried this many times in all, waiting
#: RETRY_BASE * 2**n seconds (with jitter, at most RETRY_MAX) in between.
HANDSHAKE_ATTEMPTS = 6
RETRY_BASE, RETRY_MAX = 0.2, 3.0


class UnreachableError(HostError):
    """The host could not be reached or the connection broke: ``host: unreachable (reason)``."""

    def __init__(self, host: str, reason: str, hint: str | None = None) -> None:
        DeployError.__init__(self, f"{host}: unreachable ({reason})", hint)
        self.host = host
        self.step = "connect"
        # What per-host reports show after the step name: keep "unreachable"
        # in it, so `host: failed (step: unreachable (reason))` says what happened.
        self.reason = f"unreachable ({reason})"
        #: the server reset the handshake (MaxStartups, a busy sshd): worth a retry
        self.reset = False


@dataclass(frozen=True)
class Endpoint:
    """Where one SSH hop goes, after ssh_config and the inventory are merged."""

    alias: str  # the name looked up in ssh_config
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    host_key_name: str = ""  # the known_hosts entry name
    proxy_jump: str | None = None
    proxy_command: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


_IMPORT = threading.Lock()
_MATCH_EXEC = re.compile(r"(?im)^\s*match\b.*\bexec\b")


def import_paramiko() -> Any:
    """paramiko, imported without invoke: paramiko only needs invoke for
    ``Match exec`` in ssh_config (:func:`load_ssh_config` loads it then), and
    invoke imports ``unittest.mock``; together they were about 12% of a 1-host
    no-op ship's start-up (``python -X importtime``, issue 19)."""
    with _IMPORT:
        blocked = "invoke" not in sys.modules
        if blocked:
            sys.modules["invoke"] = None  # type: ignore[assignment]  # import -> ImportError
        try:
            import paramiko
        finally:
            if blocked and sys.modules.get("invoke", False) is None:
                del sys.modules["invoke"]
    return paramiko


def load_ssh_config(path: str | None) -> paramiko.SSHConfig:
    """Parse an ssh_config file; a missing file (or ``None``) is an empty config."""
    paramiko = import_paramiko()

    if path is None:
        return paramiko.SSHConfig()
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        return paramiko.SSHConfig()
    try:
        text = Path(full).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""  # from_path reports it below
    if _MATCH_EXEC.search(text):
        import paramiko.config

        with contextlib.suppress(ImportError):  # paramiko then says what is missing
            import invoke

            paramiko.config.invoke = invoke
    try:
        return paramiko.SSHConfig.from_path(full)
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise ConfigError(f"{full}: cannot parse ssh config: {e}", "fix the file") from None


def parse_jump(spec: str) -> list[tuple[str | None, str, int | None]]:
    """``[user@]host[:port]`` hops of a ProxyJump value (comma-separated chain).

    ``ssh://user@host:port`` and bracketed IPv6 (``[::1]:2222``) are accepted too.
    """
    hops: list[tuple[str | None, str, int | None]] = []
    for raw in spec.split(","):
        part = raw.strip()
        if part.startswith("ssh://"):
            part = part[len("ssh://") :]
        if not part:
            raise ValueError(f"empty hop in proxy_jump {spec!r}")
        user: str | None = None
        if "@" in part:
            user, part = part.rsplit("@", 1)
            user = user or None
        port: int | None = None
        if part.startswith("["):
            end = part.find("]")
            if end < 0:
                raise ValueError(f"unclosed '[' in proxy_jump {spec!r}")
            host, rest = part[1:end], part[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"bad hop {raw.strip()!r} in proxy_jump")
                port = _port(rest[1:], spec)
        elif part.count(":") == 1:
            host, p = part.split(":")
            port = _port(p, spec)
        else:
            host = part
        if not host:
            raise ValueError(f"hop without a host in proxy_jump {spec!r}")
        hops.append((user, host, port))
    return hops


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} in proxy_jump {spec!r}")
    return int(text)


def resolve(
    alias: str,
    *,
    config: paramiko.SSHConfig,
    user: str | None = None,
    port: int | None = None,
    identity_file: str | None = None,
    proxy_jump: str | None = None,
) -> Endpoint:
    """Merge one destination with ssh_config; explicit arguments win."""
    found: dict[str, Any] = dict(config.lookup(alias))
    hostname = str(found.get("hostname") or alias)
    the_port = port if port is not None else int(found.get("port", 22))
    the_user = user or found.get("user") or getpass.getuser()
    if identity_file:
        ids: tuple[str, ...] = (os.path.expanduser(identity_file),)
    else:
        ids = tuple(os.path.expanduser(p) for p in found.get("identityfile", []) or [])
    jump = proxy_jump if proxy_jump is not None else found.get("proxyjump")
    if jump is not None and jump.strip().lower() == "none":
        jump = None
    proxy_command = found.get("proxycommand")
    if proxy_command is not None and proxy_command.strip().lower() == "none":
        proxy_command = None
    alias_key = found.get("hostkeyalias")
    return Endpoint(
        alias=alias,
        hostname=hostname,
        port=the_port,
        user=str(the_user),
        identity_files=ids,
        host_key_name=alias_key or known_hosts_name(hostname, the_port),
        proxy_jump=jump or None,
        proxy_command=proxy_command,
    )


@dataclass
class Connection:
    """An authenticated SSH connection, and the jump connections under it
    (shared with the run's other targets: closing this one releases them,
    :class:`JumpPool` closes them when no one uses them)."""

    client: paramiko.SSHClient
    endpoint: Endpoint
    jumps: list[paramiko.SSHClient] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    release: Callable[[], None] | None = None

    @property
    def transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None:
            raise RuntimeError("connection is closed")
        return t

    @property
    def active(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def close(self) -> None:
        self.client.close()
        release, self.release = self.release, None
        if release is not None:
            release()


class _Gate:
    """A semaphore whose size a run can set: the handshakes in flight."""

    def __init__(self, size: int) -> None:
        self._cond = threading.Condition()
        self.size = size
        self._busy = 0
        self.peak = 0  # most in flight at once, for tests

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._cond:
            while self._busy >= self.size:
                self._cond.wait()
            self._busy += 1
            self.peak = max(self.peak, self._busy)
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify()

    def resize(self, size: int) -> None:
        with self._cond:
            self.size = max(1, size)
            self._cond.notify_all()


JumpKey = tuple[Any, ...]  # (hop endpoints, known_hosts, host_key_policy, allow_agent)


@dataclass
class _Shared:
    client: paramiko.SSHClient
    parent: JumpKey | None  # the hop this one was opened through (leased)
    users: int = 0


class JumpPool:
    """Jump-host connections shared by every target that goes through them.

    One connection per distinct chain of hops (and host-key settings), opened
    by the first target that needs it while the others wait for it; later
    targets open direct-tcpip channels over the same Transport (paramiko's
    Transport is thread-safe). Each user holds a lease; a connection nobody
    leases is closed at once, unless a run (:meth:`keep`) is under way: then
    it stays for the run's later hosts and is closed when the run ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shared: dict[JumpKey, _Shared] = {}
        self._opening: dict[JumpKey, threading.Lock] = {}
        self._failed: dict[JumpKey, HostError] = {}  # in a run: one attempt per jump host
        self._runs = 0
        self.opened = 0  # connections opened, for tests and logs

    def acquire(
        self, host: str, key: JumpKey,
        opener: Callable[[], tuple[paramiko.SSHClient, JumpKey | None]],
    ) -> paramiko.SSHClient:
        """The shared connection for ``key`` (leased: :meth:`release` it),
        opened with ``opener`` if there is none or it died. In a run, a jump
        host that could not be opened fails the run's later hosts at once,
        with the same reason, instead of each waiting out its timeout."""
        with self._lock:
            gate = self._opening.setdefault(key, threading.Lock())
        with gate:  # one opener per key; the others wait and share its result
            with self._lock:
                failed = self._failed.get(key)
                if failed is not None:
                    raise _for_host(failed, host)
                e = self._shared.get(key)
                if e is not None:
                    t = e.client.get_transport()
                    if t is not None and t.is_active():
                        e.users += 1
                        return e.client
                    del self._shared[key]
            if e is not None:
                self._close(e)
            try:
                client, parent = opener()
            except HostError as err:
                with self._lock:
                    if self._runs:
                        self._failed[key] = err
                raise
            with self._lock:
                self._shared[key] = _Shared(client, parent, users=1)
                self.opened += 1
            return client

    def release(self, key: JumpKey) -> None:
        with self._lock:
            e = self._shared.get(key)
            if e is None:
                return
            e.users -= 1
            if e.users > 0 or self._runs:
                return
            del self._shared[key]
        self._close(e)

    def _close(self, e: _Shared) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection
            e.client.close()
        if e.parent is not None:
            self.release(e.parent)

    @contextlib.contextmanager
    def keep(self) -> Iterator[None]:
        """Keep idle connections until the outermost ``keep`` ends."""
        with self._lock:
            self._runs += 1
        try:
            yield
        finally:
            with self._lock:
                self._runs -= 1
                idle = [] if self._runs else [
                    k for k, e in self._shared.items() if e.users == 0]
                if not self._runs:
                    self._failed.clear()
            for k in idle:  # a chain's last hop first: closing it releases its parent
                with self._lock:
                    e = self._shared.get(k)
                    if e is None or e.users or self._runs:
                        continue
                    del self._shared[k]
                self._close(e)

    def __len__(self) -> int:
        with self._lock:
            return len(self._shared)


def _for_host(e: HostError, host: str) -> HostError:
    """``e`` (raised for another host) as this host's error."""
    if e.host == host:
        return e
    err = e.__class__.__new__(e.__class__)
    err.__dict__.update(e.__dict__)
    err.host = host
    err.message = e.message.replace(f"{e.host}: ", f"{host}: ", 1)
    err.args = (err.message,)
    return err


#: The process's jump pool and handshake gate (deployer runs one run at a time).
JUMPS = JumpPool()
HANDSHAKES = _Gate(DEFAULT_MAX_CONNECTING)


@contextlib.contextmanager
def run_scope(max_connecting: int = DEFAULT_MAX_CONNECTING) -> Iterator[None]:
    """One run: at most ``max_connecting`` handshakes at once, and jump
    connections shared by all its hosts until it ends. Scopes nest."""
    HANDSHAKES.resize(max_connecting)
    with JUMPS.keep():
        yield


def _tcp_socket(host: str, ep: Endpoint, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((ep.hostname, ep.port), timeout=timeout)
    except socket.gaierror as e:
        raise UnreachableError(
            host, f"cannot resolve {ep.hostname!r}: {e.strerror}",
            "check the address in the inventory or HostName in ~/.ssh/config",
        ) from None
    except TimeoutError:
        raise UnreachableError(
            host, f"connect to {ep.hostname}:{ep.port} timed out after {timeout:g}s",
            "is the host up and the port open? (ssh.connect_timeout)",
        ) from None
    except ConnectionRefusedError:
        raise UnreachableError(
            host, f"connection refused by {ep.hostname}:{ep.port}",
            "is sshd running on that port?",
        ) from None
    except OSError as e:
        raise UnreachableError(host, f"{ep.hostname}:{ep.port}: {e.strerror or e}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, val in (
        ("TCP_KEEPIDLE", TCP_KEEPIDLE),
        ("TCP_KEEPINTVL", TCP_KEEPINTVL),
        ("TCP_KEEPCNT", TCP_KEEPCNT),
    ):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
    return sock


def _open_hop(
    host: str,
    ep: Endpoint,
    sock: Any,
    settings: SSHSettings,
    *,
    allow_agent: bool,
    role: str,
    via: Endpoint | None = None,
) -> paramiko.SSHClient:
    """SSH handshake, host-key check and authentication over ``sock``."""
    import paramiko

    timeout = settings.connect_timeout
    store = KnownHosts(settings.known_hosts)
    try:
        store.check_file()  # a regular file, or absent: before any byte is sent
    except OSError as e:
        raise HostKeyError(
            host, str(e), "point ssh.known_hosts at a regular file (it is created if missing)"
        ) from None
    client = paramiko.SSHClient()  # no host keys loaded: every key goes to our policy
    client.set_missing_host_key_policy(
        make_policy(
            host, ep.host_key_name, settings.known_hosts, settings.host_key_policy,
            scan_host=ep.hostname, scan_port=ep.port,
            via=None if via is None else f"ssh://{via}",
        )
    )

    def transport_factory(s: Any, disabled_algorithms: Any = None) -> paramiko.Transport:
        t = transport_class()(s, disabled_algorithms=disabled_algorithms)
        opts = t.get_security_options()
        # An unusable file is reported by the policy, with its own message.
        with contextlib.suppress(OSError):
            opts.key_types = store.preferred_key_types(ep.host_key_name, list(opts.key_types))
        return t

    missing = [p for p in ep.identity_files if not os.path.exists(p)]
    if missing and settings.identity_file:
        client.close()
        raise HostError(
            host, "connect", f"identity_file {missing[0]} does not exist",
            "fix ssh.identity_file in the inventory",
        )
    ids = [p for p in ep.identity_files if os.path.exists(p)]
    where = f"{ep}{role}"
    try:
        client.connect(
            ep.hostname,
            port=ep.port,
            username=ep.user,
            sock=sock,
            # The handshake wait outlives the banner wait, so a silent server
            # is reported as such (paramiko's handshake timeout is silent).
            timeout=timeout + 0.5,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            key_filename=ids or None,  # type: ignore[arg-type]  # a list works
            allow_agent=allow_agent,
            look_for_keys=not ep.identity_files,
            transport_factory=transport_factory,  # type: ignore[arg-type]
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.PasswordRequiredException:
        client.close()
        raise HostError(
            host, "connect", f"private key for {where} is passphrase-protected",
            "load it into ssh-agent (`ssh-add KEY`); deployer never prompts",
        ) from None
    except paramiko.AuthenticationException as e:
        client.close()
        default = "" if ep.identity_files else "default ~/.ssh/id_* keys"
        tried = ", ".join(ids) if ids else default
        agent = "ssh-agent" if allow_agent and os.environ.get("SSH_AUTH_SOCK") else ""
        methods = "; ".join(x for x in (tried, agent) if x) or "no keys found"
        detail = "" if str(e) in ("", "Authentication failed.") else f"{e}; "
        raise HostError(
            host, "connect",
            f"authentication failed for {where} ({detail}tried: {methods})",
            f"check ssh.user and ssh.identity_file, the ssh-agent, and that the public key is "
            f"in ~{ep.user}/.ssh/authorized_keys on {ep.hostname}",
        ) from None
    except TimeoutError:
        client.close()
        raise UnreachableError(
            host, f"SSH handshake with {where} timed out after {timeout:g}s"
        ) from None
    except paramiko.SSHException as e:
        client.close()
        text = str(e)
        if text == "No authentication methods available":
            raise HostError(
                host, "connect",
                f"no key to offer to {where} (no identity_file, no ssh-agent keys, "
                "no ~/.ssh/id_* keys)",
                "set ssh.identity_file, or load the key into ssh-agent (`ssh-add KEY`)",
            ) from None
        if text == "No existing session":  # start_client gave up waiting
            raise UnreachableError(
                host, f"SSH handshake with {where} timed out after {timeout:g}s"
            ) from None
        if "banner" in text.lower() and _was_reset(e):
            raise _reset(host, where) from None
        if "banner" in text.lower():
            raise UnreachableError(
                host, f"no SSH banner from {where} within {timeout:g}s",
                "is it an SSH server on that port, and is it overloaded?",
            ) from None
        raise UnreachableError(host, f"SSH handshake with {where} failed: {text}") from None
    except (EOFError, OSError) as e:
        client.close()
        if _was_reset(e):
            raise _reset(host, where) from None
        raise UnreachableError(
            host, f"connection to {where} closed during SSH handshake ({e or type(e).__name__})"
        ) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(SSH_KEEPALIVE)
    return client


def _was_reset(e: BaseException) -> bool:
    """The server closed or reset the connection before the SSH banner: what
    sshd does to a connection beyond MaxStartups (paramiko wraps the EOF or
    reset in an SSHException about the banner)."""
    seen: BaseException | None = e
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, EOFError | ConnectionResetError | BrokenPipeError):
            return True
        if isinstance(seen, OSError) and seen.errno in (errno.ECONNRESET, errno.EPIPE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reset(host: str, where: str) -> UnreachableError:
    err = UnreachableError(
        host, f"{where} closed the connection during the SSH handshake",
        "is its sshd overloaded (MaxStartups)? lower rollout.max_connecting",
    )
    err.reset = True
    return err


def _handshake(
    host: str, where: str, attempt: Callable[[], paramiko.SSHClient],
    sleep: Callable[[float], None] = time.sleep,
) -> paramiko.SSHClient:
    """``attempt()`` (socket + handshake + auth) under the handshake gate,
    again with backoff while the server resets it."""
    for n in range(1, HANDSHAKE_ATTEMPTS + 1):
        try:
            with HANDSHAKES.held():
                return attempt()
        except UnreachableError as e:
            if not e.reset or n == HANDSHAKE_ATTEMPTS:
                raise
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (n - 1)) * random.uniform(0.5, 1.5)  # noqa: S311
            log.debug("%s: %s reset the SSH handshake (attempt %d of %d; sshd MaxStartups?),"
                      " retrying in %.2fs", host, where, n, HANDSHAKE_ATTEMPTS, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def _hops(host: Host, ep: Endpoint, config: paramiko.SSHConfig) -> list[Endpoint]:
    """Jump endpoints, first hop first, each resolved through ssh_config."""
    if not ep.proxy_jump:
        return []
    try:
        specs = parse_jump(ep.proxy_jump)
    except ValueError as e:
        raise ConfigError(f"{host.name}: ssh.proxy_jump: {e}", "use [user@]host[:port]") from None
    if len(specs) > MAX_JUMPS:
        raise ConfigError(f"{host.name}: ssh.proxy_jump has more than {MAX_JUMPS} hops")
    # A hop's own ProxyJump in ssh_config is ignored: the chain is explicit.
    return [
        resolve(h, config=config, user=u, port=p, proxy_jump="none") for u, h, p in specs
    ]


def connect(
    host: Host,
    *,
    ssh_config: str | None = DEFAULT_SSH_CONFIG,
    allow_agent: bool = True,
) -> Connection:
    """Open and authenticate one connection to ``host`` (through its jump hosts).

    Raises :class:`UnreachableError`, :class:`HostKeyError` or :class:`HostError`
    (authentication), each one line naming the host.
    """
    pm = import_paramiko()

    settings = host.ssh
    config = load_ssh_config(ssh_config)
    ep = resolve(
        host.address,
        config=config,
        user=settings.user,
        port=settings.port,
        identity_file=settings.identity_file,
        proxy_jump=settings.proxy_jump,
    )
    hops = _hops(host, ep, config)
    # Jump hosts authenticate with their own ssh_config identity (or the
    # agent), not the target's identity_file, unless they have none: then the
    # target's key is the best guess.
    hops = [
        hop if hop.identity_files or not ep.identity_files
        else Endpoint(**{**hop.__dict__, "identity_files": ep.identity_files})
        for hop in hops
    ]
    jumps: list[paramiko.SSHClient] = []
    key: JumpKey | None = None
    try:
        if hops:
            key = _jump_key(tuple(hops), settings, allow_agent)
            jump = _shared_jump(host.name, tuple(hops), settings, allow_agent)
            jumps.append(jump)
            via: Endpoint | None = hops[-1]

            def attempt() -> paramiko.SSHClient:
                sock = _channel_via(host.name, jump, hops[-1], ep, settings)
                return _open_hop(host.name, ep, sock, settings,
                                 allow_agent=allow_agent, role="", via=via)
        else:
            via = None

            def attempt() -> paramiko.SSHClient:
                sock: Any = (pm.ProxyCommand(ep.proxy_command) if ep.proxy_command
                             else _tcp_socket(host.name, ep, settings.connect_timeout))
                return _open_hop(host.name, ep, sock, settings,
                                 allow_agent=allow_agent, role="", via=None)

        client = _handshake(host.name, str(ep), attempt)
    except BaseException:
        if key is not None and jumps:
            JUMPS.release(key)
        raise
    release = (lambda: JUMPS.release(key)) if key is not None else None
    return Connection(client=client, endpoint=ep, jumps=jumps, release=release)


def _jump_key(chain: tuple[Endpoint, ...], settings: SSHSettings, allow_agent: bool) -> JumpKey:
    return (chain, settings.known_hosts, settings.host_key_policy, settings.connect_timeout,
            allow_agent)


def _shared_jump(
    host: str, chain: tuple[Endpoint, ...], settings: SSHSettings, allow_agent: bool
) -> paramiko.SSHClient:
    """The run's one connection to the last hop of ``chain`` (leased from
    :data:`JUMPS`), opening it, and the hops before it, if needed."""
    hop = chain[-1]
    parent = chain[:-1]

    def opener() -> tuple[paramiko.SSHClient, JumpKey | None]:
        prev = parent[-1] if parent else None
        pkey = _jump_key(parent, settings, allow_agent) if parent else None
        through = _shared_jump(host, parent, settings, allow_agent) if parent else None
        try:
            def attempt() -> paramiko.SSHClient:
                sock: Any = (_tcp_socket(host, hop, settings.connect_timeout) if through is None
                             else _channel_via(host, through, prev, hop, settings))  # type: ignore[arg-type]
                return _open_hop(host, hop, sock, settings, allow_agent=allow_agent,
                                 role=" (jump host)", via=prev)

            client = _handshake(host, f"{hop} (jump host)", attempt)
        except BaseException:
            if pkey is not None:
                JUMPS.release(pkey)
            raise
        log.debug("%s: opened jump connection to %s (shared by the run's hosts behind it)",
                  host, hop)
        return client, pkey

    return JUMPS.acquire(host, _jump_key(chain, settings, allow_agent), opener)


def _channel_via(
    host: str, jump: paramiko.SSHClient, via: Endpoint, to: Endpoint, settings: SSHSettings
) -> paramiko.Channel:
    import paramiko

    transport = jump.get_transport()
    assert transport is not None
    try:
        return transport.open_channel(
            "direct-tcpip", (to.hostname, to.port), ("127.0.0.1", 0),
            timeout=settings.connect_timeout,
        )
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise UnreachableError(
            host,
            f"jump host {via.hostname} cannot reach {to.hostname}:{to.port} "
            f"({e or type(e).__name__})",
            "check the address and that the jump host allows TCP forwarding",
        ) from None
