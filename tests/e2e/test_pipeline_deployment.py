"""Collect through `prefect deployment run` and a real worker, against `loopline services up`.

(The whole pipeline, collect → label → train, runs in test_pipeline.py.)
"""

import json
from pathlib import Path

import httpx
import pytest

from loopline.data.collect import collect
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from tests.platform import run, running_platform

pytestmark = pytest.mark.e2e


def latest_flow_run(api: str, flow_name: str) -> dict:  # type: ignore[type-arg]
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
    ).json()
    return runs[0]


def test_collect_deployment_collects_the_demo_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_platform(home) as env:
        deployed = run(["loopline", "deploy"], env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        demo = run(["loopline", "demo-data", str(home / "demo")], env)
        assert demo.returncode == 0, demo.stderr

        result = run(["prefect", "deployment", "run", "collect-images/local", "--watch"], env, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        api = env["PREFECT_API_URL"]
        flow_run = latest_flow_run(api, "collect-images")
        assert flow_run["state_type"] == "COMPLETED"
        assert flow_run["deployment_id"] is not None

        data = LocalStore(home / "data")
        manifests = sorted((home / "data" / "manifests").glob("*.jsonl"))
        assert len(manifests) == 1
        version = manifests[0].stem
        rows = read_manifest(data, version)
        truth = json.loads((home / "demo" / "ground_truth.json").read_text())
        assert {r.content_hash for r in rows} <= set(truth)  # only real digits, no corrupt files
        assert all(r.source_label is None for r in rows)  # the pipeline never sees the labels
        names = {Path(r.source_uri).name for r in rows}
        assert not names & {"empty.png", "truncated.png", "notes.png", "tiny.png", "banner.png"}
        assert not any(n.startswith("scan-") for n in names)

        # The same collection done directly gives the same version and writes nothing new.
        direct = collect(LocalFolderSource(home / "demo" / "round-1"), data)
        assert direct.version == version and not direct.manifest_written and direct.images_written == 0
        assert direct.quarantined == {
            "extreme_aspect_ratio": 1,
            "not_an_image": 1,
            "too_small": 1,
            "truncated": 1,
            "zero_byte": 1,
        }

        artifacts = httpx.post(f"{api}/artifacts/filter", json={}).json()
        keys = {a["key"] for a in artifacts}
        assert {"collect-counts", "collect-summary", "collect-progress"} <= keys
        summary = next(a for a in artifacts if a["key"] == "collect-summary")
        assert version in summary["data"]
