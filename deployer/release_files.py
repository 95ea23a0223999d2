"""What a release carries besides rendered templates: project paths copied
byte for byte (bind-mount sources, ``env_file``, ``.env``, secret and config
files, ``extends`` files, and ``files: [{copy: ...}]`` entries).

:mod:`deployer.compose_file` decides *which* paths are config (a
:class:`CopySpec` each) and which are data (``shared/``); this module's
consumers decide *how* they reach the host (expanded into files, hashed into
the fingerprint, sent as one tar stream).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CopySpec:
    """One project path (a file or a directory) carried into every release.

    ``source``: project-relative POSIX path, normalised.
    ``dest``: release-relative POSIX path (normally equal to ``source``, so
    the compose file's relative references resolve in the release folder).
    ``mode``: None keeps the local file's permission bits.
    ``secret``: ``env_file``, ``.env`` and secret files: uploaded 0600, and
    their content is never printed.
    ``exclude``: gitignore-style patterns, relative to a copied directory.
    ``origin``: where it came from, for messages and ``plan``
    (``service web: volumes[0]``, ``files[2]``, ``.env``).
    """

    source: str
    dest: str
    mode: int | None = None
    secret: bool = False
    exclude: tuple[str, ...] = ()
    origin: str = ""
