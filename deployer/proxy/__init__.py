"""The edge proxy (Caddy) on each host and the zero-downtime switch.

- :mod:`deployer.proxy.caddy`: the proxy's JSON config as pure functions
  (this app's routes, merged into the host's shared config).
- :mod:`deployer.commands.proxy`: the remote commands (commands are data).
- :mod:`deployer.proxy.switch`: the strategy that ship and rollback use for
  proxied services: start beside, gate, switch, drain, remove the old.
"""
