"""Image prune on a host: read the kept releases' image refs, list the app's
images and containers, remove what no kept release uses.

Three commands, so that what to keep is decided by deployer
(:mod:`deployer.prune`, pure and unit-tested), not by a shell script: the
manifests are JSON, and ``docker image inspect`` answers with every repo
digest and tag of an image.
"""

from __future__ import annotations

from collections.abc import Sequence

from deployer.commands.base import Command, Script

MANIFESTS_MARK = "--- manifest "
CONTAINERS_MARK = "#containers"
UNREADABLE_MARK = "#unreadable"

_MANIFESTS = r"""
cd -- "$1/releases" 2>/dev/null || exit 0
for r in */; do
  r=${r%/}
  case "$r" in *.partial) continue ;; esac
  printf -- '--- manifest %s\n' "$r"
  cat -- "$r/manifest.json" 2>/dev/null
  printf '\n'
done
""".strip()

# $1: the compose project; then the app's repositories (server/repo).
_LIST = r"""
app="$1"; shift
docker images --no-trunc --format '{{.ID}} {{.Repository}}' | while read -r id repo; do
  for r in "$@"; do
    if [ "$repo" = "$r" ]; then echo "$id"; fi
  done
done | sort -u | while read -r id; do
  docker image inspect --format \
    '{{.Id}} {{range .RepoDigests}}{{.}},{{end}} {{range .RepoTags}}{{.}},{{end}}' "$id" \
    || echo '#unreadable'
done
echo '#containers'
docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$app" | while read -r c; do
  docker inspect --format '{{.Id}} {{.Image}} {{.State.Status}}' "$c" || echo '#unreadable'
done
""".strip()

_REMOVE = r"""
n=$1; shift
i=0; status=0
while [ $i -lt "$n" ]; do
  docker rm -- "$1" >/dev/null || status=1
  shift; i=$((i + 1))
done
for img in "$@"; do
  if docker rmi -- "$img" >/dev/null; then printf 'removed=%s\n' "$img"; else status=1; fi
done
exit $status
""".strip()


def read_manifests(deploy_dir: str) -> Command:
    """Every complete release's manifest (nothing when it has none), each
    after a ``--- manifest <id>`` line."""
    return Script(_MANIFESTS, args=(deploy_dir,),
                  description="read the kept releases' images").command()


def list_images(app: str, repositories: Sequence[str], *, sudo: bool = False) -> Command:
    """The app's images (``id repo-digests repo-tags``), then the compose
    project's containers (``id image-id state``)."""
    return Script(_LIST, args=(app, *sorted(set(repositories))), sudo=sudo,
                  description="list the app's images").command()


def remove(containers: Sequence[str], images: Sequence[str], *, sudo: bool = False) -> Command:
    """``docker rm`` the stopped ``containers``, then ``docker rmi`` the
    ``images`` (never ``-f``: an image a container still uses stays)."""
    return Script(_REMOVE, args=(str(len(containers)), *containers, *images), sudo=sudo,
                  description="remove unused images").command()
