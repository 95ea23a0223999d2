"""Release directory operations, run for real under ``sh`` in a temporary tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.commands import release
from deployer.commands.base import Command
from deployer.config import load_project
from deployer.plan import build_plan, image_refs


def run(cmd: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", cmd.shell(as_root=True)], capture_output=True, text=True, check=False
    )


def ok(cmd: Command) -> str:
    res = run(cmd)
    assert res.returncode == 0, res.stderr
    return res.stdout


WHEN = "2026-01-01T00:00:00Z"

EMPTY_TAR = bytes(10240)  # an archive with no members: two zero blocks, padded


def receive(d: Path, rid: str) -> subprocess.CompletedProcess[bytes]:
    """``receive_release`` run for real, fed an empty tar: the partial
    directory ship's upload unpacks into."""
    return subprocess.run(["sh", "-c", release.receive_release(str(d), rid).shell(as_root=True)],
                          input=EMPTY_TAR, capture_output=True, check=False)


def received(d: Path, rid: str) -> Path:
    res = receive(d, rid)
    assert res.returncode == 0, res.stderr
    return d / "releases" / f"{rid}.partial"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    ok(release.prepare(str(d), str(os.getuid())))
    return d


def ship(d: Path, rid: str, manifest: dict | None = None) -> None:
    partial = received(d, rid)
    (partial / "config").mkdir()
    (partial / "config" / "app.conf").write_text("x")
    (partial / "manifest.json").write_text(json.dumps(manifest or {"release": rid}))
    ok(release.finalize(str(d), rid, WHEN))


def passed(d: Path, *rids: str) -> None:
    for rid in rids:
        ok(release.record_health(str(d), rid, release.PASSED, WHEN))


def listed(d: Path) -> release.Releases:
    return release.parse_releases(ok(release.list_releases(str(d))))


def test_argv_shapes() -> None:
    prep = release.prepare("/opt/shop", "deploy")
    assert prep.sudo and prep.argv[3:] == ("sh", "/opt/shop", "deploy")
    sw = release.switch_current("/opt/shop", "r1", WHEN)
    assert not sw.sudo and sw.argv[3:] == ("sh", "/opt/shop", "r1", WHEN)
    assert "ln -sfn" in sw.argv[2] and "mv -Tf" in sw.argv[2]
    assert release.release_dir("/opt/shop", "r1") == "/opt/shop/releases/r1"
    assert release.ensure_shared("/opt/shop", ["pg-data", "./uploads/img"]).argv == (
        "mkdir",
        "-p",
        "--",
        "/opt/shop/shared/pg-data",
        "/opt/shop/shared/uploads/img",
    )


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "r1.partial", ".hidden", "a b", "x" * 200])
def test_release_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        release.switch_current("/opt/shop", bad, WHEN)


@pytest.mark.parametrize("bad", ["/etc", "../x", "a/../../x"])
def test_shared_paths_stay_inside(bad: str) -> None:
    with pytest.raises(ValueError):
        release.ensure_shared("/opt/shop", [bad])


def test_prepare_creates_the_tree(tree: Path) -> None:
    assert (tree / "releases").is_dir() and (tree / "shared").is_dir()
    # idempotent
    ok(release.prepare(str(tree), str(os.getuid())))


def test_partial_then_finalize(tree: Path) -> None:
    ship(tree, "20260101T000000Z-a")
    assert (tree / "releases" / "20260101T000000Z-a" / "config" / "app.conf").read_text() == "x"
    assert not (tree / "releases" / "20260101T000000Z-a.partial").exists()


def test_finalize_refuses_to_overwrite_a_complete_release(tree: Path) -> None:
    ship(tree, "r1")
    again = receive(tree, "r1")
    assert again.returncode == release.EXIT_RELEASE_STATE
    (tree / "releases" / "r1.partial").mkdir()
    res = run(release.finalize(str(tree), "r1", WHEN))
    assert res.returncode == release.EXIT_RELEASE_STATE
    assert "already exists" in res.stderr
    assert not (tree / "releases" / "r1" / "r1.partial").exists()


def test_receive_release_starts_clean(tree: Path) -> None:
    stale = tree / "releases" / "r2.partial"
    stale.mkdir()
    (stale / "half-uploaded").write_text("junk")
    received(tree, "r2")
    assert list(stale.iterdir()) == []


def test_switch_current_is_a_relative_symlink_swap(tree: Path) -> None:
    ship(tree, "r1")
    ship(tree, "r2")
    ok(release.switch_current(str(tree), "r1", WHEN))
    assert os.readlink(tree / "current") == "releases/r1"
    before = os.lstat(tree / "current").st_ino
    ok(release.switch_current(str(tree), "r2", WHEN))
    assert os.readlink(tree / "current") == "releases/r2"
    # a new link renamed over the old one, never removed first; no temp left
    assert os.lstat(tree / "current").st_ino != before
    assert not (tree / "current.tmp").exists()
    assert (tree / "current" / "manifest.json").exists()


