"""What a proxied service must look like in the server compose file."""

from __future__ import annotations

from typing import Any

from deployer.config.models import ProxyConfig
from deployer.errors import ConfigError


def proxy_dump(config: ProxyConfig | None, services: list[str]) -> dict[str, Any] | None:
    """The proxy part a host's release records (manifest, fingerprint): None
    when no route is for a service the host runs."""
    if config is None or not any(r.service in services for r in config.routes):
        return None
    return config.model_dump(mode="json")


def check_services(config: ProxyConfig | None, compose_text: str, where: str) -> None:
    """Refuse (exit 2, before any host is touched) a proxied service that
    publishes host ports or pins its container name: the new containers start
    beside the old ones, which a fixed port or name makes impossible, and the
    proxy is what publishes the port."""
    if config is None or not config.routes:
        return
    import yaml

    doc = yaml.safe_load(compose_text) or {}
    services = doc.get("services") or {}
    for i, route in enumerate(config.routes):
        svc = services.get(route.service)
        if not isinstance(svc, dict):
            continue  # a service this host does not run
        key = f"deployer.yaml: proxy.routes[{i}] ({route.service})"
        if svc.get("ports"):
            raise ConfigError(
                f"{where}: service {route.service!r} is proxied ({key}) but still has ports: "
                f"{svc['ports']}",
                "remove its ports: the proxy publishes http_port/https_port and starts new "
                "containers beside the old ones, which a published port would block",
            )
        if svc.get("container_name"):
            raise ConfigError(
                f"{where}: service {route.service!r} is proxied ({key}) but sets container_name",
                "remove container_name: a switch runs old and new containers side by side",
            )
