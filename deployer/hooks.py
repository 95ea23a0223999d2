"""``hooks:``: the user's programs at fixed points of ``ship``.

Local hooks run once per run, in the project folder, with a small fixed
environment (no secrets from this process's environment):

- ``pre_build`` before images are built;
- ``pre_deploy`` after the images, before the first host;
- ``post_deploy`` after the last host, when every host is fine;
- ``on_failure`` when the run fails (its own failure is only reported).

Remote hooks run on each host over the ship's connection, in the release
directory, as the SSH user (the program must be in the release: ship it with
``files: [{copy: ...}]``):

- ``pre_up`` after the pull, before ``compose up``;
- ``post_up`` after the release is healthy, before ``current`` moves; a
  failure rolls the host back like a failed healthcheck.

Every hook is an argv, never a shell string. It gets ``DEPLOYER_APP``,
``DEPLOYER_ENV``, ``DEPLOYER_RELEASE``, ``DEPLOYER_HOSTS`` (the targeted hosts,
comma-separated) and, remote, ``DEPLOYER_HOST``; secrets only when named in
``hooks.env``. A remote hook gets those on stdin (never in its command line),
so its own stdin is empty. Output lines are prefixed ``hook NAME |`` and
masked by the reporters like all output.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from deployer.commands.base import Command
from deployer.errors import ConfigError, DeployError, HostError
from deployer.secrets import MIN_SECRET_LEN, Secret, mask, masker, too_short

if TYPE_CHECKING:
    from deployer.config import Project
    from deployer.config.yamlfile import SourceMap
    from deployer.deploy.hostrun import HostRun
    from deployer.remote.base import Executor

LOCAL = ("pre_build", "pre_deploy", "post_deploy", "on_failure")
REMOTE = ("pre_up", "post_up")
ORDER = ("pre_build", "pre_deploy", "pre_up", "post_up", "post_deploy", "on_failure")
TIMEOUT = 900.0
# What a local hook keeps of this process's environment: enough to find
# programs, git and an SSH agent; nothing that may hold a secret.
PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM",
               "TMPDIR", "TZ", "SSH_AUTH_SOCK", "NO_COLOR", "CI", "GITHUB_ACTIONS")


def hook_argv(project: Project, name: str) -> list[str] | None:
    argv: list[str] | None = getattr(project.config.hooks, name)
    return argv


def configured(project: Project) -> list[tuple[str, list[str]]]:
    """The hooks set, in the order a run reaches them (for ``plan``)."""
    return [(n, a) for n in ORDER if (a := hook_argv(project, n)) is not None]


def resolve_env(names: Sequence[str], lookup: Mapping[str, str], smap: SourceMap,
                hooks: object) -> dict[str, str]:
    """The values of ``hooks.env``, from where ``${VAR}`` reads (each a
    secret); a name set nowhere, or a ``${VAR}`` in a hook's argv, is an error."""
    for n in ORDER:
        for i, arg in enumerate(getattr(hooks, n) or ()):
            if isinstance(arg, Secret):
                raise ConfigError(
                    f"{smap.where(('hooks', n, i))}: hooks.{n}: a ${{VAR}} in a hook's argv "
                    "would put a secret on a command line",
                    "name the variable in hooks.env; the hook reads it from its environment",
                )
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        val = lookup.get(name)
        if val is None:
            raise ConfigError(f"{smap.where(('hooks', 'env', i))}: hooks.env: {name} is not set",
                              f"export {name}=..., or remove it from hooks.env")
        if too_short(val):
            raise ConfigError(f"{smap.where(('hooks', 'env', i))}: hooks.env: the value of "
                              f"{name} is too short to be masked in output",
                              f"a secret needs at least {MIN_SECRET_LEN} characters")
        masker.add(val)
        out[name] = val
    return out


def base_env(project: Project, release: str, hosts: Sequence[str],
             host: str | None = None) -> dict[str, str]:
    env = {"DEPLOYER_APP": project.app, "DEPLOYER_ENV": project.env,
           "DEPLOYER_RELEASE": release, "DEPLOYER_HOSTS": ",".join(hosts)}
    if host is not None:
        env["DEPLOYER_HOST"] = host
    return env


def run_local(project: Project, name: str, release: str, hosts: Sequence[str],
              log: Callable[[str], None]) -> None:
    """Run local hook ``name`` if set, each output line to ``log``; a failure
    raises :class:`DeployError` naming the hook and its exit code."""
    argv = hook_argv(project, name)
    if argv is None:
        return
    env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH}
    env.update(base_env(project, release, hosts))
    env.update(project.hook_secrets)
    shown = mask(shlex.join(argv))
    log(f"hook {name}: {shown}")
    try:
        res = subprocess.run(argv, cwd=project.root, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=TIMEOUT, check=False)
    except OSError as e:
        raise DeployError(f"hook {name} `{shown}`: {e.strerror}",
                          "hooks run in the project folder; is the program there and "
                          "executable?") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"hook {name} `{shown}` did not finish in {TIMEOUT:.0f}s") from None
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        log(f"hook {name} | {line}")
    if res.returncode != 0:
        raise DeployError(f"hook {name} `{shown}` failed (exit {res.returncode})")


def remote_command(project: Project, name: str, release_dir: str, release: str,
                   hosts: Sequence[str], host: str) -> Command | None:
    """Remote hook ``name`` as a command run in ``release_dir`` (None: not
    set). Its environment travels on stdin as quoted ``export`` lines that a
    fixed ``sh -c`` reads, then ``exec``\\ s the argv: values are data,
    never part of a command line."""
    argv = hook_argv(project, name)
    if argv is None:
        return None
    env = {**base_env(project, release, hosts, host), **project.hook_secrets}
    stdin = "".join(f"export {k}={shlex.quote(str.__str__(v))}\n" for k, v in env.items())
    return Command(("sh", "-c", 'eval "$(cat)"; exec "$@"', f"hook-{name}", *argv),
                   cwd=release_dir, stdin=stdin, description=f"hook {name}")


def run_remote(ex: Executor, run: HostRun, project: Project, name: str, release: str,
               hosts: Sequence[str]) -> str | None:
    """Run remote hook ``name`` (if set) on ``run``'s host in the release
    directory; each output line to the host's log. None when it passed (or
    is not set), else why it failed."""
    import posixpath

    rdir = posixpath.join(project.deploy_dir, "releases", release)
    cmd = remote_command(project, name, rdir, release, hosts, run.host)
    if cmd is None:
        return None
    try:
        with run.step(f"hook {name}"):
            res = ex.run(cmd, check=False, timeout=TIMEOUT)
    except HostError as e:
        return f"hook {name}: {e.reason}"
    for line in (res.stdout + res.stderr).splitlines():
        run.log(f"hook {name} | {line}")
    if res.exit_code != 0:
        return f"hook {name} `{mask(shlex.join(cmd.argv[4:]))}` failed (exit {res.exit_code})"
    return None
