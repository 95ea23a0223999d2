"""Reaching hosts: SSH connections, the executor that runs commands, the pool."""
