"""`.ci/debian_mirror.py`: the Debian mirror from the machine's apt sources
(deb822 ``.sources`` and one-line ``sources.list``), used by .ci/setup and
.ci/build-images instead of a hard-coded URL."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "debian_mirror.py"
_spec = importlib.util.spec_from_file_location("debian_mirror", SCRIPT)
assert _spec and _spec.loader
dm = importlib.util.module_from_spec(_spec)
sys.modules["debian_mirror"] = dm  # dataclasses look their module up
_spec.loader.exec_module(dm)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://mirror.corp.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: https://mirror.corp.example/debian/
Suites: bookworm bookworm-updates
Components: main
  contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = (
    "# deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n"
    "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    " http://proxy.corp:3142/debian bookworm main\n"
    "deb http://security.debian.org/debian-security bookworm-security main\n"
)

DOCKER_LIST = "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable\n"  # noqa: E501


def machine(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "etc" / "apt" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def mirror(root: Path, *args: str) -> str:
    p = subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                       capture_output=True, text=True, check=True)
    return p.stdout.strip()


def test_deb822_sources_skip_the_security_archive(tmp_path: Path) -> None:
    root = machine(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert mirror(root) == "https://mirror.corp.example/debian"


def test_one_line_sources_list_with_options(tmp_path: Path) -> None:
    root = machine(tmp_path, {"sources.list": ONE_LINE})
    assert mirror(root) == "http://proxy.corp:3142/debian"


def test_sources_list_is_read_before_sources_list_d(tmp_path: Path) -> None:
    root = machine(tmp_path, {"sources.list": ONE_LINE,
                              "sources.list.d/debian.sources": DEB822})
    assert mirror(root) == "http://proxy.corp:3142/debian"


def test_disabled_entries_and_other_files_are_ignored(tmp_path: Path) -> None:
    disabled = DEB822.replace("Types: deb deb-src", "Enabled: no\nTypes: deb deb-src")
    root = machine(tmp_path, {
        "sources.list.d/debian.sources": disabled,
        "sources.list.d/old.sources.disabled-by-farm": "Types: deb\nURIs: http://old/debian\n"
                                                       "Suites: bookworm\n",
        "sources.list.d/other.sources": "Types: deb\nURIs: http://other.example/debian\n"
                                        "Suites: bookworm\nComponents: main\n",
    })
    assert mirror(root) == "http://other.example/debian"


def test_another_suite_s_mirror_is_better_than_none(tmp_path: Path) -> None:
    trixie = DEB822.replace("bookworm", "trixie")
    root = machine(tmp_path, {"sources.list.d/debian.sources": trixie})
    assert mirror(root) == "https://mirror.corp.example/debian"
    assert mirror(root, "--suite", "trixie") == "https://mirror.corp.example/debian"


def test_a_third_party_repo_of_the_suite_is_preferred_only_after_order(
        tmp_path: Path) -> None:
    """apt's order decides among entries of the suite: sources.list first."""
    root = machine(tmp_path, {"sources.list": ONE_LINE,
                              "sources.list.d/docker.list": DOCKER_LIST})
    assert mirror(root) == "http://proxy.corp:3142/debian"


@pytest.mark.parametrize("files", [
    {},
    {"sources.list": "deb http://archive.ubuntu.com/ubuntu noble main\n"},
    {"sources.list": "deb cdrom:/media bookworm main\n"},
    {"sources.list.d/ubuntu.sources": "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\n"
                                      "Suites: noble noble-updates\nComponents: main\n"},
])
def test_no_debian_mirror_falls_back_to_the_default(tmp_path: Path,
                                                    files: dict[str, str]) -> None:
    assert mirror(machine(tmp_path, files)) == "http://deb.debian.org/debian"


def test_parsers_directly() -> None:
    e = dm.parse_deb822(DEB822)
    assert [x.suites for x in e] == [("bookworm-security",), ("bookworm", "bookworm-updates")]
    assert e[1].types == ("deb", "deb-src")
    one = dm.parse_one_line(ONE_LINE)
    assert [(x.uris[0], x.suites[0]) for x in one] == [
        ("http://proxy.corp:3142/debian", "bookworm"),
        ("http://security.debian.org/debian-security", "bookworm-security"),
    ]


def test_the_ci_scripts_use_it_and_hard_code_no_mirror() -> None:
    for name in ("setup", "build-images"):
        text = (ROOT / ".ci" / name).read_text()
        assert "debian_mirror.py" in text, name
        code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not any("deb.debian.org" in line for line in code), name
