"""Host-key verification: the one place that decides whether a server is who
it claims to be.

paramiko's (and fabric's) default is to trust any key on first sight
(``AutoAddPolicy``) and, worse, to ignore the known_hosts file the user chose.
A deployment tool hands the server registry passwords and app secrets, so the
check must be at least as strict as OpenSSH's:

- ``strict`` (default): the key must already be in known_hosts. An unknown key
  is refused with its type and SHA256 fingerprint and the command that accepts
  it after an out-of-band check.
- ``accept-new``: an unknown host is trusted on first use and its key appended
  to known_hosts (and logged with its fingerprint); a changed key is refused.

A changed key (the host is known, with other keys) is always refused, naming
the new fingerprint and ``ssh-keygen -R``. Entries for non-22 ports are
``[host]:port``; hashed entries (``HashKnownHosts yes``) are understood.

The check runs inside paramiko's ``MissingHostKeyPolicy`` hook with an *empty*
paramiko host-key store, so every key reaches :meth:`KnownHostsPolicy.missing_host_key`
and paramiko's own partial logic (which compares only one key type) never runs.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shlex
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from deployer.errors import HostError

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("deployer.remote")

Policy = Literal["strict", "accept-new"]
POLICIES: tuple[str, ...] = ("strict", "accept-new")

# One lock for every append in this process: parallel hosts may share a file
# (and even an address); flock covers other processes.
_append_lock = threading.Lock()


class HostKeyError(HostError):
    """The server's host key is unknown (strict) or has changed."""

    def __init__(
        self, host: str, message: str, hint: str | None = None, *, changed: bool = False
    ) -> None:
        super().__init__(host, "host key", message, hint)
        self.changed = changed


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as OpenSSH prints it (base64, no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    """The name OpenSSH files a host under: ``host`` on port 22, else ``[host]:port``."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _keytypes(key_name: str) -> list[str]:
    """Host-key algorithms that produce a key stored as ``key_name``."""
    if key_name == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [key_name]


@dataclass(frozen=True)
class KnownKey:
    keytype: str
    key: paramiko.PKey


class KnownHosts:
    """A known_hosts file, read fresh on every lookup (another host of the same
    run may just have appended to it)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)

    def _load(self) -> paramiko.HostKeys:
        import paramiko

        keys = paramiko.HostKeys()
        if os.path.exists(self.path):
            try:
                keys.load(self.path)
            except (OSError, paramiko.SSHException) as e:
                raise OSError(f"cannot read known_hosts {self.path}: {e}") from e
        return keys

    def lookup(self, name: str) -> list[KnownKey]:
        """Every key filed under ``name`` (plain or hashed entries)."""
        found = self._load().lookup(name)
        if found is None:
            return []
        return [KnownKey(t, found[t]) for t in found]

    def preferred_key_types(self, name: str, available: list[str]) -> list[str]:
        """Host-key algorithms to offer, known ones first (OpenSSH does the same:
        a server with several keys then shows the one we can verify)."""
        known: list[str] = []
        for k in self.lookup(name):
            known += [t for t in _keytypes(k.keytype) if t in available and t not in known]
        return known + [t for t in available if t not in known]

    def append(self, name: str, key: paramiko.PKey) -> None:
        """Add ``name keytype base64`` unless an equal entry appeared meanwhile."""
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with _append_lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if any(k.key == key for k in self.lookup(name)):
                    return
                # A file without a final newline would glue our entry to its last line.
                size = os.fstat(fd).st_size
                if size:
                    with open(self.path, "rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            line = "\n" + line
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def check_host_key(
    host: str,
    name: str,
    key: paramiko.PKey,
    known_hosts: str,
    policy: str = "strict",
    *,
    scan_host: str | None = None,
    scan_port: int = 22,
    via: str | None = None,
) -> str:
    """Verify ``key`` presented by the server filed as ``name``.

    Returns ``"known"`` or ``"added"``; raises :class:`HostKeyError` otherwise.
    ``host`` is the inventory name for messages; ``scan_host``/``scan_port``
    are what ``ssh-keyscan`` must be pointed at in the hint; ``via`` is the
    jump host (``ssh`` destination) it must run on when the host is behind one.
    """
    if policy not in POLICIES:
        raise HostKeyError(
            host,
            f"unknown host_key_policy {policy!r}",
            f"use one of: {', '.join(POLICIES)}",
        )
    store = KnownHosts(known_hosts)
    try:
        known = store.lookup(name)
    except OSError as e:
        raise HostKeyError(host, str(e), "fix or remove the file") from None
    fp = fingerprint(key)
    if any(k.key == key for k in known):
        return "known"
    if known:
        old = ", ".join(f"{k.keytype} {fingerprint(k.key)}" for k in known)
        raise HostKeyError(
            host,
            f"host key for {name} has CHANGED: it now presents {key.get_name()} {fp}, "
            f"but {store.path} has {old} (possible man-in-the-middle; refusing)",
            "if the host was reinstalled, verify the new fingerprint out of band, then run "
            f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(store.path)}` and "
            "connect again",
            changed=True,
        )
    if policy == "accept-new":
        try:
            store.append(name, key)
        except OSError as e:
            raise HostKeyError(
                host,
                f"cannot record new host key {key.get_name()} {fp} for {name} in {store.path}: {e}",
                "make the known_hosts file writable",
            ) from None
        log.warning(
            "%s: accepted new host key for %s: %s %s (added to %s, host_key_policy accept-new)",
            host, name, key.get_name(), fp, store.path,
        )
        return "added"
    target = scan_host if scan_host is not None else name
    port_opt = f"-p {scan_port} " if scan_port != 22 else ""
    scan = f"ssh-keyscan {port_opt}{shlex.quote(target)}"
    if via:
        scan = f"ssh {shlex.quote(via)} {shlex.quote(scan)}"
    raise HostKeyError(
        host,
        f"unknown host key for {name}: {key.get_name()} {fp} (not in {store.path}; "
        "host_key_policy strict)",
        f"verify the fingerprint out of band (on the server: `ssh-keygen -lf "
        f"/etc/ssh/ssh_host_*_key.pub`), then run `{scan} >> {shlex.quote(store.path)}`, "
        "or set "
        "`ssh: {host_key_policy: accept-new}` to trust it on first use",
    )


def make_policy(
    host: str,
    name: str,
    known_hosts: str,
    policy: str,
    *,
    scan_host: str | None = None,
    scan_port: int = 22,
    via: str | None = None,
) -> paramiko.MissingHostKeyPolicy:
    """A paramiko policy object that runs :func:`check_host_key`. Use it with a
    client that has NO host keys loaded, so every key goes through it."""
    import paramiko

    class _Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            # ``hostname`` is paramiko's guess; ``name`` honours HostKeyAlias.
            check_host_key(
                host, name, key, known_hosts, policy,
                scan_host=scan_host, scan_port=scan_port, via=via,
            )

    return _Policy()
