"""Reaching hosts: SSH connections (``ssh``, ``hostkeys``), the executor
protocol (``base``) and its SSH implementation (``executor``), the early
connections of a ship (``preconnect``) and the recording executors of
``plan`` and tests (``recording``). The bounded fan-out over hosts is
:mod:`deployer.deploy.runner`."""
