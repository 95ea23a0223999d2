"""The image stage of a ship: every image built (or mirrored) and pushed once.

Order, cheapest failure first: input checks (tag, build contexts, Dockerfiles)
-> engine reachable -> registry login -> all builds -> all pushes. So a typo or
a wrong password fails in seconds, and no image is pushed while another one
still fails to build. The result maps each image name to its pinned reference,
which every host gets (build once, deploy everywhere: never per host).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..tags import is_valid_tag
from .build import build_image, build_paths
from .engine import Engine
from .mirror import mirror_image
from .progress import ImageReporter, make_reporter
from .push import login, push_image
from .refs import pinned_ref, repository_name

if TYPE_CHECKING:
    from ..config import Project


def check_inputs(project: Project, tag: str) -> None:
    """Offline checks (``ConfigError``, exit 2): the tag and each build's files."""
    if not is_valid_tag(tag):
        raise ConfigError(
            f"{tag!r} is not a valid image tag",
            "letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-'",
        )
    if tag == "latest":
        raise ConfigError("the tag 'latest' moves; deployer pushes immutable tags only")
    for name, image in project.config.images.items():
        if not image.source:
            build_paths(name, image, project.root)


@contextmanager
def _engine(engine: Engine | None) -> Iterator[Engine]:
    if engine is not None:
        yield engine
        return
    owned = Engine.from_env()
    try:
        yield owned
    finally:
        owned.close()


def _target(project: Project, name: str) -> str:
    return repository_name(project.registry.server, project.config.images[name].repository)


def same_builds(project: Project) -> dict[str, str]:
    """Images whose build is identical to an earlier one's (same context,
    Dockerfile, args and target): name -> the earlier image's name. Those are
    built once and tagged (and pushed) under each repository."""
    first: dict[tuple[object, ...], str] = {}
    out: dict[str, str] = {}
    for name, image in project.config.images.items():
        if image.source:
            continue
        key = (
            str((project.root / image.build_context).resolve()),
            image.dockerfile,
            tuple(sorted((k, str(v)) for k, v in image.args.items())),
            image.target,
        )
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def _build_all(
    engine: Engine, project: Project, tag: str, reporter: ImageReporter
) -> dict[str, str]:
    ids: dict[str, str] = {}
    same = same_builds(project)
    for name, image in project.config.images.items():
        target = _target(project, name)
        if image.source:
            ids[name] = mirror_image(
                engine, name, image, target, tag, project.registry, reporter
            )
        elif name in same:
            ids[name] = ids[same[name]]
            engine.tag(ids[name], target, tag)
            reporter.note(name, f"same build as {same[name]!r}: tagged {target}:{tag}")
        else:
            ids[name] = build_image(
                engine, name, image, project.root, f"{target}:{tag}", reporter
            )
    return ids


def _serve_all(
    engine: Engine, project: Project, tag: str, reporter: ImageReporter
) -> dict[str, str]:
    """``registry: none``: each image's blobs into the project's store (only
    layers not there yet are compressed); its manifest digest pins it."""
    from .blobs import BlobStore, store_dir

    store = BlobStore(store_dir(project.root))
    pinned: dict[str, str] = {}
    for name, image in project.config.images.items():
        target = _target(project, name)
        if image.source and engine.image(f"{target}:{tag}") is None:
            mirror_image(engine, name, image, target, tag, project.registry, reporter)
        reporter.start(name, "prepare", f"{target}:{tag}")
        served = store.prepare(engine, name, f"{target}:{tag}")
        reporter.done(name, f"{target}:{tag}@{served.digest} ({served.size} bytes, "
                            f"{len(served.layers)} layers)")
        pinned[name] = pinned_ref(project.registry.server, image.repository, tag, served.digest)
    return pinned


