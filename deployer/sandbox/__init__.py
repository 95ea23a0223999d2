"""Local servers and registry on the Docker engine (``deployer sandbox``).

The API is :mod:`deployer.sandbox.manager` (``up``, ``status``, ``down``,
``reset_host``), which imports the Docker SDK only when called. The parts:
:mod:`.model` (labels, defaults, the records callers get), :mod:`.localfiles`
(state, keys and password under ``.deployer/sandbox/``), :mod:`.engine`
(Docker SDK helpers), :mod:`.network`, :mod:`.registry`, :mod:`.hosts`,
:mod:`.hostimage` (the systemd host image), :mod:`.pki` (keys and
certificates) and :mod:`.inventory` (``inventories/sandbox.yaml``).
"""
