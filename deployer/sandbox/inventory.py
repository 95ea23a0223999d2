"""``inventories/sandbox.yaml``: the inventory that points deployer at the
sandbox hosts and registry, so ``deployer ship sandbox`` needs no other set-up.
"""

from __future__ import annotations

import json
from pathlib import Path

INVENTORY_NAME = "sandbox"
GROUP = "sandbox"
PASSWORD_VAR = "SANDBOX_REGISTRY_PASSWORD"  # noqa: S105 - a variable name


def _q(value: str) -> str:
    """A YAML scalar: plain when that is unambiguous, else double-quoted."""
    safe = all(c.isalnum() or c in "._/-:" for c in value) and value[:1] not in "-:?"
    if safe and value.lower() not in {"yes", "no", "true", "false", "null", "on", "off", "~"}:
        return value
    return json.dumps(value)


def render(
    *,
    sandbox_rel: str,
    registry_server: str,
    registry_username: str,
    hosts: list[tuple[str, str]],
) -> str:
    """The inventory text. ``sandbox_rel``: the sandbox folder relative to the
    project (the config loader resolves relative paths against the project)."""
    lines = [
        "# written by `deployer sandbox up`; safe to edit, rewritten by the next `up`",
        f"ssh: {{user: deploy, identity_file: {_q(sandbox_rel + '/id_ed25519')}, "
        f"known_hosts: {_q(sandbox_rel + '/known_hosts')}, host_key_policy: strict}}",
        "docker: {install: distro}",
        f"registry: {{server: {_q(registry_server)}, username: {_q(registry_username)}, "
        # quoted: `{` and `}` end a plain scalar inside a YAML flow mapping
        f'password: "${{{PASSWORD_VAR}}}"}}',
        f"secrets_file: {_q(sandbox_rel + '/registry.env')}",
        "groups:",
        f"  {GROUP}:",
        "    hosts:",
    ]
    lines += [f"      {name}: {{address: {_q(address)}}}" for name, address in hosts]
    return "\n".join(lines) + "\n"


# What `up` owns and rewrites; every other top-level key (vars, rollout, ...)
# is the user's and survives the next `up`.
OWNED_KEYS = ("ssh", "docker", "registry", "secrets_file", "groups")
USER_MARK = "# yours: kept by the next `up`"


def user_part(existing: str) -> str:
    """The top-level blocks of an existing sandbox inventory that the user
    added (``vars:``, ``rollout:``...), as text, comments included."""
    out: list[str] = []
    keep = False
    for line in existing.splitlines():
        if line.strip() == USER_MARK or line.startswith("# written by `deployer sandbox up`"):
            continue
        if line and not line[0].isspace() and not line.startswith("#"):
            key = line.split(":", 1)[0].strip()
            keep = key not in OWNED_KEYS
        if keep:
            out.append(line)
    text = "\n".join(out).strip("\n")
    return text + "\n" if text else ""


def write(project_dir: Path, text: str) -> Path:
    """Write ``inventories/sandbox.yaml`` atomically, keeping the user's own
    top-level keys from the existing file; return its path."""
    path = project_dir / "inventories" / f"{INVENTORY_NAME}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        mine = user_part(path.read_text())
        if mine:
            text = text + USER_MARK + "\n" + mine
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
