"""``files: [{copy: ...}]`` and copied paths: the model, and the expansion of
copy specs into release files (ignores, excludes, modes, symlinks,
non-regular files, dedupe, once per plan)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployer.config.models import FileSpec
from deployer.errors import ConfigError
from deployer.release_files import CopySpec
from deployer.release_tree import Expander, file_copies


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})


def dests(root: Path, *specs: CopySpec) -> list[str]:
    return [f.dest for f in Expander(root).expand(specs).files]


# -- the model ----------------------------------------------------------------


def test_copy_entry_defaults_dest_and_keeps_mode() -> None:
    f = FileSpec.model_validate({"copy": "./nginx/"})
    assert (f.copy_, f.dest, f.copy_mode, f.template) == ("nginx", "nginx", None, None)
    g = FileSpec.model_validate({"copy": "static", "dest": "web/static", "mode": "0640",
                                 "exclude": ["*.map"]})
    assert (g.dest, g.copy_mode, g.exclude) == ("web/static", 0o640, ("*.map",))
    t = FileSpec.model_validate({"template": "t.j2", "dest": "a.conf"})
    assert t.mode_int == 0o644 and t.copy_ is None


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"template": "a", "copy": "b", "dest": "c"}, "exactly one of 'template'"),
        ({"dest": "c"}, "exactly one of 'template'"),
        ({"copy": "../outside"}, "copy '../outside' escapes the project"),
        ({"copy": "/etc/passwd"}, "must be a relative path inside the project"),
        ({"copy": "a", "dest": "../x"}, "escapes the release directory"),
        ({"copy": "a", "mode": 644}, "quoted octal string"),
        ({"template": "t", "dest": "x", "exclude": ["*.log"]}, "'exclude' applies to 'copy'"),
        ({"copy": "a", "exclude": [""]}, "non-empty strings"),
        ({"copy": "a", "excludes": ["x"]}, "excludes"),
    ],
)
def test_bad_copy_entries(entry: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        FileSpec.model_validate(entry)
    assert needle in str(e.value)


def test_file_copies_names_the_entry() -> None:
    specs = [FileSpec.model_validate(x) for x in (
        {"template": "t.j2", "dest": "c.yaml"}, {"copy": "static", "exclude": ["*.tmp"]})]
    assert file_copies(specs, "deployer.yaml: files") == [
        CopySpec("static", "static", None, False, ("*.tmp",), "deployer.yaml: files[1]")]


# -- expansion -----------------------------------------------------------------


def test_a_file_keeps_its_mode_and_bytes(tmp_path: Path) -> None:
    tree(tmp_path, {"rules.yml": "expr: {{ $labels.x }}\n", "run.sh": "#!/bin/sh\n"})
    os.chmod(tmp_path / "rules.yml", 0o640)
    os.chmod(tmp_path / "run.sh", 0o755)
    exp = Expander(tmp_path).expand([CopySpec("rules.yml", "conf/rules.yml"),
                                     CopySpec("run.sh", "run.sh")])
    by = {f.dest: f for f in exp.files}
    assert by["conf/rules.yml"].content == b"expr: {{ $labels.x }}\n"
    assert (by["conf/rules.yml"].mode, by["run.sh"].mode) == (0o640, 0o755)
    assert by["run.sh"].kind == "copy" and by["run.sh"].length == 10
    assert exp.dirs == ()


def test_forced_mode_and_secret_mode(tmp_path: Path) -> None:
    tree(tmp_path, {"d/a": "1", "d/b": "2", ".env": "PW=x\n"})
    os.chmod(tmp_path / ".env", 0o644)
    exp = Expander(tmp_path).expand([CopySpec("d", "d", mode=0o600),
                                     CopySpec(".env", ".env", mode=0o644, secret=True)])
    assert {f.dest: (f.mode, f.secret) for f in exp.files} == {
        "d/a": (0o600, False), "d/b": (0o600, False), ".env": (0o600, True)}


def test_directory_outside_git_honours_gitignore_files(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "*.log\n",
        "static/index.html": "<h1>",
        "static/debug.log": "x",
        "static/.gitignore": "cache/\n!keep.log\n",
        "static/keep.log": "kept",
        "static/cache/a.css": "x",
        "static/css/site.css": "body{}",
        "static/.git/HEAD": "x",
    })
    assert dests(tmp_path, CopySpec("static", "static")) == [
        "static/.gitignore", "static/css/site.css", "static/index.html", "static/keep.log"]


def test_directory_in_git_skips_ignored_and_ships_untracked(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "*.pyc\nnode_modules/\n",
        "app/main.py": "print()",
        "app/main.pyc": "x",
        "app/node_modules/x.js": "x",
        "app/new.py": "untracked but not ignored",
        "app/gone.py": "deleted after commit",
    })
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".gitignore", "app/main.py", "app/gone.py")
    git(tmp_path, "commit", "-qm", "x")
    (tmp_path / "app" / "gone.py").unlink()
    assert dests(tmp_path, CopySpec("app", "app")) == ["app/main.py", "app/new.py"]


def test_a_copied_directory_git_ignores_as_a_whole_still_ships(tmp_path: Path) -> None:
    """``files: [{copy: dist}]`` of a git-ignored build output: named to be
    copied, so it ships, minus what its own .gitignore files say."""
    tree(tmp_path, {".gitignore": "dist/\n", "dist/app.js": "x", "dist/app.js.map": "m",
                    "dist/.gitignore": "*.map\n", "src/a.ts": "a"})
    git(tmp_path, "init", "-q")
    assert dests(tmp_path, CopySpec("dist", "dist")) == ["dist/.gitignore", "dist/app.js"]


def test_git_project_in_a_subfolder_of_the_repo(tmp_path: Path) -> None:
    tree(tmp_path, {"proj/static/a.css": "a", "proj/static/b.tmp": "b", ".gitignore": "*.tmp\n"})
    git(tmp_path, "init", "-q")
    assert dests(tmp_path / "proj", CopySpec("static", "static")) == ["static/a.css"]


@pytest.mark.parametrize("in_git", [False, True])
def test_the_whole_project_mounted_ships_without_deployers_own_folder(
    tmp_path: Path, in_git: bool
) -> None:
    """``.:/app``: every file, at its own path, but never .deployer/ (the
    sandbox's keys, secrets files)."""
    tree(tmp_path, {"app.py": "print()", "lib/util.py": "", ".deployer/sandbox/id_ed25519": "k",
                    ".deployer/prod.env": "PW=1"})
    if in_git:
        git(tmp_path, "init", "-q")
    exp = Expander(tmp_path).expand([CopySpec(".", ".")])
    assert [f.dest for f in exp.files] == ["app.py", "lib/util.py"]
    assert [f.origin for f in exp.files] == ["app.py", "lib/util.py"]
    assert exp.dirs == ()


def test_exclude_patterns_are_relative_to_the_copied_dir(tmp_path: Path) -> None:
    tree(tmp_path, {"s/a.css": "", "s/a.css.map": "", "s/img/x.png": "", "s/tmp/t": "",
                    "s/sub/tmp/u": ""})
    spec = CopySpec("s", "public", exclude=("*.map", "/tmp/"))
    assert dests(tmp_path, spec) == ["public/a.css", "public/img/x.png", "public/sub/tmp/u"]


def test_an_empty_copied_directory_still_exists(tmp_path: Path) -> None:
    (tmp_path / "uploads-template").mkdir()
    exp = Expander(tmp_path).expand([CopySpec("uploads-template", "u")])
    assert exp.files == () and exp.dirs == ("u",)


def test_symlink_inside_the_project_ships_as_the_file(tmp_path: Path) -> None:
    tree(tmp_path, {"conf/real.conf": "listen 80;\n"})
    os.chmod(tmp_path / "conf/real.conf", 0o600)
    (tmp_path / "conf" / "default.conf").symlink_to("real.conf")
    (tmp_path / "top.conf").symlink_to("conf/real.conf")
    exp = Expander(tmp_path).expand([CopySpec("conf", "conf"), CopySpec("top.conf", "t.conf")])
    by = {f.dest: f for f in exp.files}
    assert set(by) == {"conf/default.conf", "conf/real.conf", "t.conf"}
    assert by["conf/default.conf"].content == b"listen 80;\n"
    assert by["t.conf"].mode == 0o600


@pytest.mark.parametrize("target", ["outside", "dangling", "dir"])
def test_bad_symlinks_are_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "proj"
    tree(root, {"conf/a.conf": "x", "other/b": "y"})
    (tmp_path / "secret.txt").write_text("not yours")
    link = root / "conf" / "link"
    link.symlink_to({"outside": tmp_path / "secret.txt", "dangling": root / "nope",
                     "dir": root / "other"}[target])
    with pytest.raises(ConfigError) as e:
        Expander(root).expand([CopySpec("conf", "conf", origin="deployer.yaml: files[0]")])
    msg = str(e.value)
    assert msg.startswith("deployer.yaml: files[0]: 'conf/link'")
    assert {"outside": "outside the project", "dangling": "dangling",
            "dir": "symlink to a directory"}[target] in msg


def test_top_level_link_to_a_directory_is_refused(tmp_path: Path) -> None:
    tree(tmp_path, {"real/a": "x"})
    (tmp_path / "static").symlink_to("real")
    with pytest.raises(ConfigError, match="'static' is a symlink to a directory"):
        Expander(tmp_path).expand([CopySpec("static", "static")])


def test_non_regular_files_are_refused(tmp_path: Path) -> None:
    tree(tmp_path, {"run/a": "x"})
    os.mkfifo(tmp_path / "run" / "fifo")
    with pytest.raises(ConfigError, match="'run/fifo' is not a regular file"):
        Expander(tmp_path).expand([CopySpec("run", "run")])
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "sock"))
        with pytest.raises(ConfigError, match="'sock' is not a regular file"):
            Expander(tmp_path).expand([CopySpec("sock", "sock")])
    finally:
        s.close()


