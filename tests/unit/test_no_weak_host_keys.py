"""Guards on the two promises a refactor could silently break: no code in
deployer ever installs a trust-anything host-key policy, and no code builds a
shell line outside the one quoting place (``Command.shell``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The package, and the benchmark's own SSH clients (bench/paramiko_floor.py).
SCANNED = (ROOT / "deployer", ROOT / "bench")
WEAK_POLICIES = {"AutoAddPolicy", "WarningPolicy"}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p)))
            for top in SCANNED for p in top.rglob("*.py")
            if not any(part.startswith(".venv") for part in p.parts)]


def test_no_code_uses_a_weak_host_key_policy() -> None:
    # Docstrings may name AutoAddPolicy to explain why it is not used; code may not.
    hits = [
        f"{p}:{n.lineno}"
        for p, tree in _modules()
        for n in ast.walk(tree)
        if (isinstance(n, ast.Attribute) and n.attr in WEAK_POLICIES)
        or (isinstance(n, ast.Name) and n.id in WEAK_POLICIES)
    ]
    assert hits == []


def test_no_subprocess_shell_true_or_os_system() -> None:
    hits = []
    for p, tree in _modules():
        for n in ast.walk(tree):
            if isinstance(n, ast.Call):
                if any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value
                       for k in n.keywords):
                    hits.append(f"{p}:{n.lineno}")
                f = n.func
                if isinstance(f, ast.Attribute) and f.attr in {"system", "popen"} \
                        and isinstance(f.value, ast.Name) and f.value.id == "os":
                    hits.append(f"{p}:{n.lineno}")
    assert hits == []
