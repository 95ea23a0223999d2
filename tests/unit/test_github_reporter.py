"""GithubReporter on its own: masks first, one group per host, escaped error
annotations, the step summary and the outputs file."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from deployer.report.github import (
    GithubReporter,
    command,
    disable_masks,
    enable_masks,
    escape_data,
    escape_property,
    outputs_text,
    step_summary,
)
from deployer.report.model import HostReport, RunReport
from deployer.secrets import masker

SECRET = "s3cr3t-Value-42"
LATE = "late-Secret-99"


def files(tmp_path: Path) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
    }


def a_run() -> RunReport:
    return RunReport(
        command="ship", app="shop", env="prod", release="20240101-abc", seconds=12.5,
        images={"web": "reg.example:5000/shop/web@sha256:" + "a" * 64},
        hosts=[
            HostReport("web-1", "deployed", release="20240101-abc", seconds=4.25),
            HostReport("web-2", "rolled back", release="20231231-old", seconds=8.0,
                       error=f"web unhealthy: exit 1\npassword was {SECRET} | 100%, a:b"),
        ],
    )


def test_escaping_follows_the_runner() -> None:
    assert escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert escape_property("deployer: a,b%\n") == "deployer%3A a%2Cb%25%0A"
    assert command("error", "x: y", title="t:1") == "::error title=t%3A1::x: y"
    assert command("endgroup") == "::endgroup::"


def test_masks_come_before_anything_and_cover_late_secrets(tmp_path: Path) -> None:
    masker.add(SECRET)
    stream = io.StringIO()
    r = GithubReporter(stream, files(tmp_path), masks=stream)
    assert stream.getvalue() == f"::add-mask::{SECRET}\n"
    r.batch(1, ["web-1"])
    masker.add(LATE)  # registered mid-run: announced before the next line
    r.log("web-1", f"said {LATE} and {SECRET}")
    r.host_done(HostReport("web-1", "deployed", seconds=1.0))
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"::add-mask::{SECRET}"
    assert lines[1] == "== batch 1: web-1"
    assert lines[2] == f"::add-mask::{LATE}"
    assert lines.count(f"::add-mask::{SECRET}") == 1
    body = "\n".join(lines[3:])
    assert SECRET not in body and LATE not in body
    assert "said ****** and ******" in body


def test_mask_lines_escape_and_skip_multiline_values(tmp_path: Path) -> None:
    key = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD1234\n-----END KEY-----"
    masker.add(key)
    masker.add("50%off\rx")  # \r inside a value: not announced whole
    masker.add("pct%value")
    stream = io.StringIO()
    GithubReporter(stream, files(tmp_path), masks=stream)
    lines = stream.getvalue().splitlines()
    assert "::add-mask::AAAABBBBCCCCDDDD1234" in lines
    assert "::add-mask::-----BEGIN KEY-----" in lines
    assert "::add-mask::pct%25value" in lines
    assert not any("%0A" in ln or "%0D" in ln for ln in lines)


def test_enable_masks_announces_at_registration(tmp_path: Path) -> None:
    stream = io.StringIO()
    masker.add(SECRET)
    enable_masks(stream)
    try:
        assert stream.getvalue() == f"::add-mask::{SECRET}\n"
        masker.add(LATE)  # the moment it is registered, before add() returns
        assert stream.getvalue().splitlines()[-1] == f"::add-mask::{LATE}"
        enable_masks(stream)  # idempotent
        masker.add("third-secret")
        assert stream.getvalue().count("third-secret") == 1
        GithubReporter(stream, files(tmp_path), masks=stream)  # shares the announcer
        assert stream.getvalue().count(SECRET) == 1
    finally:
        disable_masks()
    masker.add("after-disable")
    assert "after-disable" not in stream.getvalue()


def test_one_group_per_host_without_interleaving(tmp_path: Path) -> None:
    stream = io.StringIO()
    r = GithubReporter(stream, files(tmp_path))
    r.batch(1, ["a", "b"])
    barrier = threading.Barrier(2)

    def host(name: str) -> None:
        barrier.wait()
        for i in range(50):
            r.step(name, f"step {i}")
            r.log(name, f"{name} line {i}")
        r.host_done(HostReport(name, "deployed", seconds=2.0))

    threads = [threading.Thread(target=host, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("::group::")]
    assert len(starts) == 2
    for s in starts:
        name = lines[s].removeprefix("::group::").split(":")[0]
        assert lines[s] == f"::group::{name}: deployed in 2.0s"
        end = lines.index("::endgroup::", s)
        body = lines[s + 1:end]
        assert len(body) == 101  # 50 steps, 50 log lines, the result
        assert all(ln.startswith("[") for ln in body)
        other = "b" if name == "a" else "a"
        assert not any(f"{other} line" in ln for ln in body)


def test_remote_text_cannot_issue_workflow_commands(tmp_path: Path) -> None:
    stream = io.StringIO()
    r = GithubReporter(stream, files(tmp_path))
    r.log("web-1", "::add-mask::x\n::set-output name=result::success\n  ::error::fake")
    r.host_done(HostReport("web-1", "deployed", seconds=1.0))
    commands = [ln for ln in stream.getvalue().splitlines() if ln.lstrip().startswith("::")]
    assert commands == ["::group::web-1: deployed in 1.0s", "::endgroup::"]


def test_failed_host_gets_an_escaped_error_annotation(tmp_path: Path) -> None:
    masker.add(SECRET)
    stream = io.StringIO()
    r = GithubReporter(stream, files(tmp_path))
    run = a_run()
    for h in run.hosts:
        r.host_done(h)
    r.finish(run)
    errors = [ln for ln in stream.getvalue().splitlines() if ln.startswith("::error")]
    assert errors == [
        "::error title=deployer%3A web-2::rolled back: web unhealthy: exit 1%0A"
        "password was ****** | 100%25, a:b"
    ]
    out = stream.getvalue()
    assert out.index("::endgroup::", out.index("::group::web-2")) < out.index("::error")
    assert SECRET not in out.replace(f"::add-mask::{SECRET}\n", "")


def test_skipped_is_a_warning_and_unreported_failures_are_annotated(tmp_path: Path) -> None:
    stream = io.StringIO()
    r = GithubReporter(stream, files(tmp_path))
    r.step("web-1", "upload")  # never finished: interrupted
    run = RunReport("ship", "shop", "prod", interrupted=True, hosts=[
        HostReport("web-1", "failed", error="interrupted"),
        HostReport("web-2", "skipped", detail="not started"),
    ])
    r.finish(run)
    lines = stream.getvalue().splitlines()
    assert "::group::web-1: unfinished" in lines
    assert "::error title=deployer%3A web-1::failed: interrupted" in lines
    assert "::warning title=deployer%3A web-2::skipped: not started" in lines
    assert (tmp_path / "output").read_text() == "release=\nresult=interrupted\n"


def test_summary_markdown(tmp_path: Path) -> None:
    masker.add(SECRET)
    md = step_summary(a_run())
    assert md.startswith("### ❌ deployer ship shop → prod: failure\n")
    assert "Release `20240101-abc` · 1 deployed, 1 rolled back · 12.5s" in md
    assert "| host | result | release | time | detail |" in md
    assert "| web-1 | ✅ deployed | 20240101-abc | 4.2s |  |" in md
    assert ("| web-2 | ↩️ rolled back | 20231231-old | 8.0s | web unhealthy: exit 1<br>"
            "password was ****** \\| 100%, a:b |") in md
    assert f"| web | `reg.example:5000/shop/web@sha256:{'a' * 64}` |" in md
    assert SECRET not in md
    # every table row has the same number of cells (the pipe in the error is escaped)
    rows = [ln for ln in md.splitlines() if ln.startswith("| web-")]
    assert all(ln.replace("\\|", "").count("|") == 6 for ln in rows)


def test_finish_appends_summary_and_outputs(tmp_path: Path) -> None:
    env = files(tmp_path)
    Path(env["GITHUB_STEP_SUMMARY"]).write_text("earlier step\n")
    Path(env["GITHUB_OUTPUT"]).write_text("other=1\n")
    stream = io.StringIO()
    r = GithubReporter(stream, env)
    run = a_run()
    run.hosts = run.hosts[:1]
    r.host_done(run.hosts[0])
    r.finish(run)
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("earlier step\n### ✅ deployer ship shop → prod: success")
    assert Path(env["GITHUB_OUTPUT"]).read_text() == (
        "other=1\nrelease=20240101-abc\nresult=success\n")
    out = stream.getvalue()
    assert "success: 1 deployed in 12.5s" in out
    assert "\x1b[" not in out  # no colours


def test_outputs_with_line_breaks_use_a_delimiter() -> None:
    text = outputs_text({"a": "one", "b": "two\nlines"})
    lines = text.splitlines()
    assert lines[0] == "a=one"
    assert lines[1].startswith("b<<ghadelimiter_")
    delim = lines[1].split("<<", 1)[1]
    assert lines[2:] == ["two", "lines", delim]


def test_without_the_files_nothing_is_written(tmp_path: Path) -> None:
    stream = io.StringIO()
    GithubReporter(stream, {"GITHUB_ACTIONS": "true"}).finish(a_run())
    assert list(tmp_path.iterdir()) == []
    assert "::error" in stream.getvalue()


def test_choose_reporter_picks_it_in_github(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.report.reporters import JsonReporter, choose_reporter

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert isinstance(choose_reporter("text"), GithubReporter)
    assert isinstance(choose_reporter("json"), JsonReporter)
