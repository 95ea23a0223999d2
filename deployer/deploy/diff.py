"""``deployer plan ENV --diff``: what a ship would change on each host, and
what drifted there since the last one. Read-only.

One command per host (:func:`deployer.commands.inspect.inspect_host`) over the
normal executor, at most ``max_parallel`` hosts at a time. Per host the
result (:class:`HostDiff`) holds:

- every file against the host's current release: ``added``, ``changed``,
  ``unchanged`` or ``removed``, with a unified diff. Secret values are masked;
  a secret file (mode 0600, or :attr:`ReleaseFile.secret`) shows only its
  status, never its content or hash;
- the images that change (the current manifest's ``images`` against the plan's);
- the services compose will recreate, start or remove: **deployer's prediction
  from the compose file** (a service whose definition changed, that mounts
  files of the release, whose container is missing or stopped, that is new or
  gone), not compose's own config hash;
- drift: files of the current release that no longer match its manifest
  (edited by hand), and containers that do not match it (a service missing,
  exited when it is not a finished one-shot, or running another image);
- ``unchanged``: the fingerprint equals the current release's and nothing
  drifted; a ship leaves such a host alone.

A host with no current release is a first release: every file ``added``.
Everything returned is already masked, so callers may serialise it as is.

Secrets in a diff: the templates are rendered a second time with a sentinel
for every secret, which marks the lines that hold one; those lines, and the
host's old lines of the same shape, print as ``******`` (``******(old)`` when
the value changed). The limit: an old line that held a secret the templates
no longer render in the same shape (the line itself was rewritten) is shown
as the host has it, masked only where it holds a secret known now.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from deployer.commands.health import ContainerRow
from deployer.commands.inspect import CONTENT_CAP, Inspection, inspect_host, parse_inspection
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.runner import RunOptions, run_over_hosts
from deployer.errors import ConfigError, HostError
from deployer.plan import HostPlan, Plan, build_plan, new_release_id
from deployer.release_files import ReleaseFile
from deployer.remote.base import Executor
from deployer.report.model import HostReport
from deployer.report.reporters import Reporter
from deployer.secrets import MASK, Secret, mask

FileStatus = Literal["added", "changed", "unchanged", "removed"]
PREDICTION = "deployer's prediction from the compose file, not compose's own config hash"

# Stands for every secret in a second rendering of the templates, so the
# lines that hold a secret are known (case-insensitive: `| upper` keeps it).
_SENTINEL = "DEPLOYERSECRETSENTINELQX7"
_SENTINEL_RE = re.compile(_SENTINEL, re.IGNORECASE)
_STAYS_EXITED = {"", "no", "on-failure"}


@dataclass
class FileChange:
    dest: str
    status: FileStatus
    secret: bool = False
    mode: str | None = None  # "0644 -> 0600" when the mode changes
    diff: str | None = None  # unified diff (masked); None: none to show
    note: str | None = None  # why there is no diff (secret, binary, too large)


@dataclass
class ImageChange:
    name: str
    old: str | None
    new: str | None


@dataclass
class HostDiff:
    host: str
    address: str
    current: str | None
    release: str
    unchanged: bool
    first_release: bool
    files: list[FileChange] = field(default_factory=list)
    images: list[ImageChange] = field(default_factory=list)
    recreate: dict[str, str] = field(default_factory=dict)  # service -> why
    start: dict[str, str] = field(default_factory=dict)
    remove: dict[str, str] = field(default_factory=dict)
    drift_files: list[FileChange] = field(default_factory=list)
    drift_containers: dict[str, str] = field(default_factory=dict)  # service -> what
    docker: str = "ok"
    error: str | None = None
    # The fingerprint equals the current release's: ``ship`` leaves this
    # host alone, drift included.
    same_fingerprint: bool = False
    #: The edge proxy's steps and route changes (deployer/proxy/plan_diff.py);
    #: None: the host runs no proxied service.
    proxy: dict[str, Any] | None = None

    def data(self) -> dict[str, Any]:
        """The JSON shape (``plan --diff -o json``)."""
        def fc(f: FileChange) -> dict[str, Any]:
            return {k: v for k, v in dataclasses.asdict(f).items() if v is not None}

        return {
            "name": self.host,
            "address": self.address,
            "current": self.current,
            "release": self.release,
            "unchanged": self.unchanged,
            "first_release": self.first_release,
            "same_fingerprint": self.same_fingerprint,
            "error": self.error,
            "files": [fc(f) for f in self.files],
            "images": [dataclasses.asdict(i) for i in self.images],
            "services": {
                "recreate": sorted(self.recreate), "start": sorted(self.start),
                "remove": sorted(self.remove),
                "why": {**self.recreate, **self.start, **self.remove},
                "note": PREDICTION,
            },
            "drift": {
                "files": [fc(f) for f in self.drift_files],
                "containers": [{"service": s, "problem": p}
                               for s, p in sorted(self.drift_containers.items())],
            },
            "docker": self.docker,
            **({"proxy": self.proxy} if self.proxy is not None else {}),
        }


@dataclass
class DiffReport:
    app: str
    env: str
    release: str
    tag: str
    images: dict[str, str]
    unpinned: list[str]
    hosts: list[HostDiff]

    @property
    def ok(self) -> bool:
        return all(h.error is None for h in self.hosts)

    def data(self) -> dict[str, Any]:
        return {
            "app": self.app, "env": self.env, "release": self.release, "tag": self.tag,
            "images": dict(self.images), "unpinned_images": list(self.unpinned),
            "hosts": [h.data() for h in self.hosts],
        }


# -- images and the plan -----------------------------------------------------


def resolve_images(project: Project, tag: str) -> tuple[dict[str, str], list[str]]:
    """The refs a ship of ``tag`` would give the templates: pinned by the
    digest the registry holds for the tag when it holds one (then an
    unchanged host renders exactly what it runs), else the offline reference
    (the tag is not pushed yet: a ship builds and pins it). Returns the refs
    and the names left unpinned. Reads the registry only: over its HTTP API,
    or through the local engine for registries that API does not handle
    (Docker Hub); an engine that does not answer leaves the images unpinned."""
    from deployer.images.refs import image_ref, normalize_server, pinned_ref
    from deployer.images.registry_api import manifest_digest

    reg = project.registry
    user = str(reg.username) if reg.username and reg.password else None
    password = str.__str__(reg.password) if user and reg.password else None
    host = normalize_server(reg.server)
    by_engine = not host or "/" in host
    refs: dict[str, str] = {}
    unpinned: list[str] = []
    served: dict[str, str] | None = None
    if reg.none:  # no registry: the digests the blob store would serve
        from deployer.images.estimate import cached_digests

        served = cached_digests(project, tag)
    for name, img in project.config.images.items():
        if served is not None:
            digest = served.get(name)
        elif by_engine:
            digest = _engine_digest(project, image_ref(reg.server, img.repository, tag))
        else:
            digest = manifest_digest(reg.server, img.repository, tag, user, password)
        if digest:
            refs[name] = pinned_ref(reg.server, img.repository, tag, digest)
        else:
            refs[name] = image_ref(reg.server, img.repository, tag)
            unpinned.append(name)
    return refs, unpinned


def _engine_digest(project: Project, ref: str) -> str | None:
    from deployer.errors import DeployerError
    from deployer.images.engine import Engine, EngineError
    from deployer.images.push import registry_auth

    try:
        eng = Engine.from_env()
    except (DeployerError, EngineError, OSError):
        return None
    try:
        return eng.registry_digest(ref, registry_auth(project.registry))
    except (DeployerError, EngineError, OSError):
        return None
    finally:
        eng.close()


def _sentinel(value: Any) -> Any:
    if isinstance(value, Secret):
        return _SENTINEL
    if isinstance(value, dict):
        return {k: _sentinel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sentinel(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_sentinel(v) for v in value)
    return value


def sentinel_files(project: Project, plan: Plan) -> dict[str, dict[str, bytes | None]]:
    """Per host, each file rendered with every secret replaced by a sentinel
    (only the files where that makes a difference): where a secret sits.

    When the templates do not render with the sentinel (a secret fed to a
    filter that needs its real value), every file that shows a known secret
    maps to None: its content is not shown at all."""
    hosts = [dataclasses.replace(hp.host, vars=_sentinel(hp.host.vars)) for hp in plan.hosts]
    try:
        again: Plan | None = build_plan(project, hosts, plan.images, plan.release, plan.tag)
    except ConfigError:
        again = None
    out: dict[str, dict[str, bytes | None]] = {}
    for i, real in enumerate(plan.hosts):
        if again is None:
            out[real.host.name] = {
                f.dest: None for f in real.files
                if mask(f.content.decode(errors="replace")) != f.content.decode(errors="replace")
            }
            continue
        by_dest = {f.dest: f for f in again.hosts[i].files}
        out[real.host.name] = {
            f.dest: by_dest[f.dest].content for f in real.files
            if f.dest in by_dest and by_dest[f.dest].content != f.content
        }
    return out


# -- pure: one host ------------------------------------------------------------


def _showable(f: ReleaseFile) -> bool:
    """A diff of ``f`` can be shown: text, and small enough to ask for."""
    data = f.content
    return len(data) <= CONTENT_CAP and _text(data) is not None


def wanted(hp: HostPlan) -> list[tuple[str, str]]:
    """``(dest, sha256)`` of the files whose current content a host is asked
    for: never a secret file (nor its hash), nor one no diff is shown of."""
    return [(f.dest, f.sha256) for f in hp.files
            if not (f.secret or f.mode & 0o077 == 0) and _showable(f)]


def _text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def _masked_lines(
    new: str, sentinel: str | None, old: str | None
) -> tuple[list[str], list[str] | None] | None:
    """New and old content as lines fit to print: every line that holds a
    secret in the new rendering is shown with ``******`` in its place, and
    an old line of the same shape is shown the same way (marked ``(old)``
    when its value differs), so a rotated secret's old value is not printed
    either. None when the secret's lines cannot be told apart."""
    new_lines = new.splitlines(keepends=True)
    if sentinel is None:
        shown_new = [mask(ln) for ln in new_lines]
        return shown_new, None if old is None else [mask(ln) for ln in old.splitlines(True)]
    s_lines = sentinel.splitlines(keepends=True)
    if len(s_lines) != len(new_lines):
        return None  # a multi-line secret, or lines that moved: no line-by-line view
    shapes: list[tuple[re.Pattern[str], str, str]] = []
    shown_new = []
    for real, s in zip(new_lines, s_lines, strict=True):
        if _SENTINEL_RE.search(s):
            display = _SENTINEL_RE.sub(MASK, s)
            shape = ".*".join(re.escape(p) for p in _SENTINEL_RE.split(s.rstrip("\n")))
            shapes.append((re.compile(shape, re.DOTALL), display, real))
            shown_new.append(display)
        else:
            shown_new.append(mask(real))
    if old is None:
        return shown_new, None
    shown_old = []
    for line in old.splitlines(keepends=True):
        for pattern, display, real in shapes:
            if pattern.fullmatch(line.rstrip("\n")):
                shown_old.append(display if line == real else display.replace(MASK, MASK + "(old)"))
                break
        else:
            shown_old.append(mask(line))
    return shown_new, shown_old


