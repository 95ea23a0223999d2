"""Loading and validating a project: ``deployer.yaml`` + ``inventories/ENV.yaml``.

Everything here is offline and pure: it reads files and the environment and
either returns a :class:`Project` or raises :class:`ConfigError` (exit 2)
before any host is touched.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from deployer.config.errors import config_error
from deployer.config.interpolate import interpolate, missing_hint, read_dotenv
from deployer.config.inventory import Host, match_limit, resolve_hosts
from deployer.config.models import InventoryConfig, ProjectConfig, RegistryConfig
from deployer.config.secrets_command import LayeredEnv, check_argv
from deployer.config.yamlfile import SourceMap, load_yaml
from deployer.errors import ConfigError
from deployer.project.dotenv import DOTENV
from deployer.project.dotenv import read_dotenv as read_compose_dotenv

PROJECT_FILE = "deployer.yaml"
INVENTORY_DIR = "inventories"

__all__ = ["Host", "Project", "list_envs", "load_project", "match_limit"]


@dataclass
class Project:
    """A validated project for one environment."""

    root: Path
    env: str
    config: ProjectConfig
    inventory: InventoryConfig
    hosts: list[Host]
    registry: RegistryConfig
    config_map: SourceMap = field(repr=False)
    inventory_map: SourceMap = field(repr=False)
    #: the values of deployer.yaml's hooks.env (secrets hooks may see)
    hook_secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def app(self) -> str:
        return self.config.app

    @property
    def deploy_dir(self) -> str:
        """The inventory's ``deploy_dir``, else deployer.yaml's, else ``/opt/<app>``."""
        return self.inventory.deploy_dir or self.config.remote_dir

    @property
    def project_name(self) -> str:
        """The compose project on the hosts: the inventory's ``project_name``,
        else the app (what every deployment before that key used)."""
        return self.inventory.project_name or self.config.app

    def path(self, rel: str) -> Path:
        """A project-relative path (as written in the YAML) made absolute."""
        p = Path(os.path.expanduser(rel))
        return p if p.is_absolute() else self.root / p

    def select(self, limit: str | None) -> list[Host]:
        return match_limit(self.hosts, limit)


def list_envs(root: Path) -> list[str]:
    d = root / INVENTORY_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.yaml"))


def _check_env_name(root: Path, env: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", env):
        raise ConfigError(
            f"environment name {env[:70]!r}{'...' if len(env) > 70 else ''} is not valid",
            "use letters, digits, '.', '_', '-' (at most 64), e.g. prod, staging",
        )
    path = root / INVENTORY_DIR / f"{env}.yaml"
    if not path.is_file():
        envs = list_envs(root)
        known = ", ".join(envs) if envs else f"none (no {INVENTORY_DIR}/*.yaml in {root})"
        raise ConfigError(
            f"unknown environment {env!r}: {INVENTORY_DIR}/{env}.yaml does not exist",
            f"environments here: {known}",
        )
    return path


def load_project(
    root: Path, env: str, environ: Mapping[str, str] | None = None
) -> Project:
    """Load, interpolate and validate both files. ``environ`` defaults to
    ``os.environ`` (tests pass their own)."""
    root = root.resolve()
    cfg_path = root / PROJECT_FILE
    if not cfg_path.is_file():
        raise ConfigError(
            f"{cfg_path}: no {PROJECT_FILE} here",
            "run deployer in your project folder, pass -C DIR, or create one with `deployer init`",
        )
    inv_path = _check_env_name(root, env)
    inv_display = f"{INVENTORY_DIR}/{env}.yaml"

    raw_cfg, cmap = load_yaml(cfg_path, PROJECT_FILE)
    raw_inv, imap = load_yaml(inv_path, inv_display)
    for raw, m in ((raw_cfg, cmap), (raw_inv, imap)):
        if not isinstance(raw, dict):
            raise ConfigError(f"{m.display}:1:1: expected a mapping of keys at the top level")

    environ = os.environ if environ is None else environ
    # compose's .env, next to the compose file, is read the way compose reads
    # it: below the environment; its values are secrets like the environment's.
    compose_file = raw_cfg.get("compose_file", "docker-compose.yaml")
    compose_dir = os.path.dirname(compose_file) if isinstance(compose_file, str) else ""
    dotenv_display = os.path.join(compose_dir, DOTENV)
    env_vars: dict[str, str] = dict(read_compose_dotenv(root / dotenv_display, dotenv_display,
                                                        environ))
    dotenv = dotenv_display if env_vars else None
    sf = raw_inv.get("secrets_file")
    if sf is not None:
        if not isinstance(sf, str) or not sf.strip():
            raise ConfigError(
                f"{imap.where(('secrets_file',))}: secrets_file must be a path"
                + (" (it is empty)" if isinstance(sf, str) else "")
            )
        sf_path = Path(os.path.expanduser(sf))
        sf_path = sf_path if sf_path.is_absolute() else root / sf_path
        env_vars.update(read_dotenv(sf_path, sf))
    hint = missing_hint(inv_display, sf, dotenv)
    # secrets_command is taken as written (no ${VAR} in it) and runs only
    # when a ${VAR} is not in the environment: environment > it > secrets_file.
    sc_argv, sc_where = None, imap.where(("secrets_command",))
    if raw_inv.get("secrets_command") is not None:
        sc_argv = check_argv(raw_inv["secrets_command"], sc_where)
        raw_inv = {k: v for k, v in raw_inv.items() if k != "secrets_command"}
    lookup = LayeredEnv(environ, env_vars, sc_argv, root, sc_where)

    if raw_inv.get("registry") is not None and "registry" in raw_cfg:
        # The inventory's registry replaces deployer.yaml's for this
        # environment, so the latter's ${VAR}s need not be set here.
        raw_cfg = {k: v for k, v in raw_cfg.items() if k != "registry"}
    data_cfg = interpolate(raw_cfg, lookup, cmap, hint)
    data_inv = interpolate(raw_inv, lookup, imap, hint)
    if sc_argv is not None:
        data_inv["secrets_command"] = sc_argv

    if isinstance(data_inv.get("proxy"), dict):
        # The inventory overrides keys of deployer.yaml's proxy (e.g. other hosts).
        data_cfg = {**data_cfg, "proxy": {**(data_cfg.get("proxy") or {}), **data_inv["proxy"]}}
    try:
        config = ProjectConfig.model_validate(data_cfg)
    except ValidationError as e:
        raise config_error(e, ProjectConfig, cmap) from None
    try:
        inventory = InventoryConfig.model_validate(data_inv)
    except ValidationError as e:
        raise config_error(e, InventoryConfig, imap) from None

    hosts = resolve_hosts(inventory, inv_display)
    if not hosts:
        raise ConfigError(
            f"{inv_display}: no hosts", "add hosts under groups.<name>.hosts or hosts"
        )
    hosts = [_absolute_paths(h, root) for h in hosts]
    _check_roles(inventory, imap)

    registry = inventory.registry or config.registry
    if registry.none:
        from deployer.images.loopback import loopback_server

        registry = registry.model_copy(update={"server": loopback_server(config.app)})
    from deployer.hooks import resolve_env

    hook_secrets = resolve_env(config.hooks.env, lookup, cmap, config.hooks)
    return Project(root, env, config, inventory, hosts, registry, cmap, imap, hook_secrets)


def _absolute_paths(h: Host, root: Path) -> Host:
    """identity_file and known_hosts may be written relative to the project."""

    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return str(q if q.is_absolute() else root / q)

    ssh = dataclasses.replace(
        h.ssh,
        identity_file=fix(h.ssh.identity_file),
        known_hosts=fix(h.ssh.known_hosts) or h.ssh.known_hosts,
    )
    return dataclasses.replace(h, ssh=ssh)


def _check_roles(inv: InventoryConfig, imap: SourceMap) -> None:
    for gname, g in inv.groups.items():
        if g.services is not None and not g.services:
            raise ConfigError(
                f"{imap.where(('groups', gname, 'services'))}: groups.{gname}.services is empty",
                "list the services this group runs, or remove the key to run all",
            )

