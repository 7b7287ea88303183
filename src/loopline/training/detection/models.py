"""Detectors: torchvision detection models by name, built fresh (``weights=None, weights_backbone=None``).

The demo images are small (96-128 px canvases holding 20-36 px digits), far below what the torchvision
defaults expect (800 px for RetinaNet). Each detector resizes every image to a fixed square inside the
model (``DETECTOR_SIZES``), chosen so the objects land on its anchors; with one internal size the ONNX
graph traced at one input size is right at every size (the demo's canvases are nearly square, so digits
keep their shape):

- ``fasterrcnn_mobilenet_v3_large_320_fpn``: 256 x 256: digits become about 40-96 px,
  on the builder's fixed anchors (32, 64, 128, 256, 512 px, ratios 0.5/1/2). A demo image holds a few
  objects, not COCO's dozens, so the second stage samples 128 proposals an image (not 512) from the
  RPN's best 500 (not 2000): the box head's cost per step falls about fourfold.
- ``ssdlite320_mobilenet_v3_large``: its fixed 320x320 input (the builder refuses another size); digits
  become 50-120 px against default boxes from 0.2 of the input (64 px) up.
- ``retinanet_resnet50_fpn``: 256 x 256 with its default anchors (32-512 px, three
  scales an octave), which cover 40-96 px digits from P3 up.

``num_classes`` counts the background: ``len(labels) + 1`` (label ``i`` in the mapping is class ``i + 1``).
"""

from __future__ import annotations

from typing import Any

DETECTOR_NAMES = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
    "retinanet_resnet50_fpn",
)
DETECTOR_SIZES = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": 256,
    "ssdlite320_mobilenet_v3_large": 320,
    "retinanet_resnet50_fpn": 256,
}

FASTERRCNN_SAMPLING = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "box_batch_size_per_image": 128,
}


def build_detector(name: str, num_classes: int, image_size: int | None = None) -> Any:
    """A freshly initialised torchvision detector (nothing downloaded).

    Args:
        name: one of ``DETECTOR_NAMES``.
        num_classes: object classes plus one for the background.
        image_size: the shorter side every image is resized to inside the model (default
            ``DETECTOR_SIZES[name]``; tests pass a small one to stay fast).
    """
    import torchvision

    if name not in DETECTOR_NAMES:
        raise ValueError(f"Unknown detector {name!r}. Valid detectors: {', '.join(DETECTOR_NAMES)}.")
    if num_classes < 2:
        raise ValueError(
            f"A detector needs num_classes >= 2 (the background and at least one label), got {num_classes}. "
            "To fix this, pass len(labels) + 1."
        )
    size = image_size or DETECTOR_SIZES[name]
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if name != "ssdlite320_mobilenet_v3_large":
        # every image resized to one square (as SSD does): the anchors' count is then the same for every
        # image, so the exported graph (traced at one size) is right at any input size
        kwargs |= {"min_size": size, "max_size": size, "fixed_size": (size, size)}
    if name == "fasterrcnn_mobilenet_v3_large_320_fpn":
        kwargs |= FASTERRCNN_SAMPLING
    model = torchvision.models.get_model(name, **kwargs)
    if name == "ssdlite320_mobilenet_v3_large" and image_size is not None:
        # its default boxes are fractions of the input, so another fixed size keeps them on the objects
        model.transform.min_size, model.transform.max_size = (size,), size
        model.transform.fixed_size = (size, size)
    return model
