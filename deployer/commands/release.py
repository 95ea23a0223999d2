"""Release directories on a host, and the state read that makes ``ship`` a no-op.

Layout under ``<deploy_dir>`` (see the design notes)::

    releases/<id>/          complete release: rendered files + manifest.json
    releases/<id>.partial/  only while uploading
    shared/                 sources of relative bind mounts (data)
    current -> releases/<id>
    .lock/                  see deployer.commands.lock

Rules these builders keep:

- A release directory without ``.partial`` is always complete: files go into
  ``<id>.partial`` and one ``mv -T`` (a rename, atomic) makes it final.
- ``current`` is switched with a rename of a fresh symlink over it
  (``ln -sfn`` + ``mv -T``), so it never points nowhere, not even for a moment.
  The link is relative (``releases/<id>``) so the tree can be moved.
- Release ids sort by name in creation order (``20261130T094500Z-<tag>``,
  :func:`deployer.plan.new_release_id`); "newest" means greatest by name.
- Every release has a health record, ``releases/<id>/.deployer-health``
  (one line: ``<verdict> <when>``): ``pending`` from :func:`finalize` (uploaded,
  its health gate not reached yet), then ``passed`` (written by
  :func:`switch_current`: a release becomes current only after its gate
  passed) or ``failed`` (:func:`record_health`). A release without a record
  comes from a deployer before records: it counts as ``passed`` while it is
  current (and gets that record when ``current`` leaves it), else as
  ``unknown``. See :class:`Releases` for what rollback and prune make of it.
- ``prune`` never removes the release ``current`` points to nor the newest
  release that passed (the rollback target), and never touches ``.partial``
  directories. Stale ``.partial`` directories (from a run that
  was killed mid-upload) are removed by :func:`remove_partials`, which the
  caller runs only while holding the deploy lock: then no upload is live.
- Durable: the files and directories of ``<id>.partial``, a health record and
  the new ``current`` link are flushed to disk (``sync``) before the rename
  that makes them visible, and the directory holding the rename after it, so
  after a power cut a release that exists is complete and ``current`` points
  at one.
- Every script is one round trip; values travel as positional arguments,
  never spliced into script text.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.commands.base import Command, Script

MANIFEST = "manifest.json"
PARTIAL = ".partial"
#: The health record of a release, next to its manifest (see the module notes).
HEALTH = ".deployer-health"
PENDING, PASSED, FAILED = "pending", "passed", "failed"
#: What :meth:`Releases.health` calls each state; ``unknown``: no record (a
#: release made before deployer kept them, not current).
NEVER_RAN, UNKNOWN = "never ran", "unknown"

# Exit code of scripts that find a release in the wrong state (missing when it
# must exist, existing when it must not), distinct from "the command failed".
EXIT_RELEASE_STATE = 4

_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")


def check_release_id(release: str) -> str:
    """A release id is one safe path component and never looks like a partial."""
    if not _RELEASE_ID.fullmatch(release) or release.endswith(PARTIAL):
        raise ValueError(
            f"invalid release id {release!r}: letters, digits, '.', '_', '-', "
            f"not ending in {PARTIAL!r}"
        )
    return release


def release_dir(deploy_dir: str, release: str) -> str:
    return posixpath.join(deploy_dir, "releases", check_release_id(release))


# `sync FILE...` fsyncs those files (coreutils >= 8.24); `sync -f PATH` the
# whole file system PATH is on (syncfs: every file and directory of a release
# in one call, however many). Where neither exists (busybox), a plain `sync`.
_DURABLE = """
flush() { sync -- "$@" 2>/dev/null || sync; }
flush_fs() { sync -f -- "$1" 2>/dev/null || sync; }
"""

# Write a health record atomically: a temporary file, flushed, renamed over
# the record, then the directory flushed. $1 release dir, $2 verdict, $3 when.
_RECORD = """
record() {
  printf '%s %s\\n' "$2" "$3" > "$1/.deployer-health.tmp" &&
    flush "$1/.deployer-health.tmp" &&
    mv -f -- "$1/.deployer-health.tmp" "$1/.deployer-health" &&
    flush "$1"
}
"""

_PREPARE = """
set -e
mkdir -p -- "$1/releases" "$1/shared"
chown -- "$2" "$1" "$1/releases" "$1/shared"
""".strip()


def prepare(deploy_dir: str, user: str) -> Command:
    """Create the tree with sudo and give its top directories to the SSH user,
    so uploads and every later release operation need no sudo. Not recursive:
    ``shared/`` content belongs to the containers that wrote it."""
    return Script(
        _PREPARE,
        args=(deploy_dir, user),
        sudo=True,
        description=f"prepare {deploy_dir}",
    ).command()


_RECEIVE = """
set -e
d="$1/releases/$2.partial"
if [ -e "$1/releases/$2" ]; then echo "release $2 already exists" >&2; exit 4; fi
rm -rf -- "$d"
mkdir -p -- "$d"
tar -x -p -m --no-same-owner -f - -C "$d"
""".strip()


def receive_release(deploy_dir: str, release: str) -> Command:
    """Create an empty ``<id>.partial`` and unpack the release tar read from
    stdin into it (one round trip for the whole release; the stream comes
    from :func:`deployer.release_tar.tar_stream`). ``-p``: the tar's exact
    modes, not the umask's (secrets stay 0600); ``--no-same-owner``: files
    belong to the SSH user even when it is root; ``-m``: modification time
    of the unpack. Exit 4 if the final release already exists."""
    check_release_id(release)
    return Script(
        _RECEIVE,
        args=(deploy_dir, release),
        description=f"unpack the release into releases/{release}{PARTIAL}",
    ).command()


_FINALIZE = (_DURABLE + """
set -e
cd -- "$1/releases"
if [ -e "$2" ]; then echo "release $2 already exists" >&2; exit 4; fi
printf 'pending %s\\n' "$3" > "$2.partial/.deployer-health"
flush_fs "$2.partial"
mv -T -- "$2.partial" "$2"
flush .
""").strip()


def finalize(deploy_dir: str, release: str, when: str) -> Command:
    """Give ``<id>.partial`` its ``pending`` health record, flush it to disk
    and rename it to ``<id>``: from now on the release is complete (and has
    not run). ``when``: the run's timestamp."""
    check_release_id(release)
    return Script(
        _FINALIZE, args=(deploy_dir, release, when), description=f"finalize release {release}"
    ).command()


