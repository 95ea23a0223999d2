"""The outcome of a run, per host: the one data shape every reporter prints.

``result`` vocabulary (the contract of the summary table and the JSON report):
deployed, unchanged, failed, rolled back, skipped, ok (for commands that do
not deploy, such as bootstrap or status).

``rolled back`` means one thing: the host was taken off a release
(``rolled_back_from``) and runs an older one (``release``) again. After
``ship`` that is a failure (``error`` says why the new release was not
healthy); after ``deployer rollback`` it is what was asked for (no error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

HostResult = Literal["deployed", "unchanged", "failed", "rolled back", "skipped", "ok"]
SUCCESS: frozenset[str] = frozenset({"deployed", "unchanged", "ok"})


@dataclass
class StepTiming:
    step: str
    seconds: float
    ok: bool = True


@dataclass
class HostReport:
    host: str
    result: HostResult
    release: str | None = None
    rolled_back_from: str | None = None
    seconds: float = 0.0
    error: str | None = None
    detail: str | None = None  # e.g. "already bootstrapped", "locked by ..."
    batch: int | None = None
    steps: list[StepTiming] = field(default_factory=list)
    connections: int | None = None
    commands: int | None = None
    bytes_uploaded: int | None = None

    @property
    def ok(self) -> bool:
        return self.result in SUCCESS or (self.result == "rolled back" and not self.error)


@dataclass
class RunReport:
    command: str
    app: str
    env: str
    release: str | None = None
    images: dict[str, str] = field(default_factory=dict)
    hosts: list[HostReport] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(h.ok for h in self.hosts)

    @property
    def result(self) -> str:
        if self.interrupted:
            return "interrupted"
        return "success" if self.ok else "failure"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.hosts:
            out[h.result] = out.get(h.result, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report; validated by ``report/schema.json``."""
        return {
            "schema_version": 1,
            "command": self.command,
            "app": self.app,
            "env": self.env,
            "release": self.release,
            "result": self.result,
            "images": dict(self.images),
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "hosts": [
                {k: v for k, v in asdict(h).items() if v is not None} | {
                    "seconds": round(h.seconds, 3),
                    "steps": [
                        {"step": s.step, "seconds": round(s.seconds, 3), "ok": s.ok}
                        for s in h.steps
                    ],
                }
                for h in self.hosts
            ],
        }
