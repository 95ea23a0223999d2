"""The command value that every builder returns and the executor runs.

Commands are data (Kamal's best idea): an argv list, whether it needs root,
what goes to its stdin. Turning one into a shell line happens in exactly one
place, :meth:`Command.shell`, which quotes every argument with ``shlex``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from deployer.secrets import MASK, Secret


@dataclass(frozen=True)
class Command:
    """One remote command.

    ``argv``: the program and its arguments, each quoted on the way out.
    ``sudo``: run through ``sudo -n`` when the SSH user is not root (never
    prompts: a user without passwordless sudo fails fast with a clear error).
    ``stdin``: data fed to the command's standard input; the only way secrets
    travel (``docker login --password-stdin``), never in argv.
    ``cwd``: directory to run in (``cd DIR &&``).
    ``env``: extra environment variables (``env K=V ... argv``); not for secrets.
    ``ok_codes``: exit codes that count as success (a probe may treat 1 as
    "absent" rather than failure).
    ``description``: what the step does, for progress output and ``plan``.
    """

    argv: tuple[str, ...]
    sudo: bool = False
    stdin: str | None = field(default=None, repr=False)
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    ok_codes: tuple[int, ...] = (0,)
    description: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.argv, list):  # accept lists, store an immutable tuple
            object.__setattr__(self, "argv", tuple(self.argv))
        if not self.argv:
            raise ValueError("Command needs at least a program")
        for a in self.argv:
            if isinstance(a, Secret):
                raise ValueError("secrets never go in argv; pass them on stdin")

    def shell(self, *, as_root: bool = False) -> str:
        """The shell line that runs this command, every argument quoted.

        ``as_root``: the SSH user is already root, so ``sudo`` is not needed.
        """
        parts: list[str] = []
        if self.env:
            parts += ["env", *(f"{k}={v}" for k, v in self.env)]
        parts += list(self.argv)
        line = shlex.join(parts)
        if self.sudo and not as_root:
            # sh -c keeps cd/env inside the privileged process.
            inner = f"cd {shlex.quote(self.cwd)} && {line}" if self.cwd else line
            return shlex.join(["sudo", "-n", "--", "sh", "-c", inner])
        if self.cwd:
            return f"cd {shlex.quote(self.cwd)} && {line}"
        return line

    def display(self, *, full: bool = False) -> str:
        """The line as ``plan`` and logs show it: stdin shown as masked, and an
        inline script abbreviated to its description (``full`` shows it)."""
        argv = self.argv
        if not full and argv[:2] == ("sh", "-c") and len(argv) > 2 and "\n" in argv[2]:
            n = argv[2].count("\n") + 1
            label = f"<{n}-line script: {self.description or 'inline'}>"
            shown = Command(("sh", "-c", label, *argv[3:]), cwd=self.cwd, env=self.env)
            line = shown.shell().replace(shlex.quote(label), label)
            if self.sudo:  # shortened like the script: the real line wraps it in sh -c
                line = f"sudo -n -- {line}"
        else:
            line = self.shell()
        if self.stdin is not None:
            line += f"  <<< {MASK}"
        return line


def cmd(*argv: str, **kwargs: object) -> Command:
    """Shorthand: ``cmd("docker", "ps", sudo=True)``."""
    return Command(tuple(argv), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Script:
    """A short POSIX sh program, for steps that must be one round trip
    (the no-op check, bootstrap's probe) or atomic on the host (lock, switch).

    It is sent as ``sh -c SCRIPT`` with positional arguments, so values are
    never spliced into the script text: the script refers to ``"$1"``, ``"$2"``
    and the values travel quoted in argv.
    """

    source: str
    args: tuple[str, ...] = ()
    sudo: bool = False
    description: str = ""
    ok_codes: tuple[int, ...] = (0,)
    stdin: str | None = field(default=None, repr=False)

    def command(self) -> Command:
        return Command(
            ("sh", "-c", self.source, "sh", *self.args),
            sudo=self.sudo,
            description=self.description,
            ok_codes=self.ok_codes,
            stdin=self.stdin,
        )
