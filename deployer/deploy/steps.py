"""The steps ``ship`` runs on a host, as data, for ``plan`` to print.

Built from the same command builders :mod:`deployer.deploy.ship` runs, with
what is only known on the host (Docker present? compose v1 or v2? sudo?)
assumed at its common value and said so.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.commands import health, lock, registry, release
from deployer.commands.base import Command
from deployer.commands.compose import Compose
from deployer.commands.facts import facts_script
from deployer.config import Project
from deployer.plan import MANIFEST, HostPlan


@dataclass
class Step:
    name: str
    commands: list[Command]


def ship_steps(project: Project, hp: HostPlan) -> list[Step]:
    d = project.deploy_dir
    rid = hp.release
    env: tuple[tuple[str, str], ...] = ()
    steps = [
        Step("check docker (bootstrap if missing: `deployer bootstrap` shows how)",
             [facts_script().command()]),
        Step("read current release (unchanged if its manifest fingerprint is "
             f"{hp.fingerprint[:12]})", [release.read_state(d)]),
        Step("lock", [lock.acquire(d, who="<you>", when="<now>", release=rid)]),
        Step("clean up stale uploads", [release.remove_partials(d),
                                       registry.remove_stale_configs(d)]),
        Step(
            f"upload release (one tar stream: {len(hp.files)} files + {MANIFEST}, "
            f"{sum(f.length for f in hp.files)} bytes)",
            [release.receive_release(d, rid), release.finalize(d, rid)],
        ),
    ]
    if hp.compose.shared_dirs:
        steps.append(Step("create shared dirs", [release.ensure_shared(d, hp.compose.shared_dirs)]))
    reg = project.registry
    if reg.username and reg.password:
        login = registry.registry_login(d, rid, server=reg.server, username=reg.username,
                                        password=reg.password)
        steps.append(Step("registry login (password on stdin)", [login.login]))
        env = login.env
    compose = Compose(project.app, project.config.compose_file, "v2", False,
                      release.release_dir(d, rid), env, tuple(hp.compose.profiles))
    steps += [
        Step("pull images", [compose.pull()]),
        Step("compose up", [compose.up()]),
        Step(f"wait healthy (up to {project.config.health_timeout:.0f}s; services: "
             f"{', '.join(hp.compose.services)})", [health.containers(project.app)]),
        Step("switch current", [release.switch_current(d, rid)]),
        Step(f"prune releases (keep {project.config.keep_releases})",
             [release.prune(d, project.config.keep_releases)]),
        Step("unlock", [lock.release(d, rid)]),
    ]
    return steps
