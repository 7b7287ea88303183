"""The pipeline on an S3 data root (a moto server): two rounds, every stage reading and writing through
the data store. Collect stores images and manifests in the bucket, Label Studio serves them through its
S3 import storage, training and evaluation read them through the local image cache, round 2 scores the
bucket's images with the champion. Nothing lands in a local data folder."""

from pathlib import Path

import httpx
import pytest

from loopline.data.labeled import read_labeled_manifest
from loopline.data.store import S3Store
from loopline.labeling.studio import LabelStudio
from tests.e2e.test_pipeline import DIGITS, start_demo_annotator, start_pipeline, wait_for_state
from tests.integration.s3server import s3_server
from tests.platform import run, running_platform

pytestmark = pytest.mark.e2e


def test_two_rounds_on_an_s3_data_root(tmp_path: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    with s3_server(tmp_path) as s3:
        s3.client().create_bucket(Bucket="lake")
        s3_env = {
            "LOOPLINE_DATA_ROOT": "s3://lake/loopline",
            "LOOPLINE_S3_ENDPOINT_URL": s3.endpoint,
            "LOOPLINE_S3_ACCESS_KEY_ID": s3.access_key,
            "LOOPLINE_S3_SECRET_ACCESS_KEY": s3.secret_key,
        }
        with running_platform(home, s3_env) as env:
            assert run(["loopline", "deploy"], env).returncode == 0
            assert run(["loopline", "demo-data", str(home / "demo")], env).returncode == 0
            api = env["PREFECT_API_URL"]
            annotator = start_demo_annotator(home, env)
            try:
                for round_number, budget in ((1, 120), (2, 40)):
                    params = {
                        "collect": {"source": str(home / "demo" / f"round-{round_number}")},
                        "label": {
                            "labels": DIGITS,
                            "budget": budget,
                            "poll_seconds": 1,
                            "auto_approve": True,
                        },
                        "train": {"epochs": 12, "n_trials": 1, "experiment": "s3"},
                        "register": {"auto_approve": True},
                    }
                    run_id = start_pipeline(params, env)
                    wait_for_state(api, run_id, {"COMPLETED"}, timeout=600)
            finally:
                annotator.terminate()
                annotator.wait(timeout=30)

            assert not (home / "data").exists()  # nothing went to a local data root
            store = S3Store("s3://lake/loopline", s3.client())
            assert len(store.list_keys("manifests/")) == 2
            labeled = sorted(store.list_keys("labels/"))
            assert len(labeled) == 2
            rows = [read_labeled_manifest(store, Path(key).stem) for key in labeled]
            assert sorted(len(r) for r in rows) == [pytest.approx(120, abs=12), pytest.approx(160, abs=16)]
            assert all(r.stored_uri.startswith("s3://lake/loopline/images/") for rs in rows for r in rs)

            client = mlflow.MlflowClient(f"http://127.0.0.1:{env['LOOPLINE_MLFLOW_PORT']}")
            versions = sorted(
                (
                    client.get_model_version(v.name, v.version)
                    for v in client.search_model_versions("name = 'loopline-classifier'")
                ),
                key=lambda v: int(v.version),
            )
            assert [v.version for v in versions] == ["1", "2"]
            assert versions[0].tags["review.decision"] == "approved"
            # v2 was evaluated against v1 on the bucket's images (approved, or stopped by the gate)
            assert versions[1].tags["review.decision"] in {"approved", "gate_failed"}
            assert versions[1].tags["labeled_version"] in {Path(k).stem for k in labeled}

            token = (home / "secrets" / "label-studio-token").read_text().strip()
            ls = f"http://127.0.0.1:{env['LOOPLINE_LABEL_STUDIO_PORT']}"
            with LabelStudio(ls, token) as studio:
                projects = studio.request("GET", "/api/projects")["results"]
                newest = max(projects, key=lambda p: p["id"])
                tasks = studio.tasks_with_annotations(newest["id"])
            in_bucket = {r.content_hash for rs in rows for r in rs} | {
                Path(k).stem for k in store.list_keys("images/")
            }
            assert len(tasks) == 40 and all(t["data"]["content_hash"] in in_bucket for t in tasks)
            assert all(t["predictions"][0]["model_version"] == "loopline-classifier v1" for t in tasks)
            artifacts = {a["key"]: a for a in httpx.post(f"{api}/artifacts/latest/filter", json={}).json()}
            assert "label-selection" in artifacts and "model-evaluation" in artifacts
