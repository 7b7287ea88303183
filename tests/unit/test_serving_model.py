"""Model versions for the server: references, registry look-up, the download cache, and loading an ONNX
model with its checks (tiny ONNX graphs built here with onnx.helper; a fake MLflow client)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def linear_onnx(path: Path, size: int, classes: int, seed: int = 0) -> Path:
    """An ONNX classifier: the flattened N x 3 x S x S image times random weights → N x classes logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, (3 * size * size, classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, classes).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def version_folder(root: Path, size: int = 8, labels: tuple[str, ...] = ("cat", "dog", "owl")) -> Path:
    """A folder as ``fetch_version`` leaves it: model/model.onnx and class_mapping.json."""
    linear_onnx(root / "model" / "model.onnx", size, len(labels))
    (root / "class_mapping.json").write_text(json.dumps({"labels": list(labels), "input_size": size}))
    return root


# ---- references and the registry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "name", "selector", "is_version"),
    [("models:/digits@champion", "digits", "champion", False), ("models:/digits/3", "digits", "3", True)],
)
def test_model_ref_parses_both_forms(uri: str, name: str, selector: str, is_version: bool) -> None:
    from loopline.serving.model import ModelRef

    ref = ModelRef.parse(uri)
    assert (ref.name, ref.selector, ref.is_version, ref.uri) == (name, selector, is_version, uri)


@pytest.mark.parametrize("uri", ["digits", "models:/digits", "models:/digits/latest", "runs:/abc/model", ""])
def test_model_ref_refuses_other_strings_with_examples(uri: str) -> None:
    from loopline.errors import ModelNotFound
    from loopline.serving.model import ModelRef

    with pytest.raises(ModelNotFound, match="models:/digits@champion"):
        ModelRef.parse(uri)


class FakeVersion:
    def __init__(self, version: str, run_id: str = "run-1") -> None:
        self.version, self.run_id = version, run_id


class FakeModel:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases


class FakeClient:
    """The three MlflowClient calls resolve_version uses, over model → {version}, {alias: version}."""

    def __init__(self, versions: dict[str, set[str]], aliases: dict[str, dict[str, str]]) -> None:
        self.versions, self.aliases = versions, aliases

    def _missing(self, what: str) -> Exception:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        return MlflowException(f"{what} not found", error_code=RESOURCE_DOES_NOT_EXIST)

    def get_registered_model(self, name: str) -> FakeModel:
        if name not in self.versions:
            raise self._missing(f"Registered Model with name={name}")
        return FakeModel(self.aliases.get(name, {}))

    def get_model_version(self, name: str, version: str) -> FakeVersion:
        if version not in self.versions.get(name, set()):
            raise self._missing(f"Model Version (name={name}, version={version})")
        return FakeVersion(version)

    def get_model_version_by_alias(self, name: str, alias: str) -> FakeVersion:
        self.get_registered_model(name)
        if alias not in self.aliases.get(name, {}):
            raise self._missing(f"Alias {alias}")
        return FakeVersion(self.aliases[name][alias])


@pytest.fixture
def client() -> FakeClient:
    return FakeClient({"digits": {"1", "2", "3"}}, {"digits": {"champion": "2", "challenger": "3"}})


@pytest.mark.parametrize(("selector", "version"), [("champion", "2"), ("challenger", "3"), ("1", "1")])
def test_resolve_version_by_alias_or_number(client: FakeClient, selector: str, version: str) -> None:
    from loopline.serving.model import resolve_version

    assert resolve_version(client, "digits", selector) == version


@pytest.mark.parametrize(
    ("name", "selector", "message"),
    [
        ("digits", "staging", "no alias @staging: its aliases are @challenger → v3, @champion → v2"),
        ("digits", "9", "no version 9: its aliases are"),
        ("letters", "champion", "no registered model is named 'letters'"),
    ],
)
def test_resolve_version_names_what_is_missing_and_what_exists(
    client: FakeClient, name: str, selector: str, message: str
) -> None:
    from loopline.errors import ModelNotFound
    from loopline.serving.model import resolve_version

    with pytest.raises(ModelNotFound, match=message) as caught:
        resolve_version(client, name, selector)
    assert "To fix this" in str(caught.value)


# ---- the download cache ------------------------------------------------------------------------------


def test_fetch_version_downloads_once_into_name_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    import loopline.registry.artifacts as artifacts
    from loopline.serving.model import fetch_version, load_model

    downloads: list[str] = []

    def download(run_id: str, folder: Path, tracking_uri: str | None = None) -> None:
        downloads.append(run_id)
        version_folder(folder)
        assert not (tmp_path / "cache" / "digits" / "2").exists()  # nothing half-written in place

    monkeypatch.setattr(mlflow, "MlflowClient", lambda **_: FakeClient({"digits": {"2"}}, {}))
    monkeypatch.setattr(artifacts, "download_model_files", download)
    first = fetch_version("http://mlflow", "digits", "2", tmp_path / "cache")
    again = fetch_version("http://mlflow", "digits", "2", tmp_path / "cache")
    assert first == again == tmp_path / "cache" / "digits" / "2" and downloads == ["run-1"]
    assert load_model(first, "digits", "2", threads=1).labels == ("cat", "dog", "owl")
    assert [p.name for p in (tmp_path / "cache" / "digits").iterdir()] == ["2"]  # no temp folder left