def test_switch_to_a_missing_release_keeps_current(tree: Path) -> None:
    ship(tree, "r1")
    ok(release.switch_current(str(tree), "r1", WHEN))
    res = run(release.switch_current(str(tree), "r9", WHEN))
    assert res.returncode == release.EXIT_RELEASE_STATE
    assert os.readlink(tree / "current") == "releases/r1"


def test_read_state_fresh_and_deployed(tmp_path: Path, tree: Path) -> None:
    nothing = release.parse_state(ok(release.read_state(str(tmp_path / "none"))))
    assert nothing == release.RemoteState(
        exists=False, writable=False, current=None, manifest_text=None
    )
    empty = release.parse_state(ok(release.read_state(str(tree))))
    assert empty.exists and empty.writable and empty.current is None and empty.manifest is None

    manifest = {"release": "r1", "fingerprint": "abc", "files": {"a": {"sha256": "1"}}}
    ship(tree, "r1", manifest)
    ok(release.switch_current(str(tree), "r1", WHEN))
    state = release.parse_state(ok(release.read_state(str(tree))))
    assert state.current == "r1"
    assert state.manifest == manifest


def test_broken_manifest_reads_as_none(tree: Path) -> None:
    ship(tree, "r1")
    ok(release.switch_current(str(tree), "r1", WHEN))
    (tree / "releases" / "r1" / "manifest.json").write_text("{not json")
    state = release.parse_state(ok(release.read_state(str(tree))))
    assert state.current == "r1" and state.manifest is None


def test_list_releases(tree: Path) -> None:
    for rid in ("20260103T000000Z-c", "20260101T000000Z-a", "20260102T000000Z-b"):
        ship(tree, rid)
    received(tree, "20260104T000000Z-d")
    ok(release.switch_current(str(tree), "20260102T000000Z-b", WHEN))
    rel = release.parse_releases(ok(release.list_releases(str(tree))))
    assert rel.releases == ("20260101T000000Z-a", "20260102T000000Z-b", "20260103T000000Z-c")
    assert rel.current == "20260102T000000Z-b"
    assert rel.partials == ("20260104T000000Z-d",)
    # a and c were uploaded but never passed a health gate
    assert rel.health("20260101T000000Z-a") == release.NEVER_RAN
    assert rel.previous() is None
    passed(tree, "20260101T000000Z-a")
    assert listed(tree).previous() == "20260101T000000Z-a"


def test_previous_skips_releases_with_the_current_content(tree: Path) -> None:
    """v1, v2, rollback to v1, v2 again: rolling back must go to v1, not to
    the first v2 (the same content as the current one)."""
    v1, v2 = {"fingerprint": "aa11"}, {"fingerprint": "bb22", "services": {"web": {}}}
    ship(tree, "20260101T000000Z-v1", v1)
    ship(tree, "20260102T000000Z-v2", v2)
    ship(tree, "20260103T000000Z-v2", v2)
    passed(tree, "20260101T000000Z-v1", "20260102T000000Z-v2")
    ok(release.switch_current(str(tree), "20260103T000000Z-v2", WHEN))
    rel = release.parse_releases(ok(release.list_releases(str(tree))))
    assert dict(rel.fingerprints) == {"20260101T000000Z-v1": "aa11",
                                      "20260102T000000Z-v2": "bb22",
                                      "20260103T000000Z-v2": "bb22"}
    assert rel.previous() == "20260101T000000Z-v1"
    ok(release.switch_current(str(tree), "20260101T000000Z-v1", WHEN))
    rel = release.parse_releases(ok(release.list_releases(str(tree))))
    assert rel.previous() is None  # nothing older runs anything else


def test_previous_reads_the_fingerprint_ship_writes(tree: Path, make_project: MakeProject) -> None:
    """The list script greps the manifest's text: it must find the
    fingerprint in the exact bytes ship uploads."""
    p = load_project(make_project(), "prod", ENV)
    hp = build_plan(p, p.hosts[:1], image_refs(p, "abc123"), "r1", "abc123").hosts[0]
    (received(tree, "r1") / "manifest.json").write_bytes(hp.manifest_bytes())
    ok(release.finalize(str(tree), "r1", WHEN))
    rel = release.parse_releases(ok(release.list_releases(str(tree))))
    assert rel.fingerprints == (("r1", hp.fingerprint),)


def test_list_on_a_fresh_host_is_empty(tmp_path: Path) -> None:
    rel = release.parse_releases(ok(release.list_releases(str(tmp_path / "none"))))
    assert rel == release.Releases((), None, ())
    assert rel.previous() is None


