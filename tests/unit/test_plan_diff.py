"""``plan --diff``: the state command (exact argv, and the script run for
real by ``sh`` against a release tree on disk), its parser, and the pure
comparison of a plan with what a host holds (files, secrets, images,
services, drift)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BASIC_COMPOSE, BASIC_PROJECT, ENV, MakeProject

from deployer.commands.base import Command
from deployer.commands.health import INSPECT_TEMPLATE, ContainerRow
from deployer.commands.inspect import (
    CONTENT_CAP,
    OUTPUT_BUDGET,
    Inspection,
    RemoteFile,
    inspect_host,
    parse_inspection,
)
from deployer.config import Project, load_project
from deployer.deploy.diff import (
    container_drift,
    file_diff,
    host_diff,
    predict_services,
    resolve_images,
    sentinel_files,
    uses_release_paths,
    wanted,
)
from deployer.plan import HostPlan, Plan, build_plan, image_refs
from deployer.release_files import ReleaseFile

SITE = """\
greeting={{ greeting }}
host={{ host.name }}
password={{ db_password }}
end
"""

# conftest's project plus a worker that mounts nothing of the release, and a
# file that is not 0600 (so its diff is shown) holding a secret.
COMPOSE = BASIC_COMPOSE + """\
  worker:
    image: {{ images.web }}
    command: ["work"]
"""

PROJECT = BASIC_PROJECT + """\
  - template: templates/site.conf.j2
    dest: conf/site.conf
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def project(make_project: MakeProject, environ: dict[str, str] | None = None,
            **files: str) -> Project:
    root = make_project({"deployer.yaml": PROJECT, "templates/site.conf.j2": SITE,
                         "templates/docker-compose.yaml.j2": COMPOSE, **files})
    return load_project(root, "prod", {**ENV, **(environ or {})})


def plan_of(p: Project, release: str = "r1", limit: str | None = "web-1") -> Plan:
    return build_plan(p, p.select(limit), image_refs(p, "abc123"), release, "abc123")


def materialize(deploy: Path, hp: HostPlan, release: str = "r0") -> Path:
    """Write ``hp`` as the host's current release, as ship would."""
    rel = deploy / "releases" / release
    for f in hp.files:
        target = rel / f.dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        os.chmod(target, f.mode)
    (rel / "manifest.json").write_bytes(hp.manifest_bytes("t@x", "2026-12-01T00:00:00Z"))
    (deploy / "current").symlink_to(f"releases/{release}")
    return deploy


def run_script(cmd: Command) -> str:
    p = subprocess.run(["sh", "-c", cmd.shell()], input=cmd.stdin, capture_output=True,
                       text=True, check=True, timeout=60)
    return p.stdout


def inspect_dir(deploy: Path, hp: HostPlan, rows: list[ContainerRow] | None = None
                ) -> Inspection:
    """The real script against ``deploy``; containers replaced by ``rows``
    (the local engine's containers are not the test's)."""
    ins = parse_inspection(run_script(inspect_host(str(deploy), "shop", wanted(hp))))
    return dataclasses.replace(ins, docker="ok", containers=rows or [])


def row(service: str, status: str = "running", image: str = "", exit_code: int = 0,
        policy: str = "unless-stopped") -> ContainerRow:
    return ContainerRow(name=f"shop-{service}-1", service=service, status=status,
                        exit_code=exit_code, image=image, restart_policy=policy)


def running(hp: HostPlan) -> list[ContainerRow]:
    import yaml

    svcs = yaml.safe_load(hp.compose.text)["services"]
    return [row(s, image=svcs[s]["image"]) for s in svcs]


# -- the builder ------------------------------------------------------------


def test_builder_is_one_script_with_values_as_arguments_and_hashes_on_stdin() -> None:
    c = inspect_host("/opt/shop", "shop", [("docker-compose.yaml", "a" * 64),
                                           ("conf/site conf", "b" * 64)])
    assert c.argv[:2] == ("sh", "-c")
    assert c.argv[3:] == ("sh", "/opt/shop", str(CONTENT_CAP + 1), str(OUTPUT_BUDGET),
                          "com.docker.compose.project=shop", INSPECT_TEMPLATE)
    assert (CONTENT_CAP, OUTPUT_BUDGET) == (262144, 4194304)
    assert c.stdin == f"{'a' * 64} docker-compose.yaml\n{'b' * 64} conf/site conf\n"
    assert not c.sudo and c.ok_codes == (0,)
    assert "/opt/shop" not in c.argv[2]  # never spliced into the script
    assert "<<< ******" in c.display()


