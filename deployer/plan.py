"""The plan: per host, exactly what ``ship`` would upload.

Built offline from the project, the image references and a release id:
every file rendered for every host, and the server compose file derived.
``ship`` uploads it; ``deployer plan`` prints it together with the commands
ship runs, which come from ship's own state machine run against a recording
executor (:mod:`deployer.deploy.dryrun`), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from deployer.commands.release import HEALTH, MANIFEST
from deployer.config import Host, Project
from deployer.errors import ConfigError
from deployer.images.refs import image_ref
from deployer.project import ServerCompose, compose_context, server_compose
from deployer.proxy import tls as proxy_tls
from deployer.proxy.validate import check_services, proxy_dump
from deployer.release_files import ReleaseFile
from deployer.release_tree import Expander, file_copies
from deployer.render import Renderer, check_reserved, files_for, files_origin

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # locks and manifests: when
#: What this plan's release id becomes inside rendered files for the
#: fingerprint (see :attr:`HostPlan.fingerprint`).
RELEASE_PLACEHOLDER = b"\0deployer:release\0"


@dataclass
class HostPlan:
    """One host's release: ``files`` holds every file uploaded (rendered
    templates in ``files:`` order, then copies by dest); ``dirs`` the copied directories
    (release paths), created even when empty."""

    host: Host
    release: str
    files: list[ReleaseFile]
    compose: ServerCompose
    images: dict[str, str]
    dirs: list[str] = field(default_factory=list)
    #: the proxy config this host's release is switched with (None: not proxied).
    proxy: dict[str, Any] | None = None

    @property
    def fingerprint(self) -> str:
        """What makes two releases the same: file contents (templates and
        every copied file), modes, copied directories, images and services.
        Equal fingerprints mean ``ship`` has nothing to do.

        In rendered files, this plan's release id counts as a placeholder: a
        template that uses ``{{ release }}`` fingerprints like the host's
        current release rendered with its own id, so a ship whose only
        difference is the release id is ``unchanged``. (The uploaded bytes
        and the manifest's per-file sha256 keep the real id.)"""
        return self._fingerprint(public=False)

    @property
    def public_fingerprint(self) -> str:
        """The fingerprint ``plan`` prints (and the manifest records as
        ``public_fingerprint``): the same, except that a file that holds a
        secret (:func:`holds_secret`) counts by its path and mode only.

        An unsalted hash over a secret's bytes recovers a short secret by a
        dictionary (review item 9 found ``hunter2``): guess, hash with the
        known rest of the release, compare. This one covers no secret
        material, so it cannot confirm a guess. The full :attr:`fingerprint`
        (no-op check, rollback) lives only in the 0600 manifest, next to the
        0600 secret files themselves: whoever can read it can read them."""
        return self._fingerprint(public=True)

    def _fingerprint(self, public: bool) -> str:
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.dest):
            content = "secret" if public and holds_secret(f) else _without_release(f, self.release)
            h.update(f"{f.dest}\0{f.mode:o}\0{content}\n".encode())
        for d in sorted(self.dirs):
            h.update(f"dir {d}\n".encode())
        for k in sorted(self.images):
            h.update(f"image {k}={self.images[k]}\n".encode())
        if self.proxy is not None:
            h.update(f"proxy {json.dumps(self.proxy, sort_keys=True)}\n".encode())
        return h.hexdigest()

    def manifest(self, who: str | None = None, when: str | None = None) -> dict[str, Any]:
        return {
            "release": self.release,
            "fingerprint": self.fingerprint,
            "public_fingerprint": self.public_fingerprint,
            "files": {f.dest: manifest_entry(f) for f in self.files},
            "images": dict(self.images),
            "services": self.compose.services,
            "profiles": list(self.compose.profiles),
            **({"proxy": self.proxy} if self.proxy is not None else {}),
            "created_by": who or deployer_identity(),
            "created_at": when or utc_timestamp(),
        }

    def manifest_bytes(self, who: str | None = None, when: str | None = None) -> bytes:
        return (json.dumps(self.manifest(who, when), indent=2, sort_keys=True) + "\n").encode()


def holds_secret(f: ReleaseFile) -> bool:
    """A file whose hash must never be printed: a secret file (``env_file``,
    ``.env``, compose ``secrets:``), a private one (mode ``*00``, as 0600),
    or a template whose rendering contains a secret value (the masker knows
    every secret of the project, in every spelling)."""
    if f.secret or f.mode & 0o077 == 0:
        return True
    if f.kind != "template":
        return False
    from deployer.secrets import mask

    text = f.content.decode(errors="replace")
    return mask(text) != text


