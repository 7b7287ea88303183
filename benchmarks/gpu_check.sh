#!/usr/bin/env bash
# A short (< 5 minutes) GPU check for a machine with CUDA: trains resnet18 with AMP and channels-last on
# synthetic 3x64x64 images for a few hundred steps, and prints images/s and peak GPU memory, next to the
# same loop in fp32 for comparison. Run from the repository root: bash benchmarks/gpu_check.sh [STEPS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
STEPS=${1:-300} "$PY" - <<'PYEOF'
import os
import time

import torch

from loopline.training.engine import TrainConfig, make_optimizer, make_scheduler, train_one_epoch
from loopline.training.models import build_model

assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
steps, batch = int(os.environ["STEPS"]), 256
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {steps} steps of {batch}")
images = torch.randn(steps * batch // 8, 3, 64, 64)
targets = torch.randint(0, 10, (len(images),))
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(images, targets), batch_size=batch, shuffle=True, pin_memory=True, drop_last=True
)
for amp in (True, False):
    config = TrainConfig(epochs=8, batch_size=batch, device="cuda", amp=amp, channels_last=amp, deterministic=False)
    model = build_model("resnet18", 10).to("cuda")
    if amp:
        model = model.to(memory_format=torch.channels_last)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loader))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    train_one_epoch(model, criterion, optimizer, scheduler, loader, config, scaler)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(7):
        _, wait = train_one_epoch(model, criterion, optimizer, scheduler, loader, config, scaler)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    seen = 7 * len(loader) * batch
    peak = torch.cuda.max_memory_allocated() / 2**30
    label = "AMP + channels-last" if amp else "fp32"
    print(f"{label:<20} {seen / seconds:9.0f} images/s  peak memory {peak:5.2f} GiB  data wait {wait:.0%}")
PYEOF
