"""Seeded generation of hostile variants of examples/flask-postgres.

``make_case(i)`` is a pure function of ``i`` (``random.Random(SEED + i)``), so
a failing case is reproduced alone by its number. A case is the project's
files after one to three mutations, plus the command line and environment
to run it with. The mutations are the classes a fuzz of deployer found:
hostile YAML values and syntax, hostile template code (and secrets pushed
through filters), non-regular files where files are expected, and odd
command-line values.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .project import base_texts

SEED = 1515
CFG, INV = "deployer.yaml", "inventories/prod.yaml"
TEMPLATES = ["templates/docker-compose.yaml.j2", "templates/docker_config.py.j2",
             "templates/db_password.j2"]

VALUES: list[Any] = [
    "", " ", None, 0, -1, 1.5, True, 10**30, float("inf"), float("nan"), [], {},
    [1, [2]], {"a": {"b": None}}, "[/]", "[/data]", "[bold red]x", "x\udcffy", "a\x00b",
    "a\nb", "a b", ";id", "$(id)", "`id`", "-oProxyCommand=touch PWNED", "../../etc/passwd",
    "/", "/etc", "/opt/../..", "/dev/zero", "~", "${NOPE}", "${DB_PASSWORD}",
    "${REGISTRY_PASSWORD}", "x${DB_PASSWORD}y", "${DB_PASSWORD:-dflt}", "${", "$", "$$",
    "{{ db_password }}", "{{ nope }}", "a" * 5000, "\u00e9" * 100, "0600", "0777", 600,
    "9999", "100%", "0%", "-5%", "[::1]", "2001:db8::1", "1.2.3.4", "host:22", "web-1",
    "*", "web-*", "x.internal:22 -oProxyCommand=touch$${IFS}PWNED y.internal", "\ufeff",
    "strict", "accept-new", "none", "distro", "templates/db_password.j2", "templates",
]
KEYS = ["app", "registry", "images", "files", "compose_file", "deploy_dir", "keep_releases",
        "health_timeout", "ssh", "docker", "vars", "groups", "hosts", "rollout",
        "secrets_file", "address", "user", "port", "proxy_jump", "known_hosts",
        "host_key_policy", "connect_timeout", "command_timeout", "pause", "batches",
        "max_parallel", "max_fail_percentage", "services", "template", "dest", "mode",
        "password", "username", "server", "repository", "source", "context", "appp", "<<",
        "1", "true", "[/]", "web-\udcff", "x" * 300]
TOKENS = ["!!python/object:os.system ", "!!int ", "!!float ", "!!binary ", "!foo ", "&a ",
          "*a", "<<: 5\n", "<<: *a\n", "{", "[", "}", "]", '"', "'", "\t", "---\n", "...\n",
          "%YAML 1.1\n", ": ", "- ", "? ", "#", "|", ">", "@", "`", "\x00", "\udcff", "\ufeff",
          "\r", "\u2028", "${DB_PASSWORD}", "$(", "[/]", "&l [*l]", "\\", "%", "!!str ",
          "!!python/name:os.system "]
SNIPPETS = [
    "{{ db_password | upper }}", "{{ db_password | reverse }}", "{{ db_password[1:] }}",
    "{{ db_password[:-1] }}", "{{ db_password | tojson }}", "{{ db_password | urlencode }}",
    "{{ db_password | e }}", "{{ db_password | lower }}", "{{ db_password | title }}",
    "{{ db_password | capitalize }}", "{{ db_password.upper() }}",
    "{{ db_password.swapcase() }}", "{{ db_password | replace(' ', '_') }}",
    "{{ (db_password ~ '!') | upper }}", "{{ db_password[0] }}", "{{ db_password | list }}",
    "{{ db_password | first }}", "{{ db_password | batch(2) | list }}",
    "{% for c in db_password %}{{ c }}{% endfor %}", "{{ db_password | string | upper }}",
    "{{ [db_password] | tojson }}", "{{ {'a': db_password} | tojson }}",
    "{{ db_password | wordwrap(4) }}", "{{ db_password | center(40) }}",
    "{{ '%s' | format(db_password) }}", "{{ db_password.encode() }}",
    "{{ db_password | length }}", "{{ nope | tojson }}", "{{ nope }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.environ }}", "{{ lipsum.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{% include '../../../etc/passwd' %}",
    "{% include 'templates/nope.j2' %}", "{{ 'a' * 100000000 }}", "{{ 9 ** 9 ** 9 }}",
    "{{ range(10**9) | list }}", "{{ ", "{% if %}", "{{ 1/0 }}", "{{ [][1] }}",
    "{{ host.nope }}", "{{ groups.nope[0] }}", "[/]", "{{ '[/]' }}", "\udcff",
    "{{ db_password | b64encode }}", "{{ db_password | map('upper') | list }}",
    "{{ db_password | sort | join }}", "{{ db_password.split(' ') }}",
    "{{ db_password.partition('-') }}", "{{ db_password | pprint }}",
    "{{ db_password | truncate(9) }}", "{{ db_password | indent(2) }}",
    "{{ db_password.replace('H', 'h') }}", "{{ db_password * 2 }}",
    "{{ (db_password ~ db_password)[3:] }}", "{{ db_password | join('-') }}",
]
TAGS = ["t1", "bad tag", "", "-x", ".x", "latest", "a" * 200, "[/]", "x\udcff", "v1.2.3",
        "a/b", "x;id"]
ENV_NAMES = ["prod", "nope", "p" * 300, "[/]", "../prod", "-prod", "pr od", "prod\udcff", ""]


@dataclass
class Case:
    """One generated input."""

    number: int
    texts: dict[str, str | bytes]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    setup: list[Callable[[Path], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def json_out(self) -> bool:
        return "-o" in self.argv


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_value(rnd: random.Random, case: Case) -> None:
    name = rnd.choice([CFG, INV])
    text = case.texts[name]
    assert isinstance(text, str)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return
    paths = [p for p in _paths(data) if p]
    if not paths:
        return
    path = rnd.choice(paths)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    op = rnd.random()
    if op < 0.6:
        parent[path[-1]] = rnd.choice(VALUES)
        case.notes.append(f"{name}: {path} = value")
    elif op < 0.75 and isinstance(parent, dict):
        del parent[path[-1]]
        case.notes.append(f"{name}: del {path}")
    elif isinstance(parent, dict):
        parent[rnd.choice(KEYS)] = rnd.choice(VALUES)
        case.notes.append(f"{name}: add key under {path[:-1]}")
    else:
        parent.append(rnd.choice(VALUES))
        case.notes.append(f"{name}: append to {path[:-1]}")
    with contextlib.suppress(yaml.YAMLError, RecursionError):
        case.texts[name] = yaml.safe_dump(data, allow_unicode=rnd.random() < 0.5,
                                          sort_keys=False)


def _mutate_text(rnd: random.Random, case: Case) -> None:
    name = rnd.choice([CFG, INV, CFG, INV, *TEMPLATES])
    text = case.texts[name]
    if not isinstance(text, str):
        return
    lines = text.split("\n")
    op = rnd.randrange(6)
    i = rnd.randrange(len(lines))
    if op == 0:  # a token somewhere in a line
        line = lines[i]
        at = rnd.randrange(len(line) + 1)
        lines[i] = line[:at] + rnd.choice(TOKENS) + line[at:]
    elif op == 1:
        del lines[i]
    elif op == 2:
        lines.insert(i, lines[rnd.randrange(len(lines))])
    elif op == 3:
        lines = lines[: i + 1]
        lines[-1] = lines[-1][: rnd.randrange(len(lines[-1]) + 1)]
    elif op == 4:  # replace a character
        line = lines[i]
        if line:
            at = rnd.randrange(len(line))
            lines[i] = line[:at] + rnd.choice(":-[]{}\"'#&*!|>%@` \t\\") + line[at + 1:]
    else:  # an alias bomb or deep nesting
        if rnd.random() < 0.5:
            bomb = ['  bomb0: &b0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
            bomb += [f"  bomb{n}: &b{n} [" + ",".join([f"*b{n - 1}"] * 9) + "]"
                     for n in range(1, 9)]
            lines.insert(i, "\n".join(bomb) if name == INV else "")
        else:
            depth = rnd.choice([50, 200, 1000, 5000])
            lines.insert(i, "deep: " + "[" * depth + "]" * depth)
    case.texts[name] = "\n".join(lines)
    case.notes.append(f"{name}: text op {op} at line {i + 1}")


def _mutate_template(rnd: random.Random, case: Case) -> None:
    name = rnd.choice(TEMPLATES)
    text = case.texts[name]
    if not isinstance(text, str):
        return
    snippet = rnd.choice(SNIPPETS)
    if rnd.random() < 0.5 or name.endswith("docker-compose.yaml.j2"):
        # as a comment of the compose file (still YAML) or appended
        text = text + ("\n# " if name.endswith(".yaml.j2") else "\n") + snippet + "\n"
    else:
        text = snippet + "\n"
    case.texts[name] = text
    case.notes.append(f"{name}: {snippet!r}")


def _fifo(rel: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        p = root / rel
        if p.exists() or p.is_symlink():
            p.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(p)
    return make


def _symlink(rel: str, target: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        p = root / rel
        if p.exists() or p.is_symlink():
            p.unlink()
        os.symlink(target, p)
    return make


def _mutate_files(rnd: random.Random, case: Case) -> None:
    inv = case.texts[INV]
    if not isinstance(inv, str):
        return
    op = rnd.randrange(9)
    tpl = rnd.choice(TEMPLATES)
    if op < 5:
        target = ["templates", "fifo.env", "/dev/zero", "bad.env", "missing.env"][op]
        case.texts[INV] = inv + f"\nsecrets_file: {target}\n"
        if target == "fifo.env":
            case.setup.append(_fifo("fifo.env"))
        if target == "bad.env":
            case.texts["bad.env"] = b"DB_PASSWORD=\xff\xfe\n"
        case.notes.append(f"secrets_file {target}")
    elif op == 5:
        case.setup.append(_fifo(tpl))
        case.notes.append(f"{tpl} is a FIFO")
    elif op == 6:
        case.setup.append(_symlink(tpl, "/etc/hostname"))
        case.notes.append(f"{tpl} -> /etc/hostname")
    elif op == 7:
        case.texts[tpl] = b"\xff\xfe{{ x }}\n"
        case.notes.append(f"{tpl} not UTF-8")
    else:
        case.texts[".deployer/prod.env"] = "# planted\nDB_PASSWORD=from-file-Secret-99\n"
        case.texts[INV] = inv + "\nsecrets_file: .deployer/prod.env\n"
        case.notes.append("secrets_file from the file")


def make_case(number: int) -> Case:
    """The ``number``-th generated case (deterministic)."""
    rnd = random.Random(SEED + number)
    case = Case(number, dict(base_texts()), [])
    for _ in range(rnd.choice([1, 1, 2, 3])):
        rnd.choice([_mutate_value, _mutate_value, _mutate_text, _mutate_text,
                    _mutate_template, _mutate_template, _mutate_files])(rnd, case)
    command = "check" if number % 2 == 0 else "plan"
    env_name = "prod" if rnd.random() < 0.93 else rnd.choice(ENV_NAMES)
    argv = [command, env_name]
    if command == "plan":
        argv += ["--tag", "t1" if rnd.random() < 0.85 else rnd.choice(TAGS)]
        if rnd.random() < 0.1:
            argv += ["--limit", rnd.choice(["web-1", "web", "nope", "[/]", "*", ",", "web-*"])]
    if rnd.random() < 0.35:
        argv = ["-o", "json", *argv]
    if rnd.random() < 0.2:
        case.env["GITHUB_ACTIONS"] = "true"
    if rnd.random() < 0.05:
        case.env[rnd.choice(["DB_PASSWORD", "REGISTRY_PASSWORD"])] = rnd.choice(["", "ab", "x"])
    case.argv = argv
    return case
