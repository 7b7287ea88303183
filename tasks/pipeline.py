"""Pipeline guard tasks: does this run have work to do? They read the Prefect API (other pipeline runs) and
the MLflow registry (versions trained on a dataset version); ``loopline.round_guard`` decides."""

from __future__ import annotations

from prefect import get_client, task
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext

from loopline.round_guard import (
    IN_FLIGHT,
    PipelineRun,
    StopEarly,
    TrainedVersion,
    nothing_new,
    round_in_flight,
)
from tasks.collect import DatasetRef
from tasks.register import mlflow_client
from tasks.retry import retry_on_transient_io


def _pipeline_run(run: FlowRun) -> PipelineRun:
    return PipelineRun(
        id=str(run.id),
        name=run.name,
        state_type=run.state.type.value if run.state else "",
        state_name=(run.state.name or "") if run.state else "",
        created=run.created or run.expected_start_time or run.start_time,  # type: ignore[arg-type]
    )


@task(name="check-round-in-flight")
def check_round_in_flight() -> StopEarly | None:
    """Stop when another run of this flow is in the middle of a round (``loopline.round_guard``)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow is None:  # outside a flow run
        return None
    this = context.flow_run
    with get_client(sync_client=True) as client:
        others = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[context.flow.name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType(t) for t in sorted(IN_FLIGHT)])
                )
            ),
        )
        this = client.read_flow_run(this.id)  # `created` is the server's
    return round_in_flight(_pipeline_run(this), [_pipeline_run(run) for run in others])


@task(
    name="check-nothing-new",
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_on_transient_io,
)
def check_nothing_new(
    dataset: DatasetRef, source: str, model_name: str, tracking_uri: str
) -> StopEarly | None:
    """Stop when another run already trained a registered version of ``model_name`` on this dataset
    version (the lineage tag ``dataset_version`` of ``loopline.registry``)."""
    context = FlowRunContext.get()
    this_run_id = str(context.flow_run.id) if context and context.flow_run else ""
    client = mlflow_client(tracking_uri)
    found = client.search_model_versions(
        f"name = '{model_name}' and tags.dataset_version = '{dataset.version}'"
    )
    trained = [
        TrainedVersion(model_name, str(v.version), v.tags.get("prefect.flow_run_id", "")) for v in found
    ]
    return nothing_new(dataset.version, source, this_run_id, trained)