_SWITCH = (_DURABLE + _RECORD + """
set -e
cd -- "$1"
if [ ! -d "releases/$2" ]; then echo "release $2 not found in $1/releases" >&2; exit 4; fi
t=$(readlink -- current 2>/dev/null) || t=
old=${t##*/}
if [ -n "$old" ] && [ "$old" != "$2" ] && [ -d "releases/$old" ] \\
   && [ ! -e "releases/$old/.deployer-health" ]; then
  record "releases/$old" passed "$3" || true
fi
record "releases/$2" passed "$3"
ln -sfn -- "releases/$2" current.tmp
flush_fs .
mv -Tf -- current.tmp current
flush .
""").strip()


def switch_current(deploy_dir: str, release: str, when: str) -> Command:
    """Record that the release passed its health gate, then point ``current``
    at it atomically (rename over the old link). Only called once the gate
    passed: a current release has always passed. The release ``current``
    leaves gets a ``passed`` record too when it has none (one made before
    deployer kept records: it was current, so it had passed)."""
    check_release_id(release)
    return Script(
        _SWITCH, args=(deploy_dir, release, when), description=f"switch current to {release}"
    ).command()


_RECORD_HEALTH = (_DURABLE + _RECORD + """
d="$1/releases/$2"
if [ ! -d "$d" ]; then echo "release $2 not found in $1/releases" >&2; exit 4; fi
record "$d" "$3" "$4"
""").strip()


def record_health(deploy_dir: str, release: str, verdict: str, when: str) -> Command:
    """Write ``verdict`` (:data:`FAILED`, or :data:`PASSED`) as the release's
    health record, atomically."""
    check_release_id(release)
    if verdict not in (PASSED, FAILED):
        raise ValueError(f"health verdict must be {PASSED!r} or {FAILED!r}, not {verdict!r}")
    return Script(
        _RECORD_HEALTH, args=(deploy_dir, release, verdict, when),
        description=f"record that {release} {verdict} its health gate",
    ).command()


STATE_MARKER = "deployer_state=1"
MANIFEST_MARKER = "--- manifest"

