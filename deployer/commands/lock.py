"""The deploy lock: ``<deploy_dir>/.lock``, taken with ``mkdir`` (atomic).

``mkdir`` either creates the directory or fails because it exists, with no
window in between, on every POSIX filesystem; so two ``ship`` runs can never
both believe they hold the lock. The holder writes ``who``, ``when``,
``release`` and ``message`` into ``.lock/info`` (via a rename, so a reader
never sees half a file). A run that finds the lock taken gets exit code
:data:`EXIT_LOCKED` and the holder's info on stdout, and the caller reports
``locked by <who> since <when>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.commands.base import Command, Script

EXIT_LOCKED = 3
FIELDS = ("who", "when", "release", "message")

_ACQUIRE = """
d="$1/.lock"
if mkdir -- "$d" 2>/dev/null; then
  printf 'who=%s\\nwhen=%s\\nrelease=%s\\nmessage=%s\\n' "$2" "$3" "$4" "$5" > "$d/info.tmp" \\
    && mv -f -- "$d/info.tmp" "$d/info" \\
    || { rm -rf -- "$d"; echo "cannot write $d/info" >&2; exit 1; }
  t=$(readlink -- "$1/current" 2>/dev/null) || t=
  printf 'current=%s\\n' "${t##*/}"
  exit 0
fi
if [ -d "$d" ]; then
  cat -- "$d/info" 2>/dev/null
  exit 3
fi
echo "cannot create $d (does $1 exist and belong to $(id -un)?)" >&2
exit 1
""".strip()


def _one_line(value: str) -> str:
    """info is ``key=value`` lines: a newline in a value would forge a key."""
    return " ".join(value.split())


def acquire(
    deploy_dir: str, *, who: str, when: str, release: str = "", message: str = ""
) -> Command:
    """Take the lock. Exit 0: taken, and stdout names the release that is
    current under the lock (:func:`parse_current_under_lock`), so a caller
    that read the state before locking can tell whether another run changed
    it in between. Exit :data:`EXIT_LOCKED` (an ok code, so the caller can
    read the holder from stdout with :func:`parse_lock_info`): somebody else
    holds it."""
    return Script(
        _ACQUIRE,
        args=(deploy_dir, _one_line(who), _one_line(when), _one_line(release), _one_line(message)),
        ok_codes=(0, EXIT_LOCKED),
        description="take the deploy lock",
    ).command()


_RELEASE_OWN = """
d="$1/.lock"
[ -d "$d" ] || exit 0
if [ -n "$2" ] && ! grep -qxF -- "release=$2" "$d/info" 2>/dev/null; then
  echo "the lock is not held by release $2; left in place" >&2
  cat -- "$d/info" 2>/dev/null
  exit 3
fi
rm -rf -- "$d"
""".strip()


def release(deploy_dir: str, release: str | None = None) -> Command:
    """Remove the lock. With ``release``: only if this release holds it, so a
    run whose lock was broken (``deployer unlock``) and re-taken by another
    run cannot remove the other run's lock (exit :data:`EXIT_LOCKED` then).
    Without: unconditionally (``deployer unlock``). Absent lock: success."""
    return Script(
        _RELEASE_OWN,
        args=(deploy_dir, release or ""),
        ok_codes=(0, EXIT_LOCKED),
        description="release the deploy lock",
    ).command()


_SHOW = """
d="$1/.lock"
if [ -d "$d" ]; then cat -- "$d/info" 2>/dev/null; exit 3; fi
exit 0
""".strip()


def show(deploy_dir: str) -> Command:
    """Exit 0: not locked. Exit :data:`EXIT_LOCKED`: locked, info on stdout."""
    return Script(
        _SHOW, args=(deploy_dir,), ok_codes=(0, EXIT_LOCKED), description="show the deploy lock"
    ).command()


@dataclass(frozen=True)
class LockInfo:
    who: str = ""
    when: str = ""
    release: str = ""
    message: str = ""

    def describe(self) -> str:
        """``locked by alice@laptop since 2026-01-01T10:00:00Z (release X: msg)``."""
        text = f"locked by {self.who or 'unknown'} since {self.when or 'unknown time'}"
        extra = [x for x in (f"release {self.release}" if self.release else "", self.message) if x]
        return f"{text} ({': '.join(extra)})" if extra else text


def parse_current_under_lock(stdout: str) -> str | None:
    """The current release :func:`acquire` saw once it held the lock (None:
    no current release yet)."""
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key == "current":
            return value or None
    return None


def parse_lock_info(stdout: str) -> LockInfo:
    """Parse ``.lock/info``. Missing fields stay empty: a lock taken a moment
    ago may not have its info written yet."""
    kv: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in FIELDS:
            kv.setdefault(key, value)
    return LockInfo(**kv)
