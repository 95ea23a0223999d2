"""End-to-end tests on the sandbox.

A package, so that its conftest does not shadow tests/conftest.py.
"""