@pytest.mark.parametrize("dest", ["../etc/passwd", "/etc/passwd", "a/../../b", "a\nb", ""])
def test_builder_refuses_paths_outside_the_release(dest: str) -> None:
    with pytest.raises(ValueError):
        inspect_host("/opt/shop", "shop", [(dest, "a" * 64)])


def test_builder_refuses_what_is_not_a_sha256() -> None:
    with pytest.raises(ValueError):
        inspect_host("/opt/shop", "shop", [("x", "abc")])


# -- the parser ---------------------------------------------------------------


def test_parser_reads_every_record_and_skips_noise() -> None:
    import base64

    big = base64.b64encode(b"x" * (CONTENT_CAP + 1)).decode()
    out = "\n".join([
        "Welcome to the host!",
        "deployer_inspect=1",
        "exists=1",
        "current=20261201T000000Z-abc",
        "manifest " + base64.b64encode(b'{"fingerprint": "f"}').decode(),
        "mode 644 ./docker-compose.yaml",
        "mode 600 ./app.env",
        "mode 640 ./dir/with space.txt",
        f"sha256 {'a' * 64}  ./docker-compose.yaml",
        f"sha256 {'b' * 64}  ./app.env",
        "content aGVsbG8K docker-compose.yaml",
        f"content {big} big.bin",
        "content !!notbase64 broken",
        "docker=ok",
        'container {"name":"/shop-web-1","service":"web","image":"i","state":{"Status":"running"}}',
        "container not json",
    ])
    ins = parse_inspection(out)
    assert ins.exists and ins.current == "20261201T000000Z-abc"
    assert ins.manifest_text == '{"fingerprint": "f"}'
    assert ins.files == {
        "app.env": RemoteFile(0o600, "b" * 64),
        "dir/with space.txt": RemoteFile(0o640, None),
        "docker-compose.yaml": RemoteFile(0o644, "a" * 64),
    }
    assert ins.contents == {"docker-compose.yaml": b"hello\n"}
    assert ins.truncated == {"big.bin"}
    assert ins.docker == "ok"
    assert [(r.name, r.service, r.status) for r in ins.containers] == [("shop-web-1", "web",
                                                                        "running")]


def test_parser_refuses_output_that_is_not_the_scripts() -> None:
    with pytest.raises(ValueError, match="unexpected output"):
        parse_inspection("sh: 1: syntax error\n")


# -- the script, run by sh against a real tree ---------------------------------


def test_script_on_a_host_without_deploy_dir(tmp_path: Path) -> None:
    ins = parse_inspection(run_script(inspect_host(str(tmp_path / "none"), "shop",
                                                   [("a", "a" * 64)])))
    assert not ins.exists and ins.current is None and ins.files == {} and ins.contents == {}


def test_script_prints_content_only_of_differing_files_that_are_not_0600(
        make_project: MakeProject, tmp_path: Path) -> None:
    old = plan_of(project(make_project)).hosts[0]
    deploy = materialize(tmp_path / "deploy", old)
    new = plan_of(project(make_project, {"DB_PASSWORD": "db-rotated-77"}),
                  release="r2").hosts[0]
    (deploy / "releases" / "r0" / "extra.txt").write_text("by hand\n")
    # Ask for the secret file too: the host still never prints a 0600 file.
    asked = [(f.dest, f.sha256) for f in new.files]
    ins = parse_inspection(run_script(inspect_host(str(deploy), "shop", asked)))
    assert ins.current == "r0"
    files = {f.dest: f for f in old.files}
    assert set(ins.files) == {*files, "extra.txt"}  # manifest.json is not a file of the app
    for dest, f in files.items():
        assert ins.files[dest] == RemoteFile(f.mode, f.sha256)
    # site.conf holds the password (it changed); app.conf too, but it is 0600;
    # the compose file did not change.
    assert set(ins.contents) == {"conf/site.conf"}
    assert ins.contents["conf/site.conf"] == files["conf/site.conf"].content
    assert ins.manifest_text is not None and '"fingerprint"' in ins.manifest_text


