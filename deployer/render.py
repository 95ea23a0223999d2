"""Rendering templates per host with Jinja2.

StrictUndefined everywhere: a missing variable is an error naming the
template, line, variable and host, never an empty string in a config file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.config import Host, Project
from deployer.config.models import FileSpec
from deployer.errors import ConfigError
from deployer.release_files import ReleaseFile

if TYPE_CHECKING:
    import jinja2

RESERVED = ("app", "env", "host", "images", "release", "groups", "deploy_dir")


def _environment(root: Path) -> jinja2.Environment:
    """Sandboxed, secret-aware, loading only regular files inside the project
    (deployer/jinja_env.py)."""
    from deployer.jinja_env import template_environment

    return template_environment(root)


def group_hosts(project: Project) -> dict[str, list[dict[str, Any]]]:
    """Each group's hosts (name, address, groups), for the ``groups`` built-in."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for h in project.hosts:
        for g in h.groups:
            groups.setdefault(g, []).append(h.template_info())
    return groups


def host_context(
    project: Project, host: Host, images: Mapping[str, str], release: str,
    groups: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """What a template sees: merged vars at top level, plus the built-ins.

    ``groups`` maps each group to its hosts (name, address) so a web host can
    reach the db host: ``{{ groups.db[0].address }}``. It is
    :func:`group_hosts`, built once per run and shared by every host (built
    per host, the whole inventory was walked once per host: quadratic in the
    fleet's size), so the work per host does not grow with the fleet.
    """
    ctx: dict[str, Any] = dict(host.vars)
    ctx.update(
        app=project.app,
        env=project.env,
        host=host.template_info(),
        images=dict(images),
        release=release,
        groups=groups,
        deploy_dir=project.deploy_dir,
    )
    return ctx


def check_reserved(project: Project) -> None:
    """A var named like a built-in would be silently shadowed: refuse it."""
    for h in project.hosts:
        for name in RESERVED:
            if name in h.vars:
                raise ConfigError(
                    f"{project.inventory_map.display}: host {h.name}: var {name!r} "
                    "clashes with a built-in template variable",
                    f"rename it; built-ins are {', '.join(RESERVED)}",
                )


def files_for(project: Project, host: Host) -> list[FileSpec]:
    """The host's ``files:`` entries (its group's, else the project's),
    templates and copies alike."""
    return list(host.files) if host.files is not None else list(project.config.files)


def files_origin(project: Project, host: Host) -> str:
    """Where :func:`files_for`'s list is written, for messages."""
    if host.files is not None and host.groups:
        return f"{project.inventory_map.display}: groups.{host.groups[0]}.files"
    return "deployer.yaml: files"


class Renderer:
    """Caches compiled templates across hosts (a 100-host plan parses each once)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.env = _environment(project.root)
        self._cache: dict[str, jinja2.Template] = {}
        self._groups = group_hosts(project)  # once: per host it was quadratic

    def _template(self, name: str, host: Host) -> jinja2.Template:
        import jinja2

        if name in self._cache:
            return self._cache[name]
        if not (self.project.root / name).exists():
            raise ConfigError(
                f"{name}: template not found (host {host.name})",
                f"create it, or fix the 'template' path in deployer.yaml "
                f"(relative to {self.project.root})",
            )
        try:
            tpl = self.env.get_template(Path(name).as_posix())
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(
                f"{name}:{e.lineno}: template syntax error: {e.message}",
                "fix the Jinja2 syntax at that line",
            ) from None
        self._cache[name] = tpl
        return tpl

    def render(
        self, host: Host, images: Mapping[str, str], release: str
    ) -> list[ReleaseFile]:
        ctx = host_context(self.project, host, images, release, self._groups)
        out = []
        for spec in files_for(self.project, host):
            if spec.template is None:
                continue  # a copy: shipped byte for byte, never through Jinja
            tpl = self._template(spec.template, host)
            out.append(
                ReleaseFile(
                    spec.dest,
                    spec.mode_int,
                    spec.template,
                    data=self._render_one(tpl, spec.template, ctx, host).encode(),
                    secret=spec.mode_int & 0o077 == 0,
                )
            )
        return out

    def _render_one(
        self, tpl: jinja2.Template, name: str, ctx: dict[str, Any], host: Host
    ) -> str:
        import jinja2

        try:
            return tpl.render(ctx)
        except jinja2.UndefinedError as e:
            line = _template_line(e, tpl)
            var = _undefined_name(str(e.message))
            raise ConfigError(
                f"{name}:{line}: undefined variable {var} (host {host.name})"
                if line
                else f"{name}: undefined variable {var} (host {host.name})",
                f"define {var} under vars in the inventory (all hosts, a group or this host)",
            ) from None
        except jinja2.TemplateError as e:
            line = _template_line(e, tpl)
            raise ConfigError(
                f"{name}:{line or '?'}: template error: {e} (host {host.name})"
            ) from None
        except Exception as e:  # a filter or a test raising on this host's data
            line = _template_line(e, tpl)
            raise ConfigError(
                f"{name}:{line or '?'}: error while rendering for host {host.name}: "
                f"{type(e).__name__}: {e}"
            ) from None


def _template_line(exc: BaseException, tpl: jinja2.Template) -> int | None:
    """Jinja rewrites tracebacks so frames point at the template file and line."""
    line = None
    tb = exc.__traceback__
    fname = tpl.filename
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == fname:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _undefined_name(message: str) -> str:
    m = re.search(r"'([^']+)' is undefined", message)
    if m:
        return m.group(1)
    m = re.search(r"has no attribute '([^']+)'", message)
    if m:
        obj = re.search(r"^'?([^']+)'? (?:object )?has no attribute", message)
        return f"{obj.group(1)}.{m.group(1)}" if obj else m.group(1)
    return message
