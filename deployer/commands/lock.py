"""The deploy lock: ``<deploy_dir>/.lock``, taken with ``mkdir`` (atomic),
held under a lease.

``mkdir`` either creates the directory or fails because it exists, with no
window in between, on every POSIX filesystem; so two ``ship`` runs can never
both believe they hold the lock. The holder writes ``.lock/info`` (via a
rename, so a reader never sees half a file): ``who``, ``when`` (the run's
start), ``release``, ``message``, ``run`` (a random id per deployer
invocation), ``machine``, ``pid`` and ``lease_until``.

The lease: ``lease_until`` is a time on the HOST's clock (``date +%s``; the
deploying machine's clock is never compared with it). A live run extends it
(:func:`renew`) well before it ends; a run killed with ``kill -9`` stops
renewing, and once the lease has passed, the next run may take the lock over
(:func:`acquire`). A lock without a lease (``deployer lock``, or one written
by a deployer from before leases) never expires; ``deployer unlock`` removes
any lock.

Every change of ``info`` after the ``mkdir`` (takeover, renewal, release by
its owner) happens while holding ``.lock/takeover``, a second ``mkdir``
guard, and re-checks what it found under it: two runs that both saw an
expired lease cannot both take it over, and a renewal cannot overwrite the
info of a run that took the lock over. A guard older than a minute (its
holder was killed in the moment it held it) is removed.

A run that finds the lock taken gets exit code :data:`EXIT_LOCKED` and the
holder's info on stdout, and the caller reports ``locked by <who> since
<when> (...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.commands.base import Command, Script

EXIT_LOCKED = 3
EXIT_BUSY = 5  # renew: another run holds the takeover guard right now; try again
FIELDS = ("who", "when", "release", "message", "run", "machine", "pid", "lease_until")
PREVIOUS = "previous."  # acquire's stdout: the info of a lock it took over

# Shared by the scripts: the guard around every change of an existing lock.
# HUP and PIPE are ignored from here on: a caller that gives up on the command
# (a timeout closes the channel) must not kill it between taking the guard
# and removing it, which would leave the guard, and so the lock, stuck.
_GUARD = """
trap '' HUP PIPE
g="$d/takeover"
find "$g" -maxdepth 0 -type d -mmin +1 -exec rmdir -- {} \\; 2>/dev/null
lease_of() { sed -n 's/^lease_until=//p' | head -n 1 | grep -x '[0-9][0-9]*'; }
"""

_ACQUIRE = ("""
trap '' HUP PIPE
d="$1/.lock"
now=$(date +%s)
if [ "$9" -gt 0 ]; then lu=$((now + $9)); else lu=; fi
write_info() {
  printf 'who=%s\\nwhen=%s\\nrelease=%s\\nmessage=%s\\nrun=%s\\nmachine=%s\\npid=%s\\n' \\
    "$2" "$3" "$4" "$5" "$6" "$7" "$8" > "$d/info.tmp" \\
    && printf 'lease_until=%s\\n' "$lu" >> "$d/info.tmp" \\
    && mv -f -- "$d/info.tmp" "$d/info"
}
show_current() {
  t=$(readlink -- "$1/current" 2>/dev/null) || t=
  printf 'current=%s\\n' "${t##*/}"
}
if mkdir -- "$d" 2>/dev/null; then
  write_info "$@" || { rm -rf -- "$d"; echo "cannot write $d/info" >&2; exit 1; }
  show_current "$1"
  exit 0
fi
if [ ! -d "$d" ]; then
  echo "cannot create $d (does $1 exist and belong to $(id -un)?)" >&2
  exit 1
