"""Secrets stay masked in every spelling, through templates too, and JSON is
masked before it is serialised; output cannot be broken by values."""

from __future__ import annotations

import base64
import io
import json
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError
from deployer.plan import build_plan
from deployer.report.model import HostReport, RunReport
from deployer.secrets import MASK, Secret, dumps_masked, mask, masker

PW = 'p"w\\<&\t\u00e9-9 x'


@pytest.mark.parametrize("spelling", [
    PW, json.dumps(PW)[1:-1], json.dumps(PW, ensure_ascii=False)[1:-1], shlex.quote(PW),
    urllib.parse.quote(PW, safe=""), urllib.parse.quote_plus(PW), repr(PW)[1:-1],
    json.dumps(PW)[1:-1].replace("<", "\\u003c").replace("&", "\\u0026"),
    "p&quot;w\\&lt;&amp;\t\u00e9-9 x",
])
def test_every_spelling_is_masked(spelling: str) -> None:
    masker.add(PW)
    assert mask(f"before {spelling} after") == f"before {MASK} after"


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b"ab:"])
def test_base64_inside_a_longer_encoding_is_masked(prefix: bytes) -> None:
    masker.add(PW)
    text = base64.b64encode(prefix + PW.encode() + b"zz").decode()
    assert MASK in mask(text)
    core = [s for s in masker.values if s in text]
    assert core, text


def test_listeners_get_the_value_not_its_spellings() -> None:
    seen: list[str] = []
    unsubscribe = masker.subscribe(seen.append)
    try:
        masker.add(PW)
    finally:
        unsubscribe()
    assert seen == [PW]
    assert masker.originals == [PW] and len(masker.values) > 5


def test_dumps_masked_keeps_json_valid_even_for_a_secret_that_looks_like_json() -> None:
    masker.add('", "')  # 4 characters that occur in the JSON syntax itself
    masker.add(PW)
    data = {"a": [f"x{PW}y", '", "'], "b": {"c": 1}}
    text = dumps_masked(data)
    assert json.loads(text) == {"a": [f"x{MASK}y", MASK], "b": {"c": 1}}
    assert json.dumps(PW)[1:-1] not in text


def test_short_secrets_are_a_config_error(make_project: MakeProject) -> None:
    with pytest.raises(ConfigError, match="DB_PASSWORD is 3 characters long: too short"):
        load_project(make_project(), "prod", {**ENV, "DB_PASSWORD": "abc"})
    load_project(make_project(), "prod", {**ENV, "DB_PASSWORD": "abcd"})


def test_secret_slices_are_secrets() -> None:
    s = Secret("hunter2-long")
    piece = s[2:]
    assert isinstance(piece, Secret) and mask(f"<{piece}>") == f"<{MASK}>"


# -- templates ------------------------------------------------------------------


def render(make_project: MakeProject, template: str, pw: str = PW) -> str:
    root = make_project({"templates/app.conf.j2": template})
    p = load_project(root, "prod", {**ENV, "DB_PASSWORD": pw})
    plan = build_plan(p, p.hosts[:1], {"web": "r/web:t"}, "rel", "t")
    return next(f.content.decode() for f in plan.hosts[0].files if f.dest == "app.conf")


@pytest.mark.parametrize("expr", [
    "db_password | upper", "db_password | lower", "db_password | reverse",
    "db_password[1:]", "db_password[:-2]", "db_password.upper()", "db_password.swapcase()",
    "db_password | tojson", "db_password | urlencode", "db_password | e", "db_password | title",
    "(db_password ~ '!') | upper", "db_password.replace('p', 'P')", "db_password.encode()",
    "db_password | replace('x', 'y')", "[db_password] | tojson", "db_password * 2",
])
def test_transformed_secrets_are_masked(make_project: MakeProject, expr: str) -> None:
    out = render(make_project, "{{ " + expr + " }}")
    assert mask(out).strip().strip("[]b'\"") .replace(MASK, "") == "", mask(out)


