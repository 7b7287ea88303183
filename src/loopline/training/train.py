"""Train a model from a labeled manifest, fully tracked in MLflow.

One parent run per training: dataset lineage as params/tags, one nested run per Optuna trial, then the
best trial's model evaluated on the frozen test split, exported to ONNX (parity checked and logged as a
metric), and logged with its curves, confusion matrix, per-class metrics, class mapping and state dict.
Rows with boxes train detectors instead (``loopline.training.detection.track``: COCO mAP on the test
split, per-class AP, the detector ONNX contract).
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopline.data.labeled import LabeledRow
from loopline.training.checkpoint_mirror import CheckpointMirror, default_checkpoint_root, open_mirror
from loopline.training.data import SPLITS, ClassMapping, check_labeled_rows, loader_factory
from loopline.training.hpo import BEST_WEIGHTS, Heartbeat, Pruner, StudyResult, run_study
from loopline.training.models import INPUT_SIZES, build_model
from loopline.training.onnx_export import export_onnx, onnx_parity, onnx_pip_requirements
from loopline.training.plots import confusion_matrix, per_class_metrics, plot_confusion, plot_curves
from loopline.training.search import SearchSpace, TaskType

ONNX_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TrainRequest:
    labeled_version: str
    dataset_version: str
    tracking_uri: str
    experiment: str
    storage: str  # Optuna RDB URL
    workdir: Path
    space: SearchSpace
    epochs: int = 8
    n_trials: int = 4
    pruner: Pruner = "median"
    seed: int = 0
    device: str = "cpu"
    lineage: dict[str, str] | None = None  # extra tags (export id, flow run id, …)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    num_workers: int = 0  # DataLoader workers (see loopline.training.hardware)
    pin_memory: bool = False
    # shared storage of the trial folders (s3://...), see loopline.training.checkpoint_mirror; None: the
    # default, <data root>/checkpoints when the data root is remote
    checkpoint_root: str | None = None
    task_type: TaskType | None = None  # None: from the rows (detection when they carry boxes)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    study_name: str
    best_trial: int
    best_params: dict[str, Any]
    val_accuracy: float
    test_accuracy: float
    onnx_max_abs_diff: float
    labels: tuple[str, ...]
    trials: list[dict[str, Any]]
    data_wait_share: float = 0.0  # of the best trial's step time, spent waiting for the loader
    reused: bool = False  # an earlier finished training of the same study, returned as it was
    # detection: val_accuracy and test_accuracy are NaN (a detector has no accuracy); its scores are these
    task_type: TaskType = "classification"
    val_map: float | None = None  # COCO mAP@[.5:.95] of the best trial on the validation split
    test_map: float | None = None
    test_map50: float | None = None


def task_type_of(rows: list[LabeledRow], requested: TaskType | None = None) -> TaskType:
    """The request's task type, else detection when the rows carry boxes, else classification."""
    if requested is not None:
        return requested
    return "detection" if rows and rows[0].boxes is not None else "classification"


def study_name_for(request: TrainRequest, task_type: TaskType = "classification") -> str:
    """One study per labeled version and training set-up: changing the search space (the part the task
    type uses), epochs, pruner or seed starts a new study instead of mixing answers to different
    questions."""
    setup = json.dumps(
        [request.space.for_task(task_type), request.epochs, request.pruner, request.seed], sort_keys=True
    )
    return f"loopline-{request.labeled_version[:16]}-{hashlib.sha256(setup.encode()).hexdigest()[:8]}"