def test_fetch_version_leaves_nothing_behind_when_the_download_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    import loopline.registry.artifacts as artifacts
    from loopline.errors import ModelLoadError, ModelNotFound, RegistryError
    from loopline.serving.model import fetch_version

    def download(run_id: str, folder: Path, tracking_uri: str | None = None) -> None:
        (folder / "model").mkdir()
        raise RegistryError("The training run run-1 has no readable 'model' artifact.")

    monkeypatch.setattr(mlflow, "MlflowClient", lambda **_: FakeClient({"digits": {"2"}}, {}))
    monkeypatch.setattr(artifacts, "download_model_files", download)
    with pytest.raises(ModelLoadError, match="Version 2 of 'digits' cannot be downloaded"):
        fetch_version("http://mlflow", "digits", "2", tmp_path)
    assert list((tmp_path / "digits").iterdir()) == []
    with pytest.raises(ModelNotFound, match="no version 7"):
        fetch_version("http://mlflow", "digits", "7", tmp_path)


# ---- loading -----------------------------------------------------------------------------------------


def test_load_model_answers_logits_per_label(tmp_path: Path) -> None:
    from loopline.serving.model import load_model

    model = load_model(version_folder(tmp_path), "digits", "4", threads=1)
    assert (model.name, model.version, model.input_size) == ("digits", "4", 8)
    assert (model.input_name, model.output_name) == ("image", "logits")
    batch = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    logits = model.predict(batch)
    assert logits.shape == (5, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(model.predict(batch[2:3])[0], logits[2], atol=1e-6)  # rows independent
    assert "CPUExecutionProvider" in model.session.get_providers()


@pytest.mark.parametrize(("cpus", "threads"), [(None, 1), (1, 1), (2, 1), (8, 7)])
def test_onnx_runtime_leaves_a_core_to_the_event_loop_and_does_not_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int | None, threads: int
) -> None:
    from loopline.serving import model as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: cpus)
    assert module.default_threads() == threads
    assert module.default_threads(workers=2) == max(1, (cpus or 1) // 2 - 1)  # 8 CPUs: 3 per worker
    options = module.load_model(version_folder(tmp_path), "digits", "4").session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_load_model_refuses_a_missing_onnx_file(tmp_path: Path) -> None:
    from loopline.errors import ModelLoadError
    from loopline.serving.model import load_model

    folder = version_folder(tmp_path)
    (folder / "model" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"No ONNX model in .*model\. To fix this"):
        load_model(folder, "digits", "4")


def test_load_model_refuses_a_corrupt_onnx_file(tmp_path: Path) -> None:
    from loopline.errors import ModelLoadError
    from loopline.serving.model import load_model

    folder = version_folder(tmp_path)
    (folder / "model" / "model.onnx").write_bytes(b"\x08\x07 not a protobuf at all")
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*model\.onnx.*To fix this, delete"):
        load_model(folder, "digits", "4")


def test_load_model_refuses_a_mapping_that_does_not_fit_the_model(tmp_path: Path) -> None:
    from loopline.errors import ModelLoadError
    from loopline.serving.model import load_model

    folder = version_folder(tmp_path, labels=("cat", "dog", "owl"))
    (folder / "class_mapping.json").write_text(json.dumps({"labels": ["cat", "dog"], "input_size": 8}))
    with pytest.raises(ModelLoadError, match=r"answers 3 outputs per image but class_mapping\.json lists 2"):
        load_model(folder, "digits", "4")
    (folder / "class_mapping.json").write_text(json.dumps({"labels": ["cat", "dog", "owl"], "input_size": 9}))
    with pytest.raises(ModelLoadError, match="fails on a 1 x 3 x 9 x 9 input"):
        load_model(folder, "digits", "4")


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"labels": ["a", "b"]})])
def test_load_model_refuses_a_missing_or_broken_class_mapping(tmp_path: Path, content: str | None) -> None:
    from loopline.errors import ModelLoadError
    from loopline.serving.model import load_model

    folder = version_folder(tmp_path)
    mapping = folder / "class_mapping.json"
    if content is None:
        mapping.unlink()
    else:
        mapping.write_text(content)
    with pytest.raises(ModelLoadError, match=r"class_mapping\.json (is missing|is not)"):
        load_model(folder, "digits", "4")


# ---- answers -------------------------------------------------------------------------------------------


def test_top_k_orders_by_probability_and_caps_k() -> None:
    from loopline.serving.model import softmax, top_k

    probabilities = softmax(np.array([[0.0, 2.0, 1.0]], dtype=np.float32))[0]
    assert probabilities.sum() == pytest.approx(1.0)
    best = top_k(probabilities, ("cat", "dog", "owl"), 2)
    assert [s.label for s in best] == ["dog", "owl"] and best[0].probability > best[1].probability
    assert [s.label for s in top_k(probabilities, ("cat", "dog", "owl"), 10)] == ["dog", "owl", "cat"]
    with pytest.raises(ValueError, match="k >= 1"):
        top_k(probabilities, ("cat", "dog", "owl"), 0)
    with pytest.raises(ValueError, match="3 probabilities"):
        top_k(probabilities[:2], ("cat", "dog", "owl"), 1)