@pytest.mark.parametrize("expr", [
    "{{ db_password[0] }}", "{{ db_password[:2] }}",
    "{% for c in db_password %}{{ c }}{% endfor %}",
    "{{ db_password | list }}", "{{ db_password | first }}", "{{ db_password | sort | join }}",
])
def test_pieces_too_short_to_mask_are_refused(make_project: MakeProject, expr: str) -> None:
    with pytest.raises(ConfigError, match="too short to be masked"):
        render(make_project, expr)


@pytest.mark.parametrize("expr", [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__ }}",
])
def test_templates_are_sandboxed(make_project: MakeProject, expr: str) -> None:
    with pytest.raises(ConfigError, match=r"app\.conf\.j2:1: template error: access to attribute"):
        render(make_project, expr)


def test_resource_bombs_and_undefined_under_tojson(make_project: MakeProject) -> None:
    with pytest.raises(ConfigError, match="would make more than"):
        render(make_project, "{{ 'a' * 100000000 }}")
    with pytest.raises(ConfigError, match="exponent larger than"):
        render(make_project, "{{ 10 ** 100000 }}")
    with pytest.raises(ConfigError, match="undefined variable nope"):
        render(make_project, "{{ nope | tojson }}")


def test_template_loader_stays_in_the_project(make_project: MakeProject, tmp_path: Path) -> None:
    outside = tmp_path.parent / "outside.j2"
    outside.write_text("secret outside")
    root = make_project()
    tpl = root / "templates/app.conf.j2"
    tpl.unlink()
    tpl.symlink_to(outside)
    p = load_project(root, "prod", ENV)
    with pytest.raises(ConfigError, match="outside the project folder"):
        build_plan(p, p.hosts, {"web": "r/web:t"}, "rel", "t")
    tpl.unlink()
    with pytest.raises(ConfigError, match="leaves the project folder"):
        render(make_project, "{% include '../../outside.j2' %}")


# -- output -------------------------------------------------------------------------


def test_markup_and_surrogates_in_values_never_break_printing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deployer.cli.output import err, esc, out

    err("error: host [/data]: [/] failed \udcff")
    out(f"[bold]{esc('[/]')}[/bold]")
    out("unescaped [/] value")  # a caller that forgot esc(): printed as is
    captured = capsys.readouterr()
    assert "error: host [/data]: [/] failed \\udcff" in captured.err
    assert "[/]" in captured.out and "unescaped [/] value" in captured.out


def test_summary_table_and_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from deployer.report.reporters import JsonReporter, summary_table

    masker.add(PW)
    run = RunReport(command="ship", app="[/]", env="prod", release="r1", hosts=[
        HostReport("[/data]", "failed", error=f"[/] boom {json.dumps(PW)}"),
    ])
    buf = io.StringIO()
    Console(file=buf, width=200).print(summary_table(run))
    assert "[/data]" in buf.getvalue() and "[/] boom" in buf.getvalue()
    JsonReporter(io.StringIO()).finish(run)
    report = json.loads(capsys.readouterr().out)
    assert PW not in json.dumps(report) and json.dumps(PW)[1:-1] not in json.dumps(report)
    assert MASK in report["hosts"][0]["error"]


def test_github_mode_json_stdout_is_valid_and_secret_free(make_project: MakeProject) -> None:
    root = make_project()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "GITHUB_ACTIONS": "true",
           **ENV, "DB_PASSWORD": PW}
    for args in (["-o", "json", "check", "prod"], ["-o", "json", "plan", "prod", "--tag", "t1"]):
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(root), *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        json.loads(p.stdout)
        assert "::add-mask::" not in p.stdout
        for secret in (PW, ENV["REGISTRY_PASSWORD"]):
            assert secret not in p.stdout and json.dumps(secret)[1:-1] not in p.stdout
            assert p.stderr.splitlines().index(f"::add-mask::{secret}") < 3
    bad = subprocess.run([sys.executable, "-m", "deployer", "-C", str(root), "-o", "json",
                          "check", "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "::error title=deployer::" in bad.stderr
