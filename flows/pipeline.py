"""The loopline pipeline: every stage of the loop, end to end (for now: collect).

Input: ``PipelineParameters``. Output: the references each stage produced. Run it through the deployment
``prefect deployment run 'loopline-pipeline/local' -p params='{"collect": {"source": "/path"}}'`` or
with ``loopline demo`` (README command 1).
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.collect import collect_flow
from tasks.collect import CollectParameters, DatasetRef


class PipelineParameters(BaseModel):
    collect: CollectParameters = Field(..., description="What to collect.")


class PipelineResult(BaseModel):
    dataset: DatasetRef


@flow(name="loopline-pipeline")
def pipeline_flow(params: PipelineParameters) -> PipelineResult:
    """Collect (then, as later stages land: label, train, register, deploy, A/B test)."""
    dataset = collect_flow(params.collect)
    return PipelineResult(dataset=dataset)
