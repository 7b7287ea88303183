"""Fixtures several integration modules share: a real MLflow server per module (its URL, also the
process's tracking URI) and the Kubernetes API stand-in with a client of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loopline.services.standalone import running_service
from tests.k8s_stub import FakeKubernetesApi, running_k8s_stub
from tests.platform import ROOT


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import mlflow

    with running_service("mlflow", tmp_path_factory.mktemp("mlflow"), ROOT) as (spec, _):
        mlflow.set_tracking_uri(spec.url)
        yield spec.url


@pytest.fixture
def stub() -> Iterator[FakeKubernetesApi]:
    with running_k8s_stub() as api:
        yield api


@pytest.fixture
def api_client(stub: FakeKubernetesApi) -> Iterator[Any]:
    from kubernetes import client

    with client.ApiClient(client.Configuration(host=stub.url)) as api_client:
        yield api_client
