"""The smoke test that gates every deployment: the server is ready, serves the version being deployed,
answers a few test images (from the labeled manifest's test split) with the logits the register stage's
evaluation computes for that version (ONNX Runtime on its ONNX file, inputs from ``preprocess_batch``:
argmax equal, logits within ``tolerance``) through the v2 infer route, and its median latency is under a
bound. A detector answers each image at its own size with the boxes, labels and scores its ONNX file gives
(the same boxes in the same order, coordinates within ``BOX_TOLERANCE`` pixels, scores within
``tolerance``). ``probe`` does the requests, ``judge_smoke`` (pure) turns what it saw into a
``GateVerdict``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.settings import Settings
from loopline.verdict import GateVerdict

if TYPE_CHECKING:
    from PIL import Image

TOLERANCE = 1e-4  # largest |served - expected| logit (a detector: score)
BOX_TOLERANCE = 1e-2  # largest |served - expected| box coordinate of a detector, in pixels
MIN_REQUESTS = 10  # latency samples: the cases are repeated until there are this many


@dataclass(frozen=True)
class SmokeCases:
    """Test images as the model sees them and the logits the register stage's evaluation gives them."""

    ids: tuple[str, ...]  # content hashes, to name a mismatch
    inputs: Any  # N x 3 x S x S float32; a detector: N arrays 3 x H x W (each image at its own size)
    expected: Any  # N x C float32; a detector: N arrays n x 6 (x1, y1, x2, y2, label, score)
    detector: bool = False


@dataclass(frozen=True)
class SmokeObservation:
    """What the server answered."""

    ready: bool
    served: tuple[str, ...]  # X-Model-Version of each answer
    logits: Any  # N x C (a detector: N arrays n x 6); None when an infer request failed
    latencies_ms: tuple[float, ...]
    errors: tuple[str, ...] = ()


def reference_cases(
    pictures: Sequence[Image.Image], ids: Sequence[str], onnx_path: Path, input_size: int
) -> SmokeCases:
    """The expected logits of ``pictures``, computed as the register stage's evaluation does."""
    import onnxruntime as ort

    from loopline.registry.evaluation import onnx_logits
    from loopline.serving.preprocess import preprocess_batch

    inputs = preprocess_batch(pictures, input_size)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return SmokeCases(tuple(ids), inputs, onnx_logits(session, inputs))


def detector_cases(pictures: Sequence[Image.Image], ids: Sequence[str], onnx_path: Path) -> SmokeCases:
    """The boxes, labels and scores the detector's ONNX file gives ``pictures``, each at its own size (as
    the register stage evaluates and the server serves it)."""
    import onnxruntime as ort

    from loopline.detections import DETECTOR_INPUT, DETECTOR_OUTPUTS, detector_input

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = [detector_input(picture)[0] for picture in pictures]
    expected = [
        _detections_table(*session.run(list(DETECTOR_OUTPUTS), {DETECTOR_INPUT: image[None]}))
        for image in inputs
    ]
    return SmokeCases(tuple(ids), inputs, expected, detector=True)


def _detections_table(boxes: Any, labels: Any, scores: Any) -> np.ndarray:
    """n x 6: x1, y1, x2, y2, label, score."""
    return np.concatenate(
        [
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(labels, dtype=np.float64).reshape(-1, 1),
            np.asarray(scores, dtype=np.float64).reshape(-1, 1),
        ],
        axis=1,
    )


def judge_smoke(
    name: str,
    version: str,
    cases: SmokeCases,
    seen: SmokeObservation,
    max_latency_ms: float,
    tolerance: float = TOLERANCE,
) -> GateVerdict:
    """Every way the served model differs from what was evaluated, at once."""
    violations: list[str] = []
    wanted = f"{name}/{version}"
    if not seen.ready:
        violations.append("the server never answered ready on /v2/health/ready")
    violations.extend(seen.errors)
    wrong = sorted(set(seen.served) - {wanted})
    if wrong:
        violations.append(f"the server answered as {wrong}, not {wanted!r}")
    if seen.logits is not None and cases.detector:
        violations += _detector_differences(cases, seen.logits, tolerance)
    elif seen.logits is not None:
        if seen.logits.shape != cases.expected.shape:
            violations.append(
                f"served logits have shape {list(seen.logits.shape)}, the evaluation's "
                f"{list(cases.expected.shape)}"
            )
        else:
            flipped = [
                cases.ids[i]
                for i in np.flatnonzero(seen.logits.argmax(axis=1) != cases.expected.argmax(axis=1))
            ]
            if flipped:
                violations.append(
                    f"{len(flipped)} of {len(cases.ids)} images predicted differently: {flipped}"
                )
            diff = float(np.abs(seen.logits - cases.expected).max()) if seen.logits.size else 0.0
            if diff > tolerance:
                violations.append(f"served logits differ from the evaluation's by {diff:.3g} > {tolerance}")
    elif not seen.errors:
        violations.append("no logits were served")
    notes: list[str] = []
    if seen.latencies_ms:
        median = statistics.median(seen.latencies_ms)
        notes.append(f"median latency {median:.1f} ms over {len(seen.latencies_ms)} requests")
        if median > max_latency_ms:
            violations.append(f"median latency {median:.1f} ms is over the bound of {max_latency_ms:g} ms")
    return GateVerdict(gate="smoke", violations=tuple(violations), notes=tuple(notes))


