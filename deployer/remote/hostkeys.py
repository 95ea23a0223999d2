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
  The key must read back from the file, and the file must be a regular one
  (``/dev/null`` would make every key "new" forever).

A key listed under ``@revoked`` is refused whatever the policy. Host
certificates (``@cert-authority``) are not supported: a host covered only by
one is refused with a message that says so.

A changed key (the host is known, with other keys) is always refused, naming
the new fingerprint and ``ssh-keygen -R``. Entries for non-22 ports are
``[host]:port``; hashed entries (``HashKnownHosts yes``) are understood.

The check runs inside paramiko's ``MissingHostKeyPolicy`` hook with an *empty*
paramiko host-key store, so every key reaches :meth:`KnownHostsPolicy.missing_host_key`
and paramiko's own partial logic (which compares only one key type) never runs.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import fnmatch
import hashlib
import hmac
import logging
import os
import shlex
import stat
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


@dataclass(frozen=True)
class _Entry:
    marker: str | None  # None, "@revoked" or "@cert-authority"
    patterns: tuple[str, ...]
    keytype: str
    key: paramiko.PKey | None  # None: a key type paramiko cannot read
    lineno: int

    def matches(self, name: str) -> bool:
        """OpenSSH's host pattern rules: hashed names, ``*``/``?`` globs and
        ``!negation`` (a negated match wins)."""
        hit = False
        for pat in self.patterns:
            negated = pat.startswith("!")
            pat = pat[1:] if negated else pat
            if pat.startswith("|1|"):
                ok = _hashed_match(pat, name)
            elif "*" in pat or "?" in pat:
                ok = fnmatch.fnmatchcase(name.lower(), pat.lower())
            else:
                ok = pat.lower() == name.lower()
            if ok and negated:
                return False
            hit = hit or ok
        return hit


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt_b64, mac_b64 = pattern.split("|", 3)
        salt = base64.b64decode(salt_b64)
        mac = base64.b64decode(mac_b64)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), mac)


