"""The declarative format: pydantic models for ``deployer.yaml`` and
``inventories/<env>.yaml``.

Models forbid unknown keys (typos are the commonest config bug) and the loader
turns pydantic's errors into ``file:line: key: message`` with a did-you-mean.
``deployer schema`` prints the JSON Schema for editors.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what compose accepts for -p
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A DNS name or an ssh_config alias: labels of letters, digits, '_' and '-',
# none starting with '-' (it would be read as an option by ssh, or by a
# ProxyCommand that splices %h), no whitespace, quotes, '$', ';' or control
# characters.
HOSTNAME = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?"
)
SSH_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?")
MAX_NAME = 253

# deploy_dir may not be one of these, nor inside the trees in SYSTEM_TREES:
# ship creates, chowns and prunes inside it.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys",
    "/tmp", "/usr", "/usr/local", "/var", "/var/lib", "/var/log", "/var/cache", "/var/tmp",
    "/var/spool", "/var/mail", "/var/run", "/var/opt", "/var/www", "/var/backups",
})
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/run", "/sbin", "/sys", "/usr/bin", "/usr/lib", "/usr/sbin",
                "/usr/share", "/usr/include", "/usr/libexec", "/var/lib/docker")

# Bounds for durations (seconds): a value past them is a typo or .inf, and
# would hang a run (or overflow a timer) instead of failing it.
DAY = 86400.0


def check_name(kind: str, v: str) -> str:
    """A host or group name: ``NAME``, at most 253 characters."""
    if not isinstance(v, str) or len(v) > MAX_NAME or not NAME.fullmatch(v):
        shown = v if isinstance(v, str) and len(v) <= 60 else f"{str(v)[:57]}..."
        raise ValueError(
            f"{kind} name {shown!r} is not valid: use letters, digits, '.', '_', '-' "
            f"(starting with a letter or digit, at most {MAX_NAME})"
        )
    return v


def check_address(v: str, what: str = "address") -> str:
    """A host name, an IPv4 address or an IPv6 address (``[::1]`` or ``::1``);
    returned without brackets, as sockets and known_hosts want it."""
    shown = v if len(v) <= 60 else v[:57] + "..."
    inner = v[1:-1] if v.startswith("[") and v.endswith("]") else v
    if ":" in inner:
        try:
            ipaddress.IPv6Address(inner)
            return inner
        except ValueError:
            pass
    elif inner == v and len(v) <= MAX_NAME and HOSTNAME.fullmatch(v):
        return v
    hint = " (the port goes in ssh.port)" if re.fullmatch(r"[^:]+:\d+", v) else ""
    raise ValueError(
        f"{what} {shown!r} is not a host name, an IPv4 address or an [IPv6] address{hint}"
    )


def check_user(v: str) -> str:
    if not SSH_USER.fullmatch(v):
        shown = v if len(v) <= 60 else v[:57] + "..."
        raise ValueError(
            f"ssh user {shown!r} is not a valid user name (letters, digits, '_', '.', '-', "
            "not starting with '-' or a digit)"
        )
    return v


def check_proxy_jump(v: str) -> str:
    """``none`` or a comma-separated chain of ``[ssh://][user@]host[:port]``."""
    if v.strip().lower() == "none":
        return v
    for hop in v.split(","):
        part = hop.strip().removeprefix("ssh://")
        if not part:
            raise ValueError(f"proxy_jump {v[:60]!r} has an empty hop")
        if "@" in part:
            user, part = part.rsplit("@", 1)
            check_user(user)
        port = None
        if part.startswith("["):
            end = part.find("]")
            if end < 0:
                raise ValueError(f"proxy_jump hop {hop.strip()[:60]!r}: unclosed '['")
            host, rest = part[: end + 1], part[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"proxy_jump hop {hop.strip()[:60]!r} is not valid")
                port = rest[1:]
        elif part.count(":") == 1:
            host, port = part.split(":")
        else:
            host = part
        check_address(host, "proxy_jump host")
        if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError(f"proxy_jump hop {hop.strip()[:60]!r}: bad port {port[:10]!r}")
    return v


def check_deploy_dir(v: str) -> str:
    """An absolute, normalised directory that is not a system directory."""
    if not v.startswith("/"):
        raise ValueError(f"deploy_dir must be an absolute path (got {v[:60]!r})")
    if any(ord(c) < 32 or c == "\x7f" for c in v) or len(v) > 1024:
        raise ValueError("deploy_dir must be a plain path (no control characters, "
                         "at most 1024 characters)")
    if ".." in v.split("/"):
        raise ValueError(f"deploy_dir {v!r} must not contain '..'")
    norm = posixpath.normpath(v)
    norm = "/" + norm.lstrip("/")  # normpath keeps a leading '//'
    if norm in SYSTEM_DIRS or any(norm.startswith(t + "/") for t in SYSTEM_TREES):
        raise ValueError(
            f"deploy_dir {v!r} is a system directory (ship creates, chowns and prunes "
            "inside it); use a directory of its own, e.g. /opt/<app>"
        )
    return norm


def check_template_path(v: str) -> str:
    """A template path inside the project: relative, without '..'."""
    if not v or len(v) > 1024 or "\0" in v:
        raise ValueError("template must be a path relative to the project (at most 1024 "
                         "characters)")
    if v.startswith(("/", "~")) or "\\" in v:
        raise ValueError(f"template {v[:60]!r} must be relative to the project folder")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in v.split("/")):
        raise ValueError(f"template {v[:60]!r}...: a path component is longer than 255 bytes")
    norm = posixpath.normpath(v)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError(f"template {v[:60]!r} is outside the project folder")
    return v


