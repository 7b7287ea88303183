"""What the monitor measures on each image, the reference's and the served ones alike.

- ``image_statistics``: brightness (mean luminance, 0-255), contrast (its standard deviation),
  sharpness (variance of the Laplacian of the luminance), saturation (mean HSV saturation), width and
  height in pixels. Brightness, contrast, sharpness and saturation are measured on the image fitted into
  ``STATISTICS_SIDE`` pixels, so that large photos cost little and images of different sizes compare.
- ``model_logits``: the embedding. The champion's own logits (its ONNX ``logits`` output) on the shared
  serving preprocessing: what the served model makes of an input is the change that matters to its
  answers, it costs one inference per image on the model already in hand (the exported graph has no
  penultimate output), and it has one dimension per class, so few tests share the correction. Changes the
  model is blind to are what the image statistics are for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from PIL import Image

IMAGE_STATISTICS = ("brightness", "contrast", "sharpness", "saturation", "width", "height")
STATISTICS_SIDE = 128


def image_statistics(picture: Image.Image) -> NDArray[np.float64]:
    """``IMAGE_STATISTICS`` of one RGB image, in that order."""
    from PIL import Image as PILImage
    from scipy.ndimage import laplace

    width, height = picture.size
    small = picture.convert("RGB")
    if max(width, height) > STATISTICS_SIDE:
        small = small.copy()
        small.thumbnail((STATISTICS_SIDE, STATISTICS_SIDE), PILImage.Resampling.BILINEAR)
    luminance = np.asarray(small.convert("L"), dtype=np.float64)
    saturation = np.asarray(small.convert("HSV"), dtype=np.float64)[..., 1]
    return np.array(
        [
            luminance.mean(),
            luminance.std(),
            laplace(luminance).var(),
            saturation.mean(),
            float(width),
            float(height),
        ]
    )


def statistics_of(pictures: Sequence[Image.Image]) -> NDArray[np.float64]:
    """N x len(IMAGE_STATISTICS)."""
    if not pictures:
        return np.zeros((0, len(IMAGE_STATISTICS)))
    return np.stack([image_statistics(p) for p in pictures])


def model_logits(onnx: Path, pictures: Sequence[Image.Image], input_size: int) -> NDArray[np.float64]:
    """N x classes: the model's logits for each picture, preprocessed exactly as for serving."""
    import onnxruntime as ort

    from loopline.registry.evaluation import onnx_logits
    from loopline.serving.preprocess import preprocess_batch

    if not pictures:
        return np.zeros((0, 0))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    return np.asarray(onnx_logits(session, preprocess_batch(pictures, input_size)), dtype=np.float64)
