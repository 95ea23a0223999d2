"""Turning the rendered compose file into the one a host runs, and finding
every project path it references.

``server_compose`` reads the rendered file the way compose does (YAML 1.2,
``.env`` and the environment for ``${VAR}``, profiles, ``extends``) and
returns, per host:

- ``copies``: every referenced relative path that is config (bind sources git
  tracks, ``env_file``s, ``.env``, ``secrets``/``configs`` files, ``extends``
  files), shipped byte for byte in the release (:class:`CopySpec`);
- ``shared_dirs``: data directories, kept in ``<deploy_dir>/shared/``;
- the rewritten text: roles (a host whose group sets ``services:`` keeps only
  those; ``depends_on`` on services elsewhere is dropped), data bind sources
  pointing at ``<deploy_dir>/shared/<path>``, and ``pull_policy: never|build``
  dropped from services whose image deployer pushes. Written with ruamel.yaml
  (YAML 1.2, comments and tags kept), and only when something changed;
- ``services`` (started and awaited: active under the enabled profiles),
  ``healthchecked``, ``oneshot`` (must exit 0), ``may_exit`` (``restart: "no"``:
  done when it exits 0, fine while running) and ``profiles`` (passed to
  ``compose up``).

Missing files the release needs (an ``env_file``, a secret or config file, an
``extends`` file) and bind files deployer cannot classify are a
:class:`ConfigError` here, so ``check`` reports them offline.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from deployer.errors import ConfigError
from deployer.project import paths
from deployer.project.dotenv import DOTENV, read_dotenv
from deployer.project.interpolate import escape, substitute
from deployer.project.profiles import active_services, enabled_profiles, is_oneshot, may_exit
from deployer.project.yaml12 import dump_rt, load_fast, load_rt
from deployer.release_files import CopySpec

if TYPE_CHECKING:
    from deployer.config import Project

SECRET_MODE = 0o600


@dataclass
class ServerCompose:
    text: str
    services: list[str]  # active on this host: started and awaited
    shared_dirs: list[str] = field(default_factory=list)  # relative to <deploy_dir>/shared
    healthchecked: list[str] = field(default_factory=list)
    oneshot: list[str] = field(default_factory=list)  # must exit 0 to be healthy
    may_exit: list[str] = field(default_factory=list)  # healthy running or exited 0
    copies: list[CopySpec] = field(default_factory=list)  # config paths shipped in the release
    profiles: list[str] = field(default_factory=list)  # enabled, passed as --profile
    notes: list[str] = field(default_factory=list)  # things check/plan should say


@dataclass
class ComposeContext:
    """What is the same for every host of a plan: the project tree, the
    environment compose would see, git's view and deployer's settings.

    ``compose_dir``: the compose file's folder, relative to the release (and,
    since a release mirrors the project, to the project root).
    ``env``: the process environment over ``.env`` (compose's precedence).
    ``registry_images``: the references of deployer's images (``images.X``).
    """

    root: Path
    app: str
    compose_dir: str = "."
    env: Mapping[str, str] = field(default_factory=dict)
    tracked: frozenset[str] | None = None
    shared: tuple[str, ...] = ()
    profiles: tuple[str, ...] | None = None
    registry_images: frozenset[str] = frozenset()
    _tracked_dirs: frozenset[str] = field(default=frozenset(), repr=False)
    _cache: dict[Any, ServerCompose] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.tracked is not None:
            self._tracked_dirs = paths.tracked_dirs(self.tracked)

    @property
    def has_dotenv(self) -> bool:
        return (self.root / self.compose_dir / DOTENV).is_file()

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)


def compose_context(
    project: Project, images: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> ComposeContext:
    """The context for :func:`server_compose`, read once per plan."""
    compose_dir = posixpath.dirname(project.config.compose_file) or "."
    root = project.root
    env_src = os.environ if environ is None else environ
    dotenv = read_dotenv(root / compose_dir / DOTENV, posixpath.join(compose_dir, DOTENV), env_src)
    env = {**dotenv, **env_src}
    profiles = project.inventory.profiles
    if profiles is None:
        profiles = project.config.profiles
    return ComposeContext(
        root=root,
        app=project.app,
        compose_dir=posixpath.normpath(compose_dir),
        env=env,
        tracked=paths.git_tracked(root),
        shared=tuple(posixpath.normpath(s) for s in project.config.shared),
        profiles=tuple(profiles) if profiles is not None else None,
        registry_images=frozenset(images.values()),
    )


def server_compose(
    text: str,
    *,
    where: str,
    deploy_dir: str,
    uploaded: list[str],
    services: tuple[str, ...] | None,
    context: ComposeContext | None = None,
) -> ServerCompose:
    """Rewrite the rendered compose ``text`` for one host (see module doc).
    Without ``context`` (no project tree), no path is copied and every
    relative bind source not uploaded is data."""
    key = (text, deploy_dir, tuple(sorted(uploaded)), services)
    if context is not None and key in context._cache:
        return _copy(context._cache[key])
    result = _Reader(text, where, deploy_dir, uploaded, services, context).run()
    if context is not None:
        context._cache[key] = _copy(result)
    return result


def _copy(sc: ServerCompose) -> ServerCompose:
    return dataclasses.replace(
        sc,
        services=list(sc.services),
        shared_dirs=list(sc.shared_dirs),
        healthchecked=list(sc.healthchecked),
        oneshot=list(sc.oneshot),
        may_exit=list(sc.may_exit),
        copies=list(sc.copies),
        profiles=list(sc.profiles),
        notes=list(sc.notes),
    )


Edit = tuple[tuple[Any, ...], Any]  # (path into the document, new value); _DELETE deletes
_DELETE = object()


class _Reader:
    def __init__(
        self,
        text: str,
        where: str,
        deploy_dir: str,
        uploaded: list[str],
        services: tuple[str, ...] | None,
        ctx: ComposeContext | None,
    ) -> None:
        self.text = text
        self.where = where
        self.deploy_dir = deploy_dir
        self.uploaded = {posixpath.normpath(u) for u in uploaded}
        self.roles = services
        self.ctx = ctx
        self.edits: list[Edit] = []
        self.shared: set[str] = set()
        self.copies: dict[str, CopySpec] = {}
        self.notes: list[str] = []

    # -- helpers -----------------------------------------------------------

    def interp(self, value: str, what: str) -> str:
        if self.ctx is None or "$" not in value:
            return value
        try:
            return substitute(value, self.ctx.lookup)
        except ValueError as e:
            raise ConfigError(
                f"{self.where}: {what}: {e}",
                "set the variable in the environment or in .env",
            ) from None

    def rel(self, base: str, src: str, what: str) -> str:
        """A reference relative to ``base`` (release-relative), normalised,
        refused when it leaves the release folder."""
        rel = posixpath.normpath(posixpath.join(base, src))
        if rel == ".." or rel.startswith("../"):
            raise ConfigError(
                f"{self.where}: {what}: {src!r} escapes the release folder",
                "use a path under ./ (kept in <deploy_dir>/shared or copied into the "
                "release) or an absolute host path",
            )
        return rel

    def uploaded_covers(self, rel: str) -> bool:
        """A rendered template (or ``files:`` entry) is, or is inside, ``rel``."""
        return rel in self.uploaded or any(
            u.startswith(rel.rstrip("/") + "/") for u in self.uploaded
        )

    def copy(self, rel: str, origin: str, secret: bool) -> None:
        """Ship ``rel`` from the project, unless a template already makes it."""
        if self.uploaded_covers(rel):
            return
        old = self.copies.get(rel)
        secret = secret or bool(old and old.secret)
        self.copies[rel] = CopySpec(
            source=rel,
            dest=rel,
            mode=SECRET_MODE if secret else None,
            secret=secret,
            origin=old.origin if old else origin,
        )

    def shared_path(self, rel: str) -> str:
        local = self.ctx.root / rel if self.ctx else None
        is_file = bool(local and local.is_file())
        self.shared.add(posixpath.dirname(rel) or "." if is_file else rel)
        if rel == ".":
            return posixpath.join(self.deploy_dir, "shared")
        return posixpath.join(self.deploy_dir, "shared", rel)

    # -- the run -----------------------------------------------------------

    def run(self) -> ServerCompose:
        try:
            doc = load_fast(self.text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark else ""
            raise ConfigError(
                f"{self.where}{at}: the rendered compose file is not valid YAML: "
                f"{getattr(e, 'problem', e)}",
                "check the template's output with `deployer plan`",
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise ConfigError(f"{self.where}: the compose file has no 'services' mapping")
        svcs: dict[str, Any] = doc["services"]
        for name, svc in svcs.items():
            if not isinstance(name, str):  # `1:` or `true:` (a TypeError further on)
                raise ConfigError(
                    f"{self.where}: service name {name!r} is a {type(name).__name__}, "
                    "not a string",
                    f'quote it in the template: "{name}":',
                )
            if not isinstance(svc, dict):
                raise ConfigError(f"{self.where}: service {name!r} must be a mapping")
        if self.roles is not None:
            svcs = self._roles(svcs)
        ctx = self.ctx
        for name, svc in svcs.items():
            self._volumes(name, svc)
            if ctx is not None:
                self._env_files(name, svc, ctx.compose_dir, f"service {name}")
                self._extends(name, svc, ctx.compose_dir, set())
                self._pull_policy(name, svc)
        enabled: list[str] = []
        active = list(svcs)
        if ctx is not None:
            self._top_level(doc)
            if ctx.has_dotenv:
                self.copy(self.rel(ctx.compose_dir, DOTENV, DOTENV), DOTENV, secret=True)
            enabled = enabled_profiles(ctx.profiles, ctx.env)
            active = active_services(svcs, enabled, lambda s: self.interp(s, "profiles"))
            self._project_name(doc)
        out = self._rewrite() if self.edits else self.text
        return ServerCompose(
            text=out,
            services=active,
            shared_dirs=sorted(self.shared),
            healthchecked=[
                n for n in active
                if isinstance(svcs[n].get("healthcheck"), dict)
                and not svcs[n]["healthcheck"].get("disable")
            ],
            oneshot=[n for n in active if is_oneshot(n, svcs)],
            may_exit=[n for n in active if not is_oneshot(n, svcs) and may_exit(n, svcs)],
            copies=_prune_nested(self.copies),
            profiles=enabled,
            notes=self.notes,
        )

    def _roles(self, svcs: dict[str, Any]) -> dict[str, Any]:
        assert self.roles is not None
        here = set(self.roles)
        unknown = [s for s in self.roles if s not in svcs]
        if unknown:
            raise ConfigError(
                f"{self.where}: services {', '.join(unknown)} (from the inventory's group "
                "'services') are not in the compose file",
                f"services in the compose file: {', '.join(svcs)}",
            )
        for name in svcs:
            if name not in here:
                self.edits.append((("services", name), _DELETE))
        kept = {k: v for k, v in svcs.items() if k in here}
        for name, svc in kept.items():
            deps = svc.get("depends_on")
            if isinstance(deps, (list, dict)):
                foreign = [d for d in deps if d not in here]
            else:
                continue
            if not foreign:
                continue
            if len(foreign) == len(deps):
                self.edits.append((("services", name, "depends_on"), _DELETE))
            else:
                for d in foreign:
                    self.edits.append((("services", name, "depends_on", "<item>", d), _DELETE))
        return kept

    def _volumes(self, name: str, svc: dict[str, Any]) -> None:
        vols = svc.get("volumes")
        if not isinstance(vols, list):
            return
        base = self.ctx.compose_dir if self.ctx else "."
        for i, v in enumerate(vols):
            what = f"service {name}: volumes[{i}]"
            if isinstance(v, str):
                full = self.interp(v, what)
                parts = full.split(":")
                src = parts[0]
                if len(parts) < 2 or not _is_relative(src):
                    continue
                new = self._bind(src, base, what)
                if new is not None:
                    parts[0] = new
                    self.edits.append((("services", name, "volumes", i), escape(":".join(parts))))
                elif "$" in v:
                    self.edits.append((("services", name, "volumes", i), escape(full)))
            elif isinstance(v, dict) and v.get("type", "volume") == "bind":
                raw = str(v.get("source", ""))
                src = self.interp(raw, what)
                if not _is_relative(src):
                    continue
                new = self._bind(src, base, what)
                if new is not None:
                    self.edits.append((("services", name, "volumes", i, "source"), escape(new)))
                elif "$" in raw:
                    self.edits.append((("services", name, "volumes", i, "source"), escape(src)))

    def _bind(self, src: str, base: str, what: str, rewritable: bool = True) -> str | None:
        """Classify one bind source: None when it stays as written (config,
        copied or uploaded), else the host path of its data under shared/."""
        rel = self.rel(base, src, f"{what}: bind mount source")
        ctx = self.ctx
        if ctx is None:
            kind: paths.Kind = "uploaded" if self.uploaded_covers(rel) else "data"
        else:
            kind = paths.classify(
                rel,
                ctx.root,
                tracked=ctx.tracked,
                tracked_dir_set=ctx._tracked_dirs,
                shared=ctx.shared,
                uploaded=self.uploaded,
            )
        if kind == "uploaded":
            return None
        if kind == "config":
            self.copy(rel, what, secret=False)
            return None
        if kind == "ambiguous":
            raise ConfigError(
                f"{self.where}: {what}: bind mount source {src!r} is a file git does not "
                "track: deployer cannot tell whether it is config or data",
                f"ship it with every release: add `files: [{{copy: {rel}, dest: {rel}}}]` to "
                f"deployer.yaml (or `git add {rel}`); keep it on the host as data: "
                f"`shared: [{rel}]`",
            )
        if not rewritable:
            raise ConfigError(
                f"{self.where}: {what}: bind mount source {src!r} is data (not tracked by "
                "git), but it is in an extended file deployer copies as it is",
                f"move that volume into the service of the main compose file, or list "
                f"it as config (`git add {rel}`)",
            )
        return self.shared_path(rel)

    def _env_files(self, name: str, svc: dict[str, Any], base: str, owner: str) -> None:
        ef = svc.get("env_file")
        if ef is None:
            return
        items = ef if isinstance(ef, list) else [ef]
        for i, item in enumerate(items):
            key = f"{owner}: env_file" + (f"[{i}]" if isinstance(ef, list) else "")
            required = True
            if isinstance(item, dict):
                raw = item.get("path")
                req = item.get("required", True)
                required = not (req is False or str(req).lower() == "false")
            else:
                raw = item
            if not isinstance(raw, str) or not raw:
                raise ConfigError(f"{self.where}: {key}: expected a path")
            path = self.interp(raw, key)
            if posixpath.isabs(path) or path.startswith("~"):
                continue  # a host path: the host's business
            rel = self.rel(base, path, key)
            if not self._exists(rel):
                if required:
                    raise ConfigError(
                        f"{self.where}: {key}: {path!r} does not exist "
                        f"({self._local(rel)}); compose would fail with "
                        "\"Couldn't find env file\"",
                        "create it, or mark it optional: "
                        f"env_file: [{{path: {path}, required: false}}]",
                    )
                continue
            self.copy(rel, key, secret=True)

    def _extends(self, name: str, svc: dict[str, Any], base: str, seen: set[str]) -> None:
        ext = svc.get("extends")
        if not isinstance(ext, dict) or not ext.get("file"):
            return
        key = f"service {name}: extends.file"
        path = self.interp(str(ext["file"]), key)
        if posixpath.isabs(path):
            raise ConfigError(
                f"{self.where}: {key}: {path!r} is an absolute path on this machine",
                "use a path relative to the compose file, so it is copied into the release",
            )
        rel = self.rel(base, path, key)
        if not self._exists(rel):
            raise ConfigError(
                f"{self.where}: {key}: {path!r} does not exist ({self._local(rel)})",
                "create it, or fix the path (relative to the compose file)",
            )
        self.copy(rel, key, secret=False)
        if rel in seen:
            return
        seen = seen | {rel}
        assert self.ctx is not None
        from deployer.config.readfile import read_text

        text = read_text(self.ctx.root / rel, f"{self.where}: {key}: {rel}", "compose file")
        try:
            other = load_fast(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{self.where}: {key}: cannot read {rel}: {e}") from None
        target = str(ext.get("service", name))
        osvcs = other.get("services") if isinstance(other, dict) else None
        spec = osvcs.get(target) if isinstance(osvcs, dict) else None
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{self.where}: {key}: {rel} has no service {target!r}",
                "fix extends.service or the file",
            )
        obase = posixpath.dirname(rel) or "."
        owner = f"service {name}: extends {rel} service {target}"
        vols = spec.get("volumes")
        if isinstance(vols, list):
            for i, v in enumerate(vols):
                what = f"{owner}: volumes[{i}]"
                src = (
                    self.interp(v, what).split(":")[0] if isinstance(v, str) and ":" in v
                    else self.interp(str(v.get("source", "")), what)
                    if isinstance(v, dict) and v.get("type") == "bind" else ""
                )
                if _is_relative(src):
                    self._bind(src, obase, what, rewritable=False)
        self._env_files(target, spec, obase, owner)
        self._extends(target, spec, obase, seen)

    def _pull_policy(self, name: str, svc: dict[str, Any]) -> None:
        assert self.ctx is not None
        policy = svc.get("pull_policy")
        image = svc.get("image")
        if not isinstance(policy, str) or not isinstance(image, str):
            return
        if policy in ("never", "build") and self.interp(image, f"service {name}: image") in (
            self.ctx.registry_images
        ):
            self.edits.append((("services", name, "pull_policy"), _DELETE))

    def _top_level(self, doc: dict[str, Any]) -> None:
        assert self.ctx is not None
        for section in ("secrets", "configs"):
            entries = doc.get(section)
            if not isinstance(entries, dict):
                continue
            for ename, spec in entries.items():
                if not isinstance(spec, dict) or not spec.get("file"):
                    continue
                key = f"{section}.{ename}.file"
                path = self.interp(str(spec["file"]), key)
                if posixpath.isabs(path) or path.startswith("~"):
                    continue
                rel = self.rel(self.ctx.compose_dir, path, key)
                if not self._exists(rel):
                    raise ConfigError(
                        f"{self.where}: {key}: {path!r} does not exist ({self._local(rel)}); "
                        "compose would fail with \"bind source path does not exist\"",
                        "create it (it is shipped 0600), or fix the path",
                    )
                self.copy(rel, key, secret=section == "secrets")

    def _project_name(self, doc: dict[str, Any]) -> None:
        assert self.ctx is not None
        name = self.ctx.env.get("COMPOSE_PROJECT_NAME")
        if name and name != self.ctx.app:
            self.notes.append(
                f"COMPOSE_PROJECT_NAME={name} differs from the app {self.ctx.app!r}: deployer "
                f"runs compose as project {self.ctx.app!r} (-p), so containers, volumes and "
                f"networks are named {self.ctx.app}_*"
            )
        top = doc.get("name")
        if isinstance(top, str) and self.interp(top, "name") not in ("", self.ctx.app):
            self.notes.append(
                f"the compose file's name: {top!r} differs from the app {self.ctx.app!r}: "
                f"deployer runs compose as project {self.ctx.app!r} (-p)"
            )

    def _exists(self, rel: str) -> bool:
        if rel in self.uploaded:
            return True
        return self.ctx is not None and (self.ctx.root / rel).exists()

    def _local(self, rel: str) -> str:
        return str(self.ctx.root / rel) if self.ctx else rel

    def _rewrite(self) -> str:
        try:
            doc = load_rt(self.text)
        except Exception as e:  # ruamel is stricter than libyaml (duplicate keys, ...)
            raise ConfigError(
                f"{self.where}: the rendered compose file is not valid YAML 1.2: "
                f"{' '.join(str(e).split())}",
                "compose would refuse it too; fix the template",
            ) from None
        for path, value in self.edits:
            _apply(doc, path, value)
        return dump_rt(doc)


def _apply(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    if len(path) >= 2 and path[-2] == "<item>":
        parent = _get(doc, path[:-2])
        if isinstance(parent, list):
            if path[-1] in parent:
                parent.remove(path[-1])
        elif path[-1] in parent:
            del parent[path[-1]]
        return
    parent = _get(doc, path[:-1])
    key = path[-1]
    if value is _DELETE:
        own = getattr(parent, "_ok", None)  # ruamel: keys not from a merge (<<)
        if own is None or key in own:
            del parent[key]
        elif key == "pull_policy":
            parent[key] = "missing"  # compose's default; a merged key cannot be unset
        else:
            parent[key] = None
        return
    parent[key] = value


def _get(doc: Any, path: Sequence[Any]) -> Any:
    node = doc
    for p in path:
        node = node[p]
    return node


def _is_relative(src: str) -> bool:
    return src.startswith(".")


def _prune_nested(copies: dict[str, CopySpec]) -> list[CopySpec]:
    """One spec per path; a non-secret path inside a copied directory is
    already in it."""
    dirs = sorted(copies)
    out = []
    for rel in dirs:
        spec = copies[rel]
        inside = [d for d in dirs if d != rel and (d == "." or rel.startswith(d + "/"))]
        if inside and not spec.secret:
            continue
        out.append(spec)
    return out