def storage_without_password(url: str) -> str:
    """The Optuna storage URL as a run tag may show it: where the study lives, never its password."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:  # not a SQLAlchemy URL: show its scheme only
        return url.split("://", 1)[0] + "://…" if "://" in url else "(not shown)"


def find_finished(request: TrainRequest, study_name: str) -> TrainOutcome | None:
    """The outcome of a finished training of this study with as many trials, if one is tracked: a rerun
    returns it instead of logging the same model again."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(request.experiment)
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        f"tags.`optuna.study` = '{study_name}' and params.n_trials = '{request.n_trials}' "
        "and attributes.status = 'FINISHED' and metrics.onnx_parity_ok >= 0",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    metrics = run.data.metrics
    with tempfile.TemporaryDirectory() as tmp:
        trials = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path="trials.json", dst_path=tmp
                )
            ).read_text()
        )
        mapping = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path="class_mapping.json", dst_path=tmp
                )
            ).read_text()
        )
    best = int(run.data.params["best.trial"])
    detection = mapping.get("task_type") == "detection"
    nan = float("nan")
    return TrainOutcome(
        run_id=run.info.run_id,
        study_name=study_name,
        best_trial=best,
        best_params=next(t["params"] for t in trials if t["number"] == best),
        val_accuracy=nan if detection else metrics["best_val_accuracy"],
        test_accuracy=nan if detection else metrics["test_accuracy"],
        onnx_max_abs_diff=metrics["onnx_max_box_diff" if detection else "onnx_max_abs_diff"],
        data_wait_share=metrics.get("data_wait_share", 0.0),
        labels=tuple(mapping["labels"]),
        trials=trials,
        reused=True,
        task_type="detection" if detection else "classification",
        val_map=metrics.get("best_val_map"),
        test_map=metrics.get("test_map"),
        test_map50=metrics.get("test_map50"),
    )


def train_and_track(rows: list[LabeledRow], request: TrainRequest) -> TrainOutcome:
    """Run the study on ``rows`` and track it in MLflow (classification, or detection for rows with boxes
    or ``request.task_type="detection"``); a rerun of a finished study returns its outcome."""
    import mlflow
    import torch

    task_type = task_type_of(rows, request.task_type)
    if task_type == "detection":
        from loopline.training.detection.data import check_detection_rows, detection_loader_factory

        mapping = check_detection_rows(rows)
        loaders = detection_loader_factory(rows, mapping, request.num_workers, request.pin_memory)
    else:
        mapping = check_labeled_rows(rows)
        loaders = loader_factory(rows, mapping, request.num_workers, request.pin_memory)
    study_name = study_name_for(request, task_type)
    mlflow.set_tracking_uri(request.tracking_uri)
    mlflow.set_experiment(request.experiment)
    finished = find_finished(request, study_name)
    if finished is not None:
        return finished
    with mlflow.start_run(run_name=f"train {request.labeled_version[:8]}") as parent:
        mlflow.log_params(
            {
                "labeled_version": request.labeled_version,
                "dataset_version": request.dataset_version,
                "epochs": request.epochs,
                "n_trials": request.n_trials,
                "pruner": request.pruner,
                "seed": request.seed,
                "search_space": request.space.model_dump_json(exclude=SearchSpace.unused_by(task_type)),
            }
        )
        mlflow.set_tags(
            {
                "device": request.device,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "optuna.study": study_name,
                "optuna.storage": storage_without_password(request.storage),
                "task_type": task_type,
                **(request.lineage or {}),
            }
        )
        study = run_study(
            loaders=loaders,
            mapping=mapping,
            space=request.space,
            epochs=request.epochs,
            n_trials=request.n_trials,
            storage=request.storage,
            study_name=study_name,
            workdir=request.workdir,
            pruner=request.pruner,
            seed=request.seed,
            device=request.device,
            heartbeat=request.heartbeat,
            mirror=_mirror(request, study_name),
            task_type=task_type,
        )
        if task_type == "detection":
            from loopline.training.detection.track import evaluate_and_log_detector

            return evaluate_and_log_detector(study, rows, mapping, loaders, parent.info.run_id)
        outcome = _evaluate_and_log(study, rows, mapping, loaders, request, parent.info.run_id)
    return outcome


