"""The image stage of a ship: build, tag, push and mirror, once per ship.

Every image in ``deployer.yaml`` ends up in the project's registry under the
immutable release tag, and hosts get the pinned reference
``registry/repository:tag@sha256:digest``, so every host runs exactly the
bytes that were built. All Docker SDK calls live in :mod:`.engine`, so a
remote builder can replace the local engine without touching the rest.

Entry point: :func:`deployer.images.stage.build_and_push`.
"""
