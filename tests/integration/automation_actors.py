"""What the automations test makes happen, each in its own process against PREFECT_API_URL:
``fail`` (a flow run that fails), ``wait`` (a run paused for a review nobody gives), ``emit EVENT MODEL``
(a loopline event about ``loopline.model.MODEL``)."""

import sys

from prefect import flow
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.flow_runs import pause_flow_run


@flow(name="doomed-step")
def doomed() -> None:
    raise RuntimeError("the labels could not be exported")


@flow(name="review-nobody-gives")
def waits() -> None:
    pause_flow_run(timeout=300, poll_interval=2, key="label-review-test")


def emit(event: str, model: str) -> None:
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"loopline.model.{model}", "prefect.resource.name": model},
        payload={"version": "7", "champion": "6", "reasons": ["error rate 4.1% > 2%", "p99 latency"]},
    )
    EventsWorker.drain_all()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "fail":
        doomed(return_state=True)
    elif command == "wait":
        waits()
    elif command == "emit":
        emit(sys.argv[2], sys.argv[3])