def _detector_differences(cases: SmokeCases, served: Sequence[np.ndarray], tolerance: float) -> list[str]:
    """Images whose served boxes differ from the evaluation's: count, labels, coordinates or scores."""
    differ = []
    for key, want, got in zip(cases.ids, cases.expected, served, strict=True):
        if want.shape != got.shape or not np.array_equal(want[:, 4], got[:, 4]):
            differ.append(f"{key}: {len(got)} boxes served, {len(want)} evaluated (or other labels)")
        elif want.size and (
            float(np.abs(want[:, :4] - got[:, :4]).max()) > BOX_TOLERANCE
            or float(np.abs(want[:, 5] - got[:, 5]).max()) > tolerance
        ):
            differ.append(f"{key}: boxes or scores differ beyond {BOX_TOLERANCE} px / {tolerance}")
    if differ:
        return [f"{len(differ)} of {len(cases.ids)} images detected differently: " + "; ".join(differ)]
    return []


def infer_body(row: np.ndarray, detector: bool = False) -> dict[str, object]:
    """A v2 infer request for one preprocessed image (3 x S x S), asking for the logits (a detector: one
    image 3 x H x W, asking for its boxes, labels and scores)."""
    from loopline.detections import DETECTOR_INPUT, DETECTOR_OUTPUTS
    from loopline.serving.protocol import INPUT_NAME

    name = DETECTOR_INPUT if detector else INPUT_NAME
    outputs = list(DETECTOR_OUTPUTS) if detector else ["logits"]
    return {
        "inputs": [
            {"name": name, "shape": [1, *row.shape], "datatype": "FP32", "data": row.ravel().tolist()}
        ],
        "outputs": [{"name": output} for output in outputs],
    }


def _answer(body: dict[str, Any], detector: bool) -> np.ndarray:
    """One image's answer: its logits (C), or a detector's n x 6 table."""
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in body["outputs"]}
    if detector:
        return _detections_table(outputs["boxes"], outputs["labels"], outputs["scores"])
    return np.asarray(outputs["logits"], dtype=np.float32)[0]


def probe(
    url: str, name: str, version: str, cases: SmokeCases, ready_timeout: float = 30.0
) -> SmokeObservation:
    """Ask the server at ``url``: ready?, then every case through ``/v2/models/NAME/versions/V/infer``
    (one image per request, repeated to ``MIN_REQUESTS`` for the latency)."""
    import httpx

    from loopline.serving.observe import VERSION_HEADER

    with httpx.Client(base_url=url, timeout=10.0) as http:
        ready, deadline = False, time.monotonic() + ready_timeout
        while not ready and time.monotonic() < deadline:
            try:
                ready = http.get("/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                pass
            if not ready:
                time.sleep(0.5)
        if not ready:
            return SmokeObservation(False, (), None, ())
        route = f"/v2/models/{name}/versions/{version}/infer"
        served: list[str] = []
        rows: list[np.ndarray] = []
        latencies: list[float] = []
        for i in range(max(MIN_REQUESTS, len(cases.ids))):
            k = i % len(cases.ids)
            started = time.perf_counter()
            try:
                answer = http.post(route, json=infer_body(cases.inputs[k], cases.detector))
            except httpx.HTTPError as exc:
                return SmokeObservation(True, tuple(served), None, (), (f"{route} failed: {exc}",))
            latencies.append((time.perf_counter() - started) * 1000)
            served.append(answer.headers.get(VERSION_HEADER, "?"))
            if answer.status_code != 200:
                error = f"{route} answered {answer.status_code}: {answer.text[:300]}"
                return SmokeObservation(True, tuple(served), None, tuple(latencies), (error,))
            if i < len(cases.ids):
                rows.append(_answer(answer.json(), cases.detector))
    answers = rows if cases.detector else np.stack(rows)
    return SmokeObservation(True, tuple(served), answers, tuple(latencies))


def smoke_test(url: str, name: str, version: str, cases: SmokeCases, max_latency_ms: float) -> GateVerdict:
    """Probe the server at ``url`` and judge it."""
    return judge_smoke(name, version, cases, probe(url, name, version, cases), max_latency_ms)


def registry_cases(
    client: Any, settings: Settings, name: str, data_root: str, images: int = 8
) -> Callable[[str], SmokeCases]:
    """``version → SmokeCases``: the first ``images`` test images of the labeled version the model
    version was trained on (its ``labeled_version`` tag) under ``data_root``, and their expected logits
    from the version's ONNX file (downloaded from its training run, on the server ``client`` talks to)."""

    def cases(version: str) -> SmokeCases:
        import tempfile

        from loopline.data.labeled import read_labeled_manifest
        from loopline.data.pixels import ImageReader
        from loopline.data.store import open_store
        from loopline.errors import RegistryError
        from loopline.registry.artifacts import fetch_model_files

        found = client.get_model_version(name, version)
        labeled = found.tags.get("labeled_version", "")
        rows = read_labeled_manifest(open_store(data_root, settings), labeled) if labeled else []
        test = [r for r in rows if r.split == "test"][:images]
        if not test:
            raise RegistryError(
                f"{name} v{version} names no labeled version with a test split under {data_root} "
                f"(labeled_version={labeled!r}), so it cannot be smoke-tested. To fix this, deploy a "
                "version registered by loopline's register stage, with LOOPLINE_DATA_ROOT set to its data."
            )
        reader = ImageReader(settings)
        with tempfile.TemporaryDirectory() as tmp:
            files = fetch_model_files(found.run_id, Path(tmp), client.tracking_uri)
            pictures = [reader.open(r.stored_uri) for r in test]
            if files.detector:
                return detector_cases(pictures, [r.content_hash for r in test], files.onnx)
            return reference_cases(pictures, [r.content_hash for r in test], files.onnx, files.input_size)

    return cases
