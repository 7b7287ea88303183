"""Version numbers and places written inside tags, rewritten for the target (pure functions).

A model's versions get new numbers on the target (``versions`` maps source → target). They appear in the
registered-model tag ``deploy.history`` (a JSON list of deployment records), in the alias audit records
(``audit.<time>.<alias>`` on the model, ``audit.<alias>`` on a version: JSON with ``from_version`` and
``to_version``) and in the aliases themselves. A version the bundle does not hold (deleted on the source
before the export) has no number on the target: its deployment records are dropped (a rollback must not
pick a version that does not exist, or the wrong one), and the audit records name it ``source vN``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

from loopline.deploy.base import DeploymentRecord
from loopline.deploy.history import HISTORY_LIMIT, HISTORY_TAG, dump_history, parse_history

AUDIT_PREFIX = "audit."


def remap_history(text: str, versions: Mapping[str, str]) -> list[DeploymentRecord]:
    """The deployment records of ``text`` with target version numbers; records of versions that are not
    in ``versions`` are dropped."""
    return [replace(r, version=versions[r.version]) for r in parse_history(text) if r.version in versions]


def merge_history(target: str | None, imported: list[DeploymentRecord]) -> str:
    """The target's history with the imported records it lacks, in time order (``when``), the newest
    ``HISTORY_LIMIT`` kept: importing the same records twice changes nothing."""
    history = parse_history(target)
    history.extend(r for r in imported if r not in history)
    history.sort(key=lambda r: r.when)
    return dump_history(history[-HISTORY_LIMIT:])


def remap_audit(text: str, versions: Mapping[str, str]) -> str:
    """An alias audit record (JSON) with target version numbers; anything else unchanged."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(record, dict) or not {"from_version", "to_version"} <= set(record):
        return text
    for key in ("from_version", "to_version"):
        value = record[key]
        if value is not None:
            record[key] = versions.get(str(value), f"source v{value}")
    return json.dumps(record)


def remap_model_tags(
    tags: Mapping[str, str], versions: Mapping[str, str], target: Mapping[str, str]
) -> dict[str, str]:
    """The registered-model tags to hold on the target: the source's, with version numbers mapped; the
    deployment history merged into the target's own (``target``: the target model's tags now)."""
    out: dict[str, str] = {}
    for key, value in tags.items():
        if key == HISTORY_TAG:
            out[key] = merge_history(target.get(HISTORY_TAG), remap_history(value, versions))
        elif key.startswith(AUDIT_PREFIX):
            out[key] = remap_audit(value, versions)
        else:
            out[key] = value
    return out


def remap_version_tags(
    tags: Mapping[str, str], versions: Mapping[str, str], places: Mapping[str, str]
) -> dict[str, str]:
    """A version's tags for the target: audit records with version numbers mapped, then ``places``
    (tags that name places: the training run id, the data root, the labeled manifest's URI) applied to
    the tags the source has."""
    out = {k: remap_audit(v, versions) if k.startswith(AUDIT_PREFIX) else v for k, v in tags.items()}
    out.update({k: v for k, v in places.items() if k in tags})
    return out


def changed(wanted: Mapping[str, str], present: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``wanted`` that ``present`` lacks or holds with another value."""
    return {k: v for k, v in wanted.items() if present.get(k) != v}
