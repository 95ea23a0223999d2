"""paramiko loads without invoke (and the unittest.mock invoke imports),
unless an ssh_config uses ``Match exec``, the one feature that needs it
(issue 19: the two were about 12% of a 1-host no-op's start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from deployer.remote.ssh import load_ssh_config
cfg = load_ssh_config(sys.argv[1] if len(sys.argv) > 1 else None)
import paramiko.config
print(json.dumps({"invoke": "invoke" in sys.modules, "mock": "unittest.mock" in sys.modules,
                  "paramiko_has_invoke": paramiko.config.invoke is not None,
                  "user": cfg.lookup("box").get("user")}))
"""


def probe(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_paramiko_without_invoke(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host box\n  User alice\n")
    assert probe(str(cfg)) == {"invoke": False, "mock": False, "paramiko_has_invoke": False,
                               "user": "alice"}


def test_match_exec_still_works(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Match exec true\n  User bob\n")
    got = probe(str(cfg))
    assert got["paramiko_has_invoke"] is True
    assert got["user"] == "bob"  # paramiko ran `true` through invoke
