"""Log and register a model: explicit pip requirements against MLflow's inferred requirements.

Both sides log the same ONNX model (the small CNN, as training logs it) to a real MLflow server started
for the run and register it as a new version; MLflow's inference loads the model in a subprocess to
capture what it imports, the explicit list does not. Sides alternate; the median of ``--repeats`` each.
Run: .venv/bin/python benchmarks/register.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx

from loopline.registry.registry import register_run
from loopline.services.standalone import running_service
from loopline.training.models import build_model
from loopline.training.onnx_export import export_onnx, onnx_pip_requirements

EXPLICIT = onnx_pip_requirements()


def log_and_register(model: onnx.ModelProto, client: mlflow.MlflowClient, explicit: bool) -> float:
    start = time.perf_counter()
    with mlflow.start_run() as run:
        mlflow.onnx.log_model(
            model,
            name="model",
            input_example=np.zeros((1, 3, 32, 32), dtype=np.float32),
            pip_requirements=EXPLICIT if explicit else None,
        )
    register_run(client, "bench-explicit" if explicit else "bench-inferred", run.info.run_id, {}, "benchmark")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model = onnx.load(str(export_onnx(build_model("small_cnn", 10), 32, tmp / "model.onnx")))
        with running_service("mlflow", tmp / "mlflow", Path.cwd()) as (spec, _):
            mlflow.set_tracking_uri(spec.url)
            mlflow.set_experiment("register-benchmark")
            client = mlflow.MlflowClient(spec.url)
            log_and_register(model, client, explicit=True)  # warm-up: first experiment/model creation
            times: dict[bool, list[float]] = {True: [], False: []}
            for repeat in range(args.repeats):
                for explicit in (repeat % 2 == 0, repeat % 2 == 1):
                    times[explicit].append(log_and_register(model, client, explicit))
    explicit, inferred = statistics.median(times[True]), statistics.median(times[False])
    print(f"log + register one ONNX model, median of {args.repeats} (real MLflow server, SQLite backend)")
    print(f"explicit pip requirements:  {explicit:6.2f} s")
    print(f"inferred pip requirements:  {inferred:6.2f} s")
    print(f"ratio explicit / inferred:  {explicit / inferred:6.3f}  ({inferred / explicit:.1f}x faster)")


if __name__ == "__main__":
    main()
