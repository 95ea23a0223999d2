"""``deployer init``: a new project from the scaffold, optionally from an
existing compose file.

The scaffold is the repository's top-level ``templates/`` folder (shipped
inside the wheel as ``deployer/_scaffold``), copied as plain files: the files
a user starts from are the same files the docs show, and they are valid
against the models as they stand (a test loads them).

``--from-compose`` turns the compose file a team already runs by hand into the
server template: every service with ``build:`` becomes an entry under
``images:`` and its ``image:`` becomes ``{{ images.<name> }}``; everything else
is kept. The conversion edits the original text rather than re-emitting YAML,
so key order, quoting and comments survive; a self-check (render the result,
parse it, compare with the expected data) guards every edit, and when the text
cannot be edited safely (flow style, anchors, merge keys, ...) it falls back to
re-emitting the data with PyYAML, which loses only comments.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from deployer.config.models import APP_NAME
from deployer.errors import ConfigError, DeployerError
from deployer.project.yaml12 import dump_rt, load_12, load_rt

#: The files ``init`` writes, relative to the project (and to the scaffold).
SCAFFOLD_FILES: tuple[str, ...] = (
    "deployer.yaml",
    "inventories/prod.yaml",
    "templates/docker-compose.yaml.j2",
)
#: The app name written in the scaffold, replaced by the new project's name.
PLACEHOLDER_APP = "myapp"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPO_PART = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_JINJA_OPEN = re.compile(r"\{[{%#]")
_JINJA_ENDRAW = re.compile(r"\{%[+-]?\s*endraw\s*[+-]?%\}")
# Compose's own interpolation (``$$`` is its escape for a literal ``$``).
_COMPOSE_VAR = re.compile(r"(?<!\$)(?:\$\$)*\$(?:\{[A-Za-z_]|[A-Za-z_])")
# Keys of compose's ``build:`` that deployer's image entries carry over.
_BUILD_KEYS = ("context", "dockerfile", "args", "target")


def scaffold_root() -> Path:
    """Where the scaffold lives: ``deployer/_scaffold`` inside an installed
    wheel, else the repository's top-level ``templates/`` (editable installs
    and a source checkout)."""
    import deployer

    pkg = Path(deployer.__file__).resolve().parent
    bundled = pkg / "_scaffold"
    if bundled.is_dir():
        return bundled
    return pkg.parent / "templates"


class ComposeConversion(NamedTuple):
    """The result of :func:`compose_to_template`.

    ``template`` is the Jinja2 source of the server compose file; ``images``
    maps image names to ``deployer.yaml`` image entries (``repository``,
    ``context``, and ``dockerfile``/``args``/``target`` when the compose file
    set them); ``notes`` are things the user should look at (unsupported build
    options, compose ``${VAR}`` interpolation, renamed services)."""

    template: str
    images: dict[str, dict[str, Any]]
    notes: list[str]


@dataclass
class _Built:
    service: str
    name: str  # the key under images:, an identifier
    sentinel: str


def compose_to_template(compose_text: str, app: str, base: str = ".") -> ComposeConversion:
    """Convert a compose file's text into a deployer template.

    ``app`` names the repositories (``<app>/<service>``); ``base`` is the
    compose file's folder relative to the project (``deployer.yaml``), so that
    build contexts, written relative to the compose file, stay right. Raises
    :class:`ConfigError` on input that is not a compose file. Pure: no I/O.
    """
    if not APP_NAME.fullmatch(app):
        raise ConfigError(
            f"{app!r} is not a valid app name",
            "lowercase letters, digits and '-', starting with a letter or digit",
        )
    try:
        data = load_12(compose_text)
    except Exception as e:  # ruamel's errors share no public base with PyYAML's
        raise ConfigError(f"compose file: not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ConfigError(
            "compose file: no 'services' mapping at the top level",
            "pass the docker-compose.yml your team runs",
        )
    services: dict[str, Any] = data["services"]
    notes: list[str] = []

    built: list[_Built] = []
    images: dict[str, dict[str, Any]] = {}
    used_names: set[str] = set()
    token = _sentinel_prefix(compose_text)
    same_build: dict[str, _Built] = {}
    for i, (svc, spec) in enumerate(services.items()):
        if not isinstance(spec, dict) or "build" not in spec:
            continue
        entry = _image_entry(str(svc), spec["build"], app, base, notes)
        key = repr(sorted((k, v) for k, v in entry.items() if k != "repository"))
        first = same_build.get(key)
        if first is not None:
            # Same context, dockerfile, args and target: built and pushed once.
            built.append(_Built(str(svc), first.name, first.sentinel))
            notes.append(
                f"service {svc!r} has the same build as service {first.service!r}: both run "
                f"images.{first.name} (built and pushed once)"
            )
            continue
        name = _image_name(str(svc), used_names)
        used_names.add(name)
        if name != svc:
            notes.append(
                f"service {svc!r}: its image is images.{name} (template names must be identifiers)"
            )
        images[name] = entry
        built.append(_Built(str(svc), name, f"{token}{i}__"))
        same_build[key] = built[-1]

    # What the rendered template must parse back to: the original data without
    # build:, with the built services' image (and any other service that
    # referred to the same local image name) pointing at the pushed image.
    by_local_image = {
        services[b.service]["image"]: b
        for b in built
        if isinstance(services[b.service].get("image"), str)
    }
    retarget: dict[str, _Built] = {b.service: b for b in built}
    for svc, spec in services.items():
        if isinstance(spec, dict) and "build" not in spec:
            ref = spec.get("image")
            if isinstance(ref, str) and ref in by_local_image:
                retarget[str(svc)] = by_local_image[ref]
                notes.append(
                    f"service {svc!r} runs {ref!r}, built by service "
                    f"{by_local_image[ref].service!r}: it now uses "
                    f"images.{by_local_image[ref].name} too"
                )

    if _COMPOSE_VAR.search(compose_text):
        notes.append(
            "the compose file uses compose's ${VAR} interpolation: on the servers "
            "compose reads those variables from the shipped .env (if there is one) "
            "and its own environment, not yours; consider template variables "
            "({{ var }}) from the inventory for values that differ per server"
        )

    placeholders = {b.name: f"registry.invalid/{app}/{b.name}:check" for b in built}
    expected = _expected_data(data, retarget, placeholders)

    template = None
    edited = _edit_text(compose_text, retarget)
    if edited is not None:
        template = _finish(edited, retarget)
        if not _renders_to(template, placeholders, expected):
            template = None
    if template is None:
        header = (
            "# Converted by `deployer init --from-compose`: re-emitted as YAML 1.2, comments\n"
            "# kept (its layout could not be edited line by line).\n"
        )
        template = _finish(header + _reemit(compose_text, retarget), retarget)
        if not _renders_to(template, placeholders, expected):
            raise DeployerError(
                "compose file: the converted template does not render back to the "
                "original; please report this with the compose file"
            )
    return ComposeConversion(template, images, notes)


def init_project(dest: Path, from_compose: Path | None = None, force: bool = False) -> list[Path]:
    """Write ``deployer.yaml``, ``inventories/prod.yaml`` and
    ``templates/docker-compose.yaml.j2`` into ``dest`` and return their paths.

    Existing files are never overwritten without ``force``: the error names
    them all and nothing is written. With ``from_compose``, the compose file
    becomes the template and its built services the ``images:`` entries.
    The app name is ``dest``'s folder name, made valid.
    """
    dest = Path(dest)
    targets = [dest / rel for rel in SCAFFOLD_FILES]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        names = ", ".join(str(t) for t in existing)
        raise ConfigError(
            f"{names}: already exist{'s' if len(existing) == 1 else ''}; nothing was written",
            "pass --force to overwrite them",
        )

    root = scaffold_root()
    sources: dict[str, str] = {}
    for rel in SCAFFOLD_FILES:
        src = root / rel
        try:
            sources[rel] = src.read_text(encoding="utf-8")
        except OSError as e:
            raise DeployerError(
                f"{src}: scaffold file missing ({e.strerror}); the installation is incomplete",
                "reinstall deployer",
            ) from None

    app = app_name_for(dest)
    contents = {rel: _rename_app(text, app) for rel, text in sources.items()}

    if from_compose is not None:
        compose_path = Path(from_compose)
        try:
            compose_text = compose_path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"{compose_path}: cannot read the compose file ({e.strerror})"
            ) from None
        base = Path(os.path.relpath(compose_path.resolve().parent, dest.resolve())).as_posix()
        try:
            conv = compose_to_template(compose_text, app, base)
        except ConfigError as e:
            raise ConfigError(f"{compose_path}: {e.message}", e.hint) from None
        contents["templates/docker-compose.yaml.j2"] = conv.template
        notes = list(conv.notes)
        if base != "." and not base.startswith(".."):
            # The release mirrors the project: the compose file sits in the
            # same folder, so its relative paths name the same files.
            dest_rel = f"{base}/docker-compose.yaml"
            contents["deployer.yaml"] = re.sub(
                r"^(\s*dest:|compose_file:)(\s*)docker-compose\.yaml",
                lambda m: f"{m.group(1)}{m.group(2)}{dest_rel}",
                contents["deployer.yaml"],
                flags=re.M,
            )
        elif base != ".":
            notes.append(
                f"the compose file is outside the project ({base}): its relative paths "
                "resolve against the release folder on the servers"
            )
        notes += classification_notes(dest.resolve(), compose_text, base, app)
        contents["deployer.yaml"] = replace_images_block(
            contents["deployer.yaml"], conv.images, notes, compose_path.name
        )

    written = []
    for rel, target in zip(SCAFFOLD_FILES, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(contents[rel], encoding="utf-8")
        written.append(target)
    return written


def classification_notes(root: Path, compose_text: str, base: str, app: str) -> list[str]:
    """What ``ship`` will do with each path the compose file references
    (:mod:`deployer.project`): copied config, ``shared/`` data, 0600 secrets,
    and what ``check`` would refuse."""
    from deployer.project import ComposeContext, server_compose
    from deployer.project.dotenv import DOTENV, read_dotenv
    from deployer.project.paths import git_tracked

    compose_dir = posixpath.normpath(base) if not base.startswith("..") else "."
    environ = dict(os.environ)
    try:
        dotenv = read_dotenv(root / compose_dir / DOTENV, DOTENV, environ)
        ctx = ComposeContext(root=root, app=app, compose_dir=compose_dir,
                             env={**dotenv, **environ}, tracked=git_tracked(root))
        sc = server_compose(compose_text, where="the compose file", deploy_dir="<deploy_dir>",
                            uploaded=[], services=None, context=ctx)
    except ConfigError as e:
        return [f"`deployer check` will refuse this until fixed: {e.message}"
                + (f" ({e.hint})" if e.hint else "")]
    notes = []
    config = [c.source for c in sc.copies if not c.secret]
    secret = [c.source for c in sc.copies if c.secret]
    if config:
        notes.append(f"config, copied into every release: {', '.join(config)}")
    if sc.shared_dirs:
        notes.append(
            "data, kept in <deploy_dir>/shared on each server and never uploaded: "
            f"{', '.join(sc.shared_dirs)} (list a path under shared: to force data)"
        )
    if secret:
        notes.append(f"secret, copied 0600 into every release: {', '.join(secret)}")
    all_services = [str(s) for s in (load_12(compose_text) or {}).get("services", {})]
    idle = [s for s in all_services if s not in sc.services]
    if idle:
        notes.append(
            f"services behind a compose profile not enabled: {', '.join(idle)} "
            "(not started or awaited; enable with profiles: [...] here or in an inventory)"
        )
    notes += sc.notes
    return notes


def app_name_for(dest: Path) -> str:
    """A valid app name from a folder name: ``My_Shop`` -> ``my-shop``."""
    raw = Path(dest).resolve().name.lower()
    name = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")
    return name if name and APP_NAME.fullmatch(name) else "app"


def replace_images_block(
    deployer_yaml: str, images: dict[str, dict[str, Any]], notes: list[str], source: str
) -> str:
    """Swap the top-level ``images:`` block of the scaffold's deployer.yaml for
    the converted entries (the rest of the file, comments included, stays)."""
    lines = deployer_yaml.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(r"images:\s*(#.*)?$", ln)), None)
    if start is None:
        raise DeployerError("scaffold deployer.yaml has no top-level images: block")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    # Keep blank lines that separated the block from the next one.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    block = [f"# From {source}: one entry per service that had build:.\n"]
    block += [f"# NOTE: {n}\n" for n in notes]
    if images:
        block.append(yaml.safe_dump({"images": images}, sort_keys=False, default_flow_style=False))
    else:
        block.append("images: {}   # no service in the compose file had build:\n")
    return "".join(lines[:start] + block + lines[end:])


# -- helpers ---------------------------------------------------------------


def _rename_app(text: str, app: str) -> str:
    return re.sub(rf"\b{PLACEHOLDER_APP}\b", app, text)


def _yaml_problem(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def _sentinel_prefix(text: str) -> str:
    prefix = "__deployer_image_"
    while prefix in text:
        prefix = "_" + prefix
    return prefix


def _image_name(service: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", service)
    if not _IDENT.fullmatch(name):
        name = "_" + name
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _repository(app: str, service: str) -> str:
    part = re.sub(r"[^a-z0-9]+", "-", service.lower()).strip("-") or "image"
    repo = f"{app}/{part}"
    assert all(_REPO_PART.fullmatch(p) for p in repo.split("/")), repo
    return repo


def _join_context(base: str, ctx: str) -> str:
    if "://" in ctx or ctx.startswith(("git@", "github.com/")) or posixpath.isabs(ctx):
        return ctx
    return posixpath.normpath(posixpath.join(base, ctx))


def _image_entry(service: str, build: Any, app: str, base: str, notes: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"repository": _repository(app, service)}
    if isinstance(build, str):
        entry["context"] = _join_context(base, build)
        return entry
    if not isinstance(build, dict):
        raise ConfigError(
            f"service {service!r}: build must be a path or a mapping (got {type(build).__name__})"
        )
    entry["context"] = _join_context(base, str(build.get("context", ".")))
    if build.get("dockerfile") is not None:
        entry["dockerfile"] = str(build["dockerfile"])
    args = build.get("args")
    if isinstance(args, dict) and args:
        entry["args"] = {}
        for k, v in args.items():
            if v is None:
                entry["args"][str(k)] = f"${{{k}}}"
                notes.append(
                    f"service {service!r}: build arg {k} had no value (compose takes it "
                    f"from the environment): it is now ${{{k}}}"
                )
            else:
                entry["args"][str(k)] = str(v)
    elif isinstance(args, list) and args:
        entry["args"] = {}
        for item in args:
            k, sep, v = str(item).partition("=")
            entry["args"][k] = v if sep else f"${{{k}}}"
            if not sep:
                notes.append(
                    f"service {service!r}: build arg {k} had no value (compose takes it "
                    f"from the environment): it is now ${{{k}}}"
                )
    if build.get("target") is not None:
        entry["target"] = str(build["target"])
    dropped = [k for k in build if k not in _BUILD_KEYS]
    if dropped:
        notes.append(
            f"service {service!r}: build options not carried over: {', '.join(map(str, dropped))}"
        )
    return entry


def _expected_data(
    data: dict[str, Any], retarget: dict[str, _Built], placeholders: dict[str, str]
) -> dict[str, Any]:
    """What the template must render back to, given ``placeholders`` as images."""
    out = dict(data)
    services = {}
    for svc, spec in data["services"].items():
        if str(svc) in retarget and isinstance(spec, dict):
            spec = {k: v for k, v in spec.items() if k != "build"}
            spec["image"] = placeholders[retarget[str(svc)].name]
        services[svc] = spec
    out["services"] = services
    return out


def _drop_key(m: Any, key: str) -> None:
    """Delete ``key`` from a ruamel mapping without its merge bookkeeping
    (ruamel 0.19's ``__delitem__`` fails on maps that others merge)."""
    from ruamel.yaml.compat import ordereddict

    if key in m:
        ordereddict.__delitem__(m, key)
    getattr(m, "_ok", set()).discard(key)


def _reemit(text: str, retarget: dict[str, _Built]) -> str:
    """The compose text re-emitted by ruamel.yaml's round trip (YAML 1.2,
    comments, anchors and tags kept) with build: removed and the image set to
    the sentinel. A ``build`` that came from a merge key (``<<: *common``) is
    removed from the merged mapping, which only built services merge."""
    doc = load_rt(text)
    for svc, spec in doc["services"].items():
        b = retarget.get(str(svc))
        if b is None or not hasattr(spec, "insert"):
            continue
        own = list(spec._ok) if hasattr(spec, "_ok") else list(spec)
        if "build" in own:
            pos = own.index("build")
            del spec["build"]
        else:
            pos = 0
            for merged in [*getattr(spec, "merge", []), spec]:
                _drop_key(merged, "build")
        if "image" in own:
            spec["image"] = b.sentinel
        else:
            spec.insert(pos, "image", b.sentinel)
    return dump_rt(doc)


def _last_pos(node: yaml.Node) -> yaml.Mark:
    """End of a node's last character (PyYAML's block-collection end marks
    point at the next token, possibly lines later, past comments)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        return node.end_mark
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            children += [k, v]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    if not children:
        return node.end_mark
    return max((_last_pos(c) for c in children), key=lambda m: m.index)


def _edit_text(text: str, retarget: dict[str, _Built]) -> str | None:
    """The compose text with build: removed and image values replaced by
    sentinels, or None when the layout is not one we can edit line-wise."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    services_node = next(
        (v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "services"),
        None,
    )
    if not isinstance(services_node, yaml.MappingNode) or services_node.flow_style:
        return None
    edits: list[tuple[int, int, str]] = []
    for knode, vnode in services_node.value:
        svc = knode.value
        if svc not in retarget:
            continue
        if not isinstance(vnode, yaml.MappingNode) or vnode.flow_style:
            return None
        pairs = {k.value: (k, v) for k, v in vnode.value if isinstance(k, yaml.ScalarNode)}
        sentinel = retarget[svc].sentinel
        build = pairs.get("build")
        image = pairs.get("image")
        if image is not None:
            ik, iv = image
            if not isinstance(iv, yaml.ScalarNode):
                return None
            between = text[ik.end_mark.index : iv.start_mark.index]
            if not re.fullmatch(r"[ \t]*:[ \t]*", between):
                return None
            edits.append((iv.start_mark.index, iv.end_mark.index, sentinel))
        if build is not None:
            bk, bv = build
            line_start = text.rfind("\n", 0, bk.start_mark.index) + 1
            if text[line_start : bk.start_mark.index].strip():
                return None  # something else before build: on its line
            end = _last_pos(bv).index
            line_end = text.find("\n", end)
            line_end = len(text) if line_end == -1 else line_end + 1
            rest = text[end:line_end].strip()
            if rest and not rest.startswith("#"):
                return None
            replacement = (
                "" if image is not None else (" " * bk.start_mark.column + f"image: {sentinel}\n")
            )
            edits.append((line_start, line_end, replacement))
        elif image is None:
            return None  # build: came from a merge key
    edits.sort()
    for (_, e1, _), (s2, _, _) in itertools.pairwise(edits):
        if s2 < e1:
            return None
    out = text
    for start, end, repl in reversed(edits):
        out = out[:start] + repl + out[end:]
    return out


