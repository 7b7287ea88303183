"""Deploy stage: an approved registered version → a model server, gated by a smoke test.

Input: ``RegisteredModelRef`` (from register) + the labeled data's root + ``DeployParameters``. Output: a
``DeploymentRef`` (what serves where), or None when the version was refused by the gate or rejected by a
person. The first approved model serves as ``champion``; a later one replaces it after its smoke test
(``promote_directly``, the default until the A/B stage lands) or serves beside it as ``challenger``. A
version failing its smoke test fails the run and the server before keeps serving. Artifact:
``model-deployment``. Reruns start nothing twice. ``loopline deployments`` shows what serves where;
``loopline rollback [--to VERSION]`` goes back.
Run: ``prefect deployment run 'deploy-model/local' -p registered='{…}'``, or as the pipeline's stage.
"""

from __future__ import annotations

from prefect import flow

from loopline.settings import get_settings
from tasks.deploy import DeploymentRef, DeployParameters, deploy_model
from tasks.register import RegisteredModelRef
from tasks.train import tracking_uri


def deploy_stage(
    registered: RegisteredModelRef, data_root: str, params: DeployParameters
) -> DeploymentRef | None:
    """The deploy stage's task, run inside the calling flow."""
    return deploy_model(registered, tracking_uri(), data_root, params)


@flow(name="deploy-model")
def deploy_flow(
    registered: RegisteredModelRef, data_root: str | None = None, params: DeployParameters | None = None
) -> DeploymentRef | None:
    """Deploy an approved model version (data_root: where its labeled test images are; default:
    LOOPLINE_DATA_ROOT)."""
    return deploy_stage(
        registered, data_root or get_settings().resolved_data_root, params or DeployParameters()
    )