def _keep_str(v: object) -> str:
    """Accept a string as is, so a :class:`~deployer.secrets.Secret` stays one
    (pydantic would copy it into a plain ``str``)."""
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


SecretField = Annotated[str, PlainValidator(_keep_str)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryConfig(Strict):
    """Where images are pushed and pulled. ``server`` omitted means Docker Hub.
    ``registry: none`` (the string) means no registry at all: deployer serves
    the images to each host over its SSH connection (``none`` is then true and
    the loader sets ``server`` to the loopback address the hosts pull from)."""

    server: str | None = None
    username: str | None = None
    password: SecretField | None = None
    none: bool = Field(default=False, description="set by `registry: none`; not a YAML key")

    @staticmethod
    def _schema(schema: dict[str, Any]) -> None:
        """For editors: a mapping without ``none``, or the word ``none``."""
        obj = {k: v for k, v in schema.items() if k not in ("description", "title")}
        obj["properties"] = {k: v for k, v in obj.get("properties", {}).items() if k != "none"}
        keep: dict[str, Any] = {k: schema[k] for k in ("description", "title") if k in schema}
        schema.clear()
        schema.update(keep, anyOf=[obj, {"const": "none", "type": "string"}])

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_schema)

    @model_validator(mode="before")
    @classmethod
    def _none(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data.strip().lower() == "none":
                return {"none": True}
            raise ValueError(
                "must be a mapping (server, username, password) or the word none"
            )
        if isinstance(data, dict) and "none" in data:
            raise ValueError("unknown key 'none': write `registry: none` for no registry")
        return data

    @model_validator(mode="after")
    def _pair(self) -> RegistryConfig:
        if self.username and self.password == "":
            raise ValueError(
                "password is empty (is the variable it names set to an empty string?)"
            )
        if self.password and self.username == "":
            raise ValueError("username is empty")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together: set both or neither")
        return self


class ImageConfig(Strict):
    """An image built from a context, or mirrored from ``source``."""

    repository: str
    context: str | None = None
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    source: str | None = None

    @field_validator("repository")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", v):
            raise ValueError(
                f"{v!r} is not a valid repository (lowercase path like 'shop/web', no tag)"
            )
        return v

    @model_validator(mode="after")
    def _context_or_source(self) -> ImageConfig:
        if self.source and self.context:
            raise ValueError("set either 'context' (build) or 'source' (mirror), not both")
        if self.source and (self.args or self.target):
            raise ValueError("'args' and 'target' apply to built images, not to a 'source' mirror")
        return self

    @property
    def build_context(self) -> str:
        return self.context or "."


def _project_path(v: str, what: str) -> str:
    """A relative POSIX path that stays inside its root, normalised."""
    if not v or v.startswith("/") or "\\" in v or "\0" in v:
        raise ValueError(f"{what} {v!r} must be a relative path inside the {_ROOTS[what]}")
    norm = posixpath.normpath(v)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError(f"{what} {v!r} escapes the {_ROOTS[what]}")
    return norm


_ROOTS = {"dest": "release directory", "copy": "project", "certificate": "project",
          "key": "project", "ca_file": "project"}


def _dest_optional_for_copies(schema: dict[str, Any]) -> None:
    """For editors: ``dest`` may be left out of a ``copy`` entry (it defaults
    to the copied path), so the schema requires exactly one of ``template``
    (with ``dest``) or ``copy``."""
    schema["required"] = [r for r in schema.get("required", []) if r != "dest"]
    schema["oneOf"] = [{"required": ["template", "dest"]}, {"required": ["copy"]}]


class FileSpec(Strict):
    """One ``files:`` entry: exactly one of

    - ``template``: a Jinja2 template rendered per host to ``dest``
      (``mode`` default ``0644``);
    - ``copy``: a project file or directory shipped byte for byte, never
      through Jinja; ``dest`` defaults to the same path, ``mode`` (for every
      file of a directory) defaults to each file's own permission bits, and
      ``exclude`` takes gitignore patterns relative to a copied directory.
    """

    template: str | None = None
    copy_: str | None = Field(default=None, alias="copy")
    dest: str
    mode: str | None = None
    exclude: tuple[str, ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              json_schema_extra=lambda s: _dest_optional_for_copies(s))

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        has_t, has_c = data.get("template") is not None, data.get("copy") is not None
        if has_t == has_c:
            raise ValueError(
                "a files entry needs exactly one of 'template' (rendered per host) "
                "or 'copy' (shipped byte for byte)"
            )
        if has_c and "dest" not in data:
            if isinstance(data["copy"], str):
                _project_path(data["copy"], "copy")  # one error about copy, not two
            data = {**data, "dest": data["copy"]}
        if has_t and data.get("exclude"):
            raise ValueError("'exclude' applies to 'copy' entries, not to templates")
        return data

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return check_template_path(v)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: object) -> str | None:
        if v is None:
            return None
        if isinstance(v, int):
            # YAML reads an unquoted 0600 as the int 384 (octal) or 600 (YAML 1.2);
            # both are ambiguous, so ask for a string.
            raise ValueError(f'write the mode as a quoted octal string, e.g. "0600" (got {v})')
        if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3}", v):
            raise ValueError(f'mode must be an octal string like "0644" (got {v!r})')
        return v if len(v) == 4 else "0" + v

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        return _project_path(v, "dest")

    @field_validator("copy_")
    @classmethod
    def _copy(cls, v: str | None) -> str | None:
        return None if v is None else _project_path(v, "copy")

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pat in v:
            if not isinstance(pat, str) or not pat.strip():
                raise ValueError(f"exclude patterns must be non-empty strings (got {pat!r})")
        return v

    @property
    def source(self) -> str:
        """The project path this entry reads (template or copied path)."""
        return self.template if self.template is not None else str(self.copy_)

    @property
    def mode_int(self) -> int:
        """The template's mode; for a copy, the forced mode (0644 when unset:
        use :attr:`copy_mode` for copies)."""
        return int(self.mode or "0644", 8)

    @property
    def copy_mode(self) -> int | None:
        """A copy's forced mode, or None to keep each file's own bits."""
        return int(self.mode, 8) if self.mode is not None else None


