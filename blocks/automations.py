"""loopline's Prefect automations, as code, and the notification block they send through.

- drift → retrain: a ``loopline.drift.detected`` event (the monitor's, resource ``loopline.model.<name>``)
  runs the ``loopline-pipeline/nightly`` deployment: it collects the incoming source and the router's
  sample of served images, labels and retrains (or stops early when nothing is new). Heavy work: created
  disabled unless ``LOOPLINE_RETRAIN_ON_DRIFT`` is true, like the nightly schedule is created inactive;
- a flow run Failed or Crashed → a notification;
- ``loopline.rollout.rolled-back`` (the A/B stage's) → a notification;
- a run waiting for a person (Paused or Suspended) that nobody resumed within ``LOOPLINE_REVIEW_ALERT_HOURS``
  → a notification (a proactive trigger: it fires on an event that did not come).

Notifications go through a ``CustomWebhookNotificationBlock`` saved as ``loopline-notify``: the webhook URL
(``LOOPLINE_NOTIFY_WEBHOOK_URL``) and an optional bearer token (``LOOPLINE_NOTIFY_WEBHOOK_TOKEN``) are kept
in its encrypted ``secrets``. Without a URL there are no notification automations.

``apply_automations`` is idempotent: automations are matched by name; a rerun updates them in place,
removes duplicates, and removes loopline's automations that are no longer wanted (the tag ``loopline``
marks them). ``loopline deploy`` runs it after the deployments: ``python -m blocks.automations``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import RunDeployment, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from loopline.settings import Settings, get_settings

NOTIFY_BLOCK = "loopline-notify"
TAG = "loopline"
PIPELINE_DEPLOYMENT = "loopline-pipeline/nightly"
DRIFT_EVENT = "loopline.drift.detected"
ROLLED_BACK_EVENT = "loopline.rollout.rolled-back"
WAITING_STATES = ("Paused", "Suspended")
# Any state a waiting run can move on to: a decision came (or the run ended some other way).
MOVED_ON_STATES = (
    "Resuming",
    "Running",
    "Pending",
    "Scheduled",
    "Completed",
    "Failed",
    "Crashed",
    "Cancelled",
    "Cancelling",
)

FAILED_BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)
ROLLED_BACK_BODY = (
    "{{ event.resource.name }}: challenger version {{ event.payload.version }} was rolled back "
    "(champion stays version {{ event.payload.champion }}). Why: {{ event.payload.reasons|join('; ') }}"
)
WAITING_BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} has waited more than {hours} hours for a decision "
    "({{ flow_run.state.name }}). Decide with `loopline approve {{ flow_run.id }}` (or --reject).\n"
    "{{ flow_run|ui_url }}"
)


@dataclass(frozen=True)
class Applied:
    created: list[str]
    updated: list[str]
    deleted: list[str]


def save_notify_block(settings: Settings) -> UUID | None:
    """Save (overwrite) the webhook block from the settings; None when no webhook is configured."""
    if settings.notify_webhook_url is None:
        return None
    secrets = {"webhook_url": settings.notify_webhook_url.get_secret_value()}
    headers = None
    if settings.notify_webhook_token is not None:
        secrets["webhook_token"] = settings.notify_webhook_token.get_secret_value()
        headers = {"Authorization": "Bearer {{ webhook_token }}"}
    block = CustomWebhookNotificationBlock(
        name="loopline",
        url="{{ webhook_url }}",
        json_data={"subject": "{{ subject }}", "text": "{{ body }}"},
        headers=headers,
        secrets=secrets,  # a plain dict becomes a SecretDict
    )
    block_id = block.save(NOTIFY_BLOCK, overwrite=True)
    assert isinstance(block_id, UUID)  # the sync API returns the id itself
    return block_id


def _notify(block_id: UUID, subject: str, body: str) -> list[Any]:
    return [SendNotification(block_document_id=block_id, subject=subject, body=body)]


def definitions(
    settings: Settings, pipeline_id: UUID | None, notify_block: UUID | None
) -> list[AutomationCore]:
    """Every automation loopline wants, from the settings (pure: no API calls)."""
    wanted: list[AutomationCore] = []
    if pipeline_id is not None:
        wanted.append(
            AutomationCore(
                name="loopline: drift → label and retrain",
                description=f"A {DRIFT_EVENT} event runs {PIPELINE_DEPLOYMENT} (collect, label, retrain); "
                "enabled by LOOPLINE_RETRAIN_ON_DRIFT=true.",
                enabled=settings.retrain_on_drift,
                tags=[TAG],
                trigger=EventTrigger(
                    expect={DRIFT_EVENT},
                    match={"prefect.resource.id": "loopline.model.*"},
                    posture=Posture.Reactive,
                    threshold=1,
                ),
                actions=[RunDeployment(source="selected", deployment_id=pipeline_id)],
            )
        )
    if notify_block is None:
        return wanted
    hours = settings.review_alert_hours
    wanted += [
        AutomationCore(
            name="loopline: run failed or crashed → notify",
            description="Any flow run that ends Failed or Crashed.",
            tags=[TAG],
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=_notify(
                notify_block, "loopline: {{ flow_run.name }} {{ flow_run.state.name }}", FAILED_BODY
            ),
        ),
        AutomationCore(
            name="loopline: rollout rolled back → notify",
            description=f"The A/B stage rolled a challenger back ({ROLLED_BACK_EVENT}).",
            tags=[TAG],
            trigger=EventTrigger(
                expect={ROLLED_BACK_EVENT},
                match={"prefect.resource.id": "loopline.model.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=_notify(
                notify_block, "loopline: {{ event.resource.name }} rolled back", ROLLED_BACK_BODY
            ),
        ),
        AutomationCore(
            name="loopline: review waiting → notify",
            description=f"A run paused or suspended for a person with no decision within {hours:g} hours.",
            tags=[TAG],
            trigger=EventTrigger(
                after={f"prefect.flow-run.{state}" for state in WAITING_STATES},
                expect={f"prefect.flow-run.{state}" for state in MOVED_ON_STATES},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(hours=hours),
            ),
            actions=_notify(
                notify_block,
                "loopline: {{ flow_run.name }} waits for a decision",
                WAITING_BODY.replace("{hours}", f"{hours:g}"),
            ),
        ),
    ]
    return wanted


def _same(existing: Any, wanted: AutomationCore) -> bool:
    fields = {"name", "description", "enabled", "tags", "trigger", "actions"}
    return bool(
        existing.model_dump(include=fields, mode="json") == wanted.model_dump(include=fields, mode="json")
    )


def apply_automations(settings: Settings | None = None) -> Applied:
    """Create, update or delete loopline's automations so that exactly ``definitions`` exist (by name)."""
    settings = settings or get_settings()
    notify_block = save_notify_block(settings)
    applied = Applied([], [], [])
    with get_client(sync_client=True) as client:
        try:
            pipeline_id: UUID | None = client.read_deployment_by_name(PIPELINE_DEPLOYMENT).id
        except Exception:  # ObjectNotFound: deploy the deployments first (loopline deploy does)
            pipeline_id = None
        wanted = {a.name: a for a in definitions(settings, pipeline_id, notify_block)}
        existing = client.read_automations()
        by_name: dict[str, list[Any]] = {}
        for automation in existing:
            by_name.setdefault(automation.name, []).append(automation)
        for name, want in wanted.items():
            found = sorted(by_name.pop(name, []), key=lambda a: str(a.id))
            for duplicate in found[1:]:
                client.delete_automation(duplicate.id)
                applied.deleted.append(name)
            if not found:
                client.create_automation(want)
                applied.created.append(name)
            elif not _same(found[0], want):
                client.update_automation(found[0].id, want)
                applied.updated.append(name)
        for name, stale in by_name.items():  # ours, no longer wanted (e.g. no webhook any more)
            for automation in stale:
                if TAG in automation.tags:
                    client.delete_automation(automation.id)
                    applied.deleted.append(name)
    return applied


if __name__ == "__main__":
    result = apply_automations()
    for verb, names in (
        ("created", result.created),
        ("updated", result.updated),
        ("deleted", result.deleted),
    ):
        for name in names:
            print(f"{verb} automation {name}")
