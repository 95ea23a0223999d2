"""A seeded fuzz of ``check`` and ``plan`` over hostile variants of
examples/flask-postgres, in-process (the CLI's real ``main()``), plus the
findings of the first fuzz as named regression cases.

Every case must end in exit 0 or exit 2 with one ``error: <where>: ...``
line; never a traceback, an "internal error", an exception out of ``main()``
or a hang (each case has a timeout); never a planted secret in any spelling
on stdout or stderr; under ``-o json`` stdout is JSON, and ``::add-mask::``
never goes to stdout. Reproduce a generated case alone with
``FUZZ_CASES=<n> FUZZ_START=<n> pytest tests/fuzz -k generated``.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .generate import CFG, INV, make_case
from .harness import SECRETS, problems, run
from .project import base_texts, write_project

N_CASES = int(os.environ.get("FUZZ_CASES", "1100"))
START = int(os.environ.get("FUZZ_START", "0"))
CASE_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _memory_cap() -> Iterator[None]:
    """A YAML or template bomb must be a MemoryError here (a failing case), not
    the machine's OOM killer: cap this process's address space while it runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = 3 * 1024**3
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_generated_inputs(tmp_path: Path) -> None:
    failures: list[str] = []
    seen_commands: set[str] = set()
    errors = 0
    for n in range(START, START + N_CASES):
        case = make_case(n)
        root = write_project(tmp_path / "p", case.texts)
        for step in case.setup:
            step(root)
        r = run(root, case.argv, case.env, timeout=CASE_TIMEOUT)
        seen_commands.update(a for a in case.argv if a in ("check", "plan"))
        errors += r.code == 2
        found = problems(r, case.json_out)
        if found:
            failures.append(
                f"case {n} {case.argv} {case.notes}: {found} :: {r.stderr.strip()[:300]!r}"
            )
    assert N_CASES < 1000 or {"check", "plan"} <= seen_commands
    # The generator must produce both good and bad inputs, or it tests little.
    assert N_CASES < 100 or 0.2 * N_CASES < errors < 0.95 * N_CASES, errors
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:25])


# -- the first fuzz's findings, one by one -----------------------------------------

Mutation = Callable[[dict[str, str | bytes]], None]


def rep(name: str, old: str, new: str) -> Mutation:
    def m(t: dict[str, str | bytes]) -> None:
        text = t[name]
        assert isinstance(text, str) and old in text, (name, old)
        t[name] = text.replace(old, new, 1)
    return m


def add(name: str, extra: str) -> Mutation:
    def m(t: dict[str, str | bytes]) -> None:
        text = t[name]
        assert isinstance(text, str)
        t[name] = text + extra
    return m


def secrets_file(value: str) -> Mutation:
    return rep(INV, "# secrets_file: .deployer/prod.env", f"secrets_file: {value}")


BOMB = "  bomb0: &b0 [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"  bomb{n}: &b{n} [" + ",".join([f"*b{n - 1}"] * 9) + "]\n" for n in range(1, 9)
)
TPL = "templates/db_password.j2"
COMPOSE = "templates/docker-compose.yaml.j2"
PLAN = ["plan", "prod", "--tag", "t1"]