def test_script_output_is_bounded(tmp_path: Path) -> None:
    rel = tmp_path / "releases" / "r0"
    rel.mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/r0")
    names = [f"f{i:02d}.txt" for i in range(20)]
    for n in names:
        (rel / n).write_bytes(b"x" * (CONTENT_CAP + 4096))
    ins = parse_inspection(run_script(inspect_host(str(tmp_path), "shop",
                                                   [(n, "0" * 64) for n in names])))
    fits = OUTPUT_BUDGET // (CONTENT_CAP + 1)
    assert ins.truncated == set(names[:fits])  # each sent only up to the cap
    assert ins.skipped == set(names[fits:])  # past the budget: not sent at all
    assert ins.contents == {}


# -- the comparison --------------------------------------------------------------


def test_same_plan_is_unchanged(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)))
    assert d.unchanged and d.same_fingerprint and not d.first_release
    assert {f.status for f in d.files} == {"unchanged"}
    assert (d.images, d.recreate, d.start, d.remove) == ([], {}, {}, {})
    assert d.data()["unchanged"] is True


def test_first_release_is_all_new(make_project: MakeProject) -> None:
    p = project(make_project)
    hp = plan_of(p).hosts[0]
    d = host_diff(p, hp, Inspection(exists=False, current=None, docker="ok"))
    assert d.first_release and not d.unchanged
    assert {f.dest: f.status for f in d.files} == dict.fromkeys(
        ["app.conf", "conf/site.conf", "docker-compose.yaml"], "added")
    assert d.start == {"web": "new service", "worker": "new service"}
    site = next(f for f in d.files if f.dest == "conf/site.conf")
    assert site.diff is not None and site.diff.startswith("--- /dev/null\n")
    assert "+password=******\n" in site.diff and "db-pass-Qz7" not in site.diff
    secret = next(f for f in d.files if f.dest == "app.conf")
    assert secret.secret and secret.diff is None and secret.note


def test_changed_var_shows_only_its_line_and_the_services_to_recreate(
        make_project: MakeProject, tmp_path: Path) -> None:
    inv = "templates/../inventories/prod.yaml"
    p0 = project(make_project)
    old = plan_of(p0, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    text = (p0.root / "inventories" / "prod.yaml").read_text().replace("greeting: hello",
                                                                       "greeting: bonjour")
    p = project(make_project, **{inv: text})
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)), sentinel_files(p, plan_of(p))
                  [hp.host.name])
    status = {f.dest: f.status for f in d.files}
    assert status == {"app.conf": "changed", "conf/site.conf": "changed",
                      "docker-compose.yaml": "unchanged"}
    site = next(f for f in d.files if f.dest == "conf/site.conf")
    assert site.diff is not None
    changed = [ln for ln in site.diff.splitlines() if ln[:1] in "+-"]
    assert changed == ["--- /opt/shop/current/conf/site.conf",
                       "+++ /opt/shop/releases/r1/conf/site.conf",
                       "-greeting=hello", "+greeting=bonjour"]
    assert " password=******" in site.diff  # context, masked
    # web mounts a release file; worker mounts nothing and its definition is the same.
    assert set(d.recreate) == {"web"} and d.start == {} and d.remove == {}
    assert d.drift_files == [] and d.drift_containers == {}


def test_rotated_secret_prints_neither_value(make_project: MakeProject, tmp_path: Path) -> None:
    p0 = project(make_project)
    old = plan_of(p0, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    p = project(make_project, {"DB_PASSWORD": "db-rotated-77"})
    plan = plan_of(p, "r1")
    hp = plan.hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)),
                  sentinel_files(p, plan)[hp.host.name])
    site = next(f for f in d.files if f.dest == "conf/site.conf")
    assert site.diff is not None
    assert "-password=******(old)\n+password=******\n" in site.diff
    data = repr(d.data())
    for leaked in ("db-pass-Qz7", "db-rotated-77", *(f.sha256 for f in hp.files if f.secret),
                   *(f.sha256 for f in old.files if f.secret)):
        assert leaked not in data


