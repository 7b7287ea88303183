"""Trial checkpoints mirrored to a real S3 API (moto_server, signed requests): the default root follows an
s3:// data root, a trial stopped in one folder resumes in another from what the bucket holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from loopline.data.demo import labeled_digit_rows
from loopline.data.store import LocalStore
from loopline.settings import Settings
from loopline.training.checkpoint import LAST
from loopline.training.checkpoint_mirror import default_checkpoint_root, open_mirror
from loopline.training.data import LabeledImages, build_transform, check_labeled_rows
from loopline.training.engine import TrainConfig, fit, seed_everything
from loopline.training.models import build_model
from tests.integration.s3server import S3Server, s3_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as s3:
        s3.client().create_bucket(Bucket="lake")
        yield s3


def test_a_trial_resumes_in_another_pod_from_the_bucket(server: S3Server, tmp_path: Path) -> None:
    settings = Settings(
        data_root="s3://lake/loopline",
        s3_endpoint_url=server.endpoint,
        s3_access_key_id=server.access_key,
        s3_secret_access_key=server.secret_key,
    )
    root = default_checkpoint_root(settings)
    assert root == "s3://lake/loopline/checkpoints"
    mirror = open_mirror(root, "loopline-abc-123", settings)
    assert mirror is not None

    rows = labeled_digit_rows(LocalStore(tmp_path / "img"), 200, val=0.1, test=0.1)
    mapping = check_labeled_rows(rows)
    make = torch.utils.data.DataLoader
    train = make(
        LabeledImages([r for r in rows if r.split == "train"], mapping, build_transform(32, train=True)),
        batch_size=32,
        shuffle=True,
    )
    val = make(
        LabeledImages([r for r in rows if r.split == "val"], mapping, build_transform(32, train=False)),
        batch_size=64,
    )
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=1)
    seed_everything(config.seed, True)
    model = build_model("small_cnn", len(mapping.labels))
    fit(model, train, val, config, tmp_path / "pod-a" / "trial-4", stop_after=2, on_checkpoint=mirror.push)

    keys = server.client().list_objects_v2(Bucket="lake", Prefix="loopline/checkpoints/")["Contents"]
    assert [k["Key"] for k in keys] == [f"loopline/checkpoints/loopline-abc-123/trial-4/{LAST}"]
    other_pod = tmp_path / "pod-b" / "trial-4"
    assert mirror.pull(other_pod) == [LAST]
    resumed = fit(build_model("small_cnn", len(mapping.labels)), train, val, config, other_pod)
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
