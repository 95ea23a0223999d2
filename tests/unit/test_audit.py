"""The audit log: the builders by exact argv, the append script run by a real
``sh`` and ``dd`` (concurrent appends stay whole lines), parsing and merging."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deployer.audit import AuditContext, line, merge, parse_log, parse_since
from deployer.commands import audit as cmds
from deployer.commands.base import Command
from deployer.errors import ConfigError
from deployer.secrets import MASK, masker


def test_append_builder_puts_the_line_on_stdin() -> None:
    c = cmds.append("/opt/shop", '{"a":"$(x)"}')
    assert c.argv[:2] == ("sh", "-c") and c.argv[3:] == ("sh", "/opt/shop/audit.log")
    assert "oflag=append" in c.argv[2] and "iflag=fullblock" in c.argv[2]
    assert c.stdin == '{"a":"$(x)"}\n'
    assert "$(x)" not in c.shell()
    with pytest.raises(ValueError):
        cmds.append("/opt/shop", "two\nlines")


def test_read_builder() -> None:
    c = cmds.read("/opt/shop", 50)
    assert c.argv[3:] == ("sh", "/opt/shop/audit.log", "50")


def _run(c: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(c.argv), input=c.stdin, capture_output=True, text=True,
                          check=True)


def test_concurrent_appends_stay_whole_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"n": i, "pad": chr(97 + i % 26) * 20000}) for i in range(24)]
    threads = [threading.Thread(target=_run, args=(cmds.append(str(tmp_path), ln),))
               for ln in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = (tmp_path / "audit.log").read_text().splitlines()
    assert sorted(got) == sorted(lines)
    assert _run(cmds.read(str(tmp_path), 3)).stdout.splitlines() == got[-3:]
    assert _run(cmds.read(str(tmp_path / "none"), 3)).stdout == ""


def test_line_is_masked_json() -> None:
    masker.add("audit-Secret-77")
    ctx = AuditContext("shop", "prod", "/opt/shop", "ana@laptop", "abc123")
    entry = json.loads(line(ctx, "exec", "web-1", "ok", "r1", 1.23456,
                            "exec in web: echo audit-Secret-77"))
    assert entry["detail"] == f"exec in web: echo {MASK}"
    assert {k: entry[k] for k in ("action", "app", "env", "host", "user", "commit", "release",
                                  "result", "duration")} == {
        "action": "exec", "app": "shop", "env": "prod", "host": "web-1", "user": "ana@laptop",
        "commit": "abc123", "release": "r1", "result": "ok", "duration": 1.235}
    assert entry["time"].endswith("Z")


def test_merge_newest_first_with_since_and_limit() -> None:
    a = parse_log('{"time":"2026-12-01T10:00:00.000Z","action":"ship"}\n'
                  '{"time":"2026-12-01T12:00:00.000Z","action":"lock"}\n'
                  "garbage\n", "a")
    b = parse_log('{"time":"2026-12-01T11:00:00.000Z","action":"ship","host":"forged"}\n', "b")
    assert [(e["host"], e["action"]) for e in merge([a, b])] == [
        ("a", "lock"), ("b", "ship"), ("a", "ship"), ("a", "unreadable")]
    since = datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)
    assert [e["action"] for e in merge([a, b], since)] == ["lock", "ship"]
    assert [e["action"] for e in merge([a, b], None, 1)] == ["lock"]


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2h", now) == datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    assert parse_since("1w", now) == datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-30", now) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert parse_since("2026-11-30T08:15Z", now) == datetime(2026, 11, 30, 8, 15,
                                                             tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="neither a duration nor a date"):
        parse_since("yesterday", now)
