"""The loopline pipeline: every stage of the loop, end to end: collect → label → train → register → deploy
→ A/B test.

Input: ``PipelineParameters``. Output: the references each stage produced. Run it through the deployment
``prefect deployment run 'loopline-pipeline/local'`` or with ``bash scripts/demo.sh`` (README command 1).
The label stage waits for people (``loopline approve RUN_ID`` resumes it) unless ``label.auto_approve``.
Training runs in the pipeline's process, or on another work pool when ``train_deployment`` names one.
The register stage waits for a model review (``loopline approve RUN_ID``) unless ``register.auto_approve``.
An approved model is deployed (``deploy``): the first as champion; a later one after its smoke test, as
champion directly (``deploy.promote_directly``) or as challenger beside the champion — then the A/B stage
(``rollout``) ramps its share of live traffic and promotes it (after ``loopline approve RUN_ID``, unless
``rollout.auto_approve``) or rolls it back.

A run with nothing to do completes early and says why (state message, ``pipeline-stopped-early``
artifact): another pipeline run is mid-round (running, or waiting for a person), or collect found nothing
new — the source holds no files, or its dataset version was already trained on (``stop_when_unchanged``;
see ``loopline.round_guard``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.collect import collect_flow
from flows.deploy import deploy_stage
from flows.label import label_stage
from flows.register import register_stage
from flows.rollout import rollout_stage
from flows.train import train_stage
from loopline.round_guard import StopEarly
from tasks.collect import CollectParameters, DatasetRef, nothing_to_collect
from tasks.deploy import DeploymentRef, DeployParameters
from tasks.label import LabeledDatasetRef, LabelParameters
from tasks.pipeline import check_nothing_new, check_round_in_flight
from tasks.register import RegisteredModelRef, RegisterParameters, find_champion
from tasks.rollout import RolloutParameters, RolloutRef
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
    rollout: RolloutParameters = Field(
        default_factory=RolloutParameters, description="How a challenger earns its place on live traffic."
    )
    train_deployment: str | None = Field(
        default=None,
        description="Train as a run of this deployment (e.g. 'train-model/k8s-gpu' for GPUs); "
        "empty: train in the pipeline's own process.",
    )
    stop_when_unchanged: bool = Field(
        default=True,
        description="Stop after collect when another run already trained a model on this dataset version "
        "(nothing new): no Label Studio project, no training on the same labels.",
    )


class PipelineResult(BaseModel):
    dataset: DatasetRef | None = None  # None: stopped before collecting
    labels: LabeledDatasetRef | None = None  # None: stopped early (see stopped_early)
    model: TrainedModelRef | None = None
    registered: RegisteredModelRef | None = None
    deployment: DeploymentRef | None = None  # None: the model was not approved
    rollout: RolloutRef | None = None  # None: no A/B test (the first model, or promoted directly)
    stopped_early: str | None = None  # why the run stopped early, when it did


def stop_early(stop: StopEarly, dataset: DatasetRef | None = None) -> State[PipelineResult]:
    """A Completed state that says why the run stopped (also logged and kept as an artifact)."""
    get_run_logger().info("%s", stop.message)
    create_markdown_artifact(
        key="pipeline-stopped-early",
        markdown=f"## Stopped early\n\n{stop.message}\n",
        description=stop.reason,
    )
    return Completed(message=stop.message, data=PipelineResult(dataset=dataset, stopped_early=stop.message))


@flow(name="loopline-pipeline")
def pipeline_flow(params: PipelineParameters) -> PipelineResult | State[PipelineResult]:
    """Collect, label, train, register, deploy, A/B test; stop early when there is nothing to do."""
    if in_flight := check_round_in_flight():
        return stop_early(in_flight)
    if empty := nothing_to_collect(params.collect):  # e.g. a nightly run: nothing landed in the source
        return stop_early(StopEarly("nothing_new", f"Nothing new to collect: {empty}"))
    dataset = collect_flow(params.collect)
    if params.stop_when_unchanged and (
        unchanged := check_nothing_new(
            dataset, params.collect.source, params.registration.model_name, tracking_uri()
        )
    ):
        return stop_early(unchanged, dataset)
    champion = find_champion(params.registration.model_name, tracking_uri())  # None in the first round
    labels = label_stage(dataset, params.label, champion)
    model = train_stage(labels, params.train, params.train_deployment)
    registered = register_stage(model, labels, params.registration, params.deploy.promote_directly)
    deployment = deploy_stage(registered, labels.data_root, params.deploy)
    rollout = None
    if deployment is not None and deployment.role == "challenger":
        rollout = rollout_stage(registered.name, labels.data_root, params.deploy, params.rollout)
    return PipelineResult(
        dataset=dataset,
        labels=labels,
        model=model,
        registered=registered,
        deployment=deployment,
        rollout=rollout,
    )