def _hook_argv(v: object) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        raise ValueError("a hook is an argv list, never a shell string: write it as a YAML "
                         "list, e.g. [./scripts/notify, starting]")
    if not isinstance(v, list) or not v or not all(isinstance(a, str) and a for a in v):
        raise ValueError("a hook is a non-empty list of non-empty strings (an argv)")
    return list(v)


HookArgv = Annotated[list[str] | None, PlainValidator(_hook_argv)]


class HooksConfig(Strict):
    """``hooks:``: argv lists run at fixed points of ``ship``. Local ones run
    in the project folder, remote ones on each host in the release dir.
    ``env`` names the variables (secrets) hooks may see."""

    pre_build: HookArgv = None
    pre_deploy: HookArgv = None
    post_deploy: HookArgv = None
    on_failure: HookArgv = None
    pre_up: HookArgv = None
    post_up: HookArgv = None
    env: list[str] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _env(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"hooks.env: {name[:60]!r} is not a variable name")
            if name.startswith("DEPLOYER_"):
                raise ValueError(f"hooks.env: {name} is set by deployer itself")
        return v


ACME_LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
DNS_NAME = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class AcmeConfig(Strict):
    """``proxy.acme``: automatic certificates for routes with ``tls: acme``."""

    email: str
    directory: str = ACME_LETSENCRYPT
    #: trust this CA (a PEM file of the project) for the directory's HTTPS.
    ca_file: str | None = None

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return _project_path(v, "ca_file") if v is not None else v


