#!/usr/bin/env python3
"""Print the Debian mirror this machine's apt uses, for .ci/setup and
.ci/build-images (debootstrap, the pinned compose package), so they work
behind a corporate mirror or proxy.

Reads, under ROOT (default /): the deb822 files
/etc/apt/sources.list.d/*.sources (``Types: deb``, ``URIs:``, ``Suites:``,
``Enabled:``) and the one-line files /etc/apt/sources.list and
/etc/apt/sources.list.d/*.list (``deb [options] URI suite component...``).
Picks the first enabled ``deb`` entry over http(s) whose suites include SUITE
(the archive, not ``-security`` or ``-updates``), else the first whose suites
include any Debian suite name, else prints the default,
http://deb.debian.org/debian (an Ubuntu machine's mirror has no Debian).

Usage: debian_mirror.py [--suite bookworm] [--root /]
Only the standard library: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass

DEFAULT = "http://deb.debian.org/debian"
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
})


@dataclass(frozen=True)
class Entry:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    enabled: bool = True


def parse_deb822(text: str) -> list[Entry]:
    """Entries of a deb822 ``.sources`` file (paragraphs of ``Key: value``)."""
    entries: list[Entry] = []
    fields: dict[str, str] = {}
    last = ""

    def flush() -> None:
        if fields:
            entries.append(Entry(
                types=tuple(fields.get("types", "").split()),
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                enabled=fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
            ))
        fields.clear()

    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            flush()
            last = ""
            continue
        if line[0] in " \t" and last:  # a continuation line
            fields[last] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip().lower()
            fields[last] = value.strip()
    flush()
    return entries


def parse_one_line(text: str) -> list[Entry]:
    """Entries of a one-line ``sources.list`` (``deb [opts] URI suite comps``)."""
    entries: list[Entry] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        rest = words[1:]
        if rest[0].startswith("["):  # [arch=amd64 signed-by=...]
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            entries.append(Entry(types=(words[0],), uris=(rest[0],), suites=(rest[1],)))
    return entries


def read_entries(root: str = "/") -> list[Entry]:
    """Every entry of the machine's apt sources, in apt's reading order."""
    base = os.path.join(root, "etc/apt")
    entries: list[Entry] = []
    main = os.path.join(base, "sources.list")
    if os.path.isfile(main):
        entries += parse_one_line(_read(main))
    for path in sorted(glob.glob(os.path.join(base, "sources.list.d", "*"))):
        if path.endswith(".list"):
            entries += parse_one_line(_read(path))
        elif path.endswith(".sources"):
            entries += parse_deb822(_read(path))
    return entries


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def pick(entries: list[Entry], suite: str = "bookworm") -> str:
    """The mirror serving ``suite``, else any Debian archive, else the default."""
    usable = [e for e in entries if e.enabled and "deb" in e.types
              and any(u.startswith(("http://", "https://")) for u in e.uris)]
    for wanted in ({suite}, DEBIAN_SUITES):
        for e in usable:
            if wanted & set(e.suites):
                uri = next(u for u in e.uris if u.startswith(("http://", "https://")))
                return uri.rstrip("/")
    return DEFAULT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="bookworm")
    ap.add_argument("--root", default="/")
    args = ap.parse_args(argv)
    print(pick(read_entries(args.root), args.suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
