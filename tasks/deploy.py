"""Deploy tasks: an approved registered version → a model server (``loopline.deploy``), gated by the smoke
test, recorded on the version and published as the ``model-deployment`` artifact."""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from loopline.deploy.base import (
    DeploymentRecord,
    DeploymentRefused,
    DeployTarget,
    choose_role,
    render_deployments,
)
from loopline.deploy.targets import open_target
from loopline.settings import get_settings
from tasks.register import RegisteredModelRef


class DeployParameters(BaseModel):
    """Where and how approved models are served (rendered as a form in the Prefect UI)."""

    target: Literal["local", "docker", "kubernetes"] | None = Field(
        default=None,
        description="Deploy target: 'local' runs the model servers as local processes, 'docker' as "
        "containers of the serving image, 'kubernetes' as Deployments (LOOPLINE_K8S_*); empty: "
        "LOOPLINE_DEPLOY_TARGET (default local).",
    )
    promote_directly: bool = Field(
        default=True,
        description="Serve an approved model as champion right after its smoke test; off: serve it beside "
        "the champion as challenger (until the A/B stage lands, promotion is then manual).",
    )
    smoke_images: int = Field(default=8, ge=1, le=64, description="Test images the smoke test sends.")


class DeploymentRef(BaseModel):
    model: str
    version: str
    role: Literal["champion", "challenger"]
    target: str
    url: str
    state: str
    reason: str = ""

    @classmethod
    def of(cls, record: DeploymentRecord) -> DeploymentRef:
        return cls(
            model=record.model,
            version=record.version,
            role=record.role,
            target=record.target,
            url=record.url,
            state=record.state,
            reason=record.reason,
        )


def deploy_target(model: str, tracking_uri: str, data_root: str, params: DeployParameters) -> DeployTarget:
    return open_target(params.target, get_settings(), tracking_uri, model, data_root, params.smoke_images)


@task(name="deploy-model")
def deploy_model(
    registered: RegisteredModelRef, tracking_uri: str, data_root: str, params: DeployParameters
) -> DeploymentRef | None:
    """Serve an approved version (as champion or challenger, see ``choose_role``); None when it was not
    approved. Raises ``DeploymentRefused`` when it failed to start or failed its smoke test (what served
    before keeps serving)."""
    logger = get_run_logger()
    target = deploy_target(registered.name, tracking_uri, data_root, params)
    champion = next((r for r in target.status() if r.role == "champion" and r.state == "serving"), None)
    role = choose_role(registered.decision, params.promote_directly, champion.version if champion else None)
    if role is None:
        logger.info("%s v%s was %s: not deployed", registered.name, registered.version, registered.decision)
        return None
    record = target.deploy(registered.version, role, who="loopline", why=f"{registered.decision} in review")
    create_markdown_artifact(
        key="model-deployment",
        markdown=render_deployments([*target.status(), *([record] if record.state == "refused" else [])]),
        description=f"{record.model} v{record.version} {record.state} as {role} at {record.url}",
    )
    if record.state == "refused":
        raise DeploymentRefused(
            f"{record.model} v{record.version} was not deployed as {role}: {record.reason}. What served "
            f"before keeps serving. To fix this, read the candidate server's log ({target.name} target: "
            f"LOOPLINE_HOME/logs/serve-{role}-candidate.log, or the reason above), then register a working "
            "model (or deploy another version with the deploy-model flow)."
        )
    logger.info("%s v%s serves as %s at %s", record.model, record.version, role, record.url)
    return DeploymentRef.of(record)