def test_prune_keeps_newest_passed_and_never_current_or_partials(tree: Path) -> None:
    ids = [f"2026010{i}T000000Z-x" for i in range(1, 7)]
    for rid in ids:
        ship(tree, rid)
    passed(tree, *ids)
    received(tree, "20260109T000000Z-live")
    ok(release.switch_current(str(tree), ids[0], WHEN))  # rolled back to the oldest
    removed = release.parse_removed(ok(release.prune(str(tree), 2)))
    assert sorted(removed) == ids[1:4]
    left = sorted(p.name for p in (tree / "releases").iterdir())
    assert left == [ids[0], ids[4], ids[5], "20260109T000000Z-live.partial"]
    # again: nothing more to do
    assert release.parse_removed(ok(release.prune(str(tree), 2))) == []


def review_item_5(tree: Path) -> list[str]:
    """v1, v2 good, v3 failed its healthcheck, v4 interrupted before up, v5 good."""
    v = [f"2026010{i}T000000Z-v{i}" for i in range(1, 6)]
    for i, rid in enumerate(v):
        ship(tree, rid, {"release": rid, "fingerprint": f"{i}" * 8})
        if i in (0, 1, 4):
            ok(release.switch_current(str(tree), rid, WHEN))
        if i == 2:
            ok(release.record_health(str(tree), rid, release.FAILED, WHEN))
    return v


def test_review_item_5_rollback_and_prune(tree: Path) -> None:
    v1, v2, v3, v4, v5 = review_item_5(tree)
    rel = listed(tree)
    assert [rel.health(r) for r in rel.releases] == [
        release.PASSED, release.PASSED, release.FAILED, release.NEVER_RAN, release.PASSED]
    assert rel.previous() == v2  # never v4, never v3
    assert "never ran" in (rel.refuse_target(v4) or "")
    assert "failed its health gate at " + WHEN in (rel.refuse_target(v3) or "")
    assert rel.refuse_target(v1) is None
    assert "not found" in (rel.refuse_target("nope") or "")
    removed = release.parse_removed(ok(release.prune(str(tree), 2)))
    assert sorted(removed) == [v1, v3, v4]
    assert sorted(p.name for p in (tree / "releases").iterdir()) == [v2, v5]
    assert listed(tree).previous() == v2


def test_prune_keep_1_still_keeps_the_rollback_target(tree: Path) -> None:
    v1, _, v3, v4, _ = review_item_5(tree)
    assert sorted(release.parse_removed(ok(release.prune(str(tree), 1)))) == [v1, v3, v4]


def test_prune_keeps_the_newest_passed_with_other_content(tree: Path) -> None:
    """v1, v2, rollback to v1, v2 shipped again as v3: the rollback target is
    v1 (v2 has the current content), and prune keeps it."""
    v1, v2, v3 = (f"2026010{i}T000000Z-v" for i in (1, 2, 3))
    ship(tree, v1, {"fingerprint": "aa"})
    ship(tree, v2, {"fingerprint": "bb"})
    ship(tree, v3, {"fingerprint": "bb"})
    for rid in (v1, v2, v3):
        ok(release.switch_current(str(tree), rid, WHEN))
    assert release.parse_removed(ok(release.prune(str(tree), 1))) == []
    assert listed(tree).previous() == v1


def test_releases_without_records_come_from_an_older_deployer(tree: Path) -> None:
    """No record: current counts as passed and gets the record when current
    leaves it; others are unknown: no default rollback target, but --to may
    name them, and prune counts them like passed ones."""
    old = ["20260101T000000Z-o1", "20260102T000000Z-o2", "20260103T000000Z-o3"]
    for rid in old:
        ship(tree, rid)
        (tree / "releases" / rid / release.HEALTH).unlink()
    os.symlink(f"releases/{old[2]}", tree / "current")
    rel = listed(tree)
    assert [rel.health(r) for r in old] == [release.UNKNOWN, release.UNKNOWN, release.PASSED]
    assert rel.previous() is None
    assert rel.refuse_target(old[1]) is None
    new = "20260104T000000Z-n"
    ship(tree, new)
    ok(release.switch_current(str(tree), new, WHEN))
    rel = listed(tree)
    assert rel.health(old[2]) == release.PASSED  # it was current
    assert rel.previous() == old[2]
    assert sorted(release.parse_removed(ok(release.prune(str(tree), 2)))) == old[:2]