_READ_STATE = """
printf '%s\\n' 'deployer_state=1'
if [ -d "$1" ]; then printf 'exists=1\\n'; else printf 'exists=0\\n'; fi
if [ -w "$1" ] && [ -w "$1/releases" ] && [ -w "$1/shared" ]; then
  printf 'writable=1\\n'
else
  printf 'writable=0\\n'
fi
t=$(readlink -- "$1/current" 2>/dev/null) || t=
printf 'current=%s\\n' "${t##*/}"
head -n 3 -- "$1/.deployer-owner" 2>/dev/null | sed 's/^/owner_/'
[ -f "$1/.applying" ] && printf 'applying=%s\\n' "$(head -n 1 -- "$1/.applying" | cut -c 1-200)"
for c in "$1"/.docker-config-*; do [ -e "$c" ] && { printf 'stale_credentials=1\\n'; break; }; done
if [ -n "$t" ] && [ -f "$1/current/manifest.json" ]; then
  printf '%s\\n' '--- manifest'
  cat -- "$1/current/manifest.json"
fi
exit 0
""".strip()


def read_state(deploy_dir: str) -> Command:
    """One round trip for the no-op check: does the tree exist and belong to
    the SSH user, which release is current, and its manifest; and what a
    killed run left (the apply marker, registry credentials)."""
    return Script(_READ_STATE, args=(deploy_dir,), description="read current release").command()


@dataclass(frozen=True)
class RemoteState:
    """What :func:`read_state` found."""

    exists: bool
    writable: bool  # the SSH user owns the tree: :func:`prepare` can be skipped
    current: str | None
    manifest_text: str | None = field(default=None, repr=False)
    #: The deploy dir's owner file (``app``, ``env``, ``project``), empty
    #: when it has none (see :mod:`deployer.deploy.ownership`).
    owner: tuple[tuple[str, str], ...] = ()
    # A run stopped between `compose up` and settling (deployer.commands.recovery).
    applying: str | None = None
    stale_credentials: bool = False  # `.docker-config-*` left by a killed run

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The current release's manifest, or None when absent or unreadable
        (both mean "deploy": a broken manifest must never look unchanged)."""
        if not self.manifest_text:
            return None
        try:
            data = json.loads(self.manifest_text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def parse_state(stdout: str) -> RemoteState:
    head, sep, manifest = stdout.partition(MANIFEST_MARKER + "\n")
    lines = head.splitlines()
    if STATE_MARKER not in lines:
        raise ValueError(f"unexpected output from the state read: {stdout[:200]!r}")
    kv = dict(line.partition("=")[::2] for line in lines if "=" in line)
    return RemoteState(
        exists=kv.get("exists") == "1",
        writable=kv.get("writable") == "1",
        current=kv.get("current") or None,
        manifest_text=manifest if sep else None,
        owner=_owner(kv),
        applying=kv.get("applying") or None,
        stale_credentials=kv.get("stale_credentials") == "1",
    )


def _owner(kv: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k[len("owner_"):], v) for k, v in kv.items() if k.startswith("owner_")))


# The fingerprint from a manifest's text and the first word (verdict) and
# second (when) of a health record, as shell functions for list and prune.
_READ = """
fp() {
  grep -o '"fingerprint": *"[0-9a-f]*"' "$1/manifest.json" 2>/dev/null \\
    | head -n 1 | sed 's/.*"\\([0-9a-f]*\\)"$/\\1/'
}
verdict() {
  v=$(head -c 200 -- "$1/.deployer-health" 2>/dev/null | head -n 1) || v=
  printf '%s' "$v"
}
"""

_LIST = (_READ + """
cd -- "$1/releases" 2>/dev/null || exit 0
t=$(readlink -- ../current 2>/dev/null) || t=
printf 'current=%s\\n' "${t##*/}"
head -n 3 -- ../.deployer-owner 2>/dev/null | sed 's/^/owner_/'
for r in *; do
  [ -d "$r" ] || continue
  case "$r" in
    *.partial) printf 'partial=%s\\n' "${r%.partial}" ;;
    *) f=$(fp "$r"); v=$(verdict "$r")
       printf 'release=%s %s %s\\n' "$r" "${f:--}" "${v:--}" ;;
  esac
