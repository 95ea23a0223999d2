"""Review item 9: no unsalted hash of a file that holds a secret is printed.

A secret file (``env_file``), a private template (0600) and a public
template that renders a secret show ``secret`` instead of a hash in ``plan``
and ``plan -o json``, and the fingerprint ``plan`` prints covers no secret
material: it is the same whatever the secret is, so it cannot confirm a
dictionary guess. The full fingerprint (the no-op check) stays in the 0600
manifest only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BASIC_PROJECT, ENV, MakeProject

from deployer.config import load_project
from deployer.plan import HostPlan, build_plan, holds_secret, image_refs

COMPOSE = """\
services:
  web:
    image: {{ images.web }}
    env_file: [web.env]
    volumes:
      - ./app.conf:/etc/app.conf:ro
      - ./public.conf:/etc/public.conf:ro
"""

PROJECT = BASIC_PROJECT + """\
  - template: templates/public.conf.j2
    dest: public.conf
"""

PUBLIC = "greeting={{ greeting }}\nurl=postgres://app:{{ db_password }}@db/app\n"


def project(make_project: MakeProject, secret: str) -> Path:
    root = make_project({"deployer.yaml": PROJECT,
                         "templates/docker-compose.yaml.j2": COMPOSE,
                         "templates/public.conf.j2": PUBLIC})
    (root / "web.env").write_text(f"PASSWORD={secret}\n")
    return root


def host_plan(root: Path, env: dict[str, str]) -> HostPlan:
    p = load_project(root, "prod", env)
    return build_plan(p, p.hosts[:1], image_refs(p, "abc123"), "r1", "abc123").hosts[0]


def by_dest(hp: HostPlan) -> dict[str, object]:
    return {f.dest: f for f in hp.files}


def test_files_that_hold_a_secret_are_known(make_project: MakeProject) -> None:
    hp = host_plan(project(make_project, "hunter2-long"), ENV)
    files = by_dest(hp)
    assert holds_secret(files["web.env"])  # type: ignore[arg-type]  # env_file
    assert holds_secret(files["app.conf"])  # type: ignore[arg-type]  # 0600
    assert holds_secret(files["public.conf"])  # type: ignore[arg-type]  # 0644, renders one
    assert not holds_secret(files["docker-compose.yaml"])  # type: ignore[arg-type]
    manifest = hp.manifest("me", "now")
    assert {d for d, e in manifest["files"].items() if e.get("secret")} == {
        "web.env", "app.conf", "public.conf"}


def test_public_fingerprint_covers_no_secret(make_project: MakeProject) -> None:
    a = host_plan(project(make_project, "hunter2-long"), ENV)
    b = host_plan(project(make_project, "hunter3-long"), {**ENV, "DB_PASSWORD": "db-pass-Other"})
    # the full fingerprint sees the change (ship must deploy it)...
    assert a.fingerprint != b.fingerprint
    # ...the printed one does not: it cannot tell one guess from another
    assert a.public_fingerprint == b.public_fingerprint
    # while a change to a file without a secret still shows
    c_root = project(make_project, "hunter2-long")
    compose = c_root / "templates" / "docker-compose.yaml.j2"
    compose.write_text(compose.read_text() + "    restart: always\n")
    assert host_plan(c_root, ENV).public_fingerprint != a.public_fingerprint
    manifest = a.manifest("me", "now")
    assert manifest["public_fingerprint"] == a.public_fingerprint
    assert manifest["fingerprint"] == a.fingerprint


def test_plan_json_and_text_print_no_hash_of_a_secret_file(make_project: MakeProject) -> None:
    root = project(make_project, "hunter2-long")
    hp = host_plan(root, ENV)
    secret_hashes = {f.sha256 for f in hp.files if holds_secret(f)}
    secret_hashes |= {h[:12] for h in secret_hashes}
    secret_hashes |= {hp.fingerprint, hp.fingerprint[:12]}
    # and the bare hash of the secret value itself, the dictionary's target
    secret_hashes.add(hashlib.sha256(b"hunter2-long").hexdigest()[:12])
    env = {**os.environ, **ENV, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("GITHUB_ACTIONS", None)
    outputs = []
    for args in (["plan", "prod", "--tag", "abc123"],
                 ["-o", "json", "plan", "prod", "--tag", "abc123"]):
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(root), *args],
                           capture_output=True, text=True, env=env, check=False)
        assert p.returncode == 0, p.stderr
        outputs.append(p.stdout + p.stderr)
    data = json.loads(p.stdout)
    host = next(h for h in data["hosts"] if h["name"] == hp.host.name)
    rows = {f["dest"]: f["sha256"] for f in host["files"]}
    assert rows["web.env"] == rows["app.conf"] == rows["public.conf"] == "secret"
    assert host["fingerprint"] == hp.public_fingerprint
    for text in outputs:
        for h in secret_hashes:
            assert h not in text
        assert "hunter2" not in text