class TlsFiles(Strict):
    """``tls: {certificate, key}``: a certificate chain and its key, project files."""

    certificate: str
    key: str

    @field_validator("certificate")
    @classmethod
    def _certificate(cls, v: str) -> str:
        return _project_path(v, "certificate")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _project_path(v, "key")


class RouteHealth(Strict):
    """The proxy's HTTP check: ``path`` answering 2xx is healthy."""

    path: str = "/"
    interval: float = Field(default=1, gt=0, le=3600, allow_inf_nan=False)
    timeout: float = Field(default=5, gt=0, le=3600, allow_inf_nan=False)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() or ord(c) < 32 for c in v):
            raise ValueError(f"health path {v[:60]!r} must start with '/' and have no spaces")
        return v


class RouteConfig(Strict):
    """One ``proxy.routes`` entry: requests for ``hosts`` (every Host when
    empty) under ``path_prefix`` go to ``service`` on ``port``."""

    service: str
    port: int = Field(ge=1, le=65535)
    hosts: list[str] = Field(default_factory=list)
    path_prefix: str | None = None
    health: RouteHealth = Field(default_factory=RouteHealth)
    drain_timeout: float = Field(default=30, ge=0, le=DAY, allow_inf_nan=False)
    replicas: int = Field(default=1, ge=1, le=100)
    tls: Literal["acme"] | TlsFiles | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not isinstance(h, str) or len(h) > MAX_NAME or not DNS_NAME.fullmatch(h):
                raise ValueError(f"route host {str(h)[:60]!r} is not a DNS name")
        return v

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or any(c.isspace() or c in "*?" for c in v)):
            raise ValueError(f"path_prefix {v[:60]!r} must start with '/' (no spaces or globs)")
        return v

    @model_validator(mode="after")
    def _tls_needs_hosts(self) -> RouteConfig:
        if self.tls is not None and not self.hosts:
            raise ValueError("a route with tls needs hosts (the names its certificate is for)")
        return self