done
""").strip()


def list_releases(deploy_dir: str) -> Command:
    """Release ids, the current one, each one's fingerprint and health
    record, and any partial uploads (one round trip)."""
    return Script(_LIST, args=(deploy_dir,), description="list releases").command()


@dataclass(frozen=True)
class Releases:
    """Releases on a host, oldest first, with each one's content fingerprint
    (from its manifest; absent for a release without one) and health record
    (``(id, "passed 2026-...Z")``; absent: no record).

    What a release counts as (:meth:`health`): ``passed`` when it is current
    or its record says so; ``failed`` (its health gate failed); ``never ran``
    (uploaded, but its ship stopped before the gate gave a verdict: killed,
    interrupted, a failed pull); ``unknown`` (no record: made by a deployer
    from before the records, and not current). Rollback goes only to releases
    that passed (``unknown`` only when named with ``--to``)."""

    releases: tuple[str, ...]
    current: str | None
    partials: tuple[str, ...] = ()
    fingerprints: tuple[tuple[str, str], ...] = ()
    records: tuple[tuple[str, str], ...] = ()
    owner: tuple[tuple[str, str], ...] = ()  # as in :class:`RemoteState`

    def health(self, rid: str) -> str:
        """:data:`PASSED`, :data:`FAILED`, :data:`NEVER_RAN` or :data:`UNKNOWN`."""
        if rid == self.current:
            return PASSED
        verdict = dict(self.records).get(rid, "").partition(" ")[0]
        if verdict in (PASSED, FAILED):
            return verdict
        return NEVER_RAN if verdict == PENDING else UNKNOWN

    def recorded_at(self, rid: str) -> str:
        """When the health record was written ("" without one)."""
        return dict(self.records).get(rid, "").partition(" ")[2]

    def previous(self) -> str | None:
        """The default rollback target: the newest release older than
        ``current`` that passed its health gate and runs something else.

        Releases with the current one's content are passed over: after v1,
        v2, a rollback to v1 and v2 shipped again, the release before the
        current one is the first v2, and "rolling back" to it would change
        nothing. So are releases that failed, never ran, or have no record.
        None when there is no such release."""
        if self.current not in self.releases:
            passed = [r for r in self.releases if self.health(r) == PASSED]
            return passed[-1] if passed else None
        fps = dict(self.fingerprints)
        mine = fps.get(self.current)
        older = self.releases[: self.releases.index(self.current)]
        for rid in reversed(older):
            if self.health(rid) == PASSED and (mine is None or fps.get(rid) != mine):
                return rid
        return None

    def refuse_target(self, rid: str) -> str | None:
        """Why ``rollback --to rid`` must not go there (None: it may)."""
        if rid not in self.releases:
            return (f"release {rid} not found on this host "
                    f"(have: {', '.join(self.releases) or 'none'})")
        state = self.health(rid)
        at = self.recorded_at(rid)
        if state == FAILED:
            return (f"release {rid} failed its health gate{' at ' + at if at else ''}; "
                    "rollback only goes to releases that passed")
        if state == NEVER_RAN:
            return (f"release {rid} never ran (its ship stopped before the health gate); "
                    "rollback only goes to releases that passed")
        return None


def parse_releases(stdout: str) -> Releases:
    releases: list[str] = []
    partials: list[str] = []
    fps: list[tuple[str, str]] = []
    records: list[tuple[str, str]] = []
    current: str | None = None
    owner: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("owner_"):
            owner[key] = value
        elif key == "current":
            current = value or None
        elif key == "release" and value:
            rid, _, rest = value.partition(" ")
            fp, _, record = rest.partition(" ")
            releases.append(rid)
            if fp and fp != "-":
                fps.append((rid, fp))
            if record and record != "-":
                records.append((rid, record))
        elif key == "partial" and value:
            partials.append(value)
    return Releases(tuple(sorted(releases)), current, tuple(sorted(partials)), tuple(sorted(fps)),
                    tuple(sorted(records)), _owner(owner))


# Removing a release: first renamed to `<id>.partial` (atomic), so a release
# that a failing `rm` left half-removed never looks complete; then removed as
# the SSH user, and where that is refused (files a container wrote as root
# into a bind-mounted release path), with `sudo -n`: the privileges `prepare`
# used to create the tree. A partial left behind is retried by
# remove_partials under the next lock.
_REMOVE = """
remove() {
  if [ -e "$1.partial" ]; then
    rm -rf -- "$1.partial" 2>/dev/null || sudo -n rm -rf -- "$1.partial" 2>/dev/null
  fi
  mv -T -- "$1" "$1.partial" 2>/dev/null || { printf 'failed=%s cannot rename\\n' "$1"; return 1; }
  if rm -rf -- "$1.partial" 2>/dev/null || sudo -n rm -rf -- "$1.partial" 2>/dev/null; then
    printf 'removed=%s\\n' "$1"
  else
    printf 'failed=%s files the SSH user cannot remove, and sudo -n is refused\\n' "$1"
    return 1
  fi
}
"""

_PRUNE = (_READ + _REMOVE + """
cd -- "$1/releases" 2>/dev/null || exit 0
keep=$2
t=$(readlink -- ../current 2>/dev/null) || t=
cur=${t##*/}
curfp=
[ -z "$cur" ] || curfp=$(fp "$cur")
# The rollback targets: the newest release that passed, other than current,
# and the newest that passed with other content than current.
newest= other=
for r in $(ls -1 | LC_ALL=C sort -r); do
  [ -d "$r" ] && [ "$r" != "$cur" ] || continue
  case "$r" in *.partial) continue ;; esac
  v=$(verdict "$r")
  [ "${v%% *}" = passed ] || continue
  [ -n "$newest" ] || newest=$r
  if [ -z "$other" ] && { [ -z "$curfp" ] || [ "$(fp "$r")" != "$curfp" ]; }; then other=$r; fi
