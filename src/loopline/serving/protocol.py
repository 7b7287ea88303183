"""The Open Inference Protocol v2 (KServe, Triton) as loopline's model server speaks it: typed request and
response models and the pure conversion of a request's tensor into the model's N x 3 x S x S input.

The model has one input, ``image``: FP32 already normalised (N x 3 x S x S), or UINT8 raw pixels
(N x S x S x 3 or N x 3 x S x S) that are scaled and normalised as ``preprocess`` does. The batch dimension
may be left out for one image; ``data`` may be nested or flat (row-major).

A detector (``loopline.detections``' contract) has one input, ``images``: one image of any size, FP32 RGB in
[0, 1] (1 x 3 x H x W) or UINT8 raw pixels (1 x H x W x 3 or 1 x 3 x H x W), and answers its tensors
``boxes`` (FP32 N x 4, x1 y1 x2 y2 in the input's pixels), ``labels`` (INT64 N, class index + 1) and
``scores`` (FP32 N), every box the model returned (no score threshold).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from loopline.detections import DETECTOR_INPUT, DETECTOR_OUTPUTS
from loopline.serving.preprocess import MEAN, STD

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
Datatype = Literal["FP32", "UINT8"]


class BadRequest(ValueError):
    """The request does not fit the protocol or the model; the message names the problem and the fix."""


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "INT64"] = "FP32"
    data: list[int] | list[float]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = "onnxruntime_onnx"
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def model_metadata(name: str, version: str, input_size: int, classes: int) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        versions=[version],
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, 3, input_size, input_size])],
        outputs=[TensorMetadata(name="logits", datatype="FP32", shape=[-1, classes])],
    )


def parse_request(body: bytes) -> InferenceRequest:
    """The request in ``body``; raises ``BadRequest`` naming what is malformed or missing."""
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise BadRequest(
                f"The body is not valid JSON ({first['msg']}). To fix this, send a v2 inference request: "
                '{"inputs": [{"name": "image", "shape": [1, 3, S, S], "datatype": "FP32", "data": [...]}]}'
            ) from exc
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequest(f"The inference request does not fit the v2 protocol: {problems}.") from exc


def requested_outputs(request: InferenceRequest) -> list[str]:
    """The output names the request asks for (default: logits); raises ``BadRequest`` for unknown ones."""
    if not request.outputs:
        return ["logits"]
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise BadRequest(f"Unknown output(s) {unknown}; this model's outputs are {list(OUTPUT_NAMES)}.")
    return names


def input_tensor(request: InferenceRequest, input_size: int) -> np.ndarray:
    """The request's ``image`` input as the model's N x 3 x S x S float32 batch."""
    formats = (
        f"Use FP32 (normalised, N x 3 x {input_size} x {input_size}) or UINT8 (raw pixels, N x {input_size} "
        f"x {input_size} x 3 or N x 3 x ...)."
    )
    tensor = _one_input(request, INPUT_NAME, "model", formats)
    shape = _with_batch(tensor.shape, tensor.datatype, input_size)
    values = _flat_values(tensor.data, tensor.shape, tensor.datatype)
    if tensor.datatype == "FP32":
        return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
    pixels = values.reshape(shape)
    if shape[-1] == 3 and shape[1] != 3:
        pixels = pixels.transpose(0, 3, 1, 2)
    scaled = pixels.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((scaled - MEAN) / STD, dtype=np.float32)


def _one_input(request: InferenceRequest, name: str, what: str, formats: str) -> RequestInput:
    """The request's one input, named ``name``, of a datatype the server converts."""
    if len(request.inputs) != 1 or request.inputs[0].name != name:
        given = [i.name for i in request.inputs]
        raise BadRequest(f"The {what} has one input, {name!r}; the request gives {given}.")
    tensor = request.inputs[0]
    if tensor.datatype not in ("FP32", "UINT8"):
        raise BadRequest(f"Datatype {tensor.datatype!r} is not supported. {formats}")
    return tensor


def _with_batch(shape: list[int], datatype: str, size: int) -> list[int]:
    full = [1, *shape] if len(shape) == 3 else list(shape)
    layouts = [[3, size, size]] + ([[size, size, 3]] if datatype == "UINT8" else [])
    if len(full) != 4 or full[0] < 1 or full[1:] not in layouts:
        wanted = " or ".join(f"[N, {', '.join(str(d) for d in layout)}]" for layout in layouts)
        raise BadRequest(
            f"Shape {shape} does not fit the model's input: a {datatype} {INPUT_NAME!r} must be {wanted} "
            f"(N >= 1; the batch dimension may be left out for one image)."
        )
    return full


