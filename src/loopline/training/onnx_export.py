"""ONNX export (what the model server runs) with a parity check against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OnnxParity:
    max_abs_diff: float
    top1_agreement: float
    samples: int


def onnx_pip_requirements() -> list[str]:
    """What serving the ONNX model needs, pinned to this environment (never inferred: see
    benchmarks/register.py)."""
    import onnx
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__}
    return [f"{name}=={version}" for name, version in versions.items()]


def export_onnx(model: Any, input_size: int, path: Path) -> Path:
    """Export with a dynamic batch axis (input ``image``: N x 3 x S x S float32, output ``logits``)."""
    import torch

    model.eval().cpu()
    example = torch.zeros(1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def onnx_parity(model: Any, onnx_path: Path, batches: list[Any]) -> OnnxParity:
    """Max |Δ logits| and top-1 agreement between PyTorch and ONNX Runtime on the same inputs."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval().cpu()
    worst, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for images in batches:
            expected = model(images).numpy()
            got = session.run(["logits"], {"image": images.numpy().astype(np.float32)})[0]
            worst = max(worst, float(np.abs(expected - got).max()))
            agree += int((expected.argmax(1) == got.argmax(1)).sum())
            total += len(images)
    return OnnxParity(worst, agree / max(1, total), total)