def test_multi_line_secret_hides_the_file(make_project: MakeProject) -> None:
    f = ReleaseFile("k.conf", 0o644, "t", data=b"key=line1\nline2\nend\n")
    diff, note = file_diff(f, b"key=old\nend\n", b"key=DEPLOYERSECRETSENTINELQX7\nend\n",
                           a="a", b="b")
    assert diff is None and note and "holds a secret" in note


def test_binary_file_has_no_diff() -> None:
    f = ReleaseFile("b.bin", 0o644, "t", data=b"\0\1\2")
    assert file_diff(f, b"\0\1", None, a="a", b="b") == (None, "binary content")


def test_mode_only_change(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    old = dataclasses.replace(old, files=[dataclasses.replace(f, mode=0o640)
                                          if f.dest == "conf/site.conf" else f
                                          for f in old.files])
    deploy = materialize(tmp_path / "d", old)
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)))
    site = next(f for f in d.files if f.dest == "conf/site.conf")
    assert (site.status, site.mode, site.diff) == ("changed", "0640 -> 0644", None)


def test_removed_file_and_drift(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    site = deploy / "releases" / "r0" / "conf" / "site.conf"
    site.write_text(site.read_text().replace("greeting=hello", "greeting=edited"))
    os.chmod(deploy / "releases" / "r0" / "app.conf", 0o600)
    (deploy / "releases" / "r0" / "app.conf").write_text("password=by-hand\n")
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)))
    assert d.same_fingerprint and not d.unchanged
    assert {f.status for f in d.files} == {"unchanged"}  # ship would change nothing
    drift = {f.dest: f for f in d.drift_files}
    assert set(drift) == {"conf/site.conf", "app.conf"}
    assert drift["app.conf"].secret and drift["app.conf"].diff is None
    edit = drift["conf/site.conf"].diff
    assert edit is not None
    assert "-greeting=hello\n+greeting=edited\n" in edit
    assert edit.index("--- /opt/shop/releases/r0/conf/site.conf") < edit.index("+++ ")
    assert "by-hand" not in repr(d.data())


def test_file_gone_from_the_plan_is_removed(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    old = dataclasses.replace(old, files=[*old.files, ReleaseFile("old.txt", 0o644, "t",
                                                                  data=b"bye\n")])
    deploy = materialize(tmp_path / "d", old)
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)))
    assert {f.dest: f.status for f in d.files}["old.txt"] == "removed"
    assert not d.same_fingerprint and not d.unchanged


# -- services -----------------------------------------------------------------


def test_predict_services() -> None:
    old = {"services": {"web": {"image": "a:1"}, "db": {"image": "pg"}, "gone": {"image": "x"},
                        "job": {"image": "a:1"}, "down": {"image": "a:1"}}}
    new = {"services": {"web": {"image": "a:2"}, "db": {"image": "pg"}, "new": {"image": "n"},
                        "job": {"image": "a:1"}, "down": {"image": "a:1"},
                        "cfg": {"image": "c", "volumes": ["./c.conf:/c"]}},
           }
    old["services"]["cfg"] = new["services"]["cfg"]
    rows = [row("web", image="a:1"), row("db", image="pg"), row("gone"),
            row("job", "exited", policy="no"), row("orphan")]
    recreate, start, remove = predict_services(
        new, old, list(old["services"]), rows, first_release=False)
    assert recreate == {"web": "image changed",
                        "cfg": "mounts files of the release (their path names the release)"}
    assert start == {"new": "new service", "job": "one-shot runs again",
                     "down": "no container"}
    assert remove == {"gone": "not in the new compose file",
                      "orphan": "orphan container (--remove-orphans)"}


def test_predict_services_unreadable_old_compose_assumes_change() -> None:
    new = {"services": {"web": {"image": "a"}}}
    recreate, start, _ = predict_services(new, None, ["web"], [], first_release=False)
    assert list(recreate) == ["web"] and start == {}