class KnownHosts:
    """A known_hosts file, read fresh on every lookup (another host of the same
    run may just have appended to it; unchanged bytes are not parsed again).

    The file must be a regular file (or not exist yet): ``/dev/null`` would
    silently turn ``accept-new`` into "accept everything". ``@revoked`` lines
    are honoured; ``@cert-authority`` lines are recognised (host certificates
    are not supported: :func:`check_host_key` says so). Lines paramiko cannot
    read (a key type it does not know, bad base64) are skipped like OpenSSH
    does.
    """

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)

    def check_file(self) -> bool:
        """Whether the file exists; raises OSError when it is not a regular file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise OSError(f"cannot use known_hosts {self.path}: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise OSError(
                f"known_hosts {self.path} is {kind}: host keys cannot be checked against it"
            )
        return True

    def _entries(self) -> list[_Entry]:
        if not self.check_file():
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"known_hosts {self.path} is not a regular file")
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data = f.read(self.MAX_BYTES + 1)
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(f"cannot read known_hosts {self.path}: {e.strerror or e}") from None
        if len(data) > self.MAX_BYTES:
            raise OSError(f"known_hosts {self.path} is larger than {self.MAX_BYTES} bytes")
        return _parsed(self.path, data)

    def lookup(self, name: str) -> list[KnownKey]:
        """Every key filed under ``name`` (plain or hashed entries), except
        revoked ones and certificate authorities."""
        return [
            KnownKey(e.keytype, e.key)
            for e in self._entries()
            if e.marker is None and e.key is not None and e.matches(name)
        ]

    def revoked(self, key: paramiko.PKey) -> int | None:
        """The line of an ``@revoked`` entry for ``key`` (any host), or None."""
        for e in self._entries():
            if e.marker == "@revoked" and e.key is not None and e.key == key:
                return e.lineno
        return None

    def cert_authorities(self, name: str) -> list[int]:
        """Lines of ``@cert-authority`` entries that apply to ``name``."""
        return [e.lineno for e in self._entries()
                if e.marker == "@cert-authority" and e.matches(name)]

    def preferred_key_types(self, name: str, available: list[str]) -> list[str]:
        """Host-key algorithms to offer, known ones first (OpenSSH does the same:
        a server with several keys then shows the one we can verify)."""
        known: list[str] = []
        for k in self.lookup(name):
            known += [t for t in _keytypes(k.keytype) if t in available and t not in known]
        return known + [t for t in available if t not in known]

    def append(self, name: str, key: paramiko.PKey) -> None:
        """Add ``name keytype base64`` unless an equal entry appeared meanwhile.
        The file is created (0600) if missing; it must read back with the key."""
        self.check_file()
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with _append_lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK,
                         0o600)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a device meanwhile
                    raise OSError(f"known_hosts {self.path} is not a regular file")
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


_parsed_lock = threading.Lock()
_parsed_last: dict[str, tuple[bytes, list[_Entry]]] = {}


def _parsed(path: str, data: bytes) -> list[_Entry]:
    """``_parse`` of ``data``, reused while the file's bytes stay the same.

    Every connection reads the file (another host may just have appended to
    it) about four times; parsing it each time (a key object per line) was
    quadratic in a fleet that shares one known_hosts: 7% of a 200-host ship's
    CPU (py-spy, issue 19). Comparing the bytes keeps "read fresh": an
    appended or edited file is parsed again. The entries are never mutated.
    """
    with _parsed_lock:
        last = _parsed_last.get(path)
    if last is not None and last[0] == data:
        return last[1]
    entries = _parse(data.decode("utf-8", "replace"))
    with _parsed_lock:
        _parsed_last[path] = (data, entries)
    return entries


def _parse(text: str) -> list[_Entry]:
    from paramiko.hostkeys import HostKeyEntry

    out: list[_Entry] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            marker = marker.lower()
            if marker not in ("@revoked", "@cert-authority"):
                continue  # OpenSSH ignores lines with an unknown marker
        fields = line.split()
        if len(fields) < 3:
            continue
        try:
            entry = HostKeyEntry.from_line(" ".join(fields[:3]), n)
        except Exception:  # InvalidHostKey, binascii.Error, ValueError, ...: paramiko varies
            # paramiko raises assorted errors on a malformed key: skip the line
            entry = None
        out.append(_Entry(marker, tuple(fields[0].split(",")), fields[1],
                          entry.key if entry is not None else None, n))
    return out


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
    fp = fingerprint(key)
    try:
        known = store.lookup(name)
        revoked = store.revoked(key)
        cas = store.cert_authorities(name) if not known else []
    except OSError as e:
        raise HostKeyError(
            host, str(e),
            "point ssh.known_hosts at a regular file (it is created if missing)",
        ) from None
    if revoked is not None:
        raise HostKeyError(
            host,
            f"host key for {name} ({key.get_name()} {fp}) is REVOKED in {store.path} "
            f"(line {revoked}, @revoked); refusing",
            "the host presents a key its administrators revoked: find out why before "
            "connecting",
            changed=True,
        )
    if any(k.key == key for k in known):
        return "known"
    if cas:
        raise HostKeyError(
            host,
            f"{store.path} (line {cas[0]}) trusts a certificate authority for {name} "
            "(@cert-authority), but deployer does not support host certificates; "
            f"the host presents {key.get_name()} {fp}",
            "add the host's own key to known_hosts (`ssh-keyscan`), after checking its "
            "fingerprint out of band",
        )
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
            recorded = any(k.key == key for k in store.lookup(name))
        except OSError as e:
            raise HostKeyError(
                host,
                f"cannot record new host key {key.get_name()} {fp} for {name} in {store.path}: {e}",
                "make the known_hosts file writable",
            ) from None
        if not recorded:
            raise HostKeyError(
                host,
                f"recorded new host key {key.get_name()} {fp} for {name} in {store.path}, "
                "but it does not read back from the file; refusing",
                "point ssh.known_hosts at a regular, writable file",
            )
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