def _unified(old: list[str], new: list[str], a: str, b: str) -> str:
    lines = list(difflib.unified_diff(old, new, fromfile=a, tofile=b))
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n"
                   for ln in lines)


def file_diff(
    f: ReleaseFile, old: bytes | None, sentinel: bytes | None, *, a: str, b: str,
    reverse: bool = False,
) -> tuple[str | None, str | None]:
    """(diff, note) of one non-secret file: ``old`` is the current content
    (None: the file is new). ``reverse``: from ``f`` to ``old`` (drift: from
    the release to what the host holds now)."""
    new_text = _text(f.content)
    old_text = "" if old is None else _text(old)
    if new_text is None or old_text is None:
        return None, "binary content"
    s_text = _text(sentinel) if sentinel is not None else None
    view = _masked_lines(new_text, s_text, old_text)
    if view is None:
        return None, "holds a secret whose lines cannot be told apart; content not shown"
    new_lines, old_lines = view
    if reverse:
        return _unified(new_lines, old_lines or [], a, b), None
    return _unified(old_lines or [], new_lines, a, b), None


def _manifest_files(manifest: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def yaml_doc(text: str | None) -> dict[str, Any] | None:
    """A compose or stack file's mapping; None when absent or not one."""
    if text is None:
        return None
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def services_of(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``services`` mapping of a compose or stack document (may be empty)."""
    svcs = doc.get("services") if doc else None
    return dict(svcs) if isinstance(svcs, dict) else {}


def _relative(path: Any) -> bool:
    return isinstance(path, str) and not path.startswith("/") and not path.startswith("$")


def uses_release_paths(svc: Any, doc: Mapping[str, Any]) -> bool:
    """Whether a service reads files of the release folder (a relative bind
    source, ``env_file``, or a top-level ``configs``/``secrets`` ``file:``).
    compose resolves those to absolute paths, which name the release, so
    such a service is recreated by every new release."""
    if not isinstance(svc, dict):
        return False
    for v in svc.get("volumes") or []:
        src = v.split(":")[0] if isinstance(v, str) else (
            v.get("source") if isinstance(v, dict) and v.get("type") == "bind" else None)
        if isinstance(src, str) and src.startswith("."):
            return True
    env_files = svc.get("env_file")
    for e in env_files if isinstance(env_files, list) else [env_files]:
        p = e.get("path") if isinstance(e, dict) else e
        if _relative(p):
            return True
    for kind in ("configs", "secrets"):
        top = doc.get(kind)
        refs = svc.get(kind)
        if not isinstance(top, dict) or not isinstance(refs, list):
            continue
        for r in refs:
            name = r.get("source") if isinstance(r, dict) else r
            spec = top.get(name) if isinstance(name, str) else None
            if isinstance(spec, dict) and _relative(spec.get("file")):
                return True
    return False


def _oneshot_done(row: ContainerRow, oneshot: set[str]) -> bool:
    return row.status == "exited" and row.exit_code == 0 and (
        row.service in oneshot or row.restart_policy in _STAYS_EXITED)


def container_drift(
    services: list[str], doc: Mapping[str, Any] | None, rows: list[ContainerRow],
    oneshot: set[str],
) -> dict[str, str]:
    """Per service of the current release that its containers do not match:
    missing, not running (a finished one-shot is fine), or another image than
    the release's compose file names."""
    svcs = services_of(doc)
    found: dict[str, list[ContainerRow]] = {}
    for r in rows:
        if not r.oneoff:
            found.setdefault(r.service, []).append(r)
    out: dict[str, str] = {}
    for s in services:
        mine = found.get(s, [])
        if not mine:
            out[s] = "no container"
            continue
        for r in sorted(mine, key=lambda r: r.name):
            want = svcs.get(s, {}).get("image") if isinstance(svcs.get(s), dict) else None
            if r.status != "running" and not _oneshot_done(r, oneshot):
                code = f" (exit code {r.exit_code})" if r.status == "exited" else ""
                out[s] = f"{r.name} is {r.status or 'in an unknown state'}{code}"
                break
            if isinstance(want, str) and r.image and r.image != want:
                out[s] = f"{r.name} runs {r.image}, the release says {want}"
                break
    return out


def _why_changed(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        if keys == ["image"]:
            return "image changed"
        if keys:
            return "definition changed (" + ", ".join(keys) + ")"
    return "definition changed"


def predict_services(
    new_doc: Mapping[str, Any],
    old_doc: Mapping[str, Any] | None,
    old_services: list[str],
    rows: list[ContainerRow] | None,
    *,
    first_release: bool,
    oneshot: set[str] | None = None,
    active: list[str] | None = None,
    env_changed: bool = False,
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(recreate, start, remove), each service -> why, for a ship that runs
    ``compose up -d --remove-orphans`` with ``new_doc``: deployer's
    prediction from the compose files, not compose's own config hash.

    ``old_doc`` None with a current release: its compose file could not be
    read (a secret, too large), so every kept service counts as recreated.
    ``rows``: the project's containers (None: docker could not be asked).
    ``oneshot``: services known to be one-shots; a container that exited 0
    under restart policy no/on-failure counts as one too.
    ``active``: the services ``up`` starts (None: all); one that a disabled
    profile leaves out is neither started nor removed.
    """
    defined = services_of(new_doc)
    new = {k: v for k, v in defined.items() if active is None or k in active}
    old = services_of(old_doc)
    oneshot = oneshot or set()
    by_service: dict[str, list[ContainerRow]] = {}
    for r in rows or []:
        if not r.oneoff:
            by_service.setdefault(r.service, []).append(r)
    recreate: dict[str, str] = {}
    start: dict[str, str] = {}
    for name, svc in new.items():
        if first_release or (name not in old and name not in old_services):
            start[name] = "new service"
        elif old_doc is None:
            recreate[name] = "current compose file not readable; assumed changed"
        elif old.get(name) != svc:
            recreate[name] = _why_changed(old.get(name), svc)
        elif uses_release_paths(svc, new_doc):
            recreate[name] = "mounts files of the release (their path names the release)"
        elif env_changed and "$" in repr(svc):
            recreate[name] = ".env changed"
        elif rows is not None:
            mine = by_service.get(name, [])
            if not mine:
                start[name] = "no container"
            elif any(r.status != "running" for r in mine):
                r = next(r for r in mine if r.status != "running")
                start[name] = ("one-shot runs again" if _oneshot_done(r, oneshot)
                               else f"container is {r.status}")
    # A service that is gone is removed if it has a container (or docker
    # could not be asked); one without a container has nothing to remove.
    gone = [s for s in {*old, *old_services}
            if s not in defined and (rows is None or s in by_service)]
    remove = dict.fromkeys(sorted(gone), "not in the new compose file")
    for r in rows or []:
        if (not r.oneoff and r.service and r.service not in defined
                and r.service not in remove):
            remove[r.service] = "orphan container (--remove-orphans)"
    return recreate, start, remove


def host_diff(
    project: Project,
    hp: HostPlan,
    ins: Inspection,
    sentinels: Mapping[str, bytes | None] | None = None,
) -> HostDiff:
    """Compare one host's plan with what :func:`inspect_host` found (pure)."""
    import json

    sentinels = sentinels or {}
    base = f"{project.deploy_dir}/"
    manifest: dict[str, Any] = {}
    if ins.manifest_text:
        try:
            loaded = json.loads(ins.manifest_text)
            manifest = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            manifest = {}
    first = ins.current is None
    noop = bool(not first and manifest.get("fingerprint") == hp.fingerprint)
    mfiles = _manifest_files(manifest)
    plan_files = {f.dest: f for f in hp.files}
    a_dir = f"{base}current/"
    b_dir = f"{base}releases/{hp.release}/"

    def describe(f: ReleaseFile, status: FileStatus, old_mode: int | None,
                 have_sha: str | None = None) -> FileChange:
        secret = f.secret or f.mode & 0o077 == 0
        fc = FileChange(f.dest, status, secret=secret)
        if old_mode is not None and old_mode != f.mode and status != "added":
            fc.mode = f"{old_mode:04o} -> {f.mode:04o}"
        if status == "unchanged":
            return fc
        if secret:
            fc.note = "secret: content not shown"
        elif f.dest in sentinels and sentinels[f.dest] is None:
            fc.note = "holds a secret: content not shown"
        elif not _showable(f):
            fc.note = "binary or larger than 256 KiB: content not shown"
        elif f.dest in ins.truncated:
            fc.note = "current content larger than 256 KiB: not shown"
        elif f.dest in ins.skipped:
            fc.note = "not shown: the content read from a host is capped at 4 MiB"
        elif have_sha == f.sha256:
            pass  # only the mode changed
        elif status == "changed" and f.dest not in ins.contents:
            fc.note = "current content not readable: not shown"
        else:
            fc.diff, fc.note = file_diff(
                f, ins.contents.get(f.dest), sentinels.get(f.dest),
                a=a_dir + f.dest if status != "added" else "/dev/null", b=b_dir + f.dest)
        return fc

    files: list[FileChange] = []
    for dest in sorted(plan_files):
        f = plan_files[dest]
        have = ins.files.get(dest)
        if noop:
            files.append(FileChange(dest, "unchanged", secret=f.secret or f.mode & 0o077 == 0))
        elif have is None:
            files.append(describe(f, "added", None))
        elif have.sha256 == f.sha256 and have.mode == f.mode:
            files.append(describe(f, "unchanged", have.mode))
        else:
            files.append(describe(f, "changed", have.mode, have.sha256))
    if not noop:
        for dest in sorted(set(ins.files) - set(plan_files)):
            files.append(FileChange(dest, "removed"))

    # Drift: the current release against its own manifest.
    drift_files: list[FileChange] = []
    if not first:
        for dest in sorted(mfiles):
            entry = mfiles[dest]
            want = entry.get("sha256")
            have = ins.files.get(dest)
            pf = plan_files.get(dest)
            secret = (pf is not None and (pf.secret or pf.mode & 0o077 == 0)) or (
                have is not None and have.mode is not None and have.mode & 0o077 == 0)
            if have is None:
                drift_files.append(FileChange(dest, "removed", secret=secret,
                                              note="deleted on the host"))
                continue
            if not (isinstance(want, str) and len(want) == 64) or have.sha256 == want:
                continue
            fc = FileChange(dest, "changed", secret=secret, note="edited on the host")
            if (not secret and pf is not None and pf.sha256 == want and dest in ins.contents
                    and not (dest in sentinels and sentinels[dest] is None)):
                # The plan renders what the release holds: show the edit.
                fc.diff, why = file_diff(pf, ins.contents[dest], sentinels.get(dest),
                                         a=f"{base}releases/{ins.current}/{dest}",
                                         b=f"{a_dir}{dest} (on the host)", reverse=True)
                fc.note = why or fc.note
            drift_files.append(fc)

    new_doc = yaml_doc(hp.compose.text) or {}
    compose_dest = project.config.compose_file
    cf = ins.files.get(compose_dest)
    old_text: str | None
    if cf is not None and cf.sha256 == plan_files[compose_dest].sha256:
        old_text = hp.compose.text
    elif compose_dest in ins.contents:
        old_text = _text(ins.contents[compose_dest])
    else:
        old_text = None
    old_doc = yaml_doc(old_text)
    old_services = [str(s) for s in manifest.get("services") or [] if isinstance(s, str)]
    rows = ins.containers if ins.docker == "ok" else None
    # Services whose container may rest exited 0: one-shots, restart "no".
    exits = {*hp.compose.oneshot, *hp.compose.may_exit}

    drift_containers: dict[str, str] = {}
    if not first and rows is not None:
        drift_containers = container_drift(old_services or list(services_of(old_doc)),
                                           old_doc, rows, exits)
    images: list[ImageChange] = []
    old_images = manifest.get("images") if isinstance(manifest.get("images"), dict) else {}
    assert isinstance(old_images, dict)
    for name in sorted({*old_images, *hp.images}):
        o, n = old_images.get(name), hp.images.get(name)
        if o != n and not noop:
            images.append(ImageChange(name, o, n))

    recreate: dict[str, str] = {}
    start: dict[str, str] = {}
    remove: dict[str, str] = {}
    if not noop:
        env_changed = any(posixpath.basename(f.dest) == ".env" and f.status != "unchanged"
                          for f in files)
        recreate, start, remove = predict_services(
            new_doc, old_doc, old_services, rows, first_release=first,
            oneshot=exits, active=hp.compose.services, env_changed=env_changed)
    return HostDiff(
        host=hp.host.name, address=hp.host.address, current=ins.current, release=hp.release,
        unchanged=noop and not drift_files and not drift_containers, first_release=first,
        files=files, images=images, recreate=recreate, start=start, remove=remove,
        drift_files=drift_files, drift_containers=drift_containers, docker=ins.docker,
        same_fingerprint=noop,
    )


# -- the run -------------------------------------------------------------------


def diff_plan(project: Project, hosts: list[Host], tag: str) -> tuple[Plan, list[str]]:
    """The plan a ship of ``tag`` would run, with images pinned where the
    registry already holds the tag; and the image names left unpinned."""
    images, unpinned = resolve_images(project, tag)
    return build_plan(project, hosts, images, new_release_id(tag), tag), unpinned


def plan_diff(
    project: Project,
    plan: Plan,
    reporter: Reporter,
    opts: RunOptions,
    *,
    unpinned: list[str] | None = None,
) -> DiffReport:
    """Inspect every host of ``plan`` (one read-only command each, at most
    ``opts.policy.max_parallel`` at once) and compare. A host that cannot be
    inspected gets ``error`` set; the others are still compared."""
    sentinels = sentinel_files(project, plan)
    found: dict[str, HostDiff] = {}
    proxy_steps = _proxy_steps(project, plan)

    by_host = {hp.host.name: hp for hp in plan.hosts}

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        hp = by_host[host.name]
        with run.step("inspect"):
            res = ex.run(inspect_host(project.deploy_dir, project.project_name, wanted(hp)))
            try:
                ins = parse_inspection(res.stdout)
            except ValueError as e:
                raise HostError(hp.host.name, "inspect", str(e)) from None
        found[hp.host.name] = d = host_diff(project, hp, ins, sentinels.get(hp.host.name))
        if hp.proxy is not None and not d.same_fingerprint:
            with run.step("inspect the proxy"):
                d.proxy = proxy_steps(ex, hp)
        return run.report("ok", release=ins.current)

    reports = run_over_hosts([hp.host for hp in plan.hosts], job, reporter, opts)
    by_name = {r.host: r for r in reports}
    hosts: list[HostDiff] = []
    for hp in plan.hosts:
        d = found.get(hp.host.name)
        if d is None:
            rep = by_name.get(hp.host.name)
            d = HostDiff(hp.host.name, hp.host.address, None, hp.release, unchanged=False,
                         first_release=False, docker="unknown",
                         error=mask((rep.error or rep.detail or "not inspected") if rep
                                    else "not inspected"))
        hosts.append(d)
    return DiffReport(project.app, project.env, plan.release, plan.tag, dict(plan.images),
                      list(unpinned or []), hosts)


def _proxy_steps(project: Project, plan: Plan) -> Any:
    """``(executor, host plan) -> the proxy's part of the diff`` (data, masked)."""
    from deployer.audit import context
    from deployer.deploy.dryrun import plan_settings
    from deployer.plan import deployer_identity, utc_timestamp
    from deployer.proxy.plan_diff import host_proxy_diff
    from deployer.secrets import dumps_masked

    settings = plan_settings(project, deployer_identity(), utc_timestamp())
    audit = context(project)

    def read(ex: Executor, hp: HostPlan) -> dict[str, Any] | None:
        d = host_proxy_diff(ex, project, hp, settings, audit)
        return None if d is None else dict(json.loads(dumps_masked(d.data())))

    return read
