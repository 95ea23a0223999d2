"""Which environment a deploy dir belongs to, so two environments of one app
on one host cannot clobber each other (review item 6).

A deploy dir records its owner in ``<deploy_dir>/.deployer-owner``: three
lines, ``app=``, ``env=`` and ``project=`` (the compose project name). The
first ship into a dir claims it, under the deploy lock; every later ship,
and every rollback, reads the file in its first round trip (the state read,
the release list) and is refused before anything changes when it names
another environment, app or compose project:

- same deploy dir, other environment: the ship would replace that
  environment's containers and share its volumes;
- same environment, other ``project_name``: compose would start a second set
  of containers and volumes, orphaning the ones that hold the data.

A dir without an owner file (the first ship, or one made before these files)
is claimed only after a look at the host's compose containers
(:func:`containers_command`): refused when another deploy dir already runs
this compose project (its ``--remove-orphans`` would remove the other's
services), or when this dir's containers run under another project (the
data is in that project's volumes). So a deployment from before
``project_name`` keeps project ``<app>``, and giving two environments
different ``deploy_dir`` *and* ``project_name`` is what lets them run side
by side.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deployer.commands.base import Command, Script
from deployer.commands.health import PROJECT_LABEL, WORKDIR_LABEL
from deployer.config import Project
from deployer.errors import HostError

if TYPE_CHECKING:
    from deployer.deploy.session import HostSession

OWNER_FILE = ".deployer-owner"
EXIT_OWNED = 4

STEP = "check deploy dir owner"


def hint(project: Project) -> str:
    return (f"give {project.env} its own deploy_dir and project_name in "
            f"inventories/{project.env}.yaml (README: two environments on one host)")


def owner_of(project: Project) -> dict[str, str]:
    """The owner record this project writes."""
    return {"app": project.app, "env": project.env, "project": project.project_name}


def refusal(project: Project, host: str, owner: Iterable[tuple[str, str]]) -> HostError | None:
    """Why ``project`` must not deploy into its deploy dir on ``host``, whose
    owner file says ``owner`` (empty: no owner yet), or None."""
    have = dict(owner)
    if not have:
        return None
    where = f"{project.deploy_dir} on {host}"
    o_app, o_env, o_proj = have.get("app", "?"), have.get("env", "?"), have.get("project", "?")
    if o_app != project.app or o_env != project.env:
        return HostError(
            host, STEP,
            f"{where} belongs to environment {o_env} of app {o_app} (compose project "
            f"{o_proj}), not to {project.env} of {project.app}: shipping here would replace "
            "its containers and share its volumes; nothing was changed",
            hint(project))
    if o_proj != project.project_name:
        return HostError(
            host, STEP,
            f"{where} runs {project.env} as compose project {o_proj}, and project_name says "
            f"{project.project_name}: its containers and volumes (the data) would be "
            "orphaned; nothing was changed",
            f"keep project_name {o_proj} for {project.deploy_dir}, or give {project.env} a "
            "new deploy_dir")
    return None


def check(project: Project, host: str, owner: Iterable[tuple[str, str]]) -> None:
    """Raise the :func:`refusal`, if any."""
    err = refusal(project, host, owner)
    if err is not None:
        raise err


# The compose containers on the host, by project and working dir (compose v1
# and v2 both set the labels), and the owner file of each deploy dir they
# run in (the working dir is <deploy_dir>/releases/<id>).
_CONTAINERS = """
printf 'realdir=%s\\n' "$(readlink -f -- "$1" 2>/dev/null)"
docker ps -a --filter "label=$2" --format "$3" 2>/dev/null | LC_ALL=C sort -u |
while IFS= read -r line; do
  printf 'container=%s\\n' "$line"
  wd=${line#* }
  base=${wd%/releases/*}
  if [ "$base" != "$wd" ] && [ -f "$base/.deployer-owner" ]; then
    printf 'owner=%s %s\\n' "$base" "$(grep '^env=' "$base/.deployer-owner" | head -n 1)"
  fi
done
exit 0
""".strip()


def containers_command(deploy_dir: str, *, sudo: bool) -> Command:
    """Every compose container's project and working dir (one round trip)."""
    fmt = f'{{{{.Label "{PROJECT_LABEL}"}}}} {{{{.Label "{WORKDIR_LABEL}"}}}}'
    return Script(_CONTAINERS, args=(deploy_dir, WORKDIR_LABEL, fmt), sudo=sudo,
                  description="list compose projects on the host").command()


@dataclass(frozen=True)
class HostProjects:
    """What :func:`containers_command` found."""

    realdir: str
    containers: tuple[tuple[str, str], ...]  # (project, working dir)
    owners: tuple[tuple[str, str], ...]  # (deploy dir, env)


def parse_containers(stdout: str) -> HostProjects:
    realdir = ""
    containers: list[tuple[str, str]] = []
    owners: list[tuple[str, str]] = []
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "realdir":
            realdir = value
        elif key == "container" and " " in value:
            proj, _, wd = value.partition(" ")
            containers.append((proj, wd))
        elif key == "owner":
            base, _, env = value.partition(" ")
            owners.append((base, env.partition("=")[2]))
    return HostProjects(realdir, tuple(containers), tuple(owners))


def _inside(path: str, dirs: Iterable[str]) -> bool:
    path = posixpath.normpath(path)
    return any(d and (path == d or path.startswith(d.rstrip("/") + "/")) for d in dirs)


def claim_refusal(project: Project, host: str, found: HostProjects) -> HostError | None:
    """Why ``project`` must not claim its (unowned) deploy dir, given the
    compose containers on the host, or None."""
    mine = (project.deploy_dir, found.realdir)
    where = f"{project.deploy_dir} on {host}"
    owners = dict(found.owners)
    for proj, wd in found.containers:
        inside = _inside(wd, mine)
        if proj == project.project_name and not inside:
            base = wd.rsplit("/releases/", 1)[0]
            env = owners.get(base)
            who = f"environment {env} in {base}" if env else f"the deployment in {base}"
            return HostError(
                host, STEP,
                f"compose project {proj} on {host} is already used by {who} (a container "
                f"working in {wd}); {project.env} in {project.deploy_dir} would remove its "
                "services and share its volumes; nothing was changed", hint(project))
        if inside and proj != project.project_name:
            return HostError(
                host, STEP,
                f"{where} runs compose project {proj}, and {project.env} would run as "
                f"{project.project_name}: its containers and volumes (the data) would be "
                "orphaned; nothing was changed",
                f"set project_name: {proj} in inventories/{project.env}.yaml")
    return None


_CLAIM = """
set -e
f="$1/.deployer-owner"
if [ -f "$f" ]; then
  sed 's/^/owner_/' "$f" | head -n 3
  exit 0
fi
printf 'app=%s\\nenv=%s\\nproject=%s\\n' "$2" "$3" "$4" > "$f.tmp"
sync -- "$f.tmp" 2>/dev/null || sync
mv -f -- "$f.tmp" "$f"
sed 's/^/owner_/' "$f"
""".strip()


def claim_command(project: Project) -> Command:
    """Write the owner file unless there is one; print what it says. Run
    under the deploy lock, so two first ships cannot both claim."""
    o = owner_of(project)
    return Script(_CLAIM, args=(project.deploy_dir, o["app"], o["env"], o["project"]),
                  description="claim the deploy dir").command()


def parse_claim(stdout: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(
        (k[len("owner_"):], v) for k, _, v in (line.partition("=") for line in stdout.splitlines())
        if k.startswith("owner_")))


def guard_unowned(session: HostSession) -> None:
    """Before a first claim (no owner file): refuse when the host's compose
    containers show another user of this project or another project in this
    dir. Needs Docker (run after ``ensure_docker``), changes nothing."""
    facts = session.probe()
    with session.run.step(STEP):
        res = session.ex.run(containers_command(session.dir, sudo=facts.docker_sudo))
    err = claim_refusal(session.project, session.host.name, parse_containers(res.stdout))
    if err is not None:
        raise err


def claim(session: HostSession) -> None:
    """Under the deploy lock: write the owner file, or, when another run
    wrote one since the state read, refuse if it is not ours."""
    with session.run.step("claim deploy dir"):
        res = session.ex.run(claim_command(session.project))
    check(session.project, session.host.name, parse_claim(res.stdout))
