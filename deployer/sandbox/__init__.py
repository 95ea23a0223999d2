"""Local servers and registry on the Docker engine (``deployer sandbox``).

The API is in :mod:`deployer.sandbox.manager`: ``up``, ``status``, ``down``,
``reset_host``; it imports the Docker SDK only when called.
"""
