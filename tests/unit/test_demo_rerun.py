"""`bash .ci/demo` twice: the vars the demo adds to inventories/sandbox.yaml
survive the second `sandbox up` byte for byte, so a project outside git (whose
image tag hashes its files) gets the same tag and the second ship is a no-op.
(tests/e2e/test_demo.py runs the demo twice for real.)"""

from __future__ import annotations

import re
from pathlib import Path

from deployer.sandbox import inventory

ROOT = Path(__file__).resolve().parents[2]


def demo_addition() -> str:
    text = (ROOT / ".ci" / "demo").read_text()
    m = re.search(r"cat >>inventories/sandbox.yaml <<'YAML'\n(.*?)\nYAML\n", text, re.S)
    assert m, "the demo appends its vars with a YAML heredoc"
    return m.group(1) + "\n"


def test_the_demo_s_vars_survive_the_next_up_byte_for_byte(tmp_path: Path) -> None:
    written = inventory.render(sandbox_rel=".deployer/sandbox", registry_server="10.0.0.2:5000",
                               registry_username="deployer",
                               hosts=[("sandbox-1", "10.0.0.3"), ("sandbox-2", "10.0.0.4")])
    inventory.write(tmp_path, written)  # the first `up`
    path = tmp_path / "inventories" / "sandbox.yaml"
    with path.open("a") as f:  # the demo adds its vars
        f.write(demo_addition())
    after_demo = path.read_text()
    assert "\nvars: {greeting: Hello from the sandbox" in after_demo
    inventory.write(tmp_path, written)  # the second `up`
    assert path.read_text() == after_demo
