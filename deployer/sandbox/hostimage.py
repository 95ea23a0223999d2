"""The sandbox hosts' image: an apt-based base image turned into something that
boots like a fresh VM (systemd as PID 1, sshd, a ``deploy`` user with
passwordless sudo), with Docker only when asked for.

The tag depends on a hash of the base image's id and the Dockerfile text, so
the image is rebuilt only when either changes, and every sandbox on the engine
shares it. Per-sandbox material (host keys, authorized key, CA) is copied into
each container before it starts, never baked into the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Callable
from typing import Any

from deployer.errors import DeployError

HOST_REPO = "deployer-sandbox-host"
DEPLOY_USER = "deploy"
DEPLOY_UID = 2000  # fixed, so files copied in before boot can be owned by it

BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "ca-certificates",
    "curl",
    "gnupg",
    "iproute2",
)

# Units that have nothing to do in a container, or fail there and would leave
# the system "degraded" for no reason a real VM would have.
MASKED_UNITS = (
    "systemd-udevd.service",
    "systemd-udevd-kernel.socket",
    "systemd-udevd-control.socket",
    "systemd-modules-load.service",
    "systemd-firstboot.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "getty.target",
    "console-getty.service",
)


def dockerfile(base_image: str, with_docker: bool = False) -> str:
    """The Dockerfile of the host image built FROM ``base_image``."""
    docker_step = ""
    if with_docker:
        # Ubuntu ships Compose v2 as docker-compose-v2; Debian 12 has only the
        # classic docker-compose. Both are the distribution's own packages.
        docker_step = (
            "    if apt-cache show docker-compose-v2 >/dev/null 2>&1;"
            " then compose=docker-compose-v2; else compose=docker-compose; fi; \\\n"
            '    apt-get install -y --no-install-recommends docker.io "$compose"; \\\n'
            "    systemctl enable docker.service containerd.service; \\\n"
            f"    usermod -aG docker {DEPLOY_USER}; \\\n"
        )
    return f"""\
# Built by `deployer sandbox up`: a fresh-VM-like host on {base_image}.
FROM {base_image}
ENV container=docker
RUN set -eux; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends {" ".join(BASE_PACKAGES)}; \\
    useradd --create-home --uid {DEPLOY_UID} --user-group --shell /bin/bash {DEPLOY_USER}; \\
    usermod --password '*' {DEPLOY_USER}; \\
    printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {DEPLOY_USER} > /etc/sudoers.d/90-{DEPLOY_USER}; \\
    chmod 0440 /etc/sudoers.d/90-{DEPLOY_USER}; \\
    install -d -m 0700 -o {DEPLOY_USER} -g {DEPLOY_USER} /home/{DEPLOY_USER}/.ssh; \\
{docker_step}    apt-get clean; \\
    rm -rf /var/lib/apt/lists/*; \\
    rm -f /etc/ssh/ssh_host_*; \\
    : > /etc/machine-id; \\
    rm -f /var/lib/dbus/machine-id; \\
    systemctl mask {" ".join(MASKED_UNITS)}; \\
    systemctl set-default multi-user.target
LABEL deployer.sandbox.image="host" deployer.sandbox.with-docker="{str(with_docker).lower()}"
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""


def _slug(base_image: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", base_image.lower()).strip("-")[:40] or "base"


def image_tag(base_image: str, base_id: str, with_docker: bool) -> str:
    """``deployer-sandbox-host:<base>-<hash>``; the hash covers the base
    image's id and the Dockerfile, so a changed recipe or base rebuilds."""
    text = dockerfile(base_image, with_docker)
    digest = hashlib.sha256(f"{base_id}\n{text}".encode()).hexdigest()[:12]
    flavour = "-docker" if with_docker else ""
    return f"{HOST_REPO}:{_slug(base_image)}{flavour}-{digest}"


def ensure_base_image(client: Any, base_image: str, log: Callable[[str], None]) -> str:
    """The id of ``base_image``, pulled if it is not on the engine."""
    import docker.errors

    try:
        return str(client.images.get(base_image).id)
    except docker.errors.ImageNotFound:
        pass
    log(f"pulling {base_image}")
    try:
        return str(client.images.pull(base_image).id)
    except docker.errors.APIError as e:
        raise DeployError(
            f"sandbox: base image {base_image!r} is not on the engine and cannot be pulled "
            f"({e.explanation or e})",
            "build the stand-in images with .ci/build-images (it provides debian:bookworm), "
            "or pick another apt-based image with --base-image or DEPLOYER_SANDBOX_BASE_IMAGE",
        ) from e


def ensure_host_image(
    client: Any, base_image: str, with_docker: bool, log: Callable[[str], None] = lambda _m: None
) -> str:
    """Build the host image unless an up-to-date one exists; return its tag."""
    import docker.errors

    base_id = ensure_base_image(client, base_image, log)
    tag = image_tag(base_image, base_id, with_docker)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    what = "with Docker " if with_docker else ""
    log(f"building the host image {what}from {base_image} (once; about a minute): {tag}")
    try:
        client.images.build(
            fileobj=io.BytesIO(dockerfile(base_image, with_docker).encode()),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
        )
    except docker.errors.BuildError as e:
        tail = "".join(
            str(chunk.get("stream", chunk.get("error", ""))) for chunk in list(e.build_log)[-25:]
        )
        code = e.msg.rsplit(" ", 1)[-1] if "non-zero code" in e.msg else e.msg[-120:]
        raise DeployError(
            f"sandbox: building the host image from {base_image!r} failed ({code}):\n{tail}",
            "the base image must be apt-based (Debian, Ubuntu) and reach its package mirror",
        ) from e
    except docker.errors.APIError as e:
        raise DeployError(f"sandbox: building the host image failed: {e}") from e
    _drop_stale(client, tag)
    return tag


def _drop_stale(client: Any, tag: str) -> None:
    """Remove older builds of the same base and flavour that no container
    uses (the engine refuses to remove an image in use, which is the point)."""
    import docker.errors

    stem = tag.rsplit("-", 1)[0]
    for image in client.images.list(name=HOST_REPO):
        for t in image.tags:
            if t != tag and t.rsplit("-", 1)[0] == stem:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(t, noprune=False)
