"""Reading the user's compose project the way compose does: ``.env``,
``${VAR}`` interpolation, profiles, one-shots, ``extends`` and the config /
data / secret decision for every path it references (:mod:`.compose`)."""

from deployer.project.compose import (
    ComposeContext,
    ServerCompose,
    compose_context,
    server_compose,
)

__all__ = ["ComposeContext", "ServerCompose", "compose_context", "server_compose"]