def manifest_entry(f: ReleaseFile) -> dict[str, Any]:
    """A file as the manifest records it: kind, mode, size, sha256. A file
    that holds a secret is marked ``secret`` (``plan`` shows that instead of
    its hash); its hash stays in the manifest, which is uploaded 0600
    (readable by the SSH user only, like the secret file itself: an unsalted
    hash of a short password is as good as the password), so drift of a
    secret file can still be found."""
    entry: dict[str, Any] = {"mode": f"{f.mode:04o}", "kind": f.kind, "size": f.length,
                             "sha256": f.sha256}
    if holds_secret(f):
        entry["secret"] = True
    return entry


def _without_release(f: ReleaseFile, release: str) -> str:
    """``f``'s sha256 with ``release`` in its content replaced by the
    placeholder; copied files cannot hold a new release's id."""
    rid = release.encode()
    if f.kind != "template" or not rid or rid not in f.content:
        return f.sha256
    return hashlib.sha256(f.content.replace(rid, RELEASE_PLACEHOLDER)).hexdigest()


@dataclass
class Plan:
    project: Project
    release: str
    tag: str
    images: dict[str, str]
    hosts: list[HostPlan] = field(default_factory=list)


def deployer_identity() -> str:
    """``user@machine``, recorded in locks and manifests (who deployed)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def utc_timestamp(now: datetime | None = None) -> str:
    """``2026-11-30T09:45:00Z``: when a lock was taken, a release made."""
    return (now or datetime.now(timezone.utc)).strftime(TIMESTAMP_FORMAT)


def image_refs(project: Project, tag: str) -> dict[str, str]:
    """Offline references (``server/repository:tag``, the names build and
    push use); ``ship`` pins digests."""
    server = project.registry.server
    return {
        name: image_ref(server, img.repository, tag)
        for name, img in project.config.images.items()
    }


def new_release_id(tag: str, now: datetime | None = None) -> str:
    """Sortable and readable: ``20261130T094500Z-<tag>``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{tag}"[:120]


def build_plan(
    project: Project,
    hosts: list[Host],
    images: Mapping[str, str],
    release: str,
    tag: str,
) -> Plan:
    """Render every file for every host, expand every copied path and derive
    the server compose file. Copied trees are walked and hashed once per
    plan, not once per host (see :class:`deployer.release_tree.Expander`)."""
    check_reserved(project)
    renderer = Renderer(project)
    expander = Expander(project.root)
    plan = Plan(project, release, tag, dict(images))
    compose_dest = project.config.compose_file
    context = compose_context(project, images)
    proxy_tls.check_files(project.root, project.config.proxy)
    for host in hosts:
        files = renderer.render(host, images, release)
        by_dest = {f.dest: f for f in files}
        if compose_dest not in by_dest:
            raise ConfigError(
                f"deployer.yaml: compose_file {compose_dest!r} is not the dest of any file "
                f"rendered for host {host.name}",
                "add it under files (template + dest), or set compose_file",
            )
        for reserved in (MANIFEST, HEALTH):
            if reserved in by_dest:
                raise ConfigError(f"deployer.yaml: dest {reserved!r} is reserved for deployer")
        cf = by_dest[compose_dest]
        own = file_copies(files_for(project, host), files_origin(project, host))
        listed = expander.expand(own)
        compose = server_compose(
            cf.content.decode(),
            where=f"{cf.origin} (rendered for {host.name})",
            deploy_dir=project.deploy_dir,
            uploaded=[*by_dest, *(f.dest for f in listed.files), *listed.dirs],
            services=host.services,
            context=context,
        )
        files = [
            dataclasses.replace(f, data=compose.text.encode())
            if f.dest == compose_dest
            else f
            for f in files
        ]
        extra = [*compose.copies, *proxy_tls.release_specs(project.config.proxy,
                                                           compose.services)]
        copied = expander.expand([*own, *extra]) if extra else listed
        # A template rendered to a path inside a copied directory replaces
        # the copied file there.
        files += [f for f in copied.files if f.dest not in by_dest]
        landed = {f.dest for f in copied.files} & {MANIFEST, HEALTH}
        if landed:
            raise ConfigError(f"{host.name}: a copied file would land on {min(landed)!r}, "
                              "which is reserved for deployer", "exclude it or change dest")
        check_services(project.config.proxy, compose.text, f"{cf.origin} ({host.name})")
        plan.hosts.append(HostPlan(host, release, files, compose, dict(images),
                                   list(copied.dirs),
                                   proxy_dump(project.config.proxy, compose.services)))
    return plan
