"""Render training results for people (pure functions)."""

from __future__ import annotations

from typing import Any

from loopline.training.train import TrainOutcome


def trial_rows(outcome: TrainOutcome) -> list[dict[str, Any]]:
    """One row per Optuna trial: number, state, value, epochs, MLflow run, and its hyper-parameters."""
    return [{k: v for k, v in t.items() if k != "params"} | t["params"] for t in outcome.trials]


def render_best_trial(outcome: TrainOutcome) -> str:
    lines = [
        f"# Best trial {outcome.best_trial}",
        "",
        *(
            [
                f"- validation mAP@[.5:.95] {outcome.val_map or 0.0:.3f}",
                f"- test mAP@[.5:.95] {outcome.test_map or 0.0:.3f}, mAP@.5 {outcome.test_map50 or 0.0:.3f}",
                f"- ONNX max |Δ box| {outcome.onnx_max_abs_diff:.2e} px",
            ]
            if outcome.task_type == "detection"
            else [
                f"- validation accuracy {outcome.val_accuracy:.3f}",
                f"- test accuracy {outcome.test_accuracy:.3f}",
                f"- ONNX max |Δ logits| {outcome.onnx_max_abs_diff:.2e}",
            ]
        ),
        f"- MLflow run `{outcome.run_id}`",
        *(f"- {k}: `{v}`" for k, v in outcome.best_params.items()),
    ]
    return "\n".join(lines) + "\n"
