"""The scale bench's deploy (bench/scale.py) in pyinfra 3, the way its docs
write one: the app folder, the compose file, and compose pull + up only when
the file changed; then wait until the web container is healthy.

Run: pyinfra -y --parallel N --data files_dir=DIR INVENTORY bench/pyinfra/deploy.py
"""

from pyinfra import host
from pyinfra.operations import files, server

APP = "benchscale"
app_dir = f"/home/{host.data.ssh_user}/{APP}-pyinfra"

files.directory(name="App folder", path=app_dir, mode="755")
compose = files.put(
    name="Compose file",
    src=f"{host.data.files_dir}/docker-compose.yaml",
    dest=f"{app_dir}/docker-compose.yaml",
    mode="644",
)
server.shell(
    name="Compose pull and up",
    commands=[f"cd {app_dir} && docker compose -p {APP} pull -q && docker compose -p {APP} up -d"],
    _if=compose.did_change,
)
server.shell(
    name="Wait until web is healthy",
    commands=[
        "for i in $(seq 60); do [ -n \"$(docker ps -q --filter "
        f"label=com.docker.compose.project={APP} --filter health=healthy)\" ] && exit 0; "
        "sleep 1; done; exit 1"
    ],
)
