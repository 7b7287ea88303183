"""What the Label Studio ML backend needs besides the model: a task's image from Label Studio, the
project's label config checked against the served model, and the annotation counter that starts the next
round through a Prefect deployment (plain HTTP: the serving core never imports prefect).

Images: a task's ``data.image`` is what Label Studio serves to the browser: a path on Label Studio
(``/data/local-files/?d=...``, ``/data/upload/...``), a cloud URI (``s3://...``, resolved through
``/tasks/ID/resolve/``), or an absolute URL (fetched with the token only when it is Label Studio's own).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from loopline.errors import LabelConfigMismatch, LooplineError

if TYPE_CHECKING:
    from loopline.labeling.configs import LabelConfig, TaskType
    from loopline.serving.settings import ServingSettings

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED")


class TaskImageError(LooplineError):
    """A task's image cannot be fetched or read; the message names the task and the fix."""


def project_config(xml: object, task_type: TaskType, labels: tuple[str, ...]) -> LabelConfig:
    """The project's label config, checked against the served model's task type and labels.

    Raises:
        LabelConfigMismatch: no config, or one whose control, image or labels do not fit the model.
    """
    from loopline.labeling.configs import parse_label_config

    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigMismatch(
            "The request carries no label config ('label_config' for /predict, 'schema' for /setup). To fix "
            "this, connect the model from the project's settings (Label Studio sends its config)."
        )
    try:
        return parse_label_config(xml, task_type, expected_labels=list(labels))
    except LabelConfigMismatch as exc:
        raise LabelConfigMismatch(
            f"This model server's model is a {task_type} model with labels {list(labels)}, and the project's "
            f"label config does not match it: {exc} Connect the project to a model trained on its labels."
        ) from exc


@dataclass(frozen=True)
class StudioAccess:
    """Label Studio's URL and token (never logged; ``repr`` hides it)."""

    url: str
    token: str = field(repr=False)


def studio_access(settings: ServingSettings) -> StudioAccess:
    """The server's Label Studio: ``settings.label_studio_url``/``token``, else loopline's own
    (``LOOPLINE_LABEL_STUDIO_URL`` and its token, or the local platform's)."""
    from loopline.services.credentials import configured_label_studio_token
    from loopline.settings import get_settings

    loopline = get_settings()
    url = settings.label_studio_url or loopline.resolved_label_studio_url
    token = (
        settings.label_studio_token.get_secret_value()
        if settings.label_studio_token is not None
        else configured_label_studio_token(loopline)
    )
    if not token:
        raise TaskImageError(
            f"No Label Studio token to fetch task images from {url} with. To fix this, set "
            "LOOPLINE_SERVING_LABEL_STUDIO_TOKEN (or LOOPLINE_LABEL_STUDIO_TOKEN) to an API token."
        )
    return StudioAccess(url.rstrip("/"), token)


def image_path(task: dict[str, Any], studio_url: str) -> str | None:
    """Where on Label Studio the task's image is (a path with its query), or None for a URL elsewhere."""
    image = task.get("data", {}).get("image") if isinstance(task.get("data"), dict) else None
    if not isinstance(image, str) or not image:
        raise TaskImageError(
            f"Task {task.get('id')!r} has no data.image. To fix this, use a label config whose <Image> reads "
            "$image and tasks with an image field."
        )
    parsed = urlparse(image)
    if parsed.scheme in CLOUD_SCHEMES:
        encoded = base64.urlsafe_b64encode(image.encode()).decode()
        return f"/tasks/{task.get('id')}/resolve/?fileuri={quote(encoded)}"
    if not parsed.scheme:
        return image if image.startswith("/") else f"/{image}"
    if image.startswith(studio_url + "/"):
        return image[len(studio_url) :]
    return None


def fetch_task_image(task: dict[str, Any], access: StudioAccess, max_bytes: int) -> bytes:
    """The bytes of the task's image, from Label Studio with its token (or, for a URL elsewhere, without).

    Raises:
        TaskImageError: no image field, or Label Studio (or the other server) does not give the file.
    """
    import httpx

    from loopline.labeling.studio import LabelStudio

    path = image_path(task, access.url)
    try:
        if path is None:
            data = _download(task["data"]["image"], max_bytes)
        else:
            with LabelStudio(access.url, access.token) as studio:
                data = studio.get_bytes(path)
    except (LooplineError, httpx.HTTPError) as exc:
        raise TaskImageError(
            f"The image of task {task.get('id')!r} ({task['data']['image']!r}) cannot be fetched: {exc}"
        ) from exc
    if len(data) > max_bytes:
        raise TaskImageError(f"The image of task {task.get('id')!r} is over {max_bytes} bytes.")
    return data


def _download(url: str, max_bytes: int) -> bytes:
    """An image URL outside Label Studio, fetched without credentials, at most ``max_bytes + 1`` read."""
    import httpx

    chunks, size = [], 0
    with httpx.stream("GET", url, timeout=30, follow_redirects=True) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                break
    return b"".join(chunks)


@dataclass(frozen=True)
class WebhookOutcome:
    counted: int  # new annotations counted by this event
    pending: int  # the project's count since the last round started
    started: bool  # whether this event starts a round


class AnnotationCounter:
    """New annotations per project since the last round it started (in memory: a restart starts over)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any]) -> WebhookOutcome:
        """Count an ``ANNOTATION(S)_CREATED`` event; when its project reaches the threshold, the count
        starts over and ``started`` is true. Other events count nothing."""
        if event.get("action") not in ANNOTATION_EVENTS:
            return WebhookOutcome(0, 0, False)
        project = event.get("project")
        key = str(project.get("id") if isinstance(project, dict) else project)
        annotations = event.get("annotation", event.get("annotations"))
        new = len(annotations) if isinstance(annotations, list) else 1
        with self._lock:
            self._counts[key] += new
            pending = self._counts[key]
            started = pending >= self.threshold
            if started:
                self._counts[key] = 0
        return WebhookOutcome(new, pending, started)


async def start_round(settings: ServingSettings, project: str) -> str:
    """Create a flow run of ``settings.round_deployment`` through the Prefect REST API; its id.

    Raises:
        httpx.HTTPError: Prefect is unreachable or refuses (the caller logs it).
    """
    import httpx

    from loopline.settings import get_settings

    api = (settings.prefect_api_url or get_settings().resolved_prefect_api_url).rstrip("/")
    deployment = settings.round_deployment or ""
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        if "/" in deployment:  # flow-name/deployment-name
            found = await client.get(f"/deployments/name/{deployment}")
            found.raise_for_status()
            deployment = found.json()["id"]
        created = await client.post(
            f"/deployments/{deployment}/create_flow_run",
            json={
                "parameters": settings.round_parameters,
                "tags": ["label-studio-webhook", f"project-{project}"],
            },
        )
        created.raise_for_status()
        return str(created.json()["id"])


def start_round_later(settings: ServingSettings, project: str, running: set[asyncio.Task[Any]]) -> None:
    """``start_round`` in the background (the webhook answers at once); failures are logged."""

    async def run() -> None:
        try:
            flow_run = await start_round(settings, project)
            logger.info("annotations of project %s started flow run %s", project, flow_run)
        except Exception as exc:  # Prefect down or the deployment gone: the annotations stay counted as spent
            logger.error("could not start %s for project %s: %s", settings.round_deployment, project, exc)

    task = asyncio.get_running_loop().create_task(run())
    running.add(task)
    task.add_done_callback(running.discard)
