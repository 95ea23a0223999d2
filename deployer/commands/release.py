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
- ``prune`` never removes the release ``current`` points to, and never touches
  ``.partial`` directories. Stale ``.partial`` directories (from a run that
  was killed mid-upload) are removed by :func:`remove_partials`, which the
  caller runs only while holding the deploy lock: then no upload is live.
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


_FINALIZE = """
set -e
cd -- "$1/releases"
if [ -e "$2" ]; then echo "release $2 already exists" >&2; exit 4; fi
mv -T -- "$2.partial" "$2"
""".strip()


def finalize(deploy_dir: str, release: str) -> Command:
    """Rename ``<id>.partial`` to ``<id>``: from now on the release is complete."""
    check_release_id(release)
    return Script(
        _FINALIZE, args=(deploy_dir, release), description=f"finalize release {release}"
    ).command()


_SWITCH = """
set -e
cd -- "$1"
if [ ! -d "releases/$2" ]; then echo "release $2 not found in $1/releases" >&2; exit 4; fi
ln -sfn -- "releases/$2" current.tmp
mv -Tf -- current.tmp current
""".strip()


def switch_current(deploy_dir: str, release: str) -> Command:
    """Point ``current`` at the release atomically (rename over the old link)."""
    check_release_id(release)
    return Script(
        _SWITCH, args=(deploy_dir, release), description=f"switch current to {release}"
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
        applying=kv.get("applying") or None,
        stale_credentials=kv.get("stale_credentials") == "1",
    )


_LIST = """
cd -- "$1/releases" 2>/dev/null || exit 0
t=$(readlink -- ../current 2>/dev/null) || t=
printf 'current=%s\\n' "${t##*/}"
for r in *; do
  [ -d "$r" ] || continue
  case "$r" in
    *.partial) printf 'partial=%s\\n' "${r%.partial}" ;;
    *) fp=$(grep -o '"fingerprint": *"[0-9a-f]*"' "$r/manifest.json" 2>/dev/null \\
         | head -n 1 | sed 's/.*"\\([0-9a-f]*\\)"$/\\1/')
       printf 'release=%s %s\\n' "$r" "$fp" ;;
  esac
done
""".strip()


def list_releases(deploy_dir: str) -> Command:
    """Release ids, the current one and any partial uploads (one round trip)."""
    return Script(_LIST, args=(deploy_dir,), description="list releases").command()


@dataclass(frozen=True)
class Releases:
    """Releases on a host, oldest first, with each one's content fingerprint
    (from its manifest; absent for a release without one)."""

    releases: tuple[str, ...]
    current: str | None
    partials: tuple[str, ...] = ()
    fingerprints: tuple[tuple[str, str], ...] = ()

    def previous(self) -> str | None:
        """The default rollback target: the newest release older than
        ``current`` that runs something else.

        Releases with the current one's content are passed over: after v1,
        v2, a rollback to v1 and v2 shipped again, the release before the
        current one is the first v2, and "rolling back" to it would change
        nothing. None when there is no such release."""
        if self.current not in self.releases:
            return self.releases[-1] if self.releases else None
        fps = dict(self.fingerprints)
        mine = fps.get(self.current)
        older = self.releases[: self.releases.index(self.current)]
        for rid in reversed(older):
            if mine is None or fps.get(rid) != mine:
                return rid
        return None


def parse_releases(stdout: str) -> Releases:
    releases: list[str] = []
    partials: list[str] = []
    fps: list[tuple[str, str]] = []
    current: str | None = None
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "current":
            current = value or None
        elif key == "release" and value:
            rid, _, fp = value.partition(" ")
            releases.append(rid)
            if fp:
                fps.append((rid, fp))
        elif key == "partial" and value:
            partials.append(value)
    return Releases(tuple(sorted(releases)), current, tuple(sorted(partials)), tuple(sorted(fps)))


_PRUNE = """
set -e
cd -- "$1/releases" 2>/dev/null || exit 0
keep=$2
t=$(readlink -- ../current 2>/dev/null) || t=
cur=${t##*/}
n=0
for r in $(ls -1 | LC_ALL=C sort -r); do
  [ -d "$r" ] || continue
  case "$r" in *.partial) continue ;; esac
  n=$((n + 1))
  if [ "$n" -le "$keep" ] || [ "$r" = "$cur" ]; then continue; fi
  rm -rf -- "$r"
  printf 'removed=%s\\n' "$r"
done
""".strip()


def prune(deploy_dir: str, keep: int) -> Command:
    """Keep the ``keep`` newest releases (by id) plus the current one; print
    ``removed=<id>`` per removed release."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    return Script(
        _PRUNE,
        args=(deploy_dir, str(keep)),
        description=f"prune releases (keep {keep})",
    ).command()


def parse_removed(stdout: str) -> list[str]:
    return [line[len("removed=") :] for line in stdout.splitlines() if line.startswith("removed=")]


_REMOVE_PARTIALS = """
cd -- "$1/releases" 2>/dev/null || exit 0
for r in *.partial; do
  [ -d "$r" ] || continue
  rm -rf -- "$r"
  printf 'removed=%s\\n' "$r"
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