# name -> (mutation, argv, env, setup, needle expected in stderr or "" for exit 0)
REGRESSIONS: dict[str, tuple[Mutation | None, list[str], dict[str, str],
                             Callable[[Path], object] | None, str]] = {
    "python-object tag": (rep(INV, "greeting: Hello from flaskpg",
                              "greeting: !!python/object:os.system x"), ["check", "prod"],
                          {}, None, "prod.yaml:14:13: unsupported YAML tag"),
    "!!int abc": (rep(INV, "web_port: 80", "web_port: !!int abc"), ["check", "prod"], {}, None,
                  "prod.yaml:15:13: 'abc' is not a valid int"),
    "<<: 5": (add(INV, "\nfoo:\n  <<: 5\n"), ["check", "prod"], {}, None, "merge key"),
    "recursive alias": (add(INV, "\nx: &l [*l]\n"), ["check", "prod"], {}, None, "recursion"),
    "nesting 1000 deep": (add(INV, "\nx: " + "[" * 1000 + "]" * 1000 + "\n"),
                          ["check", "prod"], {}, None, "nested more than"),
    "alias bomb": (rep(INV, "vars:\n", "vars:\n" + BOMB), ["check", "prod"], {}, None,
                   "more than 100000 values"),
    "secrets_file directory": (secrets_file("templates"), ["check", "prod"], {}, None,
                               "templates: secrets_file is a directory"),
    "secrets_file empty": (secrets_file('""'), ["check", "prod"], {}, None,
                           "prod.yaml:41:1: secrets_file must be a path (it is empty)"),
    "secrets_file /dev/zero": (secrets_file("/dev/zero"), ["check", "prod"], {}, None,
                               "/dev/zero: secrets_file is a device"),
    "secrets_file FIFO": (secrets_file("fifo"), ["check", "prod"], {},
                          lambda r: os.mkfifo(r / "fifo"), "fifo: secrets_file is a FIFO"),
    "secrets_file not UTF-8": (secrets_file("bad.env"), ["check", "prod"], {},
                               lambda r: (r / "bad.env").write_bytes(b"A=\xff\n"),
                               "bad.env:1: secrets_file is not valid UTF-8"),
    "template outside the project": (rep(CFG, TPL, "../../../../etc/hostname"),
                                     ["check", "prod"], {}, None, "outside the project"),
    "template 1 MB path": (rep(CFG, TPL, "a" * 1_000_000), ["check", "prod"], {}, None,
                           "files.2.template"),
    "template FIFO": (rep(CFG, TPL, "templates/fifo"), ["check", "prod"], {},
                      lambda r: os.mkfifo(r / "templates/fifo"),
                      "templates/fifo: template is a FIFO"),
    "template not UTF-8": (None, ["check", "prod"], {},
                           lambda r: (r / TPL).write_bytes(b"\xff{{ x }}"),
                           "db_password.j2:1: template is not valid UTF-8"),
    "template symlinked out": (None, ["check", "prod"], {},
                               lambda r: ((r / TPL).unlink(), os.symlink("/etc/hostname", r / TPL)),
                               "outside the project folder"),
    "plan --tag 'bad tag'": (None, ["plan", "prod", "--tag", "bad tag"], {}, None,
                             "--tag 'bad tag' is not a valid image tag"),
    "compose service 1:": (rep(COMPOSE, "  web:\n", "  1:\n    image: x\n  web:\n"), PLAN, {},
                           None, "service name 1 is a int"),
    "compose service true:": (rep(COMPOSE, "  web:\n", "  true:\n    image: x\n  web:\n"), PLAN,
                              {}, None, "service name True is a bool"),
    "lone surrogate in a host name": (rep(INV, "web-1:", '"web-\\udcff1":'), ["check", "prod"],
                                      # libyaml refuses the escape, PyYAML the name
                                      {}, None, "inventories/prod.yaml:2"),
    "300-character environment": (None, ["check", "p" * 300], {}, None,
                                  "environment name 'ppp"),
    "app: '[/]'": (rep(CFG, "app: flaskpg", 'app: "[/]"'), ["check", "prod"], {}, None,
                   "app: '[/]' is not a valid app name"),
    "host named [/data]": (rep(INV, "web-1:", '"[/data]":'), ["check", "prod"], {}, None,
                           "host name '[/data]'"),
    "ProxyCommand %h injection": (rep(INV, "address: 203.0.113.10", 'address: "x.internal:22 '
                                      '-oProxyCommand=touch$${IFS}PWNED y.internal"'),
                                  ["check", "prod"], {}, None, "is not a host name"),
    "deploy_dir /": (add(CFG, "deploy_dir: /\n"), ["check", "prod"], {}, None,
                     "deploy_dir '/' is a system directory"),
    "deploy_dir /opt/../..": (add(CFG, "deploy_dir: /opt/../..\n"), ["check", "prod"], {}, None,
                              "must not contain '..'"),
    "rollout.pause: .inf": (rep(INV, "max_fail_percentage: 0",
                                "max_fail_percentage: 0\n  pause: .inf"), ["check", "prod"], {},
                            None, "rollout.pause"),
    "ssh.connect_timeout: .inf": (rep(INV, "port: 22", "port: 22\n  connect_timeout: .inf"),
                                  ["check", "prod"], {}, None, "ssh.connect_timeout"),
    "health_timeout: .nan": (rep(CFG, "health_timeout: 180", "health_timeout: .nan"),
                             ["check", "prod"], {}, None, "health_timeout"),
    "undefined variable under tojson": (add(TPL, "{{ nope | tojson }}"), ["check", "prod"], {},
                                        None, "undefined variable nope"),
    "empty REGISTRY_PASSWORD": (None, ["check", "prod"], {"REGISTRY_PASSWORD": ""}, None,
                                "password is empty"),
    "2-character secret": (None, ["check", "prod"], {"DB_PASSWORD": "ab"}, None,
                           "DB_PASSWORD is 2 characters long: too short to be masked"),
    "template code execution": (add(TPL, "{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
                                ["check", "prod"], {}, None, "unsafe"),
    "secret through filters": (add(TPL, "{{ db_password | upper }} {{ db_password | reverse }} "
                                   "{{ db_password[1:] }} {{ db_password | tojson }} "
                                   "{{ db_password | urlencode }}"), PLAN, {}, None, ""),
    "secret sliced too short": (add(TPL, "{{ db_password[:2] }}"), PLAN, {}, None,
                                "too short to be masked"),
    "GitHub mode, -o json": (None, ["-o", "json", "check", "prod"],
                             {"GITHUB_ACTIONS": "true"}, None, ""),
    "GitHub mode, plan -o json": (None, ["-o", "json", *PLAN], {"GITHUB_ACTIONS": "true"}, None,
                                  ""),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(name: str, tmp_path: Path) -> None:
    mutate, argv, env, setup, needle = REGRESSIONS[name]
    texts: dict[str, str | bytes] = dict(base_texts())
    if mutate:
        mutate(texts)
    root = write_project(tmp_path / "p", texts)
    if setup:
        setup(root)
    for args in (argv, ["-o", "json", *argv] if "-o" not in argv else argv):
        r = run(root, args, env, timeout=CASE_TIMEOUT)
        assert problems(r, "-o" in args) == [], (r.stdout[-2000:], r.stderr[-2000:])
        if needle:
            assert r.code == 2, r.stdout[-500:]
            assert needle in r.stderr, r.stderr
        else:
            assert r.code == 0, r.stderr
        if env.get("GITHUB_ACTIONS"):
            # masks registered (on stderr), before anything else there
            lines = r.stderr.splitlines()
            for secret in SECRETS.values():
                assert f"::add-mask::{secret}" in lines
            assert all(ln.startswith("::add-mask::") for ln in lines)
