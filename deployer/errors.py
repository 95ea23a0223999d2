"""Errors are values with a user message: what went wrong, where, and what to do.

The CLI maps them to exit codes and prints them as one line (plus an optional
hint), never a traceback. Input problems (config, usage) are caught before any
host is touched and exit 2; a failed deploy exits 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DEPLOY = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DeployerError(Exception):
    """Base class: ``message`` says what and where; ``hint`` says what to do."""

    exit_code = EXIT_DEPLOY

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(DeployerError):
    """Bad project, inventory, template or command-line input (exit 2)."""

    exit_code = EXIT_USAGE


class DeployError(DeployerError):
    """A step failed on a host or against the registry (exit 1)."""

    exit_code = EXIT_DEPLOY


class HostError(DeployError):
    """A failure confined to one host; the run goes on for the others."""

    def __init__(self, host: str, step: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{host}: {step}: {message}", hint)
        self.host = host
        self.step = step
        self.reason = message
