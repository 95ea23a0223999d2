"""``deployer plan`` as printed: ship's own steps in ship's order, and what
it assumed about the host."""

from __future__ import annotations

import json
import re

from conftest import MakeProject
from test_cli import deployer


def test_plan_says_what_it_assumes_and_lists_ship_s_steps_in_order(
        make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "plan", "prod", "--limit", "web-1", "--no-files")
    assert p.returncode == 0, p.stderr
    assert ("  assuming: first release (nothing deployed yet), Docker present with compose "
            "v2, SSH user not root (sudo -n where needed) and in the docker group") in p.stdout
    numbered = [re.sub(r"^mark \S+ as", "mark <release> as", m.group(1).split(" (")[0])
                for ln in p.stdout.splitlines() if (m := re.match(r"\s+\d+\. (.*)", ln))]
    assert numbered == [
        "read current release", "check docker", "check deploy dir owner",
        "prepare deploy dir", "lock", "claim deploy dir", "clean up stale uploads",
        "check free space", "upload release", "create shared dirs", "registry login",
        "pull images", "mark <release> as being applied", "compose up", "wait healthy",
        "switch current", "prune releases", "prune images", "remove registry credentials",
        "unlock", "audit log",
    ]
    assert "       $ sudo -n -- sh -c <3-line script: prepare /opt/shop> sh /opt/shop deploy" \
        in p.stdout


def test_plan_json_has_the_assumption_and_every_command(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "-o", "json", "plan", "prod", "--limit", "web-2")
    data = json.loads(p.stdout)
    assert "not root" in data["assuming"]
    steps = {s["step"]: s for s in data["hosts"][0]["steps"]}
    assert steps["read current release"]["note"].startswith("unchanged if its manifest")
    assert steps["remove registry credentials"]["commands"] == [
        "rm -rf -- /opt/shop/.docker-config-" + data["release"]]
    assert [c.split(" ")[0] for c in steps["upload release"]["commands"]] == [
        "sh", "sh"]  # the release as one tar stream, then the rename