def test_missing_source_names_the_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^service web: volumes\[0\]: 'nginx.conf' not found"):
        Expander(tmp_path).expand([CopySpec("nginx.conf", "nginx.conf",
                                            origin="service web: volumes[0]")])


def test_two_references_ship_once_and_secret_wins(tmp_path: Path) -> None:
    tree(tmp_path, {"conf/a": "1", "conf/sub/b": "2"})
    exp = Expander(tmp_path).expand([
        CopySpec("conf", "conf"), CopySpec("conf/sub", "conf/sub"),
        CopySpec("conf/a", "conf/a", secret=True),
    ])
    assert [(f.dest, f.secret, f.mode) for f in exp.files] == [
        ("conf/a", True, 0o600), ("conf/sub/b", False, 0o644 & ~_umask())]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_two_sources_for_one_dest_is_an_error(tmp_path: Path) -> None:
    tree(tmp_path, {"a.conf": "1", "b.conf": "2"})
    with pytest.raises(ConfigError, match="would get two different files"):
        Expander(tmp_path).expand([CopySpec("a.conf", "x.conf", origin="files[0]"),
                                   CopySpec("b.conf", "x.conf", origin="files[1]")])


def test_hosts_share_one_expansion_and_each_file_is_hashed_once(tmp_path: Path) -> None:
    tree(tmp_path, {f"static/{i}.txt": str(i) for i in range(20)})
    ex = Expander(tmp_path)
    specs = [CopySpec("static", "static")]
    first = ex.expand(specs)
    again = ex.expand(list(specs))
    assert first is again
    digest = first.files[0].sha256
    (tmp_path / "static" / "0.txt").write_text("changed")  # the cached hash is the plan's
    assert again.files[0].sha256 == digest
