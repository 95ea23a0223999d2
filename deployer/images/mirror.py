"""Mirror a public image (``source: postgres:16``) into the project's registry.

Why: servers then pull only from the project's registry, so they need no
access to Docker Hub (rate limits, outages, air-gapped hosts), and they get a
pinned digest like any built image. The local engine's copy is used when it
has one (no network needed); otherwise the source is pulled once.
"""

from __future__ import annotations

from ..config.models import ImageConfig, RegistryConfig
from ..errors import DeployError
from ..secrets import mask
from .engine import Engine, EngineError
from .progress import ImageReporter
from .push import registry_auth
from .refs import normalize_server, registry_of, split_ref


def source_ref(image: ImageConfig) -> str:
    """The source with an explicit tag (``postgres`` -> ``postgres:latest``),
    so what is looked up locally is what would be pulled."""
    assert image.source
    name, tag, digest = split_ref(image.source.strip())
    if digest:
        return f"{name}:{tag}@{digest}" if tag else f"{name}@{digest}"
    return f"{name}:{tag or 'latest'}"


def mirror_image(
    engine: Engine,
    name: str,
    image: ImageConfig,
    target: str,
    tag: str,
    registry: RegistryConfig,
    reporter: ImageReporter,
) -> str:
    """Make ``target:tag`` in the local engine name the source image (pulling
    it if needed); returns the image id. The push is the caller's next step."""
    src = source_ref(image)
    reporter.start(name, "mirror", f"{src} -> {target}:{tag}")
    local = engine.image(src)
    if local is not None:
        reporter.note(name, f"using the local engine's {src}")
    else:
        # The project's credentials only go to the project's own registry.
        same = registry_of(src) is not None and registry_of(src) == normalize_server(
            registry.server
        )
        auth = registry_auth(registry) if same else None
        reporter.note(name, f"{src} is not in the local engine; pulling it")
        try:
            for msg in engine.pull(src, auth):
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    raise _missing(name, src, str(msg.get("error") or detail.get("message")))
                status = str(msg.get("status") or "")
                if msg.get("id") and status and not status.startswith("Pulling from"):
                    progress = msg.get("progressDetail") or {}
                    reporter.layer(
                        name, str(msg["id"]), status, progress.get("current"),
                        progress.get("total"),
                    )
        except EngineError as e:
            raise _missing(name, src, e.message) from None
        local = engine.image(src)
        if local is None:
            raise _missing(name, src, "the pull finished but the engine has no such image")
    try:
        engine.tag(local.id, target, tag)
    except EngineError as e:
        raise DeployError(
            mask(f"image {name!r}: cannot tag {src} as {target}:{tag}: {e.message}")
        ) from None
    reporter.done(name, f"{target}:{tag} ({local.id[7:19]})")
    return local.id


def _missing(name: str, src: str, reason: str) -> DeployError:
    return DeployError(
        mask(
            f"image {name!r}: source {src} is not in the local engine and pulling it failed: "
            f"{' '.join(reason.split())}"
        ),
        f"pull or load {src} into the local engine (docker pull / docker load), "
        "or fix 'source' in deployer.yaml",
    )