done
n=0 rc=0
for r in $(ls -1 | LC_ALL=C sort -r); do
  [ -d "$r" ] || continue
  case "$r" in *.partial) continue ;; esac
  v=$(verdict "$r")
  case "${v%% *}" in
    failed|pending) counted=0 ;;
    *) counted=1; n=$((n + 1)) ;;
  esac
  [ "$r" != "$cur" ] && [ "$r" != "$newest" ] && [ "$r" != "$other" ] || continue
  if [ "$counted" = 1 ] && [ "$n" -le "$keep" ]; then continue; fi
  remove "$r" || rc=1
done
exit $rc
""").strip()


def prune(deploy_dir: str, keep: int) -> Command:
    """Keep ``current``, the newest release that passed (and the newest that
    passed with content other than current's: the default rollback target),
    and the ``keep`` newest releases that passed or have no record;
    remove the rest, releases that failed or never ran included. Prints
    ``removed=<id>`` per removed release, ``failed=<id> <why>`` per release
    it could not remove (then exits 1)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    return Script(
        _PRUNE,
        args=(deploy_dir, str(keep)),
        description=f"prune releases (keep {keep})",
    ).command()


def parse_removed(stdout: str) -> list[str]:
    return [line[len("removed=") :] for line in stdout.splitlines() if line.startswith("removed=")]


def parse_prune_failures(stdout: str) -> list[str]:
    """``<id> <why>`` of each release prune could not remove."""
    return [line[len("failed=") :] for line in stdout.splitlines() if line.startswith("failed=")]


_REMOVE_PARTIALS = """
cd -- "$1/releases" 2>/dev/null || exit 0
for r in *.partial; do
  [ -d "$r" ] || continue
  if rm -rf -- "$r" 2>/dev/null || sudo -n rm -rf -- "$r" 2>/dev/null; then
    printf 'removed=%s\\n' "$r"
  else
    printf 'failed=%s\\n' "$r"
  fi
done
""".strip()


def remove_partials(deploy_dir: str) -> Command:
    """Remove every ``.partial`` directory. Only while holding the deploy lock
    (no upload can be live then)."""
    return Script(
        _REMOVE_PARTIALS, args=(deploy_dir,), description="remove stale partial uploads"
    ).command()


def _check_relative(path: str) -> str:
    norm = posixpath.normpath(path)
    if path.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in path:
        raise ValueError(f"{path!r} must be a relative path inside the directory")
    return norm


def ensure_shared(deploy_dir: str, paths: Sequence[str]) -> Command:
    """Create ``shared/<path>`` for each relative bind-mount source, so docker
    does not create them as root-owned directories itself, and they exist
    before the first ``compose up``."""
    shared = posixpath.join(deploy_dir, "shared")
    rels = [_check_relative(p) for p in paths]
    targets = [posixpath.join(shared, r) if r != "." else shared for r in rels] or [shared]
    return Command(("mkdir", "-p", "--", *targets), description="create shared directories")
