"""``plan --diff``'s one state command per host, and its parser.

One read-only round trip tells deployer how a host differs from a plan:

- which release is current, and its ``manifest.json``;
- every file of the current release: mode and sha256 (for drift: a file
  whose hash no longer matches its manifest was edited by hand);
- the content of the files the plan would change: deployer sends the plan's
  ``sha256 dest`` of each file it may show on stdin (never the hashes of
  secret files), and the host prints, base64-encoded, only those whose hash
  differs and that are not private (mode ``*00``, as 0600): at most
  :data:`CONTENT_CAP` bytes of each and :data:`OUTPUT_BUDGET` bytes in all;
- the project's containers (``docker ps -a`` by the compose project label,
  then ``docker inspect`` with :data:`deployer.commands.health.INSPECT_TEMPLATE`),
  through ``sudo -n docker`` when plain ``docker`` is refused, so no facts
  probe (a second round trip) is needed.

The script only reads: ``readlink``, ``find``, ``stat``, ``sha256sum``,
``head``, ``base64``, ``docker ps``, ``docker inspect``. Every value is a
positional argument; the output is one record per line (``key value``), each
value either a token or base64, so file content can never be mistaken for a
record.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from deployer.commands.base import Command, Script
from deployer.commands.health import INSPECT_TEMPLATE, PROJECT_LABEL, ContainerRow, parse_containers

MARKER = "deployer_inspect=1"
MANIFEST = "manifest.json"
# The most of one file's content a host sends back; a larger file is shown as
# "changed" with no diff (plan output is for reading, not a transfer).
CONTENT_CAP = 256 * 1024
# The most file content one host sends in all; files past it are listed as
# ``skipped`` (changed, no diff), so the output stays bounded however many
# files a release has.
OUTPUT_BUDGET = 4 * 1024 * 1024

_INSPECT = r"""
d=$1 cap=$2 left=$3 label=$4 tpl=$5
printf '%s\n' 'deployer_inspect=1'
if [ -d "$d" ]; then printf 'exists=1\n'; else printf 'exists=0\n'; fi
t=$(readlink -- "$d/current" 2>/dev/null) || t=
printf 'current=%s\n' "${t##*/}"
if [ -n "$t" ] && cd -- "$d/current/" 2>/dev/null; then
  if [ -f manifest.json ]; then
    printf 'manifest '; base64 < manifest.json | tr -d '\n'; printf '\n'
  fi
  find . \( -path ./manifest.json -o -path ./.deployer-health \) -prune \
    -o -type f -exec stat -c 'mode %a %n' -- {} + 2>/dev/null
  sums=$(find . \( -path ./manifest.json -o -path ./.deployer-health \) -prune \
    -o -type f -exec sha256sum -- {} + 2>/dev/null)
  [ -z "$sums" ] || printf '%s\n' "$sums" | sed 's/^/sha256 /'
  { [ -z "$sums" ] || printf '%s\n' "$sums"; printf '%s\n' '@@want'; cat; } | awk '
    $0 == "@@want" { want = 1; next }
    !want { name = substr($0, 67); sub(/^\.\//, "", name); have[name] = substr($0, 1, 64); next }
    { dest = substr($0, 66); if (!(dest in have) || have[dest] != substr($0, 1, 64)) print dest }
  ' | while IFS= read -r dest; do
    [ -f "./$dest" ] || continue
    m=$(stat -c '%a %s' -- "./$dest" 2>/dev/null) || continue
    case ${m% *} in *00) continue ;; esac
    n=${m#* }
    [ "$n" -le "$cap" ] || n=$cap
    if [ "$n" -gt "$left" ]; then printf 'skipped %s\n' "$dest"; continue; fi
    left=$((left - n))
    printf 'content '; head -c "$cap" -- "./$dest" | base64 | tr -d '\n'; printf ' %s\n' "$dest"
  done
else
  cat >/dev/null
fi
if ! command -v docker >/dev/null 2>&1; then
  printf 'docker=missing\n'
  exit 0
fi
if ids=$(docker ps -aq --no-trunc --filter "label=$label" 2>/dev/null); then
  set -- docker
elif ids=$(sudo -n docker ps -aq --no-trunc --filter "label=$label" 2>/dev/null); then
  set -- sudo -n docker
else
  printf 'docker=unreachable\n'
  exit 0
fi
printf 'docker=ok\n'
[ -z "$ids" ] || "$@" inspect --format "$tpl" $ids 2>/dev/null | sed 's/^/container /'
exit 0
""".strip()


def _safe_dest(dest: str) -> bool:
    norm = posixpath.normpath(dest)
    return (
        bool(dest) and not dest.startswith("/") and norm == dest and not norm.startswith("../")
        and norm != ".." and "\n" not in dest and "\0" not in dest
    )


def inspect_host(deploy_dir: str, app: str, want: Sequence[tuple[str, str]]) -> Command:
    """The one state command of ``plan --diff``.

    ``want``: ``(dest, sha256)`` of each plan file whose content may be shown
    (never a secret file): the host prints the current content of those that
    differ. Sent on stdin, one ``sha256 dest`` line each. Read-only; no sudo
    except ``sudo -n docker`` when plain ``docker`` is refused.
    """
    lines = []
    for dest, sha in want:
        if len(sha) != 64 or not _safe_dest(dest):
            raise ValueError(f"cannot ask for {dest!r} ({sha!r}): not a release path and sha256")
        lines.append(f"{sha} {dest}\n")
    return Script(
        _INSPECT,
        args=(deploy_dir, str(CONTENT_CAP + 1), str(OUTPUT_BUDGET), f"{PROJECT_LABEL}={app}",
              INSPECT_TEMPLATE),
        description="inspect current release and containers",
        stdin="".join(lines),
    ).command()


@dataclass(frozen=True)
class RemoteFile:
    """One file of the host's current release."""

    mode: int | None = None
    sha256: str | None = None  # None: unreadable


@dataclass
class Inspection:
    """What :func:`inspect_host` found on one host."""

    exists: bool
    current: str | None
    manifest_text: str | None = field(default=None, repr=False)
    files: dict[str, RemoteFile] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)
    truncated: set[str] = field(default_factory=set)  # larger than CONTENT_CAP
    skipped: set[str] = field(default_factory=set)  # past OUTPUT_BUDGET
    docker: str = "missing"  # ok | unreachable | missing
    containers: list[ContainerRow] = field(default_factory=list)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_inspection(stdout: str) -> Inspection:
    """Parse :func:`inspect_host`'s output; raises ValueError when it is not
    that script's (a login banner, a broken shell)."""
    lines = stdout.splitlines()
    if MARKER not in lines:
        raise ValueError(f"unexpected output from the inspection: {stdout[:200]!r}")
    kv: dict[str, str] = {}
    modes: dict[str, int] = {}
    sums: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    truncated: set[str] = set()
    skipped: set[str] = set()
    rows: list[str] = []
    manifest: str | None = None
    for line in lines[lines.index(MARKER) + 1:]:
        key, _, value = line.partition(" ")
        if key == "mode":
            m, _, name = value.partition(" ")
            if name.startswith("./") and m.isdigit():
                modes[name[2:]] = int(m, 8)
        elif key == "sha256":
            digest, _, name = value.partition("  ")
            if len(digest) == 64 and name.startswith("./"):
                sums[name[2:]] = digest
        elif key == "content":
            data, _, dest = value.partition(" ")
            raw = _b64(data)
            if raw is not None and dest:
                if len(raw) > CONTENT_CAP:
                    truncated.add(dest)
                else:
                    contents[dest] = raw
        elif key == "skipped" and value:
            skipped.add(value)
        elif key == "manifest":
            raw = _b64(value)
            manifest = raw.decode(errors="replace") if raw is not None else None
        elif key == "container":
            rows.append(value)
        elif "=" in line:
            k, _, v = line.partition("=")
            kv.setdefault(k, v)
    files = {
        name: RemoteFile(modes.get(name), sums.get(name)) for name in sorted({*modes, *sums})
    }
    return Inspection(
        exists=kv.get("exists") == "1",
        current=kv.get("current") or None,
        manifest_text=manifest,
        files=files,
        contents=contents,
        truncated=truncated,
        skipped=skipped,
        docker=kv.get("docker", "missing"),
        containers=parse_containers("\n".join(rows)),
    )
