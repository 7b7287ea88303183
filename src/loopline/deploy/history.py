"""The deployment history of a registered model: the newest ``HISTORY_LIMIT`` records, oldest first, in
the registered-model tag ``deploy.history`` (JSON), so a rollback knows what served before. Pure list
operations, plus the two calls that read and write it (and the record's tags on its version)."""

from __future__ import annotations

import json
from typing import Any

from loopline.deploy.base import DeploymentRecord, Role

HISTORY_TAG = "deploy.history"
HISTORY_LIMIT = 50  # an MLflow tag holds 5000 characters by default: ~50 records of ~250


def appended(
    history: list[DeploymentRecord], record: DeploymentRecord, limit: int = HISTORY_LIMIT
) -> list[DeploymentRecord]:
    """``history`` with ``record`` at the end, the oldest dropped beyond ``limit``."""
    return [*history, record][-limit:]


def serving(history: list[DeploymentRecord], role: Role) -> DeploymentRecord | None:
    """The last record of ``role`` that went into service (refused ones never served)."""
    return next((r for r in reversed(history) if r.role == role and r.state == "serving"), None)


def undeployed(history: list[DeploymentRecord], role: Role) -> bool:
    """Whether ``role`` was stopped on purpose: its latest serving or stopped record is a stop."""
    kept = (r for r in reversed(history) if r.role == role and r.state in ("serving", "stopped"))
    latest = next(kept, None)
    return latest is not None and latest.state == "stopped"


def previous_version(history: list[DeploymentRecord], current: str | None) -> str | None:
    """The champion version that served before ``current``: the newest champion deployment of another
    version. None when there was none."""
    for record in reversed(history):
        if record.role == "champion" and record.state == "serving" and record.version != current:
            return record.version
    return None


def parse_history(text: str | None) -> list[DeploymentRecord]:
    if not text:
        return []
    return [DeploymentRecord.from_json(item) for item in json.loads(text)]


def dump_history(history: list[DeploymentRecord], max_chars: int = 5000) -> str:
    """JSON of ``history``, dropping the oldest records until it fits in one MLflow tag."""
    while True:
        text = json.dumps([r.to_json() for r in history], separators=(",", ":"))
        if len(text) <= max_chars or len(history) <= 1:
            return text
        history = history[1:]


def read_history(client: Any, name: str) -> list[DeploymentRecord]:
    """The deployment history of ``name`` (an ``MlflowClient``), oldest first."""
    return parse_history(client.get_registered_model(name).tags.get(HISTORY_TAG))


def save_record(client: Any, record: DeploymentRecord) -> DeploymentRecord:
    """Store ``record`` as tags on its version and append it to the model's history; return it."""
    for key, value in record.tags().items():
        client.set_model_version_tag(record.model, record.version, key, value)
    history = appended(read_history(client, record.model), record)
    client.set_registered_model_tag(record.model, HISTORY_TAG, dump_history(history))
    return record
