"""The corpus: real-world compose project shapes, each taken through
``deployer init --from-compose``, ``check`` and ``plan --out``; then compose
v2's own ``config`` (no Docker daemon needed) reads the original folder and
every host's release folder, and the two must agree except for the intended
rewrites (build -> registry image, data paths -> ``<deploy_dir>/shared``),
with nothing reported missing.

Each ``tests/corpus/<name>/`` is a project as a team has it; its
``_corpus.yaml`` (not part of the project) says how to set it up and what
deployer must decide:

- ``compose``: the compose file (default: the one at the top);
- ``git: false``: not a git repository (default: ``git add -A``, so the
  project's ``.gitignore`` decides what is untracked);
- ``create``: untracked files to create first (local data, local secrets);
- ``executable``: files to chmod 0755;
- ``env``: the process environment of the run;
- ``deployer``: keys merged into the generated deployer.yaml (``shared``,
  ``profiles``);
- ``expect``: config / secret / shared paths, services, oneshot, may_exit, images,
  notes, as deployer must classify them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).resolve().parent
PROJECTS = sorted(p.name for p in CORPUS.iterdir() if (p / "_corpus.yaml").is_file())
DEB = Path("/var/cache/deployer-ci/docker-compose_2.26.1-4_amd64.deb")
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
BASE_ENV = {"REGISTRY_PASSWORD": "corpus-registry-pw"}


@pytest.fixture(scope="session")
def docker_compose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compose v2, extracted from the package .ci/setup downloads."""
    found = shutil.which("docker-compose")
    if not DEB.is_file():
        if found:
            return Path(found)
        pytest.fail(f"{DEB} is missing: run .ci/setup")
    out = tmp_path_factory.mktemp("compose-v2")
    subprocess.run(["dpkg-deb", "-x", str(DEB), str(out)], check=True)
    binary = out / "usr/libexec/docker/cli-plugins/docker-compose"
    assert binary.is_file()
    return binary


def test_corpus_is_big_enough() -> None:
    assert len(PROJECTS) >= 25


