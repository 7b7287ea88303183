"""The Label Studio client, pre-annotations, the demo annotator and export parsing against a real server."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopline.errors import LabelConfigMismatch, LabelStudioError, LabelStudioUnavailable, ProjectMissing
from loopline.labeling.agreement import agreement_gate, agreement_report
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.demo_annotator import annotate_project, has_open_tasks, listed_projects
from loopline.labeling.export import parse_classification_export
from loopline.labeling.predictions import classification_prediction, validate_predictions
from loopline.labeling.report import render_agreement_report
from loopline.labeling.studio import LabelStudio
from loopline.labeling.ties import more_annotators
from loopline.services.credentials import label_studio_credentials
from loopline.services.process import free_port
from loopline.services.standalone import running_service
from loopline.settings import Settings
from tests.helpers import image_bytes
from tests.integration.s3server import S3Server, s3_server
from tests.platform import ROOT

pytestmark = pytest.mark.integration

LABELS = ["cat", "dog", "eel"]
CONFIG_XML = render_label_config("classification", LABELS)
CONFIG = parse_label_config(CONFIG_XML, "classification")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[tuple[LabelStudio, Settings]]:
    home = tmp_path_factory.mktemp("ls")
    with running_service("label-studio", home, ROOT, s3_endpoint_url=s3.endpoint) as (spec, settings):
        token = label_studio_credentials(settings).token.get_secret_value()
        with LabelStudio(spec.url, token) as client:
            yield client, settings


@pytest.fixture
def studio(server: tuple[LabelStudio, Settings]) -> LabelStudio:
    return server[0]


def tasks(n: int, offset: int = 0) -> list[dict]:  # type: ignore[type-arg]
    return [
        {"data": {"image": f"/data/local-files/?d=images/{i}.png", "content_hash": f"h{i}"}}
        for i in range(offset, offset + n)
    ]


def test_projects_are_created_once(studio: LabelStudio) -> None:
    first = studio.get_or_create_project("key-once", "idempotent project", CONFIG_XML, 2)
    again = studio.get_or_create_project("key-once", "idempotent project", CONFIG_XML, 2)
    assert first.created and not again.created and first.id == again.id
    assert parse_label_config(again.label_config, "classification", LABELS).labels == tuple(LABELS)


def test_import_with_validated_predictions_and_hashes(server: tuple[LabelStudio, Settings]) -> None:
    studio, settings = server
    project = studio.get_or_create_project("key-import", "import project", CONFIG_XML, 1)
    images = f"{settings.resolved_data_root}/images"
    Path(images).mkdir(parents=True, exist_ok=True)
    storage = studio.ensure_local_storage(project.id, images)
    assert studio.ensure_local_storage(project.id, images) == storage  # found, not created again
    with pytest.raises(LabelStudioError, match="LOCAL_FILES_DOCUMENT_ROOT"):
        studio.ensure_local_storage(project.id, "/tmp")  # exists, but outside the document root
    batch = tasks(30)
    predictions = [
        classification_prediction(CONFIG, LABELS[i % 3], 0.8, "champion-1").as_dict() for i in range(30)
    ]
    validate_predictions(
        CONFIG, [(t["data"]["content_hash"], p) for t, p in zip(batch, predictions, strict=True)]
    )
    for t, p in zip(batch, predictions, strict=True):
        t["predictions"] = [p]
    ids = studio.import_tasks(project.id, batch)
    assert len(ids) == 30
    assert set(studio.task_hashes(project.id)) == {f"h{i}" for i in range(30)}
    stored = studio.tasks_with_annotations(project.id)
    assert all(t["predictions"][0]["model_version"] == "champion-1" for t in stored)
    wrong = classification_prediction(CONFIG, "wolf", 0.8, "champion-1").as_dict()
    with pytest.raises(LabelConfigMismatch, match="wolf"):
        validate_predictions(CONFIG, [("h99", wrong)])


def test_demo_annotator_export_and_agreement(studio: LabelStudio) -> None:
    project = studio.get_or_create_project("key-demo", "demo project", CONFIG_XML, 2)
    studio.import_tasks(project.id, tasks(60))
    truth = {f"h{i}": LABELS[i % 3] for i in range(60)}
    assert annotate_project(studio, project.id, CONFIG, truth, annotators=2, error_rate=0.1) == 120
    assert (
        annotate_project(studio, project.id, CONFIG, truth, annotators=2, error_rate=0.1) == 0
    )  # idempotent
    user = studio.ensure_user("person@loopline.local", "A person")
    task_ids = sorted(studio.task_hashes(project.id).values())
    studio.annotate(task_ids[0], [], completed_by=user, cancelled=True)  # a skip
    studio.annotate(
        task_ids[1],
        [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["wolf"]}}],
        completed_by=user,
    )
    progress = studio.progress(project.id)
    assert progress.finished == 60 and progress.skipped == 1
    export_id, data = studio.snapshot_export(project.id, "loopline test export")
    assert (
        studio.snapshot_export(project.id, "loopline test export")[0] == export_id
    )  # reused, not duplicated
    summary = parse_classification_export(data, CONFIG)
    assert summary.counts["skipped or cancelled"] == 1 and summary.unknown_labels == {"wolf": 1}
    assert summary.counts["labeled"] + summary.counts["ties (no label yet)"] == 60
    correct = sum(truth[item.content_hash] == item.label for item in summary.items)
    assert correct >= 0.95 * len(summary.items)
    report = agreement_report(summary.ratings, LABELS)
    assert report.items == 60 and 0.6 < (report.alpha or 0) < 1.0


def listed(studio: LabelStudio, project_id: int) -> dict[str, Any]:
    """The project as the demo annotator lists it (with the counters it reads)."""
    return next(p for p in listed_projects(studio) if p["id"] == project_id)


def test_a_tie_gets_a_third_annotator_and_a_tie_at_the_cap_is_listed(studio: LabelStudio) -> None:
    project = studio.get_or_create_project("key-ties", "ties project", CONFIG_XML, 2)
    ids = studio.import_tasks(project.id, tasks(3, offset=100))
    people = [studio.ensure_user(f"tie-{k}@loopline.local", "Tie", str(k)) for k in range(2)]
    for task_id, (first, second) in zip(ids, [("cat", "dog"), ("cat", "dog"), ("eel", "eel")], strict=True):
        for who, label in zip(people, (first, second), strict=True):
            choice = {"from_name": "label", "to_name": "image", "type": "choices"}
            studio.annotate(task_id, [{**choice, "value": {"choices": [label]}}], completed_by=who)
    assert studio.progress(project.id).finished == 3
    assert not has_open_tasks(listed(studio, project.id), 2)  # the demo annotator skips the project
    assert {"description", "label_config", "maximum_annotations"} <= listed(studio, project.id).keys()
    summary = parse_classification_export(studio.snapshot_export(project.id, "before")[1], CONFIG)
    asked = more_annotators(summary.ties, 3, {})
    assert asked == {ids[0]: 3, ids[1]: 3}

    studio.request_annotations(project.id, asked)
    assert studio.progress(project.id).finished == 1  # Label Studio sees both as needing an annotation
    assert has_open_tasks(listed(studio, project.id), 2) and not has_open_tasks({"task_number": 0}, 2)
    assert studio.request("GET", f"/api/projects/{project.id}/next")["id"] in asked  # and queues them
    truth = {"h100": "cat", "h101": "eel", "h102": "eel"}  # h101's third vote keeps it tied: 1-1-1
    assert annotate_project(studio, project.id, CONFIG, truth, annotators=2, error_rate=0.0) == 2
    states = studio.task_states(project.id, list(asked))
    assert {t: (x.annotations, x.overlap) for t, x in states.items()} == {t: (3, 3) for t in asked}
    assert studio.progress(project.id).finished == 3
    assert not has_open_tasks(listed(studio, project.id), 2) and has_open_tasks(listed(studio, project.id), 3)

    summary = parse_classification_export(studio.snapshot_export(project.id, "after")[1], CONFIG)
    assert {i.content_hash: i.label for i in summary.items} == {"h100": "cat", "h102": "eel"}
    [tie] = summary.ties
    assert (tie.task_id, tie.annotations, tie.votes) == (ids[1], 3, {"cat": 1, "dog": 1, "eel": 1})
    assert more_annotators(summary.ties, 3, asked) == {}  # at the cap: a person decides
    report = agreement_report(summary.ratings, LABELS)
    url = f"{studio.url}/projects/{project.id}"
    text = render_agreement_report(url, summary, report, agreement_gate(report, 0.6), len(asked))
    assert f"| [{ids[1]}]({url}/data?task={ids[1]}) | `h101` | 3 | cat: 1, dog: 1, eel: 1 |" in text


def test_errors_name_the_server_and_the_fix(studio: LabelStudio) -> None:
    with LabelStudio(studio.url, "wrong-token") as bad:
        with pytest.raises(LabelStudioError, match="LOOPLINE_LABEL_STUDIO_TOKEN"):
            bad.whoami()
    down = f"http://127.0.0.1:{free_port()}"
    with LabelStudio(down, "x") as nobody:
        with pytest.raises(LabelStudioUnavailable, match=down):
            nobody.whoami()
    project = studio.get_or_create_project("key-deleted", "deleted project", CONFIG_XML, 1)
    studio.request("DELETE", f"/api/projects/{project.id}")
    with pytest.raises(ProjectMissing, match=f"project {project.id} no longer exists"):
        studio.progress(project.id)
    with pytest.raises(LabelStudioError, match="label_config"):
        studio.get_or_create_project("key-bad", "bad config project", "<View>", 1)


def test_s3_import_storage_serves_images_from_an_s3_data_root(studio: LabelStudio, s3: S3Server) -> None:
    data = image_bytes(7)
    client = s3.client()
    client.create_bucket(Bucket="lake")
    client.put_object(Bucket="lake", Key="root/images/ab/x.png", Body=data)
    project = studio.get_or_create_project("key-s3", "s3 project", CONFIG_XML, 1)
    connection = {
        "endpoint_url": s3.endpoint,
        "region": "us-east-1",
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
    }
    storage = studio.ensure_s3_storage(project.id, "lake", "root/images", **connection)
    assert studio.ensure_s3_storage(project.id, "lake", "root/images", **connection) == storage
    [task_id] = studio.import_tasks(
        project.id, [{"data": {"image": "s3://lake/root/images/ab/x.png", "content_hash": "x"}}]
    )
    served = studio.request("GET", f"/api/tasks/{task_id}")["data"]["image"]
    assert not served.startswith("s3://")  # Label Studio rewrote it to a URL it resolves itself
    assert studio.get_bytes(served) == data
