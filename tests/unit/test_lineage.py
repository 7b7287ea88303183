"""`loopline lineage`: the walk over fake readers (whole chains, every broken link), the query forms, the
text and JSON a user reads, and the real readers' answers when what they read is missing or damaged."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loopline.data.labeled import AnnotationRecord, LabeledRow, write_labeled_manifest
from loopline.data.manifest import ManifestRow, write_manifest
from loopline.data.store import LocalStore
from loopline.lineage import (
    NOT_REGISTERED,
    LineageError,
    LinkBroken,
    ModelVersion,
    Query,
    Readers,
    ServedRequest,
    TrainingRun,
    parse_query,
    trace,
)
from loopline.lineage_readers import DataRootManifests, MlflowRegistry, StoreEvents
from loopline.lineage_render import render_lineage
from loopline.settings import Settings
from loopline.training.train import storage_without_password

pytestmark = pytest.mark.unit

ALICE, BOB, CAROL = 2, 3, 4


def ann(who: int, label: str) -> AnnotationRecord:
    return AnnotationRecord(annotation_id=who * 100, annotator=who, label=label, created_at=None)


def labeled(
    h: str, label: str, dataset: str, project: int, export: int, *annotations: AnnotationRecord
) -> LabeledRow:
    return LabeledRow(h, f"/data/images/{h}.png", label, "train", dataset, project, export, 7, annotations)


# round 1 (project 1, export 5, dataset d1): alice and bob (carol breaks a tie);
# round 2 (project 2, export 9, dataset d2): bob and carol
ROWS = [
    labeled("aa", "cat", "d1", 1, 5, ann(ALICE, "cat"), ann(BOB, "cat")),
    labeled("bb", "dog", "d1", 1, 5, ann(ALICE, "dog"), ann(BOB, "dog")),
    labeled("cc", "dog", "d1", 1, 5, ann(ALICE, "cat"), ann(BOB, "dog"), ann(CAROL, "dog")),
    labeled("dd", "cat", "d2", 2, 9, ann(BOB, "cat"), ann(CAROL, "cat")),
]
MANIFESTS = {
    "d1": [
        ManifestRow(h, f"/incoming/round1/{h}.png", f"/data/images/{h}.png", 8, 8, "PNG", None, None)
        for h in ("aa", "bb", "cc", "zz")  # zz: collected, never labeled
    ],
    "d2": [ManifestRow("dd", "s3://bucket/round2/dd.png", "/data/images/dd.png", 8, 8, "PNG", None, None)],
}
TAGS = {
    "labeled_version": "lv1",
    "dataset_version": "d2",
    "data_root": "/data",
    "label_studio.project_id": "2",
    "label_studio.export_id": "9",
    "labels.alpha": "0.8123",
    "review.decision": "approved",
    "review.reviewer": "dana",
}
VERSION = ModelVersion("digits", "3", ("champion",), "run9", "runs:/run9/model", "2026-11-01", TAGS)
RUN = TrainingRun(
    "run9",
    "train lv1",
    "1",
    "FINISHED",
    {"labeled_version": "lv1", "n_trials": "4", "best.trial": "2", "best.lr": "0.01"},
    {"test_accuracy": 0.93},
    {"optuna.study": "loopline-lv1-abc", "optuna.storage": "sqlite:////h/optuna.db"},
)
REQUEST = ServedRequest(
    "req-1", "2026-11-02T10:00:00+00:00", "exp1", "digits", "challenger", "3", 200, 4.2, "cat", 0.97, False
)


@dataclass
class Fakes:
    """Readers over dicts; a name in ``down`` raises ``LinkBroken`` as a server that does not answer."""

    requests: dict[str, ServedRequest] = field(default_factory=lambda: {"req-1": REQUEST})
    versions: dict[tuple[str, str], ModelVersion] = field(default_factory=lambda: {("digits", "3"): VERSION})
    aliases: dict[tuple[str, str], str] = field(default_factory=lambda: {("digits", "champion"): "3"})
    runs: dict[str, TrainingRun] = field(default_factory=lambda: {"run9": RUN})
    labels: dict[str, list[LabeledRow]] = field(default_factory=lambda: {"lv1": ROWS})
    manifests: dict[str, list[ManifestRow]] = field(default_factory=lambda: dict(MANIFESTS))
    people: dict[int, str] = field(default_factory=lambda: {ALICE: "alice@x", BOB: "bob@x", CAROL: "carol@x"})
    down: set[str] = field(default_factory=set)

    def _check(self, what: str) -> None:
        if what in self.down:
            raise LinkBroken(f"{what} does not answer")

    def served_request(self, request_id: str) -> ServedRequest | None:
        self._check("events")
        return self.requests.get(request_id)

    def model_version(self, name: str, version: str) -> ModelVersion | None:
        self._check("mlflow")
        return self.versions.get((name, version))

    def aliased_version(self, name: str, alias: str) -> ModelVersion | None:
        self._check("mlflow")
        version = self.aliases.get((name, alias))
        return None if version is None else self.versions[(name, version)]

    def training_run(self, run_id: str) -> TrainingRun:
        self._check("mlflow-runs")
        if run_id not in self.runs:
            raise LinkBroken(f"the training run {run_id} is gone")
        return self.runs[run_id]

    def labeled_rows(self, root: str, version: str) -> tuple[str, list[LabeledRow]]:
        assert root == "/data"  # the data root the model's tags name
        if version not in self.labels:
            raise LinkBroken(f"the labeled manifest {root}/labels/{version}.jsonl is gone")
        return f"{root}/labels/{version}.jsonl", self.labels[version]

    def dataset_rows(self, root: str, version: str) -> tuple[str, list[ManifestRow]]:
        if version not in self.manifests:
            raise LinkBroken(f"the dataset manifest {root}/manifests/{version}.jsonl is gone")
        return f"{root}/manifests/{version}.jsonl", self.manifests[version]

    def names(self) -> dict[int, str]:
        self._check("label-studio")
        return self.people

    def readers(self) -> Readers:
        return Readers(self, self, self, self, data_root="/default-root", label_studio_url="http://ls:8080")


def test_query_forms() -> None:
    assert parse_query("digits@champion") == Query("alias", "digits@champion", "digits", "champion")
    assert parse_query("my.model-1/12") == Query("version", "my.model-1/12", "my.model-1", "12")
    assert parse_query("7", default_model="digits") == Query("version", "7", "digits", "7")
    assert parse_query("3f2a9c") == Query("request", "3f2a9c", ref="3f2a9c")
    assert parse_query("request:42") == Query("request", "request:42", ref="42")  # a numeric request id
    with pytest.raises(LineageError, match="version must be a number"):
        parse_query("digits/champion")
    with pytest.raises(LineageError, match="Examples"):
        parse_query("  ")


def test_a_request_leads_to_the_labels_the_people_and_the_images() -> None:
    found = trace(parse_query("req-1"), Fakes().readers())

    assert found.complete and found.broken == ()
    assert found.request == REQUEST
    assert found.model == VERSION and found.training == RUN
    labels = found.labels
    assert labels is not None and labels.version == "lv1" and labels.images == 4
    assert labels.classes == {"cat": 2, "dog": 2} and labels.alpha_at_gate == pytest.approx(0.8123)
    assert labels.alpha is not None and 0 < labels.alpha < 1  # alice disagreed once
    who = {a.user_id: (a.name, a.annotations, a.agree) for a in labels.annotators}
    assert who == {ALICE: ("alice@x", 3, 2), BOB: ("bob@x", 4, 4), CAROL: ("carol@x", 2, 2)}
    assert [(r.project_id, r.export_id, r.dataset_version, r.images) for r in found.label_studio] == [
        (1, 5, "d1", 3),
        (2, 9, "d2", 1),
    ]
    assert found.label_studio[0].project_url == "http://ls:8080/projects/1"
    d1, d2 = found.datasets
    assert (d1.version, d1.images, d1.trained_on, d1.sources) == ("d1", 4, 3, {"/incoming/round1": 3})
    assert d2.sources == {"s3://bucket/round2": 1}
    sources = {i.content_hash: i.source_uri for i in found.images}
    assert sources == {
        "aa": "/incoming/round1/aa.png",
        "bb": "/incoming/round1/bb.png",
        "cc": "/incoming/round1/cc.png",
        "dd": "s3://bucket/round2/dd.png",
    }
    assert next(i for i in found.images if i.content_hash == "cc").annotators == (ALICE, BOB, CAROL)


def test_the_text_answers_which_labels_and_whose() -> None:
    text = "\n".join(render_lineage(trace(parse_query("req-1"), Fakes().readers()), images_shown=2))

    assert "INCOMPLETE" not in text and "BROKEN" not in text
    assert "answered by digits v3: predicted 'cat' (0.970)" in text
    assert "digits v3 @champion" in text and "review: approved by dana" in text
    assert "Optuna study loopline-lv1-abc: best trial 2 of 4: lr=0.01" in text
    assert "labeled manifest lv1: 4 images (/data/labels/lv1.jsonl)" in text
    assert "0.812 at the label stage's gate" in text
    assert "user 2 (alice@x): 3 annotations, 67% agree with the final label" in text
    assert "project 2, export 9: 1 images of dataset d2 (http://ls:8080/projects/2)" in text
    assert "3 collected from /incoming/round1" in text
    assert "... 2 more (--json lists all)" in text


def test_the_json_holds_the_whole_chain() -> None:
    data = json.loads(json.dumps(trace(parse_query("digits@champion"), Fakes().readers()).to_json()))

    assert data["complete"] is True and data["request"] is None
    assert data["model"]["version"] == "3" and data["training"]["tags"]["optuna.study"] == "loopline-lv1-abc"
    assert len(data["images"]) == 4 and data["labels"]["annotators"][0]["name"] == "bob@x"


def test_mlflow_down_after_the_request_gives_the_request_and_where_it_broke() -> None:
    found = trace(parse_query("req-1"), Fakes(down={"mlflow"}).readers())

    assert not found.complete and found.request == REQUEST and found.model is None
    assert [(b.step, b.why) for b in found.broken] == [("model", "mlflow does not answer")]
    text = render_lineage(found)
    assert text[0].endswith("(INCOMPLETE: see BROKEN)")
    assert "model        BROKEN: mlflow does not answer" in text


def test_a_deleted_labeled_manifest_still_names_the_project_export_and_dataset() -> None:
    found = trace(parse_query("digits/3"), Fakes(labels={}).readers())

    assert [b.step for b in found.broken] == ["labels", "images"]
    assert "labels/lv1.jsonl is gone" in found.broken[0].why
    assert [(r.project_id, r.export_id, r.dataset_version, r.images) for r in found.label_studio] == [
        (2, 9, "d2", None)
    ]
    assert [d.version for d in found.datasets] == ["d2"] and found.training == RUN
    assert "images unknown" in "\n".join(render_lineage(found))


def test_a_deleted_dataset_manifest_and_a_deleted_run_are_named_and_the_rest_is_walked() -> None:
    found = trace(parse_query("digits/3"), Fakes(manifests={"d2": MANIFESTS["d2"]}, runs={}).readers())

    assert [(b.step, b.why) for b in found.broken] == [
        ("training", "the training run run9 is gone"),
        ("dataset", "the dataset manifest /data/manifests/d1.jsonl is gone"),
    ]
    assert found.labels is not None and [d.version for d in found.datasets] == ["d2"]
    assert {i.content_hash: i.source_uri for i in found.images}["aa"] is None


def test_label_studio_down_shows_annotators_by_id_without_breaking_the_chain() -> None:
    found = trace(parse_query("req-1"), Fakes(down={"label-studio"}).readers())

    assert found.complete and found.labels is not None
    assert all(a.name is None for a in found.labels.annotators)
    assert "label-studio does not answer" in found.labels.names_note


def test_a_version_registered_without_lineage_tags_is_named() -> None:
    bare = ModelVersion("digits", "1", (), "", "", "", {})
    found = trace(parse_query("digits/1"), Fakes(versions={("digits", "1"): bare}, runs={}).readers())

    assert ("labels", f"digits v1 has no labeled_version tag: {NOT_REGISTERED}") in [
        (b.step, b.why) for b in found.broken
    ]


def test_a_request_whose_version_left_the_registry_is_a_broken_link() -> None:
    found = trace(parse_query("req-1"), Fakes(versions={}).readers())
    assert [b.step for b in found.broken] == ["model"] and "not in the registry" in found.broken[0].why


@pytest.mark.parametrize(
    ("query", "fakes", "message"),
    [
        ("nope", Fakes(), "No routed request has id 'nope'"),
        ("req-1", Fakes(down={"events"}), "Cannot look up request 'req-1': events does not answer"),
        ("digits@challenger", Fakes(), "has no alias 'challenger'"),
        ("digits/8", Fakes(), "has no version 8"),
        ("digits@champion", Fakes(down={"mlflow"}), "Cannot look up digits@champion: mlflow does not answer"),
    ],
)
def test_a_start_that_cannot_be_found_is_a_named_error(query: str, fakes: Fakes, message: str) -> None:
    with pytest.raises(LineageError, match=message):
        trace(parse_query(query, "digits"), fakes.readers())


# --- the real readers, on what exists here --------------------------------------------------------------


def test_manifest_reader_names_a_deleted_or_damaged_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    version, _uri = write_labeled_manifest(store, ROWS)
    dataset, _, _ = write_manifest(store, MANIFESTS["d1"])
    reader = DataRootManifests(Settings())

    assert reader.labeled_rows(str(tmp_path), version)[1] == sorted(ROWS, key=lambda r: r.content_hash)
    assert [r.content_hash for r in reader.dataset_rows(str(tmp_path), dataset)[1]] == [
        "aa",
        "bb",
        "cc",
        "zz",
    ]
    with pytest.raises(LinkBroken, match=r"labeled manifest .*labels/0000\.jsonl is gone"):
        reader.labeled_rows(str(tmp_path), "0000")
    (tmp_path / "labels" / f"{version}.jsonl").write_text("{not json\n")
    with pytest.raises(LinkBroken, match=r"labeled manifest under .* is damaged: JSONDecodeError"):
        reader.labeled_rows(str(tmp_path), version)


def test_event_reader_creates_no_store_and_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(LinkBroken, match=r"there is no event store at .*events\.db"):
        StoreEvents(f"sqlite:///{tmp_path / 'events.db'}").served_request("x")
    assert not (tmp_path / "events.db").exists()


def test_registry_reader_fails_fast_on_a_server_that_does_not_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(LinkBroken, match=f"no MLflow tracking server answers at http://127.0.0.1:{port}"):
        MlflowRegistry(f"http://127.0.0.1:{port}").model_version("digits", "1")


def test_the_training_run_shows_where_the_study_lives_never_its_password() -> None:
    assert (
        storage_without_password("postgresql://ml:s3cret@db:5432/optuna")
        == "postgresql://ml:***@db:5432/optuna"
    )
    assert (
        storage_without_password("sqlite:////home/u/.loopline/optuna.db")
        == "sqlite:////home/u/.loopline/optuna.db"
    )
    assert "s3cret" not in storage_without_password("not a url://x:s3cret@y")