def _git(root: Path, *argv: str) -> None:
    subprocess.run(["git", "-C", str(root), *argv], check=True, capture_output=True,
                   env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"})


def _setup(name: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    spec = yaml.safe_load((CORPUS / name / "_corpus.yaml").read_text()) or {}
    root = tmp / name
    shutil.copytree(CORPUS / name, root, ignore=shutil.ignore_patterns("_corpus.yaml"))
    for rel, text in (spec.get("create") or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in spec.get("executable") or []:
        (root / rel).chmod(0o755)
    if spec.get("git", True):
        _git(root, "init", "-q")
        _git(root, "add", "-A")
    return root, spec


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
         env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``deployer ARGS`` in this process (its entry point, exit codes and
    all): thirty projects times three commands would spend a minute
    starting interpreters."""
    from deployer.cli.main import main

    capsys.readouterr()
    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        m.setenv("NO_COLOR", "1")
        m.setattr(sys, "argv", ["deployer", *args])
        try:
            main()
            rc = 0
        except SystemExit as e:
            rc = int(e.code or 0)
    o = capsys.readouterr()
    return rc, o.out, o.err


def _assemble(root: Path, out: Path, plan: Any) -> None:
    """Fallback for ``plan --out`` until it exists: each host's release
    folder from build_plan's files and copies."""
    try:
        tracked: set[str] | None = set(subprocess.run(
            ["git", "-C", str(root), "ls-files"], capture_output=True, text=True,
            check=True).stdout.split())
    except subprocess.CalledProcessError:
        tracked = None
    for hp in plan.hosts:
        rel_dir = out / hp.host.name
        for f in hp.files:
            _write(rel_dir / f.dest, f.content, f.mode)
        for c in hp.compose.copies:
            src = root / c.source
            files = [src] if src.is_file() else [
                p for p in sorted(src.rglob("*"))
                if p.is_file() and ".git" not in p.relative_to(root).parts]
            for p in files:
                rel = p.relative_to(root).as_posix()
                if src.is_dir() and tracked is not None and rel not in tracked:
                    continue
                dest = rel_dir / c.dest / p.relative_to(src) if src.is_dir() else rel_dir / c.dest
                mode = c.mode if c.mode is not None else stat.S_IMODE(p.stat().st_mode)
                _write(dest, p.read_bytes(), 0o600 if c.secret else mode)
        _write(rel_dir / "manifest.json", hp.manifest_bytes("corpus", "now"), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _config(dc: Path, folder: Path, file: str, project: str, env: dict[str, str],
            profiles: list[str]) -> tuple[dict[str, Any], list[str]]:
    argv = [str(dc), "-f", file, "-p", project]
    for p in profiles:
        argv += ["--profile", p]
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
               "DOCKER_HOST": "unix:///nonexistent/docker.sock", **env}
    res = subprocess.run([*argv, "config", "--format", "json"], cwd=folder, env=run_env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"compose config in {folder}: {res.stderr}"
    return json.loads(res.stdout), [ln for ln in res.stderr.splitlines() if ln.strip()]


def _normalise(cfg: dict[str, Any], folder: Path, shared: str | None,
               retargeted: set[str]) -> dict[str, Any]:
    text = json.dumps(cfg, sort_keys=True)
    if shared:
        text = text.replace(f'"{shared}/', '"<project>/').replace(f'"{shared}"', '"<project>"')
    text = text.replace(f'"{folder}/', '"<project>/').replace(f'"{folder}"', '"<project>"')
    # x- extension fields are inert (anchors' sources, rewritten with what merges them)
    data = {k: v for k, v in json.loads(text).items() if not k.startswith("x-")}
    for name, svc in data.get("services", {}).items():
        if name in retargeted:  # build (or a locally built image) -> deployer's image
            for k in ("build", "image", "pull_policy"):
                svc.pop(k, None)
    return data


def _tracked(root: Path, under: str) -> list[str]:
    """Files of ``under`` that a release must carry: git's (outside git, all)."""
    res = subprocess.run(["git", "-C", str(root), "ls-files", "--", under],
                         capture_output=True, text=True, check=False)
    if res.returncode == 0:
        return [t for t in res.stdout.splitlines() if (root / t).is_file()]
    base = root / under
    return [p.relative_to(root).as_posix() for p in base.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts]


def _repo(ref: str | None) -> str:
    """``server/repository`` of an image reference, without tag or digest."""
    name = (ref or "").split("@")[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]


def _bind_sources(cfg: dict[str, Any]) -> list[str]:
    out = [v["source"] for s in cfg.get("services", {}).values()
           for v in s.get("volumes", []) if v.get("type") == "bind"]
    for section in ("secrets", "configs"):
        out += [e["file"] for e in (cfg.get(section) or {}).values() if e.get("file")]
    return out


@pytest.mark.parametrize("name", PROJECTS)
def test_corpus_project(name: str, tmp_path: Path, docker_compose: Path,
                        capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    root, spec = _setup(name, tmp_path)
    env = {**BASE_ENV, **(spec.get("env") or {})}
    compose = spec.get("compose") or next(n for n in COMPOSE_NAMES if (root / n).is_file())
    orig_files = {p.relative_to(root).as_posix(): p.read_bytes()
                  for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}

    rc, out, err = _cli(capsys, monkeypatch, env, "-C", str(root), "init",
                        "--from-compose", str(root / compose))
    assert rc == 0, err
    if spec.get("deployer"):
        cfg_path = root / "deployer.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg.update(spec["deployer"])
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if spec.get("git", True):
        _git(root, "add", "deployer.yaml", "inventories", "templates")

    rc, out, err = _cli(capsys, monkeypatch, env, "-C", str(root), "check", "prod")
    assert rc == 0, err
    assert out.startswith("ok: ")

    # What deployer decided, against what the corpus says it must.
    from deployer.config import load_project
    from deployer.plan import build_plan, image_refs

    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        project = load_project(root, "prod")
        refs = image_refs(project, "t1")
        plan = build_plan(project, project.hosts, refs, "r1", "t1")

    release_root = tmp_path / "out"
    rc, out, err = _cli(capsys, monkeypatch, env, "-C", str(root), "plan", "prod",
                        "--out", str(release_root))
    if rc == 2 and "--out" in err:  # not on main yet: assemble the folders here
        _assemble(root, release_root, plan)
    else:
        assert rc == 0, err
    hp = plan.hosts[0]
    expect = spec.get("expect") or {}
    decided = {
        "config": sorted(c.source for c in hp.compose.copies if not c.secret),
        "secret": sorted(c.source for c in hp.compose.copies if c.secret),
        "shared": hp.compose.shared_dirs,
        "services": hp.compose.services,
        "oneshot": hp.compose.oneshot,
        "may_exit": hp.compose.may_exit,
        "images": len(project.config.images),
        "notes": len(hp.compose.notes),
    }
    for key, want in expect.items():
        assert decided[key] == (sorted(want) if key in ("config", "secret", "shared")
                                else want), key
    for c in hp.compose.copies:
        if c.secret:
            assert c.mode == 0o600
    # The user's project is untouched except for the files init adds.
    for rel, data in orig_files.items():
        assert (root / rel).read_bytes() == data, rel

    # compose v2 on the original folder and on each host's release folder.
    compose_dest = project.config.compose_file
    deployer_profiles = list((spec.get("deployer") or {}).get("profiles") or [])
    orig, orig_err = _config(docker_compose, root, compose, project.app, env, deployer_profiles)
    assert sorted(orig["services"]) == sorted(hp.compose.services), \
        "deployer and compose disagree on the active services"
    shared = f"{project.deploy_dir}/shared"
    # By repository: `plan --out` tags the images its own way.
    deployer_images = {_repo(r) for r in refs.values()}
    for hplan in plan.hosts:
        folder = release_root / hplan.host.name
        assert (folder / compose_dest).is_file()
        got, got_err = _config(docker_compose, folder, compose_dest, project.app,
                               {k: v for k, v in env.items() if k not in BASE_ENV},
                               hplan.compose.profiles)
        # nothing reported missing: no warning the original did not have
        norm = [ln.replace(str(folder), "<project>") for ln in got_err]
        want_err = [ln.replace(str(root), "<project>") for ln in orig_err]
        assert [ln for ln in norm if ln not in want_err] == []
        # every bind source and file in the release exists; data is in shared/
        for src in _bind_sources(got):
            if src.startswith(str(folder)):
                assert Path(src).exists(), f"{src} is missing from the release"
            for d in hplan.compose.shared_dirs:
                if d == ".":  # the folder of a data file: the file itself is checked
                    continue
                inside = f"{folder}/{d}"
                assert src != inside and not src.startswith(inside + "/"), \
                    f"data path {d} is inside the release folder"
        # built services now pull deployer's image, without pull_policy never/build
        for s in got["services"].values():
            if _repo(s.get("image")) in deployer_images:
                assert s.get("pull_policy") not in ("never", "build")
        for s in orig["services"]:
            if "build" in orig["services"][s]:
                assert _repo(got["services"][s]["image"]) in deployer_images
        retargeted = {n for n, s in got["services"].items()
                      if _repo(s.get("image")) in deployer_images}
        assert _normalise(got, folder, shared, retargeted) == _normalise(
            orig, root, None, retargeted)
        # config is copied byte for byte, with its mode; a directory with every
        # file git tracks in it (outside git: every file), templates aside
        rendered = {f.dest for f in hplan.files if getattr(f, "kind", "template") == "template"}
        for c in hplan.compose.copies:
            src, dst = root / c.source, folder / c.dest
            if src.is_file():
                pairs = [(src, dst)]
            else:
                pairs = [(root / t, folder / c.dest / Path(t).relative_to(c.source))
                         for t in _tracked(root, c.source)]
                pairs = [(a, b) for a, b in pairs
                         if b.relative_to(folder).as_posix() not in rendered]
                assert pairs, f"{c.source}: nothing to compare"
            for a, b in pairs:
                assert b.is_file(), f"{b.relative_to(folder)} (from {c.source}) not in the release"
                assert b.read_bytes() == a.read_bytes()
                want_mode = 0o600 if c.secret else stat.S_IMODE(a.stat().st_mode)
                assert stat.S_IMODE(b.stat().st_mode) == want_mode, b
