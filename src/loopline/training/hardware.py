"""Defaults from the machine: device, batch sizes, loader workers, pinned memory, AMP, channels-last.

CPU: the labeled images are decoded into memory once, so loader workers would only compete with the
training threads for the same cores: none. CUDA: workers feed the GPU (up to 8, leaving a core for the
main process), pinned memory for asynchronous copies, AMP and channels-last, and batch sizes by memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

DATA_WAIT_WARNING = 0.3  # above this share of step time spent waiting for data, the loader is the bottleneck


@dataclass(frozen=True)
class Hardware:
    device: str
    batch_sizes: tuple[int, ...]
    num_workers: int
    pin_memory: bool
    amp: bool
    channels_last: bool
    description: str


def detect_hardware(choice: Literal["auto", "cpu", "cuda"] = "auto") -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise RuntimeError(
            "device='cuda' was asked for but torch sees no CUDA device. To fix this, run on a GPU node (the "
            "k8s-gpu work pool) or use device='auto' or 'cpu'."
        )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if choice == "cpu" or not cuda:
        return Hardware("cpu", (32, 64), 0, False, False, False, f"CPU, {cpus} cores")
    properties = torch.cuda.get_device_properties(0)
    memory_gb = properties.total_memory / 2**30
    return defaults_for_cuda(memory_gb, cpus, properties.name)


def defaults_for_cuda(memory_gb: float, cpus: int, name: str = "GPU") -> Hardware:
    batch_sizes = (128, 256) if memory_gb >= 40 else (64, 128) if memory_gb >= 16 else (32, 64)
    workers = max(1, min(8, cpus - 1))
    return Hardware(
        "cuda", batch_sizes, workers, True, True, True, f"{name}, {memory_gb:.0f} GiB; {cpus} cores"
    )


def loader_bottleneck_warning(wait_share: float) -> str | None:
    if wait_share <= DATA_WAIT_WARNING:
        return None
    return (
        f"The data loader is the bottleneck: {wait_share:.0%} of each training step was spent waiting for "
        "data. To fix this, raise the loader workers (more CPU cores for the job), or use smaller images."
    )
