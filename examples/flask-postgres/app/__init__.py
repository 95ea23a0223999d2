"""A small Flask + PostgreSQL app, deployed by deployer as its worked example.

Settings come from a config file mounted into the container
(``/app/docker_config.py``, rendered per host by deployer from
``templates/docker_config.py.j2``), not from the image: the same image runs in
every environment, and changing a setting is a new release of config files
only, with no rebuild.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from flask import Flask, jsonify, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

db = SQLAlchemy()
migrate = Migrate()

DEFAULT_CONFIG = "/app/docker_config.py"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory (``flask --app app`` and gunicorn's
    ``app:create_app()`` both call it). ``config`` overrides the file, for tests."""
    app = Flask(__name__)
    app.config.update(
        GREETING="Hello",
        HEALTHY=True,
        # A connection dropped by a database restart is replaced, not reused.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
    )
    if config is None:
        # A missing file is an error, not a silent fallback: an app that starts
        # without its database settings would only fail later, less clearly.
        app.config.from_pyfile(os.environ.get("APP_CONFIG", DEFAULT_CONFIG))
    else:
        app.config.update(config)

    db.init_app(app)
    migrate.init_app(app, db)

    from app import models  # noqa: F401  (registers the models with SQLAlchemy and Alembic)
    from app.models import Note

    @app.get("/")
    def index() -> Any:
        """Data read from PostgreSQL, so a deploy check proves the whole path
        (web -> db, migrations applied) and not just that gunicorn started."""
        count = db.session.scalar(db.select(db.func.count()).select_from(Note))
        latest = db.session.scalars(db.select(Note).order_by(Note.id.desc()).limit(5)).all()
        return jsonify(
            greeting=app.config["GREETING"],
            notes=count,
            latest=[n.as_dict() for n in latest],
            database=db.session.scalar(text("SELECT version()")),
            served_by=socket.gethostname(),
        )

    @app.post("/notes")
    def add_note() -> Any:
        """Writes a row, so tests can show that data survives redeploys and rollbacks."""
        payload = request.get_json(silent=True) or {}
        body = payload.get("body") or request.form.get("body") or ""
        if not isinstance(body, str) or not body.strip():
            return jsonify(error="body is required"), 400
        note = Note(body=body.strip()[:500])
        db.session.add(note)
        db.session.commit()
        return jsonify(note.as_dict()), 201

    @app.get("/healthz")
    def healthz() -> Any:
        """Healthy only when the database answers. ``HEALTHY = False`` in the
        config makes it fail on purpose: that is how the rollback of a release
        whose healthcheck never passes is exercised."""
        if not app.config.get("HEALTHY", True):
            return jsonify(status="unhealthy", reason="HEALTHY is False in the config"), 503
        try:
            db.session.execute(text("SELECT 1"))
        except Exception as e:
            return jsonify(status="unhealthy", reason=type(e).__name__), 503
        return jsonify(status="ok")

    return app
