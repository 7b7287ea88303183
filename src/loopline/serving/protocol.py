"""The Open Inference Protocol v2 (KServe, Triton) as loopline's model server speaks it: typed request and
response models and the pure conversion of a request's tensor into the model's N x 3 x S x S input.

The model has one input, ``image``: FP32 already normalised (N x 3 x S x S), or UINT8 raw pixels
(N x S x S x 3 or N x 3 x S x S) that are scaled and normalised as ``preprocess`` does. The batch dimension
may be left out for one image; ``data`` may be nested or flat (row-major).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

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
    datatype: Literal["FP32"] = "FP32"
    data: list[float]


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
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        given = [i.name for i in request.inputs]
        raise BadRequest(f"The model has one input, {INPUT_NAME!r}; the request gives {given}.")
    tensor = request.inputs[0]
    if tensor.datatype not in ("FP32", "UINT8"):
        raise BadRequest(
            f"Datatype {tensor.datatype!r} is not supported. Use FP32 (normalised, N x 3 x {input_size} x "
            f"{input_size}) or UINT8 (raw pixels, N x {input_size} x {input_size} x 3 or N x 3 x ...)."
        )
    shape = _with_batch(tensor.shape, tensor.datatype, input_size)
    values = _flat_values(tensor.data, tensor.shape, tensor.datatype)
    if tensor.datatype == "FP32":
        return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
    pixels = values.reshape(shape)
    if shape[-1] == 3 and shape[1] != 3:
        pixels = pixels.transpose(0, 3, 1, 2)
    scaled = pixels.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((scaled - MEAN) / STD, dtype=np.float32)


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