class ProxyConfig(Strict):
    """``proxy:``: the edge proxy on each host and the app's routes through it.
    An inventory may override any of its keys for its environment."""

    #: the proxy's image: a key of ``images`` (mirrored like any image) or a reference.
    image: str = "caddy:2.6"
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    acme: AcmeConfig | None = None
    routes: list[RouteConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ProxyConfig:
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        seen: set[str] = set()
        for r in self.routes:
            if r.service in seen:
                raise ValueError(f"service {r.service!r} has two routes; give it one")
            seen.add(r.service)
            if r.tls == "acme" and self.acme is None:
                raise ValueError(f"route {r.service!r} has tls: acme but proxy.acme is not set "
                                 "(it needs at least an email)")
        return self


class ProjectConfig(Strict):
    """``deployer.yaml``: what the app is."""

    app: str
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    images: dict[str, ImageConfig] = Field(default_factory=dict)
    files: list[FileSpec] = Field(default_factory=list)
    compose_file: str = "docker-compose.yaml"
    deploy_dir: str | None = None
    keep_releases: int = Field(default=5, ge=1, le=1000)
    health_timeout: float = Field(default=120, gt=0, le=DAY, allow_inf_nan=False)
    #: Project paths that are data (kept in <deploy_dir>/shared, never uploaded),
    #: whatever git says about them.
    shared: list[str] = Field(default_factory=list)
    #: compose profiles to enable (default: COMPOSE_PROFILES from the environment or .env).
    profiles: list[str] | None = None
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    #: free space ship keeps on the Docker root and the deploy dir beyond the
    #: release's own size: "2GB", "500MB", "1GiB" or bytes.
    min_free: ByteSize = Field(default=ByteSize(2_000_000_000), ge=0)
    #: the edge proxy and this app's routes (zero-downtime switches, TLS).
    proxy: ProxyConfig | None = None

    @field_validator("shared")
    @classmethod
    def _shared(cls, v: list[str]) -> list[str]:
        out = []
        for p in v:
            norm = posixpath.normpath(p)
            if not p or p.startswith(("/", "~")) or norm == ".." or norm.startswith("../"):
                raise ValueError(f"shared path {p!r} must be relative to the project folder")
            out.append(norm)
        return out

    @field_validator("app")
    @classmethod
    def _app(cls, v: str) -> str:
        if not APP_NAME.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a valid app name: lowercase letters, digits and '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("images")
    @classmethod
    def _image_names(cls, v: dict[str, ImageConfig]) -> dict[str, ImageConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(
                    f"image name {name!r} must be an identifier (templates use images.{name})"
                )
        return v

    @field_validator("deploy_dir")
    @classmethod
    def _deploy_dir(cls, v: str | None) -> str | None:
        return check_deploy_dir(v) if v is not None else v

    @model_validator(mode="after")
    def _unique_dests(self) -> ProjectConfig:
        seen: set[str] = set()
        for f in self.files:
            if f.dest in seen:
                raise ValueError(f"two files render to the same dest {f.dest!r}")
            seen.add(f.dest)
        return self

    @property
    def remote_dir(self) -> str:
        return self.deploy_dir or f"/opt/{self.app}"


HostKeyPolicy = Literal["strict", "accept-new"]


class SSHConfig(Strict):
    """SSH settings; each level (inventory, group, host) overrides the one above.
    Unset fields fall back to ``~/.ssh/config`` and then to OpenSSH defaults."""

    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None
    known_hosts: str | None = None
    host_key_policy: HostKeyPolicy | None = None
    proxy_jump: str | None = None
    connect_timeout: float | None = Field(default=None, gt=0, le=3600, allow_inf_nan=False)
    command_timeout: float | None = Field(default=None, gt=0, le=DAY, allow_inf_nan=False)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return check_user(v) if v is not None else v

    @field_validator("proxy_jump")
    @classmethod
    def _proxy_jump(cls, v: str | None) -> str | None:
        return check_proxy_jump(v) if v is not None else v

    def merged(self, over: SSHConfig | None) -> SSHConfig:
        if over is None:
            return self
        data = self.model_dump()
        data.update({k: v for k, v in over.model_dump().items() if v is not None})
        return SSHConfig(**data)


class DockerConfig(Strict):
    install: Literal["docker-ce", "distro", "none"] = "docker-ce"


class HostConfig(Strict):
    address: str | None = None
    ssh: SSHConfig | None = None
    vars: dict[str, object] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return check_address(v) if v is not None else v


def _check_hosts(v: dict[str, HostConfig | None]) -> dict[str, HostConfig | None]:
    for name, hc in v.items():
        check_name("host", name)
        if hc is None or hc.address is None:
            # the name is the address then: it must be one too
            try:
                check_address(name)
            except ValueError:
                raise ValueError(f"host {name!r} has no address and its name is not one: "
                                 "set address") from None
    return v


class GroupConfig(Strict):
    vars: dict[str, object] = Field(default_factory=dict)
    hosts: dict[str, HostConfig | None] = Field(default_factory=dict)
    ssh: SSHConfig | None = None
    services: list[str] | None = None
    files: list[FileSpec] | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: dict[str, HostConfig | None]) -> dict[str, HostConfig | None]:
        return _check_hosts(v)


BatchSize = int | str


def _all_at_once() -> list[BatchSize]:
    return ["100%"]


class RolloutConfig(Strict):
    batches: list[BatchSize] = Field(default_factory=_all_at_once)
    max_parallel: int = Field(default=20, ge=1, le=1000)
    #: SSH handshakes in flight at once (sshd's MaxStartups drops beyond 10).
    max_connecting: int = Field(default=10, ge=1, le=1000)
    max_fail_percentage: float = Field(default=0, ge=0, le=100, allow_inf_nan=False)
    pause: float = Field(default=0, ge=0, le=DAY, allow_inf_nan=False)

    @field_validator("batches")
    @classmethod
    def _batches(cls, v: list[BatchSize]) -> list[BatchSize]:
        if not v:
            raise ValueError("batches needs at least one size")
        for b in v:
            if isinstance(b, bool):
                raise ValueError(f"batch size {b!r} must be a count or a percentage")
            if isinstance(b, int):
                if b < 1:
                    raise ValueError(f"batch size {b} must be at least 1")
            elif not re.fullmatch(r"\d{1,3}(\.\d+)?%", b) or not 0 < float(b[:-1]) <= 100:
                raise ValueError(f"batch size {b!r} must be a count or a percentage like '25%'")
        return v


class SwarmConfig(Strict):
    """``swarm:`` (with ``target: swarm``): which hosts manage the cluster."""

    #: host or group names; default: the first host. Every other host is a worker.
    managers: list[str] | None = None

    @field_validator("managers")
    @classmethod
    def _managers(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("managers is empty: name at least one host or group, "
                             "or remove the key (default: the first host)")
        return v


class InventoryConfig(Strict):
    """``inventories/<env>.yaml``: where the app runs."""

    #: compose: ``compose up`` on each host; swarm: one stack on a cluster.
    target: Literal["compose", "swarm"] = "compose"
    swarm: SwarmConfig | None = None

    ssh: SSHConfig = Field(default_factory=SSHConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    vars: dict[str, object] = Field(default_factory=dict)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    hosts: dict[str, HostConfig | None] = Field(default_factory=dict)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    registry: RegistryConfig | None = None
    secrets_file: str | None = None
    #: an argv whose stdout is dotenv: secrets from a manager (environment > it > secrets_file).
    secrets_command: list[str] | None = None
    #: compose profiles for this environment (overrides deployer.yaml's).
    profiles: list[str] | None = None
    #: This environment's deploy dir on its hosts (overrides deployer.yaml's).
    deploy_dir: str | None = None
    #: The compose project name on its hosts (default: the app). Two
    #: environments on one host need different ones (and deploy dirs).
    project_name: str | None = None
    #: overrides of ``proxy`` keys for this environment (validated merged into deployer.yaml's).
    proxy: dict[str, Any] | None = None

    @field_validator("deploy_dir")
    @classmethod
    def _deploy_dir(cls, v: str | None) -> str | None:
        return check_deploy_dir(v) if v is not None else v

    @field_validator("project_name")
    @classmethod
    def _project_name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 63 or not PROJECT_NAME.fullmatch(v)):
            raise ValueError(
                f"{v[:70]!r} is not a valid compose project name: lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit, at most 63"
            )
        return v

    @field_validator("groups")
    @classmethod
    def _group_names(cls, v: dict[str, GroupConfig]) -> dict[str, GroupConfig]:
        for name in v:
            check_name("group", name)
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: dict[str, HostConfig | None]) -> dict[str, HostConfig | None]:
        return _check_hosts(v)

    @model_validator(mode="after")
    def _swarm_needs_target(self) -> InventoryConfig:
        if self.swarm is not None and self.target != "swarm":
            raise ValueError("'swarm' applies to 'target: swarm' only: set target: swarm, "
                             "or remove the swarm key")
        return self