def test_records_are_written_atomically_and_switch_records_passed(tree: Path) -> None:
    ship(tree, "r1")
    record = tree / "releases" / "r1" / release.HEALTH
    assert record.read_text() == f"pending {WHEN}\n"
    ok(release.record_health(str(tree), "r1", release.FAILED, "T2"))
    assert record.read_text() == "failed T2\n"
    ok(release.switch_current(str(tree), "r1", "T3"))
    assert record.read_text() == "passed T3\n"
    assert not (tree / "releases" / "r1" / (release.HEALTH + ".tmp")).exists()
    assert run(release.record_health(str(tree), "r9", release.FAILED, "T")).returncode == 4
    with pytest.raises(ValueError):
        release.record_health(str(tree), "r1", "pending", "T")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"),
                    reason="needs root to make root-owned files and runuser to drop to nobody")
def test_prune_of_root_owned_files_never_leaves_a_half_release() -> None:
    """What failed before: a container wrote root-owned files into a
    release (a bind-mounted release path), and the SSH user's ``rm -rf``
    stopped half-way, leaving a release without its manifest that still
    listed as one. Now it is renamed to a partial first; without sudo it
    says so (``failed=``), and remove_partials, which falls back to
    ``sudo -n`` like ``prepare``, clears it."""
    base = Path(tempfile.mkdtemp(prefix="deployer-prune-"))
    try:
        os.chmod(base, 0o755)
        d = base / "app"
        ok(release.prepare(str(d), "nobody"))
        for rid in ("r1", "r2", "r3"):
            ship(d, rid)
            ok(release.switch_current(str(d), rid, WHEN))
        subprocess.run(["chown", "-R", "nobody", str(d)], check=True)
        cache = d / "releases" / "r1" / "cache"
        cache.mkdir()
        (cache / "written-by-a-container").write_text("x")  # root-owned, in a root-owned dir
        as_nobody = subprocess.run(
            ["runuser", "-u", "nobody", "--", "sh", "-c", release.prune(str(d), 1).shell()],
            capture_output=True, text=True, check=False)
        assert as_nobody.returncode == 1
        assert [f.split()[0] for f in release.parse_prune_failures(as_nobody.stdout)] == ["r1"]
        assert listed(d).releases == ("r2", "r3")  # r1 is no longer a release
        assert listed(d).partials == ("r1",)
        # with root's privileges (sudo -n, here root itself) the partial goes
        assert release.parse_removed(ok(release.remove_partials(str(d)))) == ["r1.partial"]
        assert sorted(p.name for p in (d / "releases").iterdir()) == ["r2", "r3"]
    finally:
        shutil.rmtree(base)


def test_prune_without_releases_dir(tmp_path: Path) -> None:
    assert ok(release.prune(str(tmp_path / "none"), 3)) == ""
    with pytest.raises(ValueError):
        release.prune("/opt/shop", 0)


def test_remove_partials(tree: Path) -> None:
    ship(tree, "r1")
    received(tree, "r2")
    received(tree, "r3")
    removed = release.parse_removed(ok(release.remove_partials(str(tree))))
    assert sorted(removed) == ["r2.partial", "r3.partial"]
    assert sorted(p.name for p in (tree / "releases").iterdir()) == ["r1"]


def test_ensure_shared_creates_dirs(tree: Path) -> None:
    ok(release.ensure_shared(str(tree), ["pg-data", "uploads/img", "."]))
    assert (tree / "shared" / "pg-data").is_dir()
    assert (tree / "shared" / "uploads" / "img").is_dir()
    ok(release.ensure_shared(str(tree), []))  # nothing asked: still fine


def test_renames_are_flushed_to_disk_before_and_after(tree: Path, tmp_path: Path) -> None:
    """A `sync` on PATH that logs what it flushes and what the directory
    holds at that moment: the partial is flushed before its rename, the new
    `current` link before it replaces the old, each directory after."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sync.log"
    (bin_dir / "sync").write_text(
        f'#!/bin/sh\nprintf "%s | %s\\n" "$*" "$(ls -A | tr "\\n" " ")" >> {log}\n')
    (bin_dir / "sync").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def run_logged(cmd: Command) -> list[str]:
        log.write_text("")
        res = subprocess.run(["sh", "-c", cmd.shell(as_root=True)], env=env,
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        return log.read_text().splitlines()

    received(tree, "r1")
    calls = run_logged(release.finalize(str(tree), "r1", WHEN))
    # in releases/: the partial (with its record) flushed while it is still
    # the partial, then the directory after the rename
    assert calls == ["-f -- r1.partial | r1.partial ", "-- . | r1 "]
    calls = run_logged(release.switch_current(str(tree), "r1", WHEN))
    # the record (temporary file, then its directory), the link before its
    # rename, the deploy dir after it
    assert calls[0].startswith(f"-- releases/r1/{release.HEALTH}.tmp |")
    assert calls[1].startswith("-- releases/r1 |")
    assert calls[2].startswith("-f -- . |") and "current.tmp" in calls[2]
    assert calls[3].startswith("-- . |") and "current.tmp" not in calls[3]