def _escape_jinja(text: str) -> str:
    """Make literal ``{{``, ``{%`` and ``{#`` render as themselves: each line
    holding one gets ``{% raw %}`` from its first such pair to its end."""
    out = []
    for line in text.splitlines(keepends=True):
        m = _JINJA_OPEN.search(line)
        if not m:
            out.append(line)
            continue
        body = line.rstrip("\r\n")
        eol = line[len(body) :]
        head, tail = body[: m.start()], body[m.start() :]
        if _JINJA_ENDRAW.search(tail):
            # Cannot sit inside a raw block: emit each opener as an expression.
            tail = _JINJA_OPEN.sub(lambda o: "{{ " + repr(o.group(0)) + " }}", tail)
            out.append(head + tail + eol)
        else:
            out.append(f"{head}{{% raw %}}{tail}{{% endraw %}}{eol}")
    return "".join(out)


def _finish(text: str, retarget: dict[str, _Built]) -> str:
    """Escape Jinja syntax, then put ``{{ images.<name> }}`` where the
    sentinels are, with a comment where a service was renamed."""
    text = _escape_jinja(text)
    seen: set[str] = set()
    for b in retarget.values():
        if b.sentinel in seen:
            continue
        seen.add(b.sentinel)
        ref = f'"{{{{ images.{b.name} }}}}"'
        if b.name != b.service:

            def with_comment(m: re.Match[str], b: _Built = b, ref: str = ref) -> str:
                return (
                    f"{m.group(1)}# images.{b.name}: the image of service {b.service!r} "
                    f"(template names must be identifiers)\n{m.group(1)}{m.group(2)}{ref}"
                )

            text = re.sub(
                rf"^([ \t]*)(image:[ \t]*){re.escape(b.sentinel)}",
                with_comment,
                text,
                flags=re.M,
            )
        text = text.replace(b.sentinel, ref)
    return text


def _renders_to(template: str, placeholders: dict[str, str], expected: dict[str, Any]) -> bool:
    """The self-check: does the template render and parse back to ``expected``?"""
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    try:
        rendered = env.from_string(template).render(images=placeholders)
        got = load_12(rendered)
    except Exception:  # a template or YAML error: the conversion is not faithful
        return False
    if not isinstance(got, dict):
        return False

    def meaning(d: dict[str, Any]) -> dict[str, Any]:
        # ``x-`` extension fields are templates for merge keys, not read by compose.
        return {k: v for k, v in d.items() if not str(k).startswith("x-")}

    return bool(meaning(got) == meaning(expected))
