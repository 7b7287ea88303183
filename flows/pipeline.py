"""The loopline pipeline: every stage of the loop, end to end (for now: collect → label).

Input: ``PipelineParameters``. Output: the references each stage produced. Run it through the deployment
``prefect deployment run 'loopline-pipeline/local'`` or with ``bash scripts/demo.sh`` (README command 1).
The label stage waits for people (``loopline approve RUN_ID`` resumes it) unless ``label.auto_approve``.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.collect import collect_flow
from flows.label import label_stage
from tasks.collect import CollectParameters, DatasetRef
from tasks.label import LabeledDatasetRef, LabelParameters


class PipelineParameters(BaseModel):
    collect: CollectParameters = Field(..., description="What to collect.")
    label: LabelParameters = Field(default_factory=LabelParameters, description="How to label it.")


class PipelineResult(BaseModel):
    dataset: DatasetRef
    labels: LabeledDatasetRef


@flow(name="loopline-pipeline")
def pipeline_flow(params: PipelineParameters) -> PipelineResult:
    """Collect, then label (then, as later stages land: train, register, deploy, A/B test)."""
    dataset = collect_flow(params.collect)
    labels = label_stage(dataset, params.label)
    return PipelineResult(dataset=dataset, labels=labels)
