"""Two environments on one host: the owner file, the claim script (run for
real under ``sh``), the refusals, and the inventory keys behind them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import BASIC_INVENTORY, ENV, MakeProject

from deployer.commands import release
from deployer.commands.base import Command
from deployer.config import Project, load_project
from deployer.deploy import ownership
from deployer.errors import ConfigError
from deployer.remote.base import Result


def sh(cmd: Command) -> str:
    res = subprocess.run(["sh", "-c", cmd.shell(as_root=True)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def env_project(make_project: MakeProject, env: str, extra: str = "") -> Project:
    root = make_project({f"inventories/{env}.yaml": BASIC_INVENTORY + extra})
    return load_project(root, env, ENV)


def test_defaults_keep_the_app_as_project_and_opt_app_as_dir(make_project: MakeProject) -> None:
    p = load_project(make_project(), "prod", ENV)
    assert (p.project_name, p.deploy_dir) == (p.app, f"/opt/{p.app}") == ("shop", "/opt/shop")


def test_inventory_gives_deploy_dir_and_project_name(make_project: MakeProject) -> None:
    p = env_project(make_project, "staging",
                    "deploy_dir: /srv/shop-staging/\nproject_name: shop_staging\n")
    assert p.deploy_dir == "/srv/shop-staging"
    assert p.project_name == "shop_staging"


@pytest.mark.parametrize(("extra", "says"), [
    ("deploy_dir: /etc\n", "system directory"),
    ("deploy_dir: /opt/../..\n", "must not contain '..'"),
    ("deploy_dir: opt/x\n", "absolute path"),
    ("project_name: Shop\n", "not a valid compose project name"),
    ("project_name: '-x'\n", "not a valid compose project name"),
    ("project_name: 'a b'\n", "not a valid compose project name"),
])
def test_bad_inventory_keys_are_config_errors(make_project: MakeProject, extra: str,
                                              says: str) -> None:
    with pytest.raises(ConfigError) as e:
        env_project(make_project, "staging", extra)
    assert says in e.value.message
    assert "inventories/staging.yaml" in e.value.message


def test_compose_and_health_use_the_project_name(make_project: MakeProject) -> None:
    from deployer.commands import health
    from deployer.commands.compose import Compose

    p = env_project(make_project, "staging", "project_name: shop-staging\n")
    base = Compose(app=p.project_name).base
    assert base[base.index("-p") + 1] == "shop-staging"
    assert "com.docker.compose.project=shop-staging" in health.containers(p.project_name).argv


def test_claim_writes_the_owner_once_and_the_reads_show_it(
        tmp_path: Path, make_project: MakeProject) -> None:
    d = tmp_path / "app"
    prod = env_project(make_project, "prod", f"deploy_dir: {d}\n")
    sh(release.prepare(str(d), "root"))
    first = ownership.parse_claim(sh(ownership.claim_command(prod)))
    assert dict(first) == {"app": "shop", "env": "prod", "project": "shop"}
    assert (d / ownership.OWNER_FILE).read_text() == "app=shop\nenv=prod\nproject=shop\n"
    state = release.parse_state(sh(release.read_state(str(d))))
    assert state.owner == first
    assert release.parse_releases(sh(release.list_releases(str(d)))).owner == first
    ownership.check(prod, "web-1", state.owner)  # ours: fine

    staging = env_project(make_project, "staging", f"deploy_dir: {d}\n")
    again = ownership.parse_claim(sh(ownership.claim_command(staging)))
    assert again == first  # the file is not overwritten
    assert (d / ownership.OWNER_FILE).read_text() == "app=shop\nenv=prod\nproject=shop\n"
    err = ownership.refusal(staging, "web-1", again)
    assert err is not None
    assert f"{d} on web-1 belongs to environment prod of app shop" in err.message
    assert "not to staging of shop" in err.message and "nothing was changed" in err.message
    assert "give staging its own deploy_dir and project_name" in (err.hint or "")


def test_same_env_other_project_name_would_orphan_volumes(make_project: MakeProject) -> None:
    p = env_project(make_project, "prod", "project_name: shop-prod\n")
    err = ownership.refusal(p, "web-1", (("app", "shop"), ("env", "prod"), ("project", "shop")))
    assert err is not None and "orphaned" in err.message
    assert "keep project_name shop" in (err.hint or "")
    assert ownership.refusal(p, "web-1", ()) is None  # no owner yet


def found(*containers: tuple[str, str], realdir: str = "",
          owners: tuple[tuple[str, str], ...] = ()) -> ownership.HostProjects:
    return ownership.HostProjects(realdir, containers, owners)


def test_claim_refused_when_another_dir_runs_this_project(make_project: MakeProject) -> None:
    staging = env_project(make_project, "staging", "deploy_dir: /opt/shop-staging\n")
    host = found(("shop", "/opt/shop/releases/r1"), owners=(("/opt/shop", "prod"),))
    err = ownership.claim_refusal(staging, "web-1", host)
    assert err is not None
    assert "compose project shop on web-1 is already used by environment prod in /opt/shop" \
        in err.message
    assert "project_name" in (err.hint or "")
    # with a project of its own, the same host is fine
    own = env_project(make_project, "staging",
                      "deploy_dir: /opt/shop-staging\nproject_name: shop-staging\n")
    assert ownership.claim_refusal(own, "web-1", host) is None


def test_claim_refused_when_this_dir_runs_another_project(make_project: MakeProject) -> None:
    """An existing deployment (no owner file yet) runs as project shop: a
    new project_name would orphan its volumes."""
    p = env_project(make_project, "prod", "project_name: shop-prod\n")
    err = ownership.claim_refusal(p, "web-1", found(("shop", "/opt/shop/releases/r1")))
    assert err is not None and "runs compose project shop" in err.message
    assert "set project_name: shop" in (err.hint or "")


def test_claim_of_an_existing_deployment_keeps_it(make_project: MakeProject) -> None:
    p = load_project(make_project(), "prod", ENV)
    host = found(("shop", "/srv/real/shop/releases/r1"), ("other", "/opt/other/releases/x"),
                 realdir="/srv/real/shop")  # /opt/shop is a symlink
    assert ownership.claim_refusal(p, "web-1", host) is None


def test_containers_command_parses_its_own_output(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    cmd = ownership.containers_command(str(d), sudo=False)
    assert cmd.argv[-1] == ('{{.Label "com.docker.compose.project"}} '
                            '{{.Label "com.docker.compose.project.working_dir"}}')
    out = ownership.parse_containers(
        f"realdir={d}\ncontainer=shop /opt/shop/releases/r1\nowner=/opt/shop env=prod\n")
    assert out == found(("shop", "/opt/shop/releases/r1"), realdir=str(d),
                        owners=(("/opt/shop", "prod"),))


class LocalShell:
    """Runs a session's commands with the local sh (the deploy dir is a tmp dir)."""

    def run(self, command: Command, *, check: bool = True,
            timeout: float | None = None) -> Result:
        p = subprocess.run(["sh", "-c", command.shell(as_root=True)], input=command.stdin,
                           capture_output=True, text=True, check=False)
        res = Result(command, p.returncode, p.stdout, p.stderr)
        assert res.ok or not check, p.stderr
        return res


def test_lock_unlock_and_status_refuse_another_environments_dir(
        tmp_path: Path, make_project: MakeProject) -> None:
    from deployer.deploy.hostrun import HostRun
    from deployer.deploy.session import HostSession
    from deployer.errors import HostError
    from deployer.report.reporters import PlainReporter

    d = tmp_path / "app"
    prod = env_project(make_project, "prod", f"deploy_dir: {d}\n")
    sh(release.prepare(str(d), "root"))
    sh(ownership.claim_command(prod))
    staging = env_project(make_project, "staging", f"deploy_dir: {d}\n")
    host = prod.hosts[0]

    def session(p: Project) -> HostSession:
        return HostSession(p, host, LocalShell(), HostRun(host.name, PlainReporter()))  # type: ignore[arg-type]

    assert session(prod).read_owned_state().owner == (
        ("app", "shop"), ("env", "prod"), ("project", "shop"))
    with pytest.raises(HostError, match="belongs to environment prod of app shop"):
        session(staging).read_owned_state()
