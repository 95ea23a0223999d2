"""Tables that fit the terminal and still show what tells rows apart.

Long values (release ids, pinned image references) are shortened step by
step only as far as the width needs, keeping the part that differs between
rows: the release's time and tag, the image's name and tag. ``-o json``
always carries the full values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from deployer.commands.health import ContainerRow

ELLIPSIS = "…"
_DIGEST = re.compile(r"@sha256:([0-9a-f]{12})[0-9a-f]*$")
_RELEASE_DATE = re.compile(r"^\d{8}T(?=\d{6}Z-)")


def short_digest(image: str) -> str:
    """``...@sha256:<64 hex>`` -> ``...@sha256:<12 hex>``."""
    return _DIGEST.sub(r"@sha256:\1", image)


def no_digest(image: str) -> str:
    return image.split("@", 1)[0]


def no_registry(image: str) -> str:
    """Drop the registry host (``10.213.0.1:5443/shop/web:t`` -> ``shop/web:t``)."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return image


def last_segment(image: str) -> str:
    """``shop/web:t`` -> ``web:t``."""
    name, at, digest = image.partition("@")
    return name.rsplit("/", 1)[-1] + at + digest


def no_date(release: str) -> str:
    """``20261201T064600Z-tag`` -> ``064600Z-tag`` (the time and the tag)."""
    return _RELEASE_DATE.sub("", release)


def keep_end(text: str, width: int) -> str:
    """The last ``width`` characters, with an ellipsis in front when cut."""
    if len(text) <= width:
        return text
    return ELLIPSIS + text[len(text) - max(1, width - 1):]


Rows = list[list[str]]
Step = Callable[[Rows], None]


def each(col: int, fn: Callable[[str], str]) -> Step:
    """A step that shortens every cell of column ``col`` with ``fn``."""

    def step(rows: Rows) -> None:
        for r in rows:
            r[col] = fn(r[col])

    return step


def fit_columns(header: Sequence[str], rows: Rows, width: int, steps: Sequence[Step],
                shrink: Sequence[int], gap: int = 3) -> Rows:
    """Apply ``steps`` in order until the table is at most ``width`` wide
    (columns separated by ``gap``); then cut the ``shrink`` columns from the
    left, widest first. Returns new rows; the caller's are left alone."""
    rows = [list(r) for r in rows]

    def widths() -> list[int]:
        return [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def total() -> int:
        return sum(widths()) + gap * (len(header) - 1)

    for step in steps:
        if total() <= width:
            return rows
        step(rows)
    while total() > width:
        w = widths()
        col = max(shrink, key=lambda i: w[i])
        target = max(len(header[col]), 8, w[col] - (total() - width))
        if target >= w[col]:
            break  # cannot get narrower: rich folds the rest
        for r in rows:
            r[col] = keep_end(r[col], target)
    return rows


STATUS_HEADER = ("host", "release", "service", "state", "health", "image")


def status_rows(hosts: Sequence[str], rows: Mapping[str, Sequence[ContainerRow]],
                releases: Mapping[str, str | None]) -> Rows:
    """One row per container of each host (by name, in order), full values."""
    out: Rows = []
    for h in hosts:
        for r in rows.get(h, []):
            state = r.status + (f" ({r.exit_code})" if r.status == "exited" else "")
            out.append([h, releases.get(h) or "-", r.service, state, r.health or "-",
                        r.image])
    return out


def _release_tag_shown_by_image(rel: int, img: int) -> Step:
    """``064600Z-<tag>`` -> ``064600Z`` where the row's image has that tag
    (ship tags every image with the release's tag): the image column shows it."""

    def step(rows: Rows) -> None:
        for r in rows:
            time, dash, tag = r[rel].partition("-")
            if dash and no_digest(r[img]).endswith(f":{tag}"):
                r[rel] = time

    return step


def status_table(title: str, hosts: Sequence[str],
                 rows: Mapping[str, Sequence[ContainerRow]],
                 releases: Mapping[str, str | None], width: int) -> Table:
    """``deployer status`` as a table at most ``width`` columns wide; the
    host and its release are named on the host's first row."""
    from rich import box
    from rich.table import Table

    from deployer.secrets import mask

    host, rel, img = (STATUS_HEADER.index(c) for c in ("host", "release", "image"))
    fitted = fit_columns(
        STATUS_HEADER, status_rows(hosts, rows, releases), width,
        steps=[each(img, short_digest), each(img, no_registry), each(rel, no_date),
               _release_tag_shown_by_image(rel, img), each(img, no_digest),
               each(img, last_segment)],
        shrink=[rel, img],
    )
    t = Table(title=mask(title), title_justify="left", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False, header_style="bold")
    for name in STATUS_HEADER:
        t.add_column(name, no_wrap=name not in ("release", "image"), overflow="fold")
    previous = None
    for r in fitted:
        same_host = r[host] == previous
        previous = r[host]
        cells = [("" if same_host and i in (host, rel) else c) for i, c in enumerate(r)]
        t.add_row(*(mask(c) for c in cells))
    return t
