"""Hardware-aware defaults and the loader-bottleneck warning."""

import pytest
import torch

from loopline.training.hardware import defaults_for_cuda, detect_hardware, loader_bottleneck_warning
from loopline.training.search import SearchSpace

pytestmark = pytest.mark.unit


def test_cpu_defaults_keep_the_cores_for_training() -> None:
    hardware = detect_hardware("cpu")
    assert (hardware.device, hardware.num_workers, hardware.pin_memory, hardware.amp) == (
        "cpu",
        0,
        False,
        False,
    )


def test_gpu_defaults_scale_with_memory_and_cores() -> None:
    big, small = defaults_for_cuda(141, 16, "H200"), defaults_for_cuda(8, 2)
    assert big.batch_sizes == (128, 256) and big.num_workers == 8
    assert small.batch_sizes == (32, 64) and small.num_workers == 1
    assert big.pin_memory and big.amp and big.channels_last


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_names_the_fix() -> None:
    with pytest.raises(RuntimeError, match="k8s-gpu work pool"):
        detect_hardware("cuda")


def test_batch_sizes_come_from_the_device_unless_chosen() -> None:
    assert SearchSpace().for_batch_sizes((128, 256)).batch_sizes == [128, 256]
    assert SearchSpace(batch_sizes=[16]).for_batch_sizes((128, 256)).batch_sizes == [16]


def test_a_waiting_loader_is_called_out() -> None:
    assert loader_bottleneck_warning(0.1) is None
    warning = loader_bottleneck_warning(0.55)
    assert warning is not None and "55%" in warning and "loader workers" in warning