fi""" + _GUARD + """
u=$(lease_of < "$d/info" 2>/dev/null)
if [ -n "$u" ] && [ "$u" -lt "$now" ] && mkdir -- "$g" 2>/dev/null; then
  old=$(cat -- "$d/info" 2>/dev/null)
  u=$(printf '%s\\n' "$old" | lease_of)
  if [ -n "$u" ] && [ "$u" -lt "$now" ] && write_info "$@"; then
    rmdir -- "$g"
    printf '%s\\n' "$old" | sed 's/^/previous./'
    show_current "$1"
    exit 0
  fi
  rmdir -- "$g"
fi
cat -- "$d/info" 2>/dev/null
printf 'now=%s\\n' "$now"
exit 3
""").strip()


def _one_line(value: str) -> str:
    """info is ``key=value`` lines: a newline in a value would forge a key."""
    return " ".join(value.split())


def acquire(
    deploy_dir: str, *, who: str, when: str, release: str = "", message: str = "",
    run: str = "", machine: str = "", pid: int = 0, lease: int = 0,
) -> Command:
    """Take the lock, for ``lease`` seconds of the host's clock (0: no lease,
    it never expires: ``deployer lock``), or take over a lock whose lease
    has passed.

    Exit 0: taken, and stdout names the release that is current under the
    lock (:func:`parse_current_under_lock`), so a caller that read the state
    before locking can tell whether another run changed it in between; after
    a takeover it also holds the previous holder's info
    (:func:`parse_previous`). Exit :data:`EXIT_LOCKED` (an ok code, so the
    caller can read the holder from stdout with :func:`parse_lock_info`):
    somebody else holds it."""
    if lease < 0:
        raise ValueError("lease must be >= 0 seconds")
    return Script(
        _ACQUIRE,
        args=(deploy_dir, _one_line(who), _one_line(when), _one_line(release),
              _one_line(message), _one_line(run), _one_line(machine), str(pid), str(lease)),
        ok_codes=(0, EXIT_LOCKED),
        description="take the deploy lock",
    ).command()


_RENEW = ("""
d="$1/.lock"
[ -d "$d" ] || exit 3""" + _GUARD + """
mkdir -- "$g" 2>/dev/null || exit 5
if grep -qxF -- "run=$2" "$d/info" 2>/dev/null; then
  lu=$(($(date +%s) + $3))
  sed "s/^lease_until=.*/lease_until=$lu/" "$d/info" > "$d/info.tmp" \\
    && mv -f -- "$d/info.tmp" "$d/info" && rc=0 || rc=1
  rmdir -- "$g"
  printf 'lease_until=%s\\n' "$lu"
else
  info=$(cat -- "$d/info" 2>/dev/null)
  rmdir -- "$g"
  printf '%s\\n' "$info"
  rc=3
