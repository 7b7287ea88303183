"""Models: torchvision classifiers by name, plus a small CNN for tiny images. Nothing is downloaded."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from loopline.errors import CheckpointError

TORCHVISION_MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")
MODEL_NAMES = ("small_cnn", *TORCHVISION_MODELS)
INPUT_SIZES = {"small_cnn": 32, "resnet18": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64}


def small_cnn(num_classes: int) -> Any:
    """Three conv blocks and a linear head: fast on CPU, good on 32x32 images."""
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 32),
        block(32, 64),
        block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )


def build_model(name: str, num_classes: int, weights_path: str | Path | None = None) -> Any:
    """A freshly initialised model (optionally loading a local state-dict file; never a hub download)."""
    import torch
    import torchvision

    if name not in MODEL_NAMES:
        raise ValueError(f"Unknown model {name!r}. Valid models: {', '.join(MODEL_NAMES)}.")
    model = (
        small_cnn(num_classes)
        if name == "small_cnn"
        else torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    )
    if weights_path is not None:
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise CheckpointError(
                f"Cannot load weights {weights_path}: {exc}. To fix this, pass a state-dict file saved "
                f"from a {name} model (or none)."
            ) from exc
        try:
            model.load_state_dict(state.get("model", state), strict=True)
        except RuntimeError as exc:  # lists the missing, unexpected and mis-shaped layers
            raise CheckpointError(
                f"The weights {weights_path} do not fit a {name} model with {num_classes} classes: {exc}. "
                f"To fix this, pass weights saved from a {name} model with {num_classes} classes (or none)."
            ) from exc
    return model
