"""Image prune's three host commands against the real local Docker engine.

The unit tests feed :mod:`deployer.prune` hand-written listings; this runs
the listing and removal scripts themselves, so a Go template docker rejects
(``join`` on ``docker image inspect``'s untyped lists did, and prune then
silently removed nothing) fails here rather than on a user's disk.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import prune
from deployer.commands import prune as cmds
from deployer.commands.base import Command

REPO = "deployer-test/prune-listing"
PROJECT = "deployer-test-prune"


def run(command: Command) -> str:
    p = subprocess.run(list(command.argv), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def image_ids() -> dict[str, str]:
    out = subprocess.run(["docker", "images", "--no-trunc", "--format",
                          "{{.Tag}} {{.ID}}", REPO], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split() for line in out.splitlines())  # type: ignore[misc]


@pytest.fixture()
def images(tmp_path: Path) -> Iterator[dict[str, str]]:
    for tag in ("a", "b", "c"):
        ctx = tmp_path / tag
        ctx.mkdir()
        (ctx / "f").write_text(tag)
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
        subprocess.run(["docker", "build", "-q", "-t", f"{REPO}:{tag}", str(ctx)],
                       check=True, capture_output=True)
    subprocess.run(["docker", "create", "--label", f"com.docker.compose.project={PROJECT}",
                    f"{REPO}:b", "/nothing"], check=True, capture_output=True)
    yield image_ids()
    left = subprocess.run(["docker", "ps", "-aq", "--filter",
                           f"label=com.docker.compose.project={PROJECT}"],
                          capture_output=True, text=True).stdout.split()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    for tag in ("a", "b", "c"):
        subprocess.run(["docker", "rmi", "-f", f"{REPO}:{tag}"], capture_output=True)


def test_listing_names_every_image_with_its_tags_and_the_projects_containers(
        images: dict[str, str]) -> None:
    listed, containers = prune.parse_listing(run(cmds.list_images(PROJECT, [REPO])))
    assert {i.id: i.tags for i in listed} == {
        images[t]: (f"{REPO}:{t}",) for t in ("a", "b", "c")}
    assert [(c.image, c.state) for c in containers] == [(images["b"], "created")]


def test_what_no_kept_release_names_is_removed_with_its_stopped_container(
        images: dict[str, str]) -> None:
    listed, containers = prune.parse_listing(run(cmds.list_images(PROJECT, [REPO])))
    d = prune.decide(listed, containers, {f"{REPO}:a"})
    assert {i.id for i in d.images} == {images["b"], images["c"]}
    assert len(d.containers) == 1
    run(cmds.remove(d.containers, [i.id for i in d.images]))
    assert image_ids() == {"a": images["a"]}
    assert prune.parse_listing(run(cmds.list_images(PROJECT, [REPO])))[1] == []