def _mirror(request: TrainRequest, study_name: str) -> CheckpointMirror | None:
    from loopline.settings import get_settings

    settings = get_settings()
    root = request.checkpoint_root or default_checkpoint_root(settings)
    return open_mirror(root, study_name, settings)


def _evaluate_and_log(
    study: StudyResult,
    rows: list[LabeledRow],
    mapping: ClassMapping,
    loaders: Any,
    request: TrainRequest,
    run_id: str,
) -> TrainOutcome:
    import mlflow
    import mlflow.onnx
    import onnx
    import torch

    params = study.best_params
    model = build_model(params["model"], len(mapping.labels))
    model.load_state_dict(torch.load(study.best_dir / BEST_WEIGHTS, weights_only=True))
    model.eval()
    size = INPUT_SIZES[params["model"]]
    test_loader = loaders(size, 256, "test")
    logits, targets = [], []
    with torch.inference_mode():
        for images, batch_targets in test_loader:
            logits.append(model(images))
            targets.append(batch_targets)
    predicted = torch.cat(logits).argmax(1).numpy()
    truth = torch.cat(targets).numpy()
    test_accuracy = float((predicted == truth).mean())
    history = study.best_history
    wait_share = sum(m.data_wait_share for m in history) / len(history) if history else 0.0
    matrix = confusion_matrix(truth, predicted, len(mapping.labels))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx_path = export_onnx(model, size, folder / "model.onnx")
        parity = onnx_parity(model, onnx_path, [images for images, _ in test_loader])
        if study.best_history:
            plot_curves(study.best_history, folder / "learning_curves.png")
        plot_confusion(matrix, mapping.labels, folder / "confusion_matrix.png")
        (folder / "per_class_metrics.json").write_text(
            json.dumps(per_class_metrics(matrix, mapping.labels), indent=1)
        )
        (folder / "class_mapping.json").write_text(
            json.dumps({"labels": list(mapping.labels), "input_size": size})
        )
        (folder / "trials.json").write_text(json.dumps([asdict(t) for t in study.trials], indent=1))
        splits = {name: sorted(r.content_hash for r in rows if r.split == name) for name in SPLITS}
        (folder / "splits.json").write_text(json.dumps(splits))  # the register gate checks for leaks
        torch.save(
            {"model": model.state_dict(), "params": params, "labels": list(mapping.labels)},
            folder / "state_dict.pt",
        )
        for name in (
            "learning_curves.png",
            "confusion_matrix.png",
            "per_class_metrics.json",
            "class_mapping.json",
            "trials.json",
            "splits.json",
            "state_dict.pt",
        ):
            if (folder / name).exists():
                mlflow.log_artifact(str(folder / name))
        mlflow.log_params({f"best.{k}": v for k, v in params.items()} | {"best.trial": study.best_number})
        mlflow.log_metrics(
            {
                "best_val_accuracy": study.best_value,
                "test_accuracy": test_accuracy,
                "onnx_max_abs_diff": parity.max_abs_diff,
                "onnx_top1_agreement": parity.top1_agreement,
                "onnx_parity_ok": float(parity.max_abs_diff <= ONNX_TOLERANCE),
                "data_wait_share": wait_share,
            }
        )
        example = np.zeros((1, 3, size, size), dtype=np.float32)
        import onnxruntime

        # The providers this onnxruntime build has (CUDA first where it exists): MLflow's default lists
        # CUDA everywhere and warns on every CPU-only load. loopline's own server picks providers itself.
        available = onnxruntime.get_available_providers()
        mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            input_example=example,
            pip_requirements=onnx_pip_requirements(),
            onnx_execution_providers=[
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
            ],
        )
    return TrainOutcome(
        run_id=run_id,
        study_name=study.study_name,
        best_trial=study.best_number,
        best_params=params,
        val_accuracy=study.best_value,
        test_accuracy=test_accuracy,
        onnx_max_abs_diff=parity.max_abs_diff,
        data_wait_share=wait_share,
        labels=mapping.labels,
        trials=[asdict(t) for t in study.trials],
    )
