"""The loopline pipeline: every stage of the loop, end to end (for now: collect → label → train → register
→ deploy).

Input: ``PipelineParameters``. Output: the references each stage produced. Run it through the deployment
``prefect deployment run 'loopline-pipeline/local'`` or with ``bash scripts/demo.sh`` (README command 1).
The label stage waits for people (``loopline approve RUN_ID`` resumes it) unless ``label.auto_approve``.
Training runs in the pipeline's process, or on another work pool when ``train_deployment`` names one.
The register stage waits for a model review (``loopline approve RUN_ID``) unless ``register.auto_approve``.
An approved model is deployed (``deploy``): the first as champion, later ones after their smoke test.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.collect import collect_flow
from flows.deploy import deploy_stage
from flows.label import label_stage
from flows.register import register_stage
from flows.train import train_stage
from tasks.collect import CollectParameters, DatasetRef
from tasks.deploy import DeploymentRef, DeployParameters
from tasks.label import LabeledDatasetRef, LabelParameters
from tasks.register import RegisteredModelRef, RegisterParameters, find_champion
from tasks.train import TrainedModelRef, TrainParameters, tracking_uri


class PipelineParameters(BaseModel):
    # `register` is the key people type; the attribute is `registration` (BaseModel.register is ABC's).
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    collect: CollectParameters = Field(..., description="What to collect.")
    label: LabelParameters = Field(..., description="How to label it: the label set, budget, gates.")
    train: TrainParameters = Field(default_factory=TrainParameters, description="How to train.")
    registration: RegisterParameters = Field(
        default_factory=RegisterParameters,
        alias="register",
        description="Where to register it and how to judge it.",
    )
    deploy: DeployParameters = Field(
        default_factory=DeployParameters, description="Where and how an approved model is served."
    )
    train_deployment: str | None = Field(
        default=None,
        description="Train as a run of this deployment (e.g. 'train-model/k8s-gpu' for GPUs); "
        "empty: train in the pipeline's own process.",
    )


class PipelineResult(BaseModel):
    dataset: DatasetRef
    labels: LabeledDatasetRef
    model: TrainedModelRef
    registered: RegisteredModelRef
    deployment: DeploymentRef | None = None  # None: the model was not approved


@flow(name="loopline-pipeline")
def pipeline_flow(params: PipelineParameters) -> PipelineResult:
    """Collect, label, train, register, deploy (then, as the stage lands: A/B test)."""
    dataset = collect_flow(params.collect)
    champion = find_champion(params.registration.model_name, tracking_uri())  # None in the first round
    labels = label_stage(dataset, params.label, champion)
    model = train_stage(labels, params.train, params.train_deployment)
    registered = register_stage(model, labels, params.registration)
    deployment = deploy_stage(registered, labels.data_root, params.deploy)
    return PipelineResult(
        dataset=dataset, labels=labels, model=model, registered=registered, deployment=deployment
    )
