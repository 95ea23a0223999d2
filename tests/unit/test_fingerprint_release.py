"""``{{ release }}`` in a template does not defeat the no-op: the fingerprint
counts this plan's release id as a placeholder, so a ship whose only
difference is the release id is ``unchanged``; the bytes uploaded and the
manifest's per-file hashes keep the real id."""

from __future__ import annotations

import hashlib

from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.plan import HostPlan, build_plan, image_refs

CONF = """\
release={{ release }}
sentry_release=shop@{{ release }}
greeting={{ greeting }}
"""

R1 = "20261201T064600Z-abc123"
R2 = "20261201T071500Z-abc123"


def plan(root, release: str, env: dict[str, str] | None = None) -> HostPlan:
    p = load_project(root, "prod", env or ENV)
    return build_plan(p, p.hosts[:1], image_refs(p, "abc123"), release, "abc123").hosts[0]


def conf(hp: HostPlan) -> bytes:
    return next(f.content for f in hp.files if f.dest == "app.conf")


def test_only_the_release_id_differs_same_fingerprint(make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": CONF})
    a, b = plan(root, R1), plan(root, R2)
    assert conf(a) != conf(b)
    assert f"release={R1}\nsentry_release=shop@{R1}\n".encode() in conf(a)
    assert f"release={R2}\n".encode() in conf(b)
    assert a.fingerprint == b.fingerprint
    # The manifest's per-file hash is the real bytes' hash, id and all.
    ma, mb = a.manifest("me", "now"), b.manifest("me", "now")
    assert ma["files"]["app.conf"]["sha256"] == hashlib.sha256(conf(a)).hexdigest()
    assert ma["files"]["app.conf"]["sha256"] != mb["files"]["app.conf"]["sha256"]
    assert ma["fingerprint"] == mb["fingerprint"] == a.fingerprint


def test_a_real_change_still_changes_the_fingerprint(make_project: MakeProject) -> None:
    root = make_project({"templates/app.conf.j2": CONF})
    a = plan(root, R1)
    inv = (root / "inventories" / "prod.yaml").read_text().replace("hello", "bonjour")
    (root / "inventories" / "prod.yaml").write_text(inv)
    assert plan(root, R2).fingerprint != a.fingerprint


def test_without_release_in_files_the_fingerprint_is_as_before(make_project: MakeProject,
                                                               ) -> None:
    """Hosts deployed before this change keep matching: with no release id in
    any file, the fingerprint is the plain hash of the real file hashes."""
    hp = plan(make_project(), R1)
    h = hashlib.sha256()
    for f in sorted(hp.files, key=lambda f: f.dest):
        h.update(f"{f.dest}\0{f.mode:o}\0{hashlib.sha256(f.content).hexdigest()}\n".encode())
    for k in sorted(hp.images):
        h.update(f"image {k}={hp.images[k]}\n".encode())
    assert hp.fingerprint == h.hexdigest()
