"""``deployer plan ENV --diff`` with ``target: swarm``: print
:class:`deployer.swarm.diff.StackDiff` (text, or ``-o json`` as is)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.cli.diff_output import _file, host_head
from deployer.cli.output import out, raw_json

if TYPE_CHECKING:
    from deployer.swarm.diff import StackDiff


def print_stack_diff(d: StackDiff, as_json: bool) -> None:
    if as_json:
        raw_json(d.data())  # masked before serialising
        return
    out(f"[bold]plan --diff[/bold] {d.app} -> {d.env}: release {d.release} (tag {d.tag}), "
        f"stack on the swarm of {d.host}")
    for name in d.unpinned:
        out(f"  image {name}: {d.images[name]} is not in the registry yet; "
            "ship builds, pushes and pins it", markup=False)
    out("")
    if not host_head(d.host, f"first manager, {d.address}", d.current, error=d.error,
                     unchanged=d.unchanged, first_release=d.first_release,
                     same_fingerprint=d.same_fingerprint):
        return
    changed = [f for f in d.files if f.status != "unchanged"]
    if changed:
        out("  files:")
        for f in changed:
            _file(f)
    elif d.files:
        out(f"  files: all {len(d.files)} unchanged")
    for i in d.image_changes:
        out(f"  image {i.name}: {i.old or '-'} -> {i.new or '-'}", markup=False)
    for o in d.objects:
        out(f"  create {o}", markup=False)
    if d.create or d.update or d.remove:
        out("  services (deployer's prediction from the stack files):")
        for verb, group in (("create", d.create), ("update", d.update), ("remove", d.remove)):
            for svc, why in sorted(group.items()):
                out(f"    {verb:<7} {svc}: {why}", markup=False)
    elif not d.same_fingerprint:
        out("  services: none created, updated or removed (deployer's prediction)")
    if d.drift:
        out("  [yellow]drift[/yellow] (the swarm no longer runs the current release):")
        for svc, what in sorted(d.drift.items()):
            out(f"    service {svc}: {what}", markup=False)
