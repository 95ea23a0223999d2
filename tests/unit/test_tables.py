"""``deployer status`` at 80 columns shows what tells rows apart (the
release's time and tag, the image's name and tag), not ``20261201T0646…``
and ``10.213.0.1:54…``; wider terminals get the full values."""

from __future__ import annotations

from rich.console import Console

from deployer.cli.tables import keep_end, no_registry, short_digest, status_table
from deployer.commands.health import ContainerRow

REG = "10.213.0.1:5443"
D1 = "@sha256:1a2b3c4d5e6f" + "0" * 52
D2 = "@sha256:9f9f3c4d5e6f" + "1" * 52
R1, T1 = "20261201T064600Z-c-dfba5be038e5", "c-dfba5be038e5"
R2, T2 = "20261201T071500Z-c-0123456789ab", "c-0123456789ab"


def H(name: str) -> str:
    return name


def rows() -> dict[str, list[ContainerRow]]:
    return {
        "sandbox-1": [
            ContainerRow("a", "db", "running", health="healthy",
                         image=f"{REG}/flaskpg/postgres:{T1}{D1}"),
            ContainerRow("b", "migrate", "exited", image=f"{REG}/flaskpg/web:{T1}{D1}"),
            ContainerRow("c", "web", "running", health="healthy",
                         image=f"{REG}/flaskpg/web:{T1}{D1}"),
        ],
        "sandbox-2": [
            ContainerRow("d", "web", "running", health="starting",
                         image=f"{REG}/flaskpg/web:{T2}{D2}"),
        ],
    }


def render(width: int, releases: dict[str, str | None] | None = None,
           hosts: list[str] | None = None, data: dict | None = None) -> list[str]:
    c = Console(width=width, record=True, no_color=True)
    c.print(status_table("flaskpg / sandbox", hosts or [H("sandbox-1"), H("sandbox-2")],
                         data or rows(), releases or {"sandbox-1": R1, "sandbox-2": R2}, width))
    return [line.rstrip() for line in c.export_text().splitlines()]


def cells(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines[3:]]  # title, header, rule


def test_at_80_columns_the_distinguishing_parts_are_visible() -> None:
    lines = render(80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert "…" not in text  # nothing cut
    got = cells(lines)
    assert got[0] == ["sandbox-1", "064600Z", "db", "running", "healthy", f"postgres:{T1}"]
    assert got[1] == ["migrate", "exited", "(0)", "-", f"web:{T1}"]
    assert got[2] == ["web", "running", "healthy", f"web:{T1}"]
    assert got[3] == ["sandbox-2", "071500Z", "web", "running", "starting", f"web:{T2}"]


def test_wide_terminal_gets_full_values() -> None:
    text = "\n".join(render(220))
    assert R1 in text and R2 in text
    assert f"{REG}/flaskpg/postgres:{T1}{D1}" in text
    assert f"{REG}/flaskpg/web:{T2}{D2}" in text


def test_medium_width_drops_the_registry_before_the_digest() -> None:
    lines = render(110)
    assert max(map(len, lines)) <= 110
    text = "\n".join(lines)
    assert f"flaskpg/web:{T2}@sha256:9f9f3c4d5e6f" in text
    assert REG not in text


def test_a_release_whose_tag_no_image_has_keeps_its_tag() -> None:
    data = {"h1": [ContainerRow("a", "db", "running", image="postgres:16" + D1)]}
    lines = render(80, {"h1": "20261201T064600Z-hotfix-7"}, [H("h1")], data)
    assert max(map(len, lines)) <= 80
    # The date goes, the tag stays (no image shows it), then the digest.
    assert cells(lines)[0] == ["h1", "064600Z-hotfix-7", "db", "running", "-", "postgres:16"]


def test_no_release_and_no_health_show_dashes() -> None:
    data = {"h1": [ContainerRow("a", "web", "created", image="web:1")]}
    assert cells(render(80, {"h1": None}, [H("h1")], data))[0] == \
        ["h1", "-", "web", "created", "-", "web:1"]


def test_very_long_values_keep_their_ends() -> None:
    long_tag = "feature-" + "x" * 60 + "-end42"
    data = {"a-rather-long-host-name-01": [
        ContainerRow("a", "web", "running", health="healthy",
                     image=f"{REG}/team/project/web:{long_tag}{D1}")]}
    lines = render(80, {"a-rather-long-host-name-01": f"20261201T064600Z-{long_tag}"},
                   [H("a-rather-long-host-name-01")], data)
    assert max(map(len, lines)) <= 80
    assert "end42" in "\n".join(lines)


def test_helpers() -> None:
    assert short_digest("r/x:t" + D1) == "r/x:t@sha256:1a2b3c4d5e6f"
    assert no_registry(f"{REG}/a/b:t") == "a/b:t"
    assert no_registry("localhost/a:t") == "a:t"
    assert no_registry("library/postgres:16") == "library/postgres:16"
    assert keep_end("abcdefghij", 5) == "…ghij"
    assert keep_end("abc", 5) == "abc"
