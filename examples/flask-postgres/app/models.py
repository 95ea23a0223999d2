"""The one model: a short note. Its table is created by the Alembic migration
in ``migrations/versions``, run by the one-shot ``migrate`` compose service."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from app import db


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Note(db.Model):  # type: ignore[name-defined]
    __tablename__ = "notes"

    id = db.Column(db.Integer, primary_key=True)
    body = db.Column(db.String(500), nullable=False)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=_now)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "body": self.body, "created_at": self.created_at.isoformat()}
