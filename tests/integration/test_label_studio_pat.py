"""Loopline's Label Studio adapter against a server with legacy tokens off, as a team's server runs: a
personal access token made headless (login, then POST /api/token/) drives the pipeline's calls; a legacy
token is refused with the fix; access tokens that expire are refreshed.

One server start. Its access tokens live ACCESS_SECONDS (Label Studio's default is 5 minutes), through a
settings module that extends Label Studio's own (SIMPLE_JWT); LEEWAY keeps a token valid on the server a
moment after the client sees it expire, so a request in flight at that instant is not refused.
"""

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from loopline.errors import LabelStudioError
from loopline.labeling.access_tokens import create_personal_access_token
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.demo_annotator import annotate_project
from loopline.labeling.export import parse_classification_export
from loopline.labeling.studio import LabelStudio
from loopline.services.credentials import label_studio_credentials
from loopline.services.standalone import running_service
from tests.helpers import image_bytes
from tests.platform import ROOT

pytestmark = pytest.mark.integration

LABELS = ["cat", "dog"]
CONFIG_XML = render_label_config("classification", LABELS)
CONFIG = parse_label_config(CONFIG_XML, "classification")
ACCESS_SECONDS, LEEWAY = 3, 2
SETTINGS_MODULE = f"""
from datetime import timedelta
from label_studio.core.settings.base import *  # noqa: F403  (read back while the next line imports)
from label_studio.core.settings.label_studio import *  # noqa: F403
SIMPLE_JWT = {{"ACCESS_TOKEN_LIFETIME": timedelta(seconds={ACCESS_SECONDS}), "LEEWAY": {LEEWAY}}}
"""


@dataclass(frozen=True)
class Server:
    url: str
    data_root: str
    email: str
    password: SecretStr
    pat: str
    legacy: str  # the user's legacy token: valid, but legacy tokens are off


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ls-pat")
    site = home / "site"
    site.mkdir()
    (site / "loopline_short_jwt.py").write_text(SETTINGS_MODULE)
    env = {
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "false",
        "DJANGO_SETTINGS_MODULE": "loopline_short_jwt",
        "PYTHONPATH": str(site),
    }
    with running_service("label-studio", home, ROOT, env=env) as (spec, settings):
        creds = label_studio_credentials(settings)
        pat = create_personal_access_token(spec.url, creds.username, creds.password)
        yield Server(
            spec.url,
            settings.resolved_data_root,
            creds.username,
            creds.password,
            pat.get_secret_value(),
            creds.token.get_secret_value(),
        )


def test_the_pipeline_runs_on_a_personal_access_token(server: Server) -> None:
    images = Path(server.data_root) / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "0.png").write_bytes(image_bytes(0))
    with LabelStudio(server.url, server.pat) as studio:
        assert studio.token_kind == "personal access token" and server.pat not in repr(studio)
        assert studio.whoami()["email"] == server.email
        first = studio.get_or_create_project("key-pat", "pat project", CONFIG_XML, 2)
        again = studio.get_or_create_project("key-pat", "pat project", CONFIG_XML, 2)
        assert first.created and not again.created and first.id == again.id
        listed = studio.request("GET", "/api/projects", params={"page_size": 100})["results"]
        assert [p["id"] for p in listed if "key-pat" in (p.get("description") or "")] == [first.id]

        storage = studio.ensure_local_storage(first.id, str(images))
        assert studio.ensure_local_storage(first.id, str(images)) == storage
        tasks = [
            {"data": {"image": f"/data/local-files/?d=images/{i}.png", "content_hash": f"h{i}"}}
            for i in range(10)
        ]
        ids = studio.import_tasks(first.id, tasks)
        assert len(ids) == 10 and set(studio.task_hashes(first.id)) == {f"h{i}" for i in range(10)}
        assert studio.get_bytes("/data/local-files/?d=images/0.png") == image_bytes(0)  # served with Bearer

        truth = {f"h{i}": LABELS[i % 2] for i in range(10)}
        assert annotate_project(studio, first.id, CONFIG, truth, annotators=2, error_rate=0.0) == 20
        studio.request_annotations(first.id, {ids[0]: 3})
        assert studio.task_states(first.id, [ids[0]])[ids[0]].overlap == 3
        progress = studio.progress(first.id)
        assert (progress.tasks, progress.annotations) == (10, 20)

        export_id, data = studio.snapshot_export(first.id, "pat export")
        assert studio.snapshot_export(first.id, "pat export")[0] == export_id
        summary = parse_classification_export(data, CONFIG)
        assert {i.content_hash: i.label for i in summary.items} == truth
        assert [e["id"] for e in studio.exports(first.id)] == [export_id]
        downloaded = b"".join(studio.sdk.projects.exports.download(first.id, export_id, export_type="JSON"))
        assert studio.export_size(first.id, export_id) == len(downloaded)
        studio.delete_export(first.id, export_id)
        assert studio.exports(first.id) == []


def test_a_legacy_token_is_refused_and_the_error_says_how_to_make_a_personal_one(server: Server) -> None:
    with LabelStudio(server.url, server.legacy) as studio:
        assert studio.token_kind == "legacy token"
        with pytest.raises(LabelStudioError) as refused:
            studio.get_or_create_project("key-legacy", "legacy project", CONFIG_XML, 1)
    message = str(refused.value)
    assert server.url in message and "rejected the legacy token (401" in message
    assert "legacy token authentication has been disabled" in message  # Label Studio's own words
    assert "create a personal access token" in message and "LOOPLINE_LABEL_STUDIO_TOKEN" in message
    assert server.legacy not in message


def test_a_forged_personal_access_token_and_a_second_one_are_refused(server: Server) -> None:
    def part(claims: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    claims = {"token_type": "refresh", "exp": int(time.time()) + 3600, "jti": "x", "user_id": 1}
    forged = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{'x' * 43}"
    with LabelStudio(server.url, forged) as studio, pytest.raises(LabelStudioError) as refused:
        studio.whoami()
    message = str(refused.value)
    assert "rejected the personal access token (401" in message and "expired or been revoked" in message
    assert forged not in message
    with pytest.raises(LabelStudioError, match="already has a personal access token"):
        create_personal_access_token(server.url, server.email, server.password)


def test_an_expired_access_token_is_refreshed(server: Server) -> None:
    refreshed = httpx.post(f"{server.url}/api/token/refresh/", json={"refresh": server.pat})
    access = refreshed.json()["access"]
    with LabelStudio(server.url, server.pat) as studio:
        assert studio.whoami()["email"] == server.email  # the client holds an access token now
        time.sleep(ACCESS_SECONDS + LEEWAY + 1)
        bearer = {"Authorization": f"Bearer {access}"}
        assert httpx.get(f"{server.url}/api/current-user/whoami", headers=bearer).status_code == 401
        assert studio.whoami()["email"] == server.email  # its own expired too: it got a new one
