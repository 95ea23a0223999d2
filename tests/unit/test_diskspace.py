"""Free space: the probe's argv, its answer parsed, and the verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deployer.commands.diskspace import FreeSpace, Mount, by_digest, parse_free, probe
from deployer.config.models import ProjectConfig
from deployer.diskspace import human, shortage

REF = "reg:5000/shop/web:v1@sha256:" + "ab" * 32


def test_probe_passes_refs_by_digest_and_sizes_as_arguments() -> None:
    c = probe("/opt/shop", {REF: 123, "redis:7": 0}, sudo=True)
    assert c.argv[3:] == ("sh", "/opt/shop")
    assert c.stdin == f"redis:7 0\nreg:5000/shop/web@sha256:{'ab' * 32} 123\n"
    assert c.sudo and c.description == "check free space"
    assert by_digest("reg:5000/web@sha256:x") == "reg:5000/web@sha256:x"
    assert by_digest("reg:5000/web") == "reg:5000/web"


def test_probe_runs_in_a_real_shell(tmp_path: Path) -> None:
    """No docker here: every image counts as missing, df still answers."""
    c = probe(str(tmp_path), {REF: 1000, "x:1": 24})
    p = subprocess.run(list(c.argv), input=c.stdin, capture_output=True, text=True, check=True,
                       env={"PATH": "/nonexistent:/usr/bin:/bin"})
    free = parse_free(p.stdout, str(tmp_path))
    assert free.images_missing == 1024
    assert free.deploy_dir is not None and free.deploy_dir.free > 0
    assert free.docker_root is not None and free.docker_root.path == "/var/lib/docker"


def test_parse_free() -> None:
    out = ("noise\n#deployer-diskspace\nimages=5000\ndocker_root=/data/docker\n"
           "df_root=/dev/vdb 1000 10 990 2% /data\n"
           "df_dir=tmpfs 1024 4 1020 1% /opt/shop\n")
    assert parse_free(out, "/opt/shop") == FreeSpace(
        5000, Mount("/data/docker", "/data", 990 * 1024), Mount("/opt/shop", "/opt/shop",
                                                               1020 * 1024))
    assert parse_free("", "/opt/shop") == FreeSpace(0, None, None)


def test_shortage_names_path_need_and_free() -> None:
    root = Mount("/var/lib/docker", "/", 10 * 10**9)
    tmp = Mount("/opt/shop", "/opt/shop", 1_048_576)
    msg = shortage(FreeSpace(0, root, tmp), 40_000, 2 * 10**9)
    assert msg == ("not enough disk space on /opt/shop (filesystem /opt/shop): needs 2.0 GB "
                   "(release files 40.0 kB + min_free 2.0 GB), 1.0 MB free")
    assert shortage(FreeSpace(0, root, tmp), 40_000, 500_000) is None
    # One filesystem for both: the sum counts.
    same = Mount("/opt/shop", "/", 10 * 10**9)
    assert shortage(FreeSpace(9 * 10**9, root, same), 10**6, 10**9) is not None
    assert shortage(FreeSpace(8 * 10**9, root, same), 10**6, 10**9) is None
    assert shortage(FreeSpace(0, None, None), 10**9, 10**12) is None  # df said nothing


def test_min_free_sizes() -> None:
    assert ProjectConfig(app="a").min_free == 2 * 10**9
    assert ProjectConfig(app="a", min_free="500MB").min_free == 500 * 10**6
    assert ProjectConfig(app="a", min_free="1GiB").min_free == 2**30
    assert human(1536) == "1.5 kB"
