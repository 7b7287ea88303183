"""Fixtures several integration modules share: a real MLflow server and a real Prefect server (one each per
pytest process; the MLflow URL is also the process's tracking URI), the Kubernetes API stand-in with a
client of it, and a real Docker engine (started when none answers) with a registry and the serving image
built from this checkout, once per session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loopline.deploy.images import BuiltImage, build_image
from loopline.services.standalone import running_service
from tests.docker_engine import docker_engine, ensure_base_image, image_registry
from tests.k8s_stub import FakeKubernetesApi, running_k8s_stub
from tests.platform import ROOT


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real MLflow server per pytest process (a start costs about 9 s of CPU); the modules keep apart by
    their own registered model and experiment names."""
    with running_service("mlflow", tmp_path_factory.mktemp("mlflow"), ROOT) as (spec, _):
        yield spec.url


@pytest.fixture(scope="module")
def tracking_uri(mlflow_server: str) -> str:
    """The shared MLflow server's URL, also the process's tracking URI (set again for every module, since a
    module with its own server may have moved it)."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server for flows run in the test process (``prefect_test_harness``), one per pytest
    process (a start costs about 16 s of CPU); its API URL. Modules keep apart by their own names (blocks,
    artifact keys, event names)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def stub() -> Iterator[FakeKubernetesApi]:
    with running_k8s_stub() as api:
        yield api


@pytest.fixture
def api_client(stub: FakeKubernetesApi) -> Iterator[Any]:
    from kubernetes import client

    with client.ApiClient(client.Configuration(host=stub.url)) as api_client:
        yield api_client


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    """A ``docker.DockerClient`` of a real engine; DOCKER_HOST points at it meanwhile."""
    import os

    import docker

    with docker_engine() as host:
        old = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = host
        try:
            yield docker.DockerClient(base_url=host)
        finally:
            if old is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = old


@pytest.fixture(scope="session")
def local_registry() -> Iterator[str]:
    with image_registry() as address:
        yield address


@pytest.fixture(scope="session")
def serving_image(engine: Any, local_registry: str) -> BuiltImage:
    """The serving image (model server and A/B router), built and pushed to ``local_registry``."""
    return build_image("serve", push=local_registry, base=ensure_base_image(engine))