def test_definition_change_names_the_keys() -> None:
    old = {"services": {"web": {"image": "a", "environment": {"A": "1"}}}}
    new = {"services": {"web": {"image": "a", "environment": {"A": "2"}, "ports": ["80:80"]}}}
    recreate, _, _ = predict_services(new, old, ["web"], None, first_release=False)
    assert recreate == {"web": "definition changed (environment, ports)"}


@pytest.mark.parametrize(("svc", "doc", "expected"), [
    ({"volumes": ["./x:/x"]}, {}, True),
    ({"volumes": [{"type": "bind", "source": "./x", "target": "/x"}]}, {}, True),
    ({"volumes": ["/opt/shop/shared/data:/data", "named:/n"]}, {}, False),
    ({"env_file": "./app.env"}, {}, True),
    ({"env_file": [{"path": "a.env", "required": False}]}, {}, True),
    ({"secrets": ["s"]}, {"secrets": {"s": {"file": "./s.txt"}}}, True),
    ({"configs": [{"source": "c"}]}, {"configs": {"c": {"external": True}}}, False),
    ({"image": "x"}, {}, False),
])
def test_uses_release_paths(svc: dict, doc: dict, expected: bool) -> None:
    assert uses_release_paths(svc, doc) is expected


def test_container_drift() -> None:
    doc = {"services": {"web": {"image": "a:1"}, "db": {"image": "pg"}, "job": {"image": "j"},
                        "gone": {"image": "g"}, "crash": {"image": "c"}, "mig": {"image": "m"}}}
    rows = [row("web", image="a:0"), row("db", image="pg"),
            row("job", "exited", image="j", policy="no"),
            row("crash", "exited", image="c", exit_code=0),
            row("mig", "exited", image="m", exit_code=1, policy="no")]
    drift = container_drift(list(doc["services"]), doc, rows, oneshot=set())
    assert drift == {
        "web": "shop-web-1 runs a:0, the release says a:1",
        "gone": "no container",
        "crash": "shop-crash-1 is exited (exit code 0)",
        "mig": "shop-mig-1 is exited (exit code 1)",
    }


def test_container_drift_on_the_host(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    rows = [r for r in running(old) if r.service != "worker"]
    hp = plan_of(p, "r1").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, rows))
    assert d.drift_containers == {"worker": "no container"}
    assert d.same_fingerprint and not d.unchanged
    # ship would change nothing, so nothing is predicted either
    assert (d.recreate, d.start, d.remove) == ({}, {}, {})


def test_images_change(make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    hp = build_plan(p, p.select("web-1"), image_refs(p, "def456"), "r1", "def456").hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)))
    assert [(i.name, i.old, i.new) for i in d.images] == [
        ("web", "registry.example.com:5000/shop/web:abc123",
         "registry.example.com:5000/shop/web:def456")]
    assert set(d.recreate) == {"web", "worker"}
    assert d.recreate["worker"] == "image changed"
    compose = next(f for f in d.files if f.dest == "docker-compose.yaml")
    assert compose.status == "changed" and compose.diff and "+    image: " in compose.diff


