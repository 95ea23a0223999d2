"""Image prune: what stays and what goes (pure), and the builders."""

from __future__ import annotations

import pytest

from deployer.commands import prune as cmds
from deployer.prune import CannotTell, Container, Image, decide, parse_listing, parse_manifests

R = "reg:5000/shop/web"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def img(n: str, digest: str | None = None, tag: str | None = None) -> Image:
    return Image(f"sha256:{n * 64}", (f"{R}@{digest}",) if digest else (),
                 (f"{R}:{tag}",) if tag else ())


def test_parse_manifests_and_a_broken_one_stops_the_prune() -> None:
    out = (f'--- manifest r1\n{{"images": {{"web": "{R}:v1@{D1}"}}}}\n'
           f'--- manifest r2\n{{"images": {{"web": "{R}:v2@{D2}"}}, "x": 1}}\n')
    assert parse_manifests(out) == {"r1": [f"{R}:v1@{D1}"], "r2": [f"{R}:v2@{D2}"]}
    assert parse_manifests("") == {}
    with pytest.raises(CannotTell, match="release r3"):
        parse_manifests(out + "--- manifest r3\n\n")


def test_parse_listing() -> None:
    out = (f"sha256:{'a' * 64} {R}@{D1} {R}:v1\nsha256:{'b' * 64}  \n#containers\n"
           f"c1 sha256:{'a' * 64} running\n")
    images, containers = parse_listing(out)
    assert images == [Image(f"sha256:{'a' * 64}", (f"{R}@{D1}",), (f"{R}:v1",)),
                      Image(f"sha256:{'b' * 64}", (), ())]
    assert containers == [Container("c1", f"sha256:{'a' * 64}", "running")]


def test_decide_keeps_what_kept_releases_name_and_live_containers_use() -> None:
    by_digest, by_tag, old, live, stopped_old = (
        img("1", D1), img("2", tag="v2"), img("3", D3, "v0"), img("4"), img("5"))
    containers = [Container("c-live", live.id, "running"),
                  Container("c-old", old.id, "exited"), Container("c-5", stopped_old.id, "exited")]
    d = decide([by_digest, by_tag, old, live, stopped_old], containers,
               {f"{R}:v1@{D1}", f"{R}:v2@{D2}"})
    assert [i.id for i in d.kept] == [by_digest.id, by_tag.id, live.id]
    assert [i.id for i in d.images] == [old.id, stopped_old.id]
    assert d.containers == ["c-old", "c-5"]


def test_builders() -> None:
    assert cmds.read_manifests("/opt/shop").argv[3:] == ("sh", "/opt/shop")
    ls = cmds.list_images("shop", [R, R, "reg:5000/shop/db"], sudo=True)
    assert ls.argv[3:] == ("sh", "shop", "reg:5000/shop/db", R) and ls.sudo
    rm = cmds.remove(["c1"], ["sha256:x", "sha256:y"])
    assert rm.argv[3:] == ("sh", "1", "c1", "sha256:x", "sha256:y")


def test_an_image_docker_cannot_inspect_makes_the_listing_unreadable() -> None:
    with pytest.raises(CannotTell):
        parse_listing(f"sha256:{'0' * 64}  x:1,\n{cmds.UNREADABLE_MARK}\n"
                            f"{cmds.CONTAINERS_MARK}\n")
