"""Label Studio import throughput: bulk batches against one call per task, in one run, same server.

Starts a Label Studio server of its own (temporary home, free port), then imports N tasks (default
10,000) each with a validated pre-annotation, in batches (default 500 per call), and a sample (default
200) one call per task; prints tasks/s for both and the ratio.
Run: .venv/bin/python benchmarks/label_import.py [--tasks N] [--batch B] [--sample S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.predictions import classification_prediction, validate_predictions
from loopline.labeling.studio import LabelStudio
from loopline.services.credentials import label_studio_credentials
from loopline.services.standalone import running_service

LABELS = [str(d) for d in range(10)]


def make_tasks(n: int, prefix: str) -> list[dict]:  # type: ignore[type-arg]
    config = parse_label_config(render_label_config("classification", LABELS), "classification")
    tasks = []
    for i in range(n):
        prediction = classification_prediction(config, LABELS[i % 10], 0.5 + (i % 50) / 100, "bench-model")
        tasks.append(
            {
                "data": {
                    "image": f"/data/local-files/?d=images/{prefix}{i}.png",
                    "content_hash": f"{prefix}{i}",
                },
                "predictions": [prediction.as_dict()],
            }
        )
    validate_predictions(config, [(t["data"]["content_hash"], t["predictions"][0]) for t in tasks])
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_service("label-studio", Path(tmp), root) as (spec, settings),
    ):
        token = label_studio_credentials(settings).token.get_secret_value()
        config_xml = render_label_config("classification", LABELS)
        with LabelStudio(spec.url, token, timeout=300) as studio:
            bulk_project = studio.get_or_create_project("bench-bulk", "benchmark bulk", config_xml, 1)
            single_project = studio.get_or_create_project("bench-single", "benchmark single", config_xml, 1)
            bulk = make_tasks(args.tasks, "b")
            start = time.perf_counter()
            for i in range(0, len(bulk), args.batch):
                studio.import_tasks(bulk_project.id, bulk[i : i + args.batch])
            bulk_seconds = time.perf_counter() - start
            single = make_tasks(args.sample, "s")
            start = time.perf_counter()
            for one in single:
                studio.import_tasks(single_project.id, [one])
            single_seconds = time.perf_counter() - start
            assert studio.progress(bulk_project.id).tasks == args.tasks
    bulk_rate, single_rate = args.tasks / bulk_seconds, args.sample / single_seconds
    print(
        f"bulk, {args.batch} per call: {args.tasks:6d} tasks {bulk_seconds:7.2f} s {bulk_rate:8.0f} tasks/s"
    )
    print(f"one call per task:  {args.sample:6d} tasks {single_seconds:7.2f} s {single_rate:8.0f} tasks/s")
    print(f"ratio bulk / single: {bulk_rate / single_rate:.1f}x")


if __name__ == "__main__":
    main()