def _flat_values(data: list[Any], shape: list[int], datatype: str) -> np.ndarray:
    try:
        values = np.asarray(data, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f"'data' must be numbers, flat or nested in equal-length lists ({type(exc).__name__}: {exc})."
        ) from exc
    expected = math.prod(shape)
    if values.size != expected:
        raise BadRequest(f"'data' holds {values.size} numbers but shape {shape} needs {expected}.")
    if not np.isfinite(values).all():
        raise BadRequest("'data' holds NaN or infinite values; send finite numbers.")
    if datatype == "UINT8" and (values.min() < 0 or values.max() > 255 or (values % 1).any()):
        raise BadRequest("UINT8 'data' must be whole numbers from 0 to 255 (raw pixel values).")
    return values


def response_outputs(logits: np.ndarray, probabilities: np.ndarray, names: list[str]) -> list[ResponseOutput]:
    tensors = {"logits": logits, "probabilities": probabilities}
    return [
        ResponseOutput(name=n, shape=list(tensors[n].shape), data=tensors[n].reshape(-1).tolist())
        for n in names
    ]


def detector_metadata(name: str, version: str) -> ModelMetadata:
    """A detector's tensors; -1 marks a dimension of any size (the image's height and width, the boxes)."""
    return ModelMetadata(
        name=name,
        versions=[version],
        inputs=[TensorMetadata(name=DETECTOR_INPUT, datatype="FP32", shape=[1, 3, -1, -1])],
        outputs=[
            TensorMetadata(name="boxes", datatype="FP32", shape=[-1, 4]),
            TensorMetadata(name="labels", datatype="INT64", shape=[-1]),
            TensorMetadata(name="scores", datatype="FP32", shape=[-1]),
        ],
    )


def detector_outputs(request: InferenceRequest) -> list[str]:
    """The detector outputs the request asks for (default: all three); ``BadRequest`` for unknown ones."""
    if not request.outputs:
        return list(DETECTOR_OUTPUTS)
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in DETECTOR_OUTPUTS]
    if unknown:
        raise BadRequest(
            f"Unknown output(s) {unknown}; this detector's outputs are {list(DETECTOR_OUTPUTS)}."
        )
    return names


def detector_input(request: InferenceRequest) -> np.ndarray:
    """The request's one image as the detector's 1 x 3 x H x W float32 input in [0, 1]."""
    example = "[1, 3, H, W] (FP32 in [0, 1]) or UINT8 [1, H, W, 3] / [1, 3, H, W] (raw pixels)"
    tensor = _one_input(request, DETECTOR_INPUT, "detector", f"Send {DETECTOR_INPUT!r} as {example}.")
    shape = [1, *tensor.shape] if len(tensor.shape) == 3 else list(tensor.shape)
    channels_last = tensor.datatype == "UINT8" and len(shape) == 4 and shape[3] == 3 and shape[1] != 3
    height, width = (shape[1], shape[2]) if channels_last else (shape[-2:] if len(shape) == 4 else (0, 0))
    if len(shape) == 4 and shape[0] > 1:
        raise BadRequest(
            f"Shape {tensor.shape} holds {shape[0]} images; a detector takes one image per request (its "
            f"batch size is 1). To fix this, send each image in its own request as {example}."
        )
    if len(shape) != 4 or shape[0] != 1 or (shape[1] != 3 and not channels_last) or min(height, width) < 1:
        raise BadRequest(
            f"Shape {tensor.shape} does not fit the detector's input: send {DETECTOR_INPUT!r} as {example} "
            "(the batch dimension may be left out)."
        )
    values = _flat_values(tensor.data, tensor.shape, tensor.datatype).reshape(shape)
    if channels_last:
        values = values.transpose(0, 3, 1, 2)
    if tensor.datatype == "UINT8":
        values = values / 255.0
    elif values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1:
        raise BadRequest(
            "FP32 'images' values must be RGB in [0, 1] (the detector normalises inside); to send raw pixels "
            "use UINT8."
        )
    return np.ascontiguousarray(values, dtype=np.float32)


def detector_response_outputs(tensors: dict[str, np.ndarray], names: list[str]) -> list[ResponseOutput]:
    return [
        ResponseOutput(
            name=n,
            shape=list(tensors[n].shape),
            datatype="INT64" if n == "labels" else "FP32",
            data=tensors[n].reshape(-1).tolist(),
        )
        for n in names
    ]
