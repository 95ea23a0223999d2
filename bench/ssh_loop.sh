#!/usr/bin/env bash
# The "plain ssh loop" a team writes before it adopts a tool: per host, copy
# the rendered compose file, log in to the registry, pull, compose up, and
# wait until the web service is healthy. bench/run.py times it against
# deployer and Ansible on the same sandbox hosts.
#
#   ssh_loop.sh             one host after the other (what the loop usually is)
#   ssh_loop.sh --parallel  every host at once (`&` + `wait`): the changed-ship
#                           floor, the least that scp + ssh can do
#
# Settings come from the environment (bench/run.py sets them):
#   HOSTS             space-separated addresses
#   SSH_USER          remote user (docker group member)
#   SSH_KEY           private key file
#   KNOWN_HOSTS       known_hosts file with every host's key (no TOFU)
#   FILES_DIR         folder holding the rendered docker-compose.yaml
#   REGISTRY          registry host:port
#   REGISTRY_USER     registry user name
#   REGISTRY_PASSWORD_FILE  file holding the registry password (sent on stdin)
#   COMPOSE           "docker-compose" or "docker compose" (as on the hosts)
#   APP               compose project name; APP_DIR: remote folder (relative to ~)
#   SSH, SCP          the ssh/scp executables (run.py passes counting wrappers)
#   HEALTH_TIMEOUT    seconds to wait for healthy (default 120)
set -euo pipefail

parallel=0
if [ "${1:-}" = "--parallel" ]; then parallel=1; fi

: "${HOSTS:?}" "${SSH_USER:?}" "${SSH_KEY:?}" "${KNOWN_HOSTS:?}" "${FILES_DIR:?}"
: "${REGISTRY:?}" "${REGISTRY_USER:?}" "${REGISTRY_PASSWORD_FILE:?}"
COMPOSE=${COMPOSE:-docker-compose}
APP=${APP:-benchweb}
APP_DIR=${APP_DIR:-benchweb}
SSH=${SSH:-ssh}
SCP=${SCP:-scp}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}

# ControlMaster=no: every ssh/scp is its own connection, as in a plain loop
# (and so the benchmark counts what such a loop really costs).
opts=(-i "$SSH_KEY" -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes
      -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o LogLevel=ERROR)

deploy_one() {
  local h=$1
  local target="$SSH_USER@$h"
  "$SSH" "${opts[@]}" "$target" "mkdir -p $APP_DIR"
  "$SCP" -q "${opts[@]}" "$FILES_DIR/docker-compose.yaml" "$target:$APP_DIR/docker-compose.yaml"
  "$SSH" "${opts[@]}" "$target" "docker login $REGISTRY -u $REGISTRY_USER --password-stdin >/dev/null" \
    < "$REGISTRY_PASSWORD_FILE"
  "$SSH" "${opts[@]}" "$target" "cd $APP_DIR && $COMPOSE -p $APP pull -q && $COMPOSE -p $APP up -d"
  # One remote loop: a `docker ps` per second until the web container is healthy.
  "$SSH" "${opts[@]}" "$target" "for i in \$(seq $HEALTH_TIMEOUT); do
      [ -n \"\$(docker ps -q --filter label=com.docker.compose.project=$APP \
        --filter label=com.docker.compose.service=web --filter health=healthy)\" ] && exit 0
      sleep 1
    done; echo 'web not healthy' >&2; exit 1"
}

if [ "$parallel" = 1 ]; then
  pids=()
  for h in $HOSTS; do
    deploy_one "$h" > /dev/null &
    pids+=($!)
  done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  exit "$rc"
else
  for h in $HOSTS; do
    deploy_one "$h" > /dev/null
  done
fi
