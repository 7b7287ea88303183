"""A small flow for the watch test: two tasks, a subflow, a log line and a link artifact."""

import sys
import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run


@task
def first_step() -> int:
    get_run_logger().info("the first step says hello")
    return 1


@task
def second_step(x: int) -> int:
    create_link_artifact(key="somewhere", link="http://127.0.0.1:9/somewhere")
    return x + 1


@flow(name="inner-stage")
def inner_stage() -> int:
    return first_step()


@flow(name="watched")
def watched() -> int:
    print(flow_run.id, flush=True)
    time.sleep(3)  # the watcher is up before the steps finish
    return second_step(inner_stage())


if __name__ == "__main__":
    sys.exit(0 if watched() == 2 else 1)