def test_resolve_images_without_an_engine_leaves_them_unpinned(
        make_project: MakeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Docker Hub is asked through the engine; none answers on this socket.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    p = project(make_project, **{"deployer.yaml": PROJECT.replace(
        "registry:\n  server: registry.example.com:5000\n  username: ci-bot\n"
        "  password: ${REGISTRY_PASSWORD}\n", "")})
    refs, unpinned = resolve_images(p, "abc123")
    assert refs == {"web": "shop/web:abc123"} and unpinned == ["web"]


def test_secret_through_a_filter_is_still_found(make_project: MakeProject,
                                                 tmp_path: Path) -> None:
    site = SITE.replace("password={{ db_password }}", "password={{ db_password | upper }}")
    p0 = project(make_project, **{"templates/site.conf.j2": site})
    old = plan_of(p0, "r0").hosts[0]
    deploy = materialize(tmp_path / "d", old)
    p = project(make_project, {"DB_PASSWORD": "db-rotated-77"},
                **{"templates/site.conf.j2": site})
    plan = plan_of(p, "r1")
    hp = plan.hosts[0]
    d = host_diff(p, hp, inspect_dir(deploy, hp, running(old)),
                  sentinel_files(p, plan)[hp.host.name])
    diff = next(f for f in d.files if f.dest == "conf/site.conf").diff
    assert diff is not None and "-password=******(old)\n+password=******\n" in diff
    assert "DB-PASS-QZ7" not in diff and "DB-ROTATED-77" not in diff


def test_templates_that_fail_with_the_sentinel_hide_files_with_secrets(
        make_project: MakeProject, tmp_path: Path) -> None:
    site = SITE + '{% if db_password != "db-pass-Qz7" %}{{ nowhere }}{% endif %}\n'
    p = project(make_project, **{"templates/site.conf.j2": site})
    plan = plan_of(p, "r1")
    sentinels = sentinel_files(p, plan)["web-1"]
    assert sentinels == {"app.conf": None, "conf/site.conf": None}
    hp = plan.hosts[0]
    d = host_diff(p, hp, Inspection(exists=False, current=None, docker="ok"), sentinels)
    site_change = next(f for f in d.files if f.dest == "conf/site.conf")
    assert site_change.diff is None and site_change.note == "holds a secret: content not shown"
    compose = next(f for f in d.files if f.dest == "docker-compose.yaml")
    assert compose.diff  # no secret in it: shown


def test_gone_service_without_a_container_has_nothing_to_remove() -> None:
    old = {"services": {"web": {"image": "a"}, "gone": {"image": "g"}}}
    new = {"services": {"web": {"image": "a"}}}
    rows = [row("web", image="a")]
    assert predict_services(new, old, ["web", "gone"], rows, first_release=False)[2] == {}
    assert predict_services(new, old, ["web", "gone"], None, first_release=False)[2] == {
        "gone": "not in the new compose file"}


def test_script_falls_back_to_sudo_for_docker(tmp_path: Path) -> None:
    """Stand-ins for docker (refused unless run through sudo) and sudo -n,
    first on PATH: the script asks again through sudo, in the same run."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "docker").write_text(
        '#!/bin/sh\n[ "$VIA_SUDO" = 1 ] || { echo "permission denied" >&2; exit 1; }\n'
        'case "$1" in\n'
        '  ps) echo "$*" > "$LOG"; echo abc123 ;;\n'
        '  inspect) echo \'{"name":"/shop-web-1","service":"web","image":"i",'
        '"state":{"Status":"running"}}\' ;;\nesac\n')
    (bin_ / "sudo").write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nVIA_SUDO=1 exec "$@"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    cmd = inspect_host(str(tmp_path / "none"), "shop", [])
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    p = subprocess.run(["sh", "-c", cmd.shell()], input=cmd.stdin, capture_output=True,
                       text=True, check=True, env=env, timeout=60)
    ins = parse_inspection(p.stdout)
    assert ins.docker == "ok"
    assert [(r.name, r.status) for r in ins.containers] == [("shop-web-1", "running")]
    assert (tmp_path / "log").read_text().split() == [
        "ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=shop"]


def test_script_without_docker_says_so(tmp_path: Path) -> None:
    cmd = inspect_host(str(tmp_path / "none"), "shop", [])
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "readlink", "printf", "cat"):
        path = shutil.which(tool)
        if path:
            (tools / tool).symlink_to(path)
    p = subprocess.run([shutil.which("sh") or "/bin/sh", "-c", cmd.shell()], input=cmd.stdin,
                       capture_output=True, text=True, check=True, timeout=60,
                       env={"PATH": str(tools)})
    assert parse_inspection(p.stdout).docker == "missing"


# -- the run over hosts ----------------------------------------------------------


class LocalExecutor:
    """Runs each command with the local ``sh``, as sshd would run it; a
    host named in ``down`` is unreachable."""

    def __init__(self, host: str, down: set[str], log: list[tuple[str, Command]]) -> None:
        self.host = host
        self.down = down
        self.log = log

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None):
        from deployer.errors import HostError
        from deployer.remote.base import Result

        self.log.append((self.host, command))
        if self.host in self.down:
            raise HostError(self.host, "connect", "connection refused")
        p = subprocess.run(["sh", "-c", command.shell()], input=command.stdin,
                           capture_output=True, text=True, timeout=60)
        return Result(command, p.returncode, p.stdout, p.stderr)

    def connect(self) -> None:
        pass

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        raise AssertionError("plan --diff never uploads")

    def stream(self, command: Command, on_line: object, *, cancel: object = None) -> int:
        raise AssertionError("plan --diff streams nothing")

    def stats(self):
        from deployer.remote.base import ExecStats

        return ExecStats(commands=sum(1 for h, _ in self.log if h == self.host))

    def close(self) -> None:
        pass


def test_plan_diff_reads_each_host_once_and_reports_the_unreachable(
        make_project: MakeProject, tmp_path: Path) -> None:
    import io
    import json

    from deployer.deploy.diff import plan_diff
    from deployer.deploy.rollout import RolloutPolicy
    from deployer.deploy.runner import RunOptions
    from deployer.report.reporters import PlainReporter

    deploy = tmp_path / "deploy"
    p = project(make_project, **{"deployer.yaml": PROJECT + f"deploy_dir: {deploy}\n"})
    plan = build_plan(p, p.select(None), image_refs(p, "abc123"), "r1", "abc123")
    materialize(deploy, plan.hosts[0])
    log: list[tuple[str, Command]] = []
    opts = RunOptions(policy=RolloutPolicy(batches=["100%"], max_parallel=2,
                                           max_fail_percentage=100),
                      executor=lambda h: LocalExecutor(h.name, {"web-2"}, log))
    report = plan_diff(p, plan, PlainReporter(io.StringIO()), opts)
    web1, web2 = report.hosts
    # Same fingerprint; whether containers drift depends on this machine's engine.
    assert web1.error is None and web1.same_fingerprint and web1.drift_files == []
    assert web2.error is not None and "connection refused" in web2.error
    assert not report.ok
    assert sorted(h for h, _ in log) == ["web-1", "web-2"]  # one command per host
    assert all(c.description == "inspect current release and containers" for _, c in log)
    json.dumps(report.data())  # serialisable as is


def test_binary_or_large_copied_files_are_compared_but_never_fetched(
        make_project: MakeProject, tmp_path: Path) -> None:
    p = project(make_project)
    old = plan_of(p, "r0").hosts[0]
    extra = [ReleaseFile("logo.png", 0o644, "logo.png", kind="copy", data=b"\x89PNG\0old"),
             ReleaseFile("big.txt", 0o644, "big.txt", kind="copy",
                         data=b"y" * (CONTENT_CAP + 1))]
    old = dataclasses.replace(old, files=[*old.files, *extra])
    deploy = materialize(tmp_path / "d", old)
    hp = plan_of(p, "r1").hosts[0]
    hp = dataclasses.replace(hp, files=[*hp.files, *(dataclasses.replace(
        f, data=f.content.replace(b"old", b"new").replace(b"y", b"z")) for f in extra)])
    assert [d for d, _ in wanted(hp)] == ["docker-compose.yaml", "conf/site.conf"]
    ins = inspect_dir(deploy, hp, running(old))
    assert ins.contents == {}  # nothing differs that could be shown
    d = host_diff(p, hp, ins)
    notes = {f.dest: (f.status, f.note) for f in d.files if f.dest in ("logo.png", "big.txt")}
    assert notes == dict.fromkeys(["logo.png", "big.txt"], (
        "changed", "binary or larger than 256 KiB: content not shown"))


def test_a_service_behind_a_disabled_profile_is_neither_started_nor_removed() -> None:
    new = {"services": {"web": {"image": "a"}, "debug": {"image": "d", "profiles": ["dbg"]}}}
    recreate, start, remove = predict_services(new, None, [], [], first_release=True,
                                               active=["web"])
    assert (recreate, start, remove) == ({}, {"web": "new service"}, {})
    old = {"services": {"web": {"image": "a"}}}
    rows = [row("web", image="a"), row("debug", image="d")]
    assert predict_services(new, old, ["web"], rows, first_release=False,
                            active=["web"]) == ({}, {}, {})
