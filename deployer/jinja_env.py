"""The Jinja2 environment templates render in: sandboxed and secret-aware.

Templates are input like any other, and in CI possibly a pull request's: they
render in Jinja's :class:`~jinja2.sandbox.SandboxedEnvironment`, so
``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` is a
``SecurityError`` (a ConfigError for the user), not a shell. ``*`` and ``**``
are bounded so a template cannot exhaust memory or CPU with ``'a' * 10**10``.

A secret must stay masked after a template transformed it. Every filter call,
method call and subscript whose input holds a secret (a
:class:`~deployer.secrets.Secret`, or a string containing a registered secret
value) registers its string result with the masker, so ``| upper``,
``| reverse``, ``.lower()``, ``[2:]`` or ``| tojson`` of a password print as
``******`` too; a piece too short to be masked (``pw[0]``, ``pw | list``)
is a ConfigError. This guards the spellings a template produces, not a
template written to leak: conditionals (``{% if pw[0] == 'a' %}``) can
always reveal a secret bit by bit, which is why templates, like the
inventory, must come from people trusted with the secrets.

Templates are loaded through :class:`ProjectLoader`: only regular files
inside the project folder (after resolving symlinks), read with the size cap
and FIFO guard of :mod:`deployer.config.readfile`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from jinja2.sandbox import SandboxedEnvironment

from deployer.config.readfile import read_text
from deployer.errors import ConfigError
from deployer.secrets import MIN_SECRET_LEN, Secret, masker, short_piece_guard

MAX_REPEAT = 1_000_000  # characters or items a '*' may produce
MAX_EXPONENT = 10_000


class SecretSliceError(jinja2.sandbox.SecurityError):
    """A template cut a secret into a piece too short to mask."""


def _refuse_piece(n: int, what: str = "indexing, slicing or iterating") -> None:
    raise SecretSliceError(
        f"{what} on a secret gives a piece of {n} character{'s' if n > 1 else ''}, "
        f"too short to be masked in output (a secret piece needs at least "
        f"{MIN_SECRET_LEN})"
    )


class _GuardedTemplate(jinja2.Template):
    """Rendering with :data:`~deployer.secrets.short_piece_guard` set."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        token = short_piece_guard.set(_refuse_piece)
        try:
            return super().render(*args, **kwargs)
        finally:
            short_piece_guard.reset(token)


class ProjectLoader(jinja2.BaseLoader):
    """Templates by project-relative path; nothing outside the project."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template.startswith("/") or ".." in template.replace("\\", "/").split("/"):
            raise ConfigError(
                f"{template[:100]}: template path leaves the project folder",
                "keep templates inside the project (e.g. templates/)",
            )
        path = self.root / template
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{template[:100]}: bad template path: {e}") from None
        if real != self.root and self.root not in real.parents:
            raise ConfigError(
                f"{template}: template resolves to {real}, outside the project folder",
                "do not symlink templates to files outside the project",
            )
        try:
            if not real.exists():
                raise jinja2.TemplateNotFound(template)
        except OSError as e:
            raise ConfigError(f"{template[:100]}: bad template path: {e.strerror}") from None
        source = read_text(real, template, "template")
        mtime = os.stat(real).st_mtime
        return source, str(path), lambda: os.path.exists(real) and os.stat(real).st_mtime == mtime


def _holds_secret(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, str):
        return bool(value) and any(v in value for v in masker.originals)
    if depth < 2 and isinstance(value, (list, tuple)):
        return any(_holds_secret(v, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict):
        return any(_holds_secret(v, depth + 1) for v in value.values())
    return False


def _register(piece: str, what: str) -> None:
    if not piece.strip() or masker.mask(piece) != piece:
        return  # nothing to hide, or it holds a known spelling (| tojson: '"pw"')
    if len(piece) < MIN_SECRET_LEN:
        _refuse_piece(len(piece), what)
    masker.add(piece)


def taint(result: Any, what: str) -> Any:
    """Register a value derived from a secret, so it is masked as well."""
    if isinstance(result, jinja2.Undefined):
        return result
    if isinstance(result, str):
        _register(str.__str__(result), what)
        return result if isinstance(result, markupsafe.Markup) else Secret(result)
    if isinstance(result, bytes):  # .encode(): printed as b'...\\xc3...'
        _register(repr(result)[2:-1], what)
        return result
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        text = str(result)
        if len(text) >= MIN_SECRET_LEN:
            masker.add(text)
        return result
    if isinstance(result, (list, tuple, set, frozenset)):
        for item in result:
            if isinstance(item, str):
                _register(str.__str__(item), what)
        return result
    return result


def _secret_aware(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name == "tojson":
            # json.dumps would say "Object of type StrictUndefined is not JSON
            # serializable"; let the undefined value name itself instead.
            for a in args:
                if isinstance(a, jinja2.Undefined):
                    a._fail_with_undefined_error()
        result = fn(*args, **kwargs)
        if any(_holds_secret(a) for a in args) or any(
            _holds_secret(v) for v in kwargs.values()
        ):
            return taint(result, f"the filter '{name}'")
        return result

    return wrapper


class SecretAwareSandbox(SandboxedEnvironment):
    """SandboxedEnvironment + bounded ``*``/``**`` + secret-derived values masked."""

    intercepted_binops = frozenset({"*", "**"})
    template_class = _GuardedTemplate

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = {n: _secret_aware(n, f) for n, f in self.filters.items()}

    def call_binop(self, context: jinja2.runtime.Context, operator: str,
                   left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) \
                        and len(seq) * max(n, 0) > MAX_REPEAT:
                    raise jinja2.sandbox.SecurityError(
                        f"'*' would make more than {MAX_REPEAT} items")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise jinja2.sandbox.SecurityError(f"exponent larger than {MAX_EXPONENT}")
        result = super().call_binop(context, operator, left, right)
        if _holds_secret(left) or _holds_secret(right):
            return taint(result, f"'{operator}'")
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        if isinstance(obj, str) and _holds_secret(obj):
            return taint(result, "indexing or slicing")
        return result

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,
             *args: Any, **kwargs: Any) -> Any:
        result = super().call(__context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if _holds_secret(owner) or any(_holds_secret(a) for a in args) or any(
            _holds_secret(v) for v in kwargs.values()
        ):
            name = getattr(__obj, "__name__", "a call")
            return taint(result, f"'{name}()'")
        return result


def template_environment(root: Path) -> jinja2.Environment:
    """The environment every project template renders in."""
    return SecretAwareSandbox(
        loader=ProjectLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