fi
exit $rc
""").strip()


def renew(deploy_dir: str, run: str, lease: int) -> Command:
    """Extend the lease of the lock held by ``run`` to ``lease`` seconds
    from now (the host's clock). Exit 0: renewed; :data:`EXIT_LOCKED`: the
    lock is gone or another run holds it (its info on stdout);
    :data:`EXIT_BUSY`: another run is looking at it this moment, try again."""
    if not run or lease < 1:
        raise ValueError("renew needs the run id and a lease of at least 1 second")
    return Script(
        _RENEW, args=(deploy_dir, _one_line(run), str(lease)),
        ok_codes=(0, EXIT_LOCKED, EXIT_BUSY), description="renew the deploy lock",
    ).command()


_RELEASE_OWN = ("""
d="$1/.lock"
[ -d "$d" ] || exit 0
[ -n "$2" ] || { rm -rf -- "$d"; exit 0; }""" + _GUARD + """
i=0
until mkdir -- "$g" 2>/dev/null; do
  [ -d "$d" ] || exit 0
  i=$((i + 1))
  if [ "$i" -ge 50 ]; then echo "$g stays taken; lock left in place" >&2; exit 1; fi
  sleep 0.1
done
if ! grep -qxF -- "run=$2" "$d/info" 2>/dev/null; then
  rmdir -- "$g"
  echo "the lock is not held by run $2; left in place" >&2
  cat -- "$d/info" 2>/dev/null
  exit 3
fi
rm -rf -- "$d"
""").strip()


def release(deploy_dir: str, run: str | None = None) -> Command:
    """Remove the lock. With ``run``: only if that run holds it, so a run
    whose lock was broken (``deployer unlock``) or taken over after its
    lease passed cannot remove the other run's lock (exit
    :data:`EXIT_LOCKED` then). Without: unconditionally (``deployer
    unlock``). Absent lock: success."""
    return Script(
        _RELEASE_OWN,
        args=(deploy_dir, _one_line(run or "")),
        ok_codes=(0, EXIT_LOCKED),
        description="release the deploy lock",
    ).command()


_SHOW = """
d="$1/.lock"
if [ -d "$d" ]; then cat -- "$d/info" 2>/dev/null; printf 'now=%s\\n' "$(date +%s)"; exit 3; fi
exit 0
""".strip()


def show(deploy_dir: str) -> Command:
    """Exit 0: not locked. Exit :data:`EXIT_LOCKED`: locked, info on stdout."""
    return Script(
        _SHOW, args=(deploy_dir,), ok_codes=(0, EXIT_LOCKED), description="show the deploy lock"
    ).command()


@dataclass(frozen=True)
class LockInfo:
    """``.lock/info`` as read; ``now``: the host's clock when it was read
    (None: not known), to tell how long the lease has left."""

    who: str = ""
    when: str = ""
    release: str = ""
    message: str = ""
    run: str = ""
    machine: str = ""
    pid: str = ""
    lease_until: str = ""
    now: int | None = None

    @property
    def lease_end(self) -> int | None:
        """The lease's end on the host's clock; None: no lease (never expires)."""
        return int(self.lease_until) if self.lease_until.isdigit() else None

    def lease_left(self) -> int | None:
        """Seconds of lease left (negative: expired); None when unknown or no lease."""
        end = self.lease_end
        return None if end is None or self.now is None else end - self.now

    def describe(self) -> str:
        """``locked by alice@laptop since 2026-01-01T10:00:00Z (release X: msg;
        run 3f2a, pid 4242 on laptop; lease ends in 40s)``."""
        text = f"locked by {self.who or 'unknown'} since {self.when or 'unknown time'}"
        extra = [x for x in (f"release {self.release}" if self.release else "", self.message) if x]
        parts = [": ".join(extra)] if extra else []
        if self.run:
            where = f" on {self.machine}" if self.machine else ""
            parts.append(f"run {self.run}, pid {self.pid or '?'}{where}")
        left = self.lease_left()
        if self.run and self.lease_end is None:
            parts.append("no lease: it stays until `deployer unlock`")
        elif left is not None:
            parts.append(f"lease ends in {left}s" if left >= 0 else f"lease ended {-left}s ago")
        return f"{text} ({'; '.join(parts)})" if parts else text


def parse_current_under_lock(stdout: str) -> str | None:
    """The current release :func:`acquire` saw once it held the lock (None:
    no current release yet)."""
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key == "current":
            return value or None
    return None


def parse_lock_info(stdout: str, prefix: str = "") -> LockInfo:
    """Parse ``.lock/info`` (the lines that start with ``prefix``). Missing
    fields stay empty: a lock taken a moment ago may not have its info
    written yet."""
    kv: dict[str, str] = {}
    now: int | None = None
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue
        key, sep, value = line[len(prefix):].partition("=")
        if sep and key in FIELDS:
            kv.setdefault(key, value)
        elif sep and key == "now" and value.isdigit() and not prefix:
            now = int(value)
    return LockInfo(**kv, now=now)


def parse_previous(stdout: str) -> LockInfo | None:
    """The lock :func:`acquire` took over (its lease had passed), or None
    when it took a free lock."""
    if not any(line.startswith(PREVIOUS) for line in stdout.splitlines()):
        return None
    return parse_lock_info(stdout, PREVIOUS)
