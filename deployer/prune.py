"""Which of the app's images and stopped containers a host no longer needs.

Kept releases' manifests record their images (pinned ``repo:tag@digest``).
An image of the app's repositories stays when a kept release names it (by
digest or by tag) or a running container uses it; every other one goes,
with the stopped containers of the compose project that use it. When a kept
release's manifest cannot be read, nothing is pruned: ``rollback`` (and
``registry: none``) must find every kept release's images on the host.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from deployer.commands import prune as cmds
from deployer.commands.diskspace import by_digest
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.errors import HostError
from deployer.remote.base import Executor
from deployer.report.model import HostReport

Job = Callable[[Executor, HostRun, Host], HostReport]

LIVE_STATES = ("running", "restarting", "paused")


@dataclass(frozen=True)
class Image:
    id: str
    digests: tuple[str, ...]  # repo@sha256:...
    tags: tuple[str, ...]  # repo:tag


@dataclass(frozen=True)
class Container:
    id: str
    image: str  # image id
    state: str


@dataclass(frozen=True)
class Decision:
    containers: list[str]
    images: list[Image]
    kept: list[Image]


class CannotTell(Exception):
    """A kept release's manifest is missing or unreadable."""


def parse_manifests(stdout: str) -> dict[str, list[str]]:
    """release id -> the image refs its manifest records."""
    out: dict[str, list[str]] = {}
    for chunk in stdout.split(cmds.MANIFESTS_MARK)[1:]:
        rid, _, body = chunk.partition("\n")
        try:
            manifest = json.loads(body)
            images = manifest["images"]
            if not isinstance(images, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CannotTell(f"release {rid.strip()} has no readable manifest") from None
        out[rid.strip()] = [str(v) for v in images.values()]
    return out


def parse_listing(stdout: str) -> tuple[list[Image], list[Container]]:
    """The images and containers ``list_images`` printed. An image or
    container docker could not inspect makes the listing :class:`CannotTell`:
    pruning from half a listing could remove what a kept release needs."""
    if cmds.UNREADABLE_MARK in stdout:
        raise CannotTell("docker could not inspect every image and container")
    head, _, tail = stdout.partition(cmds.CONTAINERS_MARK)
    images = []
    for line in head.splitlines():
        parts = line.split(" ")
        if len(parts) >= 1 and parts[0].startswith("sha256:"):
            digests = tuple(d for d in (parts[1] if len(parts) > 1 else "").split(",") if d)
            tags = tuple(t for t in (parts[2] if len(parts) > 2 else "").split(",") if t)
            images.append(Image(parts[0], digests, tags))
    containers = []
    for line in tail.splitlines():
        parts = line.split()
        if len(parts) == 3:
            containers.append(Container(*parts))
    return images, containers


def decide(images: list[Image], containers: list[Container], keep_refs: set[str]) -> Decision:
    """What goes: images no kept release names and no live container uses,
    and the stopped containers that use them."""
    keep_digests = {by_digest(r) for r in keep_refs if "@" in r}
    keep_tags = {r.split("@", 1)[0] for r in keep_refs}
    live = {c.image for c in containers if c.state in LIVE_STATES}
    gone: list[Image] = []
    kept: list[Image] = []
    for img in images:
        needed = (set(img.digests) & keep_digests or set(img.tags) & keep_tags
                  or img.id in live)
        (kept if needed else gone).append(img)
    gone_ids = {i.id for i in gone}
    stopped = [c.id for c in containers if c.image in gone_ids and c.state not in LIVE_STATES]
    return Decision(stopped, gone, kept)


def repositories(project: Project) -> list[str]:
    """The app's repositories as image refs name them (``server/repo``)."""
    from deployer.plan import image_refs

    return sorted({ref.rsplit(":", 1)[0] for ref in image_refs(project, "x").values()})


def prune_images(ex: Executor, run: HostRun, project: Project, *, sudo: bool) -> Decision | None:
    """Remove the app's images and stopped containers no kept release uses
    on ``run``'s host. None when nothing was pruned because a kept release's
    images cannot be told (logged)."""
    repos = repositories(project)
    if not repos:
        return Decision([], [], [])
    res = ex.run(cmds.read_manifests(project.deploy_dir))
    try:
        keep = {ref for refs in parse_manifests(res.stdout).values() for ref in refs}
    except CannotTell as e:
        run.log(f"images not pruned: {e}")
        return None
    try:
        images, containers = parse_listing(
            ex.run(cmds.list_images(project.project_name, repos, sudo=sudo)).stdout)
    except CannotTell as e:
        run.log(f"images not pruned: {e}")
        return None
    d = decide(images, containers, keep)
    if d.images or d.containers:
        r = ex.run(cmds.remove(d.containers, [i.id for i in d.images], sudo=sudo), check=False)
        if r.exit_code != 0:
            run.log(f"some images not removed: {(r.stderr or r.stdout).strip()[-300:]}")
    return d


def prune_after_switch(ex: Executor, run: HostRun, project: Project, *, sudo: bool) -> None:
    """ship's prune: a failure is logged; the host is deployed all the same."""
    try:
        d = prune_images(ex, run, project, sudo=sudo)
    except HostError as e:
        run.log(f"images not pruned: {e.reason}")
        return
    if d is not None and d.images:
        run.log(f"pruned {len(d.images)} image(s) no kept release uses")


def prune_job(project: Project, who: str, when: str, run_id: str) -> Job:
    """``deployer prune ENV`` on one host, under the deploy lock (a ship
    cannot be between pull and manifest meanwhile)."""

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        from deployer.deploy.session import HostSession, LockHeld

        session = HostSession(project, host, ex, run)
        facts = session.probe()
        try:
            with session.locked(who, when, run_id) as current, run.step("prune images"):
                d = prune_images(ex, run, project, sudo=facts.docker_sudo)
        except LockHeld as e:
            return run.report("failed", release=None, error=e.reason)
        if d is None:
            return run.report("failed", release=current,
                              error="a kept release's manifest cannot be read; nothing pruned")
        return run.report("ok", release=current,
                          detail=f"removed {len(d.images)} images and {len(d.containers)} "
                          f"stopped containers; kept {len(d.kept)} images")

    return job
