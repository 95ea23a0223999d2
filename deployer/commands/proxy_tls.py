"""Remote commands for the proxy's TLS files (pure builders).

A release carries its certificates and keys (``.proxy-tls/`` in the release
directory, the keys 0600); before the switch they are installed where the
proxy container can read them, one folder per release:
``/opt/deployer-proxy/tls/<app>/<release>/``, root only (0700), keys 0600.
After the switch, the app's folders of other releases are removed (a
rollback installs its release's files again from its release directory).
"""

from __future__ import annotations

from collections.abc import Sequence

from deployer.commands.base import Command, Script

_INSTALL = """
set -e
src=$1; dst=$2; shift 2
umask 077
mkdir -p "$(dirname "$dst")"
chmod 0700 "$(dirname "$(dirname "$dst")")" "$(dirname "$dst")"
rm -rf "$dst.partial"
mkdir "$dst.partial"
while [ "$#" -gt 1 ]; do
  install -m "$2" "$src/$1" "$dst.partial/$1"
  shift 2
done
rm -rf "$dst"
mv "$dst.partial" "$dst"
""".strip()


def install(release_dir: str, source: str, dest: str,
            files: Sequence[tuple[str, int]]) -> Command:
    """Copy ``files`` (``(name, mode)``) from ``<release_dir>/<source>`` into
    ``dest`` (complete or not at all: written beside it, then renamed)."""
    args: list[str] = []
    for name, mode in files:
        args += [name, f"{mode:04o}"]
    return Script(_INSTALL, args=(f"{release_dir}/{source}", dest, *args), sudo=True,
                  description="install the TLS files for the proxy").command()


_PRUNE = """
dir=$1; keep=$2
[ -d "$dir" ] || exit 0
for d in "$dir"/* "$dir"/.[!.]*; do
  [ -e "$d" ] || continue
  [ "$d" = "$dir/$keep" ] || rm -rf "$d"
done
""".strip()


def prune(app_dir: str, keep: str) -> Command:
    """Remove every folder in ``app_dir`` but ``keep`` (``""``: all of them):
    the TLS files of releases the proxy no longer loads."""
    return Script(_PRUNE, args=(app_dir, keep), sudo=True,
                  description="remove TLS files the proxy no longer loads").command()
