"""The swarm's commands as data: pure builders returning
:class:`~deployer.commands.base.Command` (argv; secrets on stdin only)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from deployer.commands.base import Command, Script
from deployer.swarm.stack import STACK_FILE

STACK_LABEL = "com.docker.stack.namespace"
JOB_LABEL = "deployer.oneshot"
SWARM_PORT = 2377
PROBE_MARK = "--- deployer tasks ---"

Env = tuple[tuple[str, str], ...]


def swarm_info(*, sudo: bool = False) -> Command:
    return Command(("docker", "info", "--format", "{{json .Swarm}}"), sudo=sudo,
                   description="read the node's swarm state")


def swarm_init(advertise: str, *, sudo: bool = False) -> Command:
    return Command(("docker", "swarm", "init", "--advertise-addr", advertise), sudo=sudo,
                   description="form the swarm")


def join_token(role: str, *, sudo: bool = False) -> Command:
    if role not in ("worker", "manager"):
        raise ValueError(f"unknown swarm role {role!r}")
    return Command(("docker", "swarm", "join-token", "-q", role), sudo=sudo,
                   description=f"read the {role} join token")


_JOIN = """
read -r token
exec docker swarm join --token "$token" "$1"
""".strip()


def swarm_join(manager: str, token: str, *, sudo: bool = False) -> Command:
    """Join the swarm at ``manager`` (``addr:port``); the token travels on
    stdin, never in the command line deployer sends."""
    return Script(_JOIN, (manager,), sudo=sudo, description="join the swarm",
                  stdin=token + "\n").command()


def node_ids(*, sudo: bool = False) -> Command:
    return Command(("docker", "node", "ls", "--format", "{{.ID}} {{.Hostname}}"), sudo=sudo,
                   description="list the swarm's nodes")


def stack_deploy(app: str, cwd: str, env: Env = (), *, sudo: bool = False,
                 wait: bool = False, resolve_image: bool = True) -> Command:
    """``docker stack deploy`` of the release's stack file. ``wait``: the
    client has ``--detach=false`` (Docker 26+); deployer's own gate polls
    either way, since the exit code says nothing after a rollback
    (docker/cli#6752)."""
    argv = ["docker", "stack", "deploy", "--with-registry-auth", "--prune"]
    if wait:
        argv.append("--detach=false")
    if not resolve_image:
        argv += ["--resolve-image", "never"]
    argv += ["-c", STACK_FILE, app]
    return Command(tuple(argv), sudo=sudo, cwd=cwd, env=env,
                   description=f"deploy the stack {app}")


_PROBE = f"""
ids=$(docker service ls -q --filter "label={STACK_LABEL}=$1")
[ -n "$ids" ] || exit 0
docker service inspect $ids
echo '{PROBE_MARK}'
exec docker service ps --no-trunc --format '{{{{json .}}}}' $ids
""".strip()


def services_probe(app: str, *, sudo: bool = False) -> Command:
    """Every service of the stack (``docker service inspect``), then every
    task (``docker service ps``), in one round trip."""
    return Script(_PROBE, (app,), sudo=sudo, description="read the stack's services").command()


_NETWORKS = f"""
app=$1
shift
for n in "$@"; do
  docker network inspect "$n" >/dev/null 2>&1 && continue
  docker network create --driver overlay --label "{STACK_LABEL}=$app" "$n" >/dev/null
done
""".strip()


def ensure_networks(app: str, names: Sequence[str], *, sudo: bool = False) -> Command:
    """Create the stack's overlay networks before its one-shots run (the
    labels make ``stack deploy`` take them as its own)."""
    return Script(_NETWORKS, (app, *names), sudo=sudo,
                  description="create the stack's networks").command()


def job_name(app: str, service: str, release: str) -> str:
    """A one-shot's swarm service: unique per release, at most 63 characters."""
    return f"{app}_{service}_job-{release}"[:63].rstrip("-_.")


def _words(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return shlex.split(value)
    return []


def environment_lines(spec: Mapping[str, Any]) -> str:
    """The service's ``environment`` as ``K=V`` lines (an env file), so that
    values, secrets among them, travel on stdin."""
    env = spec.get("environment")
    lines: list[str] = []
    if isinstance(env, dict):
        lines = [f"{k}={'' if v is None else v}" for k, v in env.items()]
    elif isinstance(env, list):
        lines = [str(v) for v in env]
    # an env file's $$ is two characters; the stack file's escape is not
    return "".join(line.replace("$$", "$") + "\n" for line in lines)


def job_create(name: str, app: str, spec: Mapping[str, Any], networks: Sequence[str],
               cwd: str, env: Env = (), *, sudo: bool = False) -> Command:
    """A one-shot as a swarm job (``--mode replicated-job``, never
    restarted), on the stack's networks, with its environment on stdin."""
    argv = ["docker", "service", "create", "--detach", "--quiet", "--name", name,
            "--mode", "replicated-job", "--restart-condition", "none",
            "--with-registry-auth", "--label", f"{JOB_LABEL}={app}"]
    for n in networks:
        argv += ["--network", n]
    files = spec.get("env_file")
    for f in files if isinstance(files, list) else [files] if files else []:
        argv += ["--env-file", str(f)]
    stdin = environment_lines(spec)
    if stdin:
        argv += ["--env-file", "/dev/stdin"]
    entry = _words(spec.get("entrypoint"))
    if entry:
        argv += ["--entrypoint", shlex.join(entry)]
    for key, flag in (("working_dir", "--workdir"), ("user", "--user")):
        if spec.get(key):
            argv += [flag, str(spec[key])]
    argv += ["--", str(spec.get("image", "")), *_words(spec.get("command"))]
    return Command(tuple(argv), sudo=sudo, cwd=cwd, env=env, stdin=stdin or None,
                   description=f"start the one-shot {name}")


def job_tasks(name: str, *, sudo: bool = False) -> Command:
    return Command(("docker", "service", "ps", "--no-trunc", "--format", "{{json .}}", name),
                   sudo=sudo, description=f"read the tasks of {name}")


def service_logs(service: str, *, tail: int = 30, follow: bool = False,
                 sudo: bool = False) -> Command:
    argv = ["docker", "service", "logs", "--no-trunc", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    return Command((*argv, service), sudo=sudo, description=f"logs of {service}")


_STACK_LOGS = f"""
app=$1
tail=$2
mode=$3
shift 3
[ $# -gt 0 ] ||
  set -- $(docker service ls --format '{{{{.Name}}}}' --filter "label={STACK_LABEL}=$app")
[ $# -gt 0 ] || {{ echo "no services of stack $app" >&2; exit 3; }}
for s in "$@"; do
  docker service logs --tail "$tail" "$mode" "$s" 2>&1 &
done
wait
""".strip()


def stack_logs(app: str, service: str | None, *, tail: int = 100, follow: bool = False,
               sudo: bool = False) -> Command:
    """``docker service logs`` of one service of the stack, or of all of
    them at once (each line carries its task and node)."""
    names = (f"{app}_{service}",) if service else ()
    mode = "--follow" if follow else "--no-trunc"
    return Script(_STACK_LOGS, (app, str(int(tail)), mode, *names), sudo=sudo,
                  description="logs of the stack's services").command()


def service_rm(name: str, *, sudo: bool = False) -> Command:
    return Command(("docker", "service", "rm", name), sudo=sudo, ok_codes=(0, 1),
                   description=f"remove {name}")


_PRUNE = f"""
dir=$1
app=$2
keep=$(cat "$dir"/releases/*/swarm-objects 2>/dev/null)
for kind in config secret; do
  docker "$kind" ls --filter "label={STACK_LABEL}=$app" --format '{{{{.Name}}}}' |
  while read -r name; do
    printf '%s\n' "$keep" | grep -qxF -- "$kind $name" && continue
    docker "$kind" rm "$name" >/dev/null 2>&1 && echo "removed $kind $name"
  done
done
exit 0
""".strip()


def prune_objects(deploy_dir: str, app: str, *, sudo: bool = False) -> Command:
    """Remove the stack's configs and secrets that no kept release lists in
    its ``swarm-objects`` (those a service still uses stay: swarm refuses)."""
    return Script(_PRUNE, (deploy_dir, app), sudo=sudo,
                  description="remove configs and secrets no kept release uses").command()


_TASK_NODES = """
svc=$1
docker service inspect "$svc" >/dev/null 2>&1 || { echo "no service $svc" >&2; exit 3; }
docker service ps --no-trunc --filter desired-state=running \\
  --format '{{.Node}}|{{.CurrentState}}' "$svc" |
while IFS='|' read -r node state; do
  case "$state" in Running*) ;; *) continue ;; esac
  printf '%s %s\\n' "$node" "$(docker node inspect --format '{{.Status.Addr}}' "$node")"
done
""".strip()


def task_nodes(service: str, *, sudo: bool = False) -> Command:
    """On a manager: ``NODE ADDRESS`` of each node where a task of
    ``service`` (``<app>_<name>``) runs; exit 3 when there is no such service."""
    return Script(_TASK_NODES, (service,), sudo=sudo, ok_codes=(0, 3),
                  description=f"find the tasks of {service}").command()


_TASK_EXEC = """
svc=$1
tty=$2
shift 2
id=$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" | head -n 1)
[ -n "$id" ] || { echo "no running task of $svc on this node" >&2; exit 125; }
[ "$tty" = tty ] && exec docker exec -i -t "$id" "$@"
exec docker exec "$id" "$@"
""".strip()


def task_exec(service: str, argv: Sequence[str], *, interactive: bool = False,
              sudo: bool = False) -> Command:
    """Run ``argv`` in the container of a running task of ``service`` on
    this node (``-i -t`` when ``interactive``: for ``ssh -t``). Exit 125,
    docker's own for "could not start", when no task runs here; otherwise
    the command's exit code."""
    if not argv:
        raise ValueError("exec needs a command to run")
    return Script(_TASK_EXEC, (service, "tty" if interactive else "plain", *argv), sudo=sudo,
                  description=f"exec in {service}").command()
