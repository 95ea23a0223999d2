"""Every path a compose file references: config (copied), data (shared/) or
secret, and the rewritten server compose file. One or more tests per failure
class of issue 14, on real project trees (a real ``git init`` where git's
view decides)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from deployer.errors import ConfigError
from deployer.project import ComposeContext, server_compose
from deployer.project.dotenv import parse_dotenv
from deployer.project.interpolate import substitute
from deployer.project.paths import git_tracked
from deployer.project.yaml12 import load_12

DEPLOY = "/opt/app"
IMAGE = "registry.example.com/app/web:t1@sha256:" + "a" * 64


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.write_text(textwrap.dedent(text))
    return root


def git(root: Path, *add: str) -> None:
    def run(*argv: str) -> None:
        subprocess.run(["git", "-C", str(root), *argv], check=True, capture_output=True)

    if not (root / ".git").exists():
        run("init", "-q")
    if add:
        run("add", "-f", *add)


def ctx(root: Path, env: dict[str, str] | None = None, **kw: object) -> ComposeContext:
    from deployer.project.dotenv import read_dotenv

    environ = env or {}
    dot = read_dotenv(root / ".env", ".env", environ)
    return ComposeContext(
        root=root,
        app="app",
        env={**dot, **environ},
        tracked=git_tracked(root),
        registry_images=frozenset({IMAGE}),
        **kw,  # type: ignore[arg-type]
    )


def run(root: Path, compose: str, *, uploaded: tuple[str, ...] = ("docker-compose.yaml",),
        services: tuple[str, ...] | None = None, **kw: object):
    return server_compose(
        textwrap.dedent(compose),
        where="templates/docker-compose.yaml.j2 (rendered for web-1)",
        deploy_dir=DEPLOY,
        uploaded=list(uploaded),
        services=services,
        context=ctx(root, **kw),  # type: ignore[arg-type]
    )


def copies(sc) -> dict[str, tuple[bool, int | None]]:
    return {c.dest: (c.secret, c.mode) for c in sc.copies}


# -- class 1: bind sources that exist are config ---------------------------


def test_tracked_file_and_directory_binds_are_copied_not_shared(tmp_path: Path) -> None:
    tree(tmp_path, {"nginx.conf": "server {}\n", "static/index.html": "hi\n",
                    "prometheus/rules.yml": "expr: '{{ $labels.x }}'\n"})
    git(tmp_path, "nginx.conf", "static", "prometheus")
    sc = run(tmp_path, """\
        services:
          web:
            image: nginx
            volumes:
              - ./nginx.conf:/etc/nginx/conf.d/default.conf:ro
              - ./static:/usr/share/nginx/html
              - type: bind
                source: ./prometheus
                target: /etc/prometheus
              - ./postgres-data:/var/lib/postgresql/data
        """)
    assert copies(sc) == {"nginx.conf": (False, None), "static": (False, None),
                          "prometheus": (False, None)}
    assert sc.shared_dirs == ["postgres-data"]
    data = load_12(sc.text)
    assert data["services"]["web"]["volumes"][:3] == [
        "./nginx.conf:/etc/nginx/conf.d/default.conf:ro", "./static:/usr/share/nginx/html",
        {"type": "bind", "source": "./prometheus", "target": "/etc/prometheus"}]
    assert data["services"]["web"]["volumes"][3] == (
        f"{DEPLOY}/shared/postgres-data:/var/lib/postgresql/data")


def test_outside_git_any_existing_path_is_config(tmp_path: Path) -> None:
    tree(tmp_path, {"docker_config.py": "X = 1\n", "conf/": ""})
    sc = run(tmp_path, """\
        services:
          app:
            image: x
            volumes: ["./docker_config.py:/code/default_config.py", "./conf:/c", "./db:/db"]
        """)
    assert set(copies(sc)) == {"docker_config.py", "conf"}
    assert sc.shared_dirs == ["db"]


def test_untracked_directory_is_data_even_if_it_exists(tmp_path: Path) -> None:
    tree(tmp_path, {"postgres-data/PG_VERSION": "16\n", "keep.txt": "x"})
    git(tmp_path, "keep.txt")
    sc = run(tmp_path, "services:\n  db:\n    image: postgres\n"
             "    volumes: ['./postgres-data:/var/lib/postgresql/data']\n")
    assert sc.copies == []
    assert sc.shared_dirs == ["postgres-data"]
    assert f"{DEPLOY}/shared/postgres-data:" in sc.text


def test_untracked_bind_file_is_refused_with_both_ways_out(tmp_path: Path) -> None:
    tree(tmp_path, {"local.conf": "x\n", "keep.txt": "x"})
    git(tmp_path, "keep.txt")
    with pytest.raises(ConfigError) as e:
        run(tmp_path, "services:\n  web:\n    image: x\n    volumes: ['./local.conf:/etc/l']\n")
    msg = e.value.message + " " + (e.value.hint or "")
    assert "service web: volumes[0]" in msg and "./local.conf" in msg
    assert "files: [{copy: local.conf" in msg and "shared: [local.conf]" in msg


def test_shared_forces_data_and_a_files_entry_makes_it_config(tmp_path: Path) -> None:
    tree(tmp_path, {"local.conf": "x\n", "uploads/a.jpg": "jpg", "keep.txt": "x"})
    git(tmp_path, "keep.txt", "uploads")
    compose = """\
        services:
          web:
            image: x
            volumes: ['./local.conf:/etc/l', './uploads:/u']
        """
    sc = run(tmp_path, compose, shared=("local.conf", "uploads"))
    assert sc.copies == []
    assert sc.shared_dirs == [".", "uploads"]  # the file's folder, and the dir
    assert f"{DEPLOY}/shared/local.conf:/etc/l" in sc.text
    # a `files:` entry uploads it: neither copied again nor shared
    sc = run(tmp_path, compose, uploaded=("docker-compose.yaml", "local.conf"))
    assert "local.conf" not in copies(sc) and "uploads" in copies(sc)
    assert "./local.conf:/etc/l" in sc.text


def test_escaping_the_release_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="escapes the release folder"):
        run(tmp_path, "services:\n  web:\n    image: x\n    volumes: ['../x:/x']\n")


# -- class 2: .env and env_file ------------------------------------------


def test_env_files_and_dotenv_are_copied_0600_tracked_or_not(tmp_path: Path) -> None:
    tree(tmp_path, {".env": "TAG=1.2\n", "web.env": "A=1\n", "db.env": "B=2\n",
                    "keep.txt": "x"})
    git(tmp_path, "keep.txt", "web.env")
    sc = run(tmp_path, """\
        services:
          web:
            image: n8nio/n8n:${TAG}
            env_file: web.env
          db:
            image: postgres
            env_file:
              - ./db.env
              - path: ./optional.env
                required: false
        """)
    assert copies(sc) == {".env": (True, 0o600), "web.env": (True, 0o600),
                          "db.env": (True, 0o600)}


@pytest.mark.parametrize("form", ["env_file: missing.env", "env_file: [ok.env, missing.env]",
                                  "env_file: [{path: missing.env}]"])
def test_missing_env_file_is_a_check_error(tmp_path: Path, form: str) -> None:
    tree(tmp_path, {"ok.env": "A=1\n"})
    with pytest.raises(ConfigError) as e:
        run(tmp_path, f"services:\n  web:\n    image: x\n    {form}\n")
    assert "service web: env_file" in e.value.message and "missing.env" in e.value.message


def test_dotenv_syntax() -> None:
    env = parse_dotenv(textwrap.dedent("""\
        # comment
        export A=1
        B = two words # note
        C='lit ${A}'
        D="x\\ny ${A}"
        E=${A}-${MISSING:-dflt}
        F="multi
        line"
        G=
        """), ".env", {"A": "from-env"})
    assert env == {"A": "1", "B": "two words", "C": "lit ${A}", "D": "x\ny from-env",
                   "E": "from-env-dflt", "F": "multi\nline", "G": ""}


def test_compose_interpolation_syntax() -> None:
    env = {"SET": "v", "EMPTY": ""}
    s = lambda t: substitute(t, env.get)  # noqa: E731
    assert s("$SET ${SET} $$SET ${UNSET} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}") == "v v $SET  d d "
    assert s("${UNSET:-${SET}x}") == "vx"
    assert s("${SET:+alt} ${UNSET:+alt}") == "alt "
    with pytest.raises(ValueError, match="required variable UNSET is missing a value: set it"):
        s("${UNSET:?set it}")
    assert s("${EMPTY?ok}") == ""


# -- class 3: secrets and configs files -------------------------------------


def test_secret_and_config_files_are_copied_and_missing_ones_refused(tmp_path: Path) -> None:
    tree(tmp_path, {"secrets/db_password.txt": "pw\n", "conf/app.ini": "x\n"})
    compose = """\
        services:
          db:
            image: postgres
            secrets: [db_password]
            configs: [app]
        secrets:
          db_password:
            file: ./secrets/db_password.txt
          from_env:
            environment: PW
        configs:
          app:
            file: ./conf/app.ini
        """
    sc = run(tmp_path, compose)
    assert copies(sc) == {"secrets/db_password.txt": (True, 0o600), "conf/app.ini": (False, None)}
    (tmp_path / "secrets/db_password.txt").unlink()
    with pytest.raises(ConfigError, match=r"secrets\.db_password\.file: './secrets/db_password"):
        run(tmp_path, compose)


# -- class 5: profiles -------------------------------------------------------


PROFILED = """\
    services:
      web:
        image: x
      debug:
        image: busybox
        profiles: [debug]
      worker:
        image: y
        profiles: ["${WORKER_PROFILE:-jobs}"]
    """


def test_profile_services_are_not_started_or_awaited(tmp_path: Path) -> None:
    sc = run(tmp_path, PROFILED)
    assert sc.services == ["web"] and sc.profiles == []
    # deployer.yaml / inventory profiles
    sc = run(tmp_path, PROFILED, profiles=("jobs",))
    assert sc.services == ["web", "worker"] and sc.profiles == ["jobs"]
    # COMPOSE_PROFILES from .env, or the environment winning
    tree(tmp_path, {".env": "COMPOSE_PROFILES=debug\n"})
    assert run(tmp_path, PROFILED).services == ["web", "debug"]
    sc = run(tmp_path, PROFILED, env={"COMPOSE_PROFILES": "debug,jobs"})
    assert sc.services == ["web", "debug", "worker"] and sc.profiles == ["debug", "jobs"]
    assert run(tmp_path, PROFILED, profiles=("*",)).services == ["web", "debug", "worker"]
    # the file itself is unchanged: compose gets --profile flags
    assert sc.text == textwrap.dedent(PROFILED)


# -- class 6: pull_policy ----------------------------------------------------


def test_pull_policy_never_or_build_dropped_for_deployer_images(tmp_path: Path) -> None:
    sc = run(tmp_path, f"""\
        services:
          web:
            image: "{IMAGE}"
            pull_policy: build  # was built locally
          worker:
            image: "{IMAGE}"
            pull_policy: never
          other:
            image: redis:7
            pull_policy: never
        """)
    data = load_12(sc.text)["services"]
    assert "pull_policy" not in data["web"] and "pull_policy" not in data["worker"]
    assert data["other"]["pull_policy"] == "never"


# -- class 7: extends files ------------------------------------------------


def test_extends_file_and_its_own_references_are_copied(tmp_path: Path) -> None:
    tree(tmp_path, {
        "common/base.yml": """\
            services:
              base:
                image: x
                env_file: base.env
                volumes: ["./conf:/conf"]
            """,
        "common/base.env": "A=1\n", "common/conf/x.ini": "x\n",
    })
    sc = run(tmp_path, """\
        services:
          web:
            extends:
              file: ./common/base.yml
              service: base
        """)
    assert copies(sc) == {"common/base.yml": (False, None), "common/base.env": (True, 0o600),
                          "common/conf": (False, None)}


def test_missing_extends_file_is_a_check_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"service web: extends\.file: 'other\.yml' does not"):
        run(tmp_path, "services:\n  web:\n    extends: {file: other.yml, service: x}\n")


# -- class 8: one-shots ------------------------------------------------------


def test_one_shots(tmp_path: Path) -> None:
    sc = run(tmp_path, """\
        services:
          web: {image: x, restart: unless-stopped}
          migrate: {image: x, restart: "no"}
          seed: {image: x, restart: no}
          swarmish: {image: x, deploy: {restart_policy: {condition: none}}}
          waited: {image: x}
          labelled: {image: x, labels: [deployer.oneshot=true]}
          after: {image: x, depends_on: {waited: {condition: service_completed_successfully}}}
        """)
    assert sc.oneshot == ["waited", "labelled"]  # must exit 0
    assert sc.may_exit == ["migrate", "seed", "swarmish"]  # fine running, done at exit 0


def test_restart_no_services_are_done_at_exit_0_and_fine_running() -> None:
    from deployer.commands.health import ContainerRow, evaluate

    def row(service: str, status: str, code: int = 0) -> ContainerRow:
        return ContainerRow(name=f"app-{service}-1", service=service, status=status,
                            exit_code=code, restart_policy="no")

    svcs = ["web", "seed"]
    assert evaluate([row("web", "running"), row("seed", "exited")], svcs,
                    oneshot=[], may_exit=["seed"]).healthy
    assert evaluate([row("web", "running"), row("seed", "running")], svcs,
                    oneshot=[], may_exit=["seed"]).healthy
    assert evaluate([row("web", "running"), row("seed", "exited", 1)], svcs,
                    oneshot=[], may_exit=["seed"]).failed
    # before: "exited with code 0 but is not a one-shot service"
    assert evaluate([row("web", "running"), row("seed", "exited")], svcs, oneshot=[]).failed


# -- class 10: data paths from .env -----------------------------------------


def test_bind_source_from_dotenv_is_data_never_in_the_release(tmp_path: Path) -> None:
    tree(tmp_path, {".env": "UPLOAD_LOCATION=./library\nDB_DATA=./pg\n", "keep.txt": "x",
                    "library/photo.jpg": "jpg"})
    git(tmp_path, "keep.txt")
    sc = run(tmp_path, """\
        services:
          immich:
            image: x
            volumes:
              - ${UPLOAD_LOCATION}:/usr/src/app/upload
              - type: bind
                source: ${DB_DATA:-./db}
                target: /var/lib/postgresql/data
        """)
    assert sc.shared_dirs == ["library", "pg"]
    assert copies(sc) == {".env": (True, 0o600)}
    vols = load_12(sc.text)["services"]["immich"]["volumes"]
    assert vols[0] == f"{DEPLOY}/shared/library:/usr/src/app/upload"
    assert vols[1]["source"] == f"{DEPLOY}/shared/pg"
    # the process environment wins over .env
    sc = run(tmp_path, "services:\n  a:\n    image: x\n    volumes: ['${UPLOAD_LOCATION}:/u']\n",
             env={"UPLOAD_LOCATION": "./elsewhere"})
    assert sc.shared_dirs == ["elsewhere"]


def test_a_tracked_bind_from_a_variable_is_copied_and_written_resolved(tmp_path: Path) -> None:
    tree(tmp_path, {".env": "CONF=./conf\n", "conf/a.ini": "x", "lit$dir/a": "x"})
    git(tmp_path, "conf", "lit$dir")
    sc = run(tmp_path, "services:\n  a:\n    image: x\n"
             "    volumes: ['${CONF}:/c:ro', './lit$$dir:/l']\n")
    assert set(copies(sc)) == {".env", "conf", "lit$dir"}
    assert load_12(sc.text)["services"]["a"]["volumes"] == ["./conf:/c:ro", "./lit$$dir:/l"]


# -- class 11: YAML 1.2 out, comments and tags kept --------------------------


def test_rewrite_is_yaml_12_and_keeps_comments_tags_anchors(tmp_path: Path) -> None:
    compose = """\
        # the app
        x-common: &common
          restart: no        # compose reads the string "no"
          volumes:
            - ./data:/data
        services:
          web:
            <<: *common
            image: x
            ports:
              - 22:22
              - "8080:80"
            environment:
              MODE: 0755
            labels: !reset []
            command: !override ["a", "b"]
          db:
            <<: *common
            image: postgres
        """
    sc = run(tmp_path, compose)
    assert sc.shared_dirs == ["data"]
    assert "# the app" in sc.text and "# compose reads" in sc.text
    assert "!reset" in sc.text and "!override" in sc.text and "&common" in sc.text
    got, want = load_12(sc.text), load_12(textwrap.dedent(compose))
    assert got["services"]["web"]["ports"] == ["22:22", "8080:80"]
    assert got["services"]["web"]["restart"] == "no"
    assert got["services"]["web"]["environment"]["MODE"] == want["services"]["web"][
        "environment"]["MODE"]
    assert got["services"]["db"]["volumes"] == [f"{DEPLOY}/shared/data:/data"]
    assert sc.may_exit == ["web", "db"]  # restart: no, via the merge key


def test_roles_keep_comments_and_drop_foreign_dependencies(tmp_path: Path) -> None:
    sc = run(tmp_path, """\
        services:
          web:  # front
            image: x
            depends_on: [db, cache]
          cache:
            image: redis
          db:
            image: postgres
        """, services=("web", "cache"))
    data = load_12(sc.text)
    assert list(data["services"]) == ["web", "cache"]
    assert data["services"]["web"]["depends_on"] == ["cache"]
    assert "# front" in sc.text


def test_unchanged_file_is_returned_byte_for_byte(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: x   # keep\n    ports: [22:22]\n"
    assert run(tmp_path, text).text == text


# -- COMPOSE_PROJECT_NAME ------------------------------------------------


def test_compose_project_name_that_differs_is_reported(tmp_path: Path) -> None:
    tree(tmp_path, {".env": "COMPOSE_PROJECT_NAME=other\n"})
    sc = run(tmp_path, "services:\n  web:\n    image: x\n")
    assert len(sc.notes) == 1 and "COMPOSE_PROJECT_NAME=other" in sc.notes[0]
    assert "'app'" in sc.notes[0]


# -- class 4 (and .env as compose reads it): deployer's own ${...} -----------


def test_dotenv_feeds_deployer_yaml_and_the_environment_wins(make_project, tmp_path) -> None:
    from deployer.config import load_project
    from deployer.secrets import mask

    root = make_project()
    cfg = (root / "deployer.yaml").read_text().replace(
        "    context: .\n",
        "    context: .\n    dockerfile: ${DOCKERFILE}\n"
        "    args: {VERSION: '${VERSION:?set VERSION}'}\n")
    (root / "deployer.yaml").write_text(cfg)
    (root / ".env").write_text(
        "DOCKERFILE=Dockerfile.prod\nVERSION=1.4.2\nDB_PASSWORD=from-dotenv\n")
    env = {"REGISTRY_PASSWORD": "r-pw", "DB_PASSWORD": "from-env"}
    p = load_project(root, "prod", env)
    img = p.config.images["web"]
    assert img.dockerfile == "Dockerfile.prod" and img.args == {"VERSION": "1.4.2"}
    assert mask("version 1.4.2") == "version ******"  # from .env: a secret, as from the env
    assert p.hosts[0].vars["db_password"] == "from-env"
    (root / ".env").write_text("DOCKERFILE=Dfile\n")
    with pytest.raises(ConfigError, match="VERSION is required: set VERSION"):
        load_project(root, "prod", env)


def test_rendered_templates_are_not_copied_again(tmp_path: Path) -> None:
    # app.env and the secret are rendered from templates: nothing local to copy
    sc = run(tmp_path, """\
        services:
          web:
            image: x
            env_file: app.env
            volumes: ["./conf:/conf"]
        secrets:
          pw: {file: ./pw.txt}
        """, uploaded=("docker-compose.yaml", "app.env", "pw.txt", "conf/a.ini"))
    assert sc.copies == [] and sc.shared_dirs == []


# -- check: every file the release would miss, offline, exit 2 ---------------


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    from conftest import ENV

    env = {**{k: v for k, v in os.environ.items() if k not in ENV}, **ENV, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "deployer", "-C", str(root), "check", "prod"],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(("compose", "needles"), [
    ("    env_file: [web.env]\n", ["service web: env_file[0]", "'web.env' does not exist"]),
    ("    extends: {file: base.yml, service: web}\n",
     ["service web: extends.file", "'base.yml' does not exist"]),
    ("    volumes: ['./local.conf:/etc/local.conf']\n",
     ["service web: volumes[0]", "'./local.conf'", "files: [{copy: local.conf",
      "shared: [local.conf]"]),
])
def test_check_refuses_what_the_release_would_miss(make_project, compose: str,
                                                   needles: list[str]) -> None:
    root = make_project({"templates/docker-compose.yaml.j2":
                         "services:\n  web:\n    image: '{{ images.web }}'\n" + compose})
    (root / "local.conf").write_text("x\n")
    git(root, "deployer.yaml")
    p = _check(root)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_check_refuses_a_missing_secret_file_and_passes_once_it_exists(make_project) -> None:
    root = make_project({"templates/docker-compose.yaml.j2": (
        "services:\n  web:\n    image: '{{ images.web }}'\n    secrets: [pw]\n"
        "secrets:\n  pw:\n    file: ./pw.txt\n")})
    p = _check(root)
    assert p.returncode == 2 and "secrets.pw.file: './pw.txt' does not exist" in p.stderr
    (root / "pw.txt").write_text("s3cret\n")
    p = _check(root)
    assert p.returncode == 0, p.stderr


def test_inventory_profiles_override_deployer_yaml_and_reach_compose_up(make_project) -> None:
    from conftest import ENV

    from deployer.config import load_project
    from deployer.deploy.dryrun import dry_run_host, plan_settings
    from deployer.plan import build_plan, image_refs

    root = make_project({
        "templates/docker-compose.yaml.j2": PROFILED,
        "templates/app.conf.j2": "x\n",
    })
    cfg = root / "deployer.yaml"
    cfg.write_text(cfg.read_text() + "profiles: [debug]\n")
    p = load_project(root, "prod", ENV)
    hp = build_plan(p, p.hosts, image_refs(p, "t"), "r", "t").hosts[0]
    assert hp.compose.services == ["web", "debug"]
    inv = root / "inventories/prod.yaml"
    inv.write_text(inv.read_text() + "profiles: [jobs]\n")
    p = load_project(root, "prod", ENV)
    hp = build_plan(p, p.hosts, image_refs(p, "t"), "r", "t").hosts[0]
    assert hp.compose.services == ["web", "worker"] and hp.compose.profiles == ["jobs"]
    steps = dry_run_host(p, hp, plan_settings(p, "me@here", "now")).steps
    up = next(s for s in steps if s.name == "compose up").commands()[-1]
    assert "--profile jobs" in up


def test_check_reports_a_different_compose_project_name(make_project) -> None:
    root = make_project()
    (root / ".env").write_text("COMPOSE_PROJECT_NAME=legacy\n")
    p = _check(root)
    assert p.returncode == 0, p.stderr
    assert "note: COMPOSE_PROJECT_NAME=legacy differs from the app 'shop'" in p.stderr


def test_a_file_compose_would_refuse_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML 1\.2"):
        run(tmp_path, "services:\n  web:\n    image: x\n    image: y\n"
            "    volumes: ['./data:/data']\n")
