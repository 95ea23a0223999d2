"""Build one image from its context and report each step as it happens.

The engine's build stream is JSON messages (``stream`` text, ``aux`` with the
image id, ``error``); text arrives in arbitrary chunks, so it is reassembled
into lines before a ``Step N/M :`` line can be recognised. On failure the
error names the image, the step that failed and the tail of that step's
output: what a user needs to fix it without re-running with ``--verbose``.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

from ..config.models import ImageConfig
from ..errors import ConfigError, DeployError
from ..secrets import mask
from .engine import Engine, EngineError
from .progress import ImageReporter

STEP_RE = re.compile(r"^Step \d+/\d+ : ")
TAIL_LINES = 20
# Bookkeeping lines of the classic builder: not the step's own output.
_NOISE = re.compile(
    r"^( ---> |Removing intermediate container |Successfully built |Successfully tagged )"
)


def build_paths(name: str, image: ImageConfig, root: Path) -> tuple[Path, str]:
    """The build context and the Dockerfile (relative to the context, as in
    compose); a clear input error when either is missing."""
    context = (root / image.build_context).resolve()
    if not context.is_dir():
        raise ConfigError(
            f"image {name!r}: build context {image.build_context!r} is not a directory "
            f"({context})",
            "fix 'context' in deployer.yaml (relative to the project folder)",
        )
    dockerfile = (context / image.dockerfile).resolve()
    if not dockerfile.is_file():
        raise ConfigError(
            f"image {name!r}: Dockerfile {image.dockerfile!r} not found in context "
            f"{image.build_context!r} ({dockerfile})",
            "create it, or set 'dockerfile' (relative to the context) in deployer.yaml",
        )
    return context, image.dockerfile


def build_image(
    engine: Engine,
    name: str,
    image: ImageConfig,
    root: Path,
    ref: str,
    reporter: ImageReporter,
    labels: dict[str, str] | None = None,
) -> str:
    """Build ``image`` tagged as ``ref``; returns the image id (``sha256:...``)."""
    context, dockerfile = build_paths(name, image, root)
    reporter.start(name, "build", ref)
    step = "(before the first step)"
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    image_id: str | None = None
    pending = ""

    def line_out(line: str) -> None:
        nonlocal step
        line = line.rstrip("\r")
        if STEP_RE.match(line):
            step = line
            tail.clear()
            reporter.step(name, line)
        elif line.strip() and not _NOISE.match(line):
            tail.append(line)
            reporter.output(name, line)

    try:
        for msg in engine.build(
            context=context,
            dockerfile=dockerfile,
            tag=ref,
            buildargs=image.args,
            target=image.target,
            labels=labels,
        ):
            if "stream" in msg:
                pending += str(msg["stream"])
                *lines, pending = pending.split("\n")
                for line in lines:
                    line_out(line)
            elif "error" in msg or "errorDetail" in msg:
                if pending:
                    line_out(pending)
                    pending = ""
                detail = msg.get("errorDetail") or {}
                raise _failed(name, step, str(msg.get("error") or detail.get("message")), tail)
            elif isinstance(msg.get("aux"), dict) and "ID" in msg["aux"]:
                image_id = str(msg["aux"]["ID"])
        if pending:
            line_out(pending)
    except EngineError as e:
        raise _failed(name, step, e.message, tail) from None
    if image_id is None:
        # Engines that do not send ``aux``: the tag was applied on success.
        local = engine.image(ref)
        if local is None:
            raise _failed(name, step, "the engine reported no image", tail)
        image_id = local.id
    reporter.done(name, f"{ref} ({image_id[7:19]})")
    return image_id


def _failed(name: str, step: str, error: str, tail: deque[str]) -> DeployError:
    lines = [f"image {name!r}: build failed at {step.strip()}: {' '.join(error.split())}"]
    if tail:
        lines.append(f"  last {len(tail)} line(s) of output:")
        lines.extend(f"    {line}" for line in tail)
    return DeployError(mask("\n".join(lines)))