def _push_all(
    engine: Engine, project: Project, tag: str, reporter: ImageReporter
) -> dict[str, str]:
    if project.registry.none:
        return _serve_all(engine, project, tag, reporter)
    pinned: dict[str, str] = {}
    for name, image in project.config.images.items():
        target = _target(project, name)
        if image.source and engine.image(f"{target}:{tag}") is None:
            mirror_image(engine, name, image, target, tag, project.registry, reporter)
        digest = push_image(engine, name, target, tag, project.registry, reporter)
        pinned[name] = pinned_ref(project.registry.server, image.repository, tag, digest)
    return pinned


def build_images(
    project: Project,
    tag: str,
    reporter: ImageReporter | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, str]:
    """``deployer build``: build (and prepare mirrors of) every image, tagged
    ``registry/repository:tag`` in the local engine; returns name -> image id."""
    check_inputs(project, tag)
    reporter = reporter or make_reporter()
    try:
        with _engine(engine) as eng:
            return _build_all(eng, project, tag, reporter)
    finally:
        reporter.close()


def push_images(
    project: Project,
    tag: str,
    reporter: ImageReporter | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, str]:
    """``deployer push``: push what ``build`` made; returns name -> pinned ref.
    A built image missing locally is an error (run ``build`` first); a mirror
    is prepared on the spot, as it needs no build."""
    check_inputs(project, tag)
    reporter = reporter or make_reporter()
    try:
        with _engine(engine) as eng:
            login(eng, project.registry)
            return _push_all(eng, project, tag, reporter)
    finally:
        reporter.close()


def build_and_push(
    project: Project,
    tag: str,
    reporter: ImageReporter | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, str]:
    """The image stage of ``ship``: returns image name -> pinned reference
    ``registry/repository:tag@sha256:digest``, for the templates of every host."""
    check_inputs(project, tag)
    if not project.config.images:
        return {}
    reporter = reporter or make_reporter()
    try:
        with _engine(engine) as eng:
            login(eng, project.registry)  # a wrong password fails before any build
            _build_all(eng, project, tag, reporter)
            return _push_all(eng, project, tag, reporter)
    finally:
        reporter.close()


def resolve_pushed(
    project: Project,
    tag: str,
    reporter: ImageReporter | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, str]:
    """``ship --skip-build``: the images already pushed for ``tag``, pinned by
    the digest the registry holds now. A missing one is an error naming it:
    deploying a tag nobody pushed would only fail later, on every host."""
    from ..errors import DeployError
    from .push import registry_auth
    from .registry_api import manifest_digest

    check_inputs(project, tag)
    reporter = reporter or make_reporter()
    if project.registry.none:
        # Nothing was pushed anywhere: the images built for ``tag`` are the
        # local engine's, served from the project's store as ship serves them.
        try:
            with _engine(engine) as local:
                return _serve_all(local, project, tag, reporter)
        finally:
            reporter.close()
    auth = registry_auth(project.registry)
    creds = (auth["username"], auth["password"]) if auth else (None, None)
    server = project.registry.server
    pinned: dict[str, str] = {}
    try:
        with ExitStack() as stack:
            eng = engine
            for name, image in project.config.images.items():
                ref = f"{_target(project, name)}:{tag}"
                # Fast path: the registry's HTTP API, without the Docker SDK
                # or the engine (most of a no-op ship's time); None for
                # anything it does not fully understand, then the engine.
                digest = (manifest_digest(server, image.repository, tag, *creds)
                          if engine is None else None)
                if digest is None:
                    eng = eng or stack.enter_context(_engine(None))
                    digest = eng.registry_digest(ref, auth)
                if digest is None:
                    raise DeployError(
                        f"image {name!r}: {ref} is not in the registry",
                        "ship without --skip-build, or pass the --tag of a pushed release",
                    )
                reporter.note(name, f"using pushed {ref}@{digest[:19]}")
                pinned[name] = pinned_ref(server, image.repository, tag, digest)
    finally:
        reporter.close()
    return pinned
