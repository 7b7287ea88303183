"""Loopline's adapter to Label Studio on the official SDK (``label-studio-sdk``): the parts loopline uses.

The token is a legacy token (sent as ``Token …``) or a personal access token (a JWT the SDK exchanges at
``/api/token/refresh/`` for access tokens sent as ``Bearer …``, refreshed when they expire): the SDK's one
auth path, also for the few calls it has no method for (through its HTTP client). Every failure names the
server URL and the fix (see ``studio_errors``). Projects are found by a key written into their description,
so get-or-create is idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, cast

import httpx

from loopline.errors import LabelStudioError, LabelStudioUnavailable
from loopline.labeling.studio_errors import refusal, token_kind, unreachable

if TYPE_CHECKING:  # the SDK is imported on first use: it costs a flow-run process about 1 s
    from label_studio_sdk import LabelStudio as Sdk

KEY_MARKER = "loopline-key:"
# Loopline's tasks retry Label Studio calls (with backoff lists); the SDK's own retries are off.
NO_RETRIES: Any = {"max_retries": 0}


@dataclass(frozen=True)
class ProjectProgress:
    tasks: int
    finished: int  # tasks with the required number of annotations
    annotations: int
    skipped: int


@dataclass(frozen=True)
class TaskState:
    annotations: int  # skipped ones included
    overlap: int  # annotations Label Studio asks for


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    key: str
    label_config: str
    maximum_annotations: int
    created: bool


class LabelStudio:
    """Label Studio at ``url`` with an API token: a legacy token or a personal access token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token_kind = token_kind(token)
        self._token = token
        self._timeout = timeout
        # No cookies: Label Studio's session cookie would be a second way in (hiding a dead token).
        self._httpx = httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            event_hooks={"response": [self._server_failed]},
        )
        self._client: Sdk | None = None

    @property
    def sdk(self) -> Sdk:
        """The SDK client (made on first use: the SDK refuses an expired personal access token at once)."""
        if self._client is None:
            from label_studio_sdk import LabelStudio as Sdk

            with self._errors("reading the API token"):
                self._client = Sdk(
                    base_url=self.url,
                    api_key=self._token,
                    timeout=self._timeout,
                    max_retries=0,
                    httpx_client=self._httpx,
                )
        return self._client

    def close(self) -> None:
        self._httpx.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStudio({self.url!r}, <{self.token_kind}>)"

    def _server_failed(self, response: httpx.Response) -> None:
        """A 5xx is Label Studio failing (e.g. its database restarting), worth a retry: named before the SDK
        parses it (its error pages are HTML, which the SDK would report as a JSON error)."""
        if response.status_code >= 500:
            response.read()
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} failed with {response.status_code} on {response.request.method} "
                f"{response.request.url.path}: {response.text[:300]}"
            )

    @contextmanager
    def _errors(self, what: str, project_id: int | None = None) -> Iterator[None]:
        """Turn the SDK's and httpx's failures into loopline's named errors."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        except ApiError as exc:  # not chained: its text holds the response headers (a session cookie)
            raise refusal(
                self.url, exc.status_code or 0, exc.body, what, self.token_kind, project_id
            ) from None
        except json.JSONDecodeError as exc:  # e.g. the token refresh answered by something else
            raise LabelStudioError(
                f"{self.url} answered {what} with something that is not JSON. To fix this, point "
                "LOOPLINE_LABEL_STUDIO_URL at a Label Studio server (1.20 or later for personal access "
                "tokens)."
            ) from exc

    def _send(self, method: str, path: str, project_id: int | None = None, **kwargs: Any) -> httpx.Response:
        """One call the SDK has no method for, through the SDK's HTTP client (and so its auth)."""
        what = f"{method} {path}"
        with self._errors(what, project_id):
            response = self.sdk._client_wrapper.httpx_client.request(
                path, method=method, request_options=NO_RETRIES, **kwargs
            )
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise refusal(self.url, response.status_code, body, what, self.token_kind, project_id)
        return response

    def request(self, method: str, path: str, *, project_id: int | None = None, **kwargs: Any) -> Any:
        """Any Label Studio API call (``params=``, ``json=``); its JSON answer, None for an empty one."""
        response = self._send(method, path, project_id, **kwargs)
        return response.json() if response.content else None

    def get_bytes(self, path: str) -> bytes:
        """A file Label Studio serves, e.g. a task's resolved image URL."""
        return self._send("GET", path).content

    # -- projects -----------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        with self._errors("GET /api/current-user/whoami"):
            return self.sdk.users.whoami(request_options=NO_RETRIES).dict()

    def find_project(self, key: str) -> Project | None:
        with self._errors("listing projects"):
            projects: Iterator[Any] = iter(self.sdk.projects.list(page_size=100, request_options=NO_RETRIES))
            for p in projects:
                if f"{KEY_MARKER} {key}" in (p.description or ""):
                    return self._project(p, key, created=False)
        return None

    def get_or_create_project(
        self, key: str, title: str, label_config: str, maximum_annotations: int, description: str = ""
    ) -> Project:
        """The project with this key, created if missing (never a second one)."""
        found = self.find_project(key)
        if found is not None:
            return found
        with self._errors(f"creating project {title[:50]!r}"):
            body = self.sdk.projects.create(
                title=title[:50],
                description=f"{description}\n\n{KEY_MARKER} {key}".strip(),
                label_config=label_config,
                maximum_annotations=maximum_annotations,
                show_skip_button=True,
                request_options=NO_RETRIES,
            )
        return self._project(body, key, created=True)

    def _project(self, body: Any, key: str, created: bool) -> Project:
        return Project(
            id=int(body.id),
            title=body.title or "",
            key=key,
            label_config=body.label_config or "",
            maximum_annotations=int(body.maximum_annotations or 1),
            created=created,
        )

    def set_maximum_annotations(self, project_id: int, maximum_annotations: int) -> None:
        with self._errors(f"updating project {project_id}", project_id):
            self.sdk.projects.update(
                project_id, maximum_annotations=maximum_annotations, request_options=NO_RETRIES
            )

    def request_annotations(self, project_id: int, overlaps: dict[int, int]) -> None:
        """Ask for ``overlap`` annotations on each task (task id → overlap), e.g. one more for a tie.

        Label Studio Community keeps a per-task ``overlap``; PATCHing it alone leaves the task's
        ``is_labeled`` flag stale (the task stays "finished" and out of the labeling queue until its next
        annotation), so the flag is cleared in the same call. Changing the project's
        ``maximum_annotations`` later resets the overlap of every task above 1 to the new maximum.
        """
        for task_id, overlap in sorted(overlaps.items()):
            with self._errors(f"updating task {task_id}", project_id):
                self.sdk.tasks.update(
                    str(task_id), overlap=overlap, is_labeled=False, request_options=NO_RETRIES
                )

    def task_states(self, project_id: int, task_ids: list[int]) -> dict[int, TaskState]:
        """Task id → its annotations (skipped ones included) and overlap; one request per task, so for
        a few tasks (Label Studio's exports leave the overlap out)."""
        states = {}
        for task_id in sorted(task_ids):
            with self._errors(f"reading task {task_id}", project_id):
                task = self.sdk.tasks.get(str(task_id), request_options=NO_RETRIES)
            annotations = getattr(task, "annotations", None) or []
            states[task_id] = TaskState(len(annotations), int(getattr(task, "overlap", None) or 1))
        return states

    def progress(self, project_id: int) -> ProjectProgress:
        with self._errors(f"reading project {project_id}", project_id):
            body = self.sdk.projects.get(project_id, request_options=NO_RETRIES)
        return ProjectProgress(
            tasks=int(body.task_number or 0),
            finished=int(body.finished_task_number or 0),
            annotations=int(body.total_annotations_number or 0),
            skipped=int(body.skipped_annotations_number or 0),
        )

    # -- storage and tasks --------------------------------------------------------------------------

    def ensure_local_storage(self, project_id: int, path: str) -> int:
        """A Local Files storage for ``path`` (Label Studio serves task images only from one)."""
        local = self.sdk.import_storage.local
        with self._errors(f"adding a Local Files storage for {path} to project {project_id}", project_id):
            for storage in local.list(project=project_id, request_options=NO_RETRIES):
                if storage.path == path:
                    return int(storage.id or 0)
            created = local.create(
                project=project_id,
                path=path,
                use_blob_urls=True,
                title="loopline data root",
                request_options=NO_RETRIES,
            )
        return int(created.id or 0)

    def ensure_s3_storage(
        self,
        project_id: int,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
    ) -> int:
        """An S3 import storage for ``s3://bucket/prefix``: Label Studio then serves ``s3://`` task images
        itself (``presign=False``: proxied, so the browser needs no access to the bucket)."""
        s3 = self.sdk.import_storage.s3
        with self._errors(
            f"adding an S3 storage for s3://{bucket}/{prefix} to project {project_id}", project_id
        ):
            for storage in s3.list(project=project_id, request_options=NO_RETRIES):
                if storage.bucket == bucket and (storage.prefix or "") == prefix:
                    return int(storage.id or 0)
            created = s3.create(
                project=project_id,
                title="loopline data root",
                bucket=bucket,
                prefix=prefix,
                use_blob_urls=True,
                presign=False,
                s3endpoint=endpoint_url or "",
                region_name=region,
                aws_access_key_id=access_key_id or "",
                aws_secret_access_key=secret_access_key or "",
                request_options=NO_RETRIES,
            )
        return int(created.id or 0)

    def _tasks(self, project_id: int, fields: str) -> Iterator[dict[str, Any]]:
        """Every task of the project, page by page, as Label Studio's JSON (what exports hold too)."""
        seen, page = 0, 1
        while True:
            body = self.request(
                "GET",
                "/api/tasks",
                project_id=project_id,
                params={"project": project_id, "page": page, "page_size": 500, "fields": fields},
            )
            batch = body.get("tasks", [])
            yield from batch
            seen += len(batch)
            if not batch or seen >= int(body.get("total", 0)) or len(batch) < 500:
                return
            page += 1

    def task_hashes(self, project_id: int) -> dict[str, int]:
        """``content_hash → task id`` for every task already in the project."""
        return {
            task["data"]["content_hash"]: int(task["id"])
            for task in self._tasks(project_id, "task_only")
            if (task.get("data") or {}).get("content_hash")
        }

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """One bulk import call; returns the new task ids."""
        with self._errors(f"importing {len(tasks)} tasks into project {project_id}", project_id):
            body = self.sdk.projects.import_tasks(
                project_id, request=cast(Any, tasks), return_task_ids=True, request_options=NO_RETRIES
            )
        return [int(i) for i in getattr(body, "task_ids", None) or []]

    # -- annotations and exports --------------------------------------------------------------------

    def ensure_user(self, email: str, first_name: str, last_name: str = "") -> int:
        with self._errors(f"adding the user {email}"):
            for user in self.sdk.users.list(request_options=NO_RETRIES):
                if user.email == email:
                    return int(user.id or 0)
            created = self.sdk.users.create(
                username=email.split("@")[0],
                email=email,
                first_name=first_name,
                last_name=last_name,
                request_options=NO_RETRIES,
            )
        return int(created.id or 0)

    def annotate(
        self, task_id: int, result: list[dict[str, Any]], completed_by: int, cancelled: bool = False
    ) -> int:
        with self._errors(f"annotating task {task_id}"):
            body = self.sdk.annotations.create(
                task_id,
                result=result,
                completed_by=completed_by,
                was_cancelled=cancelled,
                request_options=NO_RETRIES,
            )
        return int(body.id or 0)

    def tasks_with_annotations(self, project_id: int) -> list[dict[str, Any]]:
        """Every task with its annotations and predictions."""
        return list(self._tasks(project_id, "all"))

    def exports(self, project_id: int) -> list[dict[str, Any]]:
        """The project's exports (id, title, status, created_at, ...), as Label Studio lists them."""
        with self._errors(f"listing the exports of project {project_id}", project_id):
            exports = self.sdk.projects.exports.list(project_id, request_options=NO_RETRIES)
        return [json.loads(e.json()) for e in exports]

    def export_size(self, project_id: int, export_id: int) -> int | None:
        """Bytes of an export's JSON file, from a one-byte range of its download (Label Studio streams the
        file without a length); None if unknown."""
        path = f"/api/projects/{project_id}/exports/{export_id}/download"
        with (
            self._errors(f"GET {path}", project_id),
            self.sdk._client_wrapper.httpx_client.stream(
                path,
                method="GET",
                params={"exportType": "JSON"},
                headers={"Range": "bytes=0-0"},
                request_options=NO_RETRIES,
            ) as response,
        ):
            total = response.headers.get("content-range", "").rpartition("/")[2]
            if response.status_code == 206 and total.isdigit():
                return int(total)
            length = response.headers.get("content-length", "")
            return int(length) if response.status_code == 200 and length.isdigit() else None

    def delete_export(self, project_id: int, export_id: int) -> None:
        """Delete an export and its file (Label Studio removes the file with the record)."""
        with self._errors(f"deleting export {export_id}", project_id):
            self.sdk.projects.exports.delete(project_id, export_id, request_options=NO_RETRIES)

    def snapshot_export(
        self, project_id: int, title: str, timeout: float = 300.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """A snapshot export named ``title`` (reused if one exists), downloaded as Label Studio JSON."""
        exports = self.sdk.projects.exports
        with self._errors(f"exporting project {project_id}", project_id):
            export: Any = next(
                (
                    e
                    for e in exports.list(project_id, request_options=NO_RETRIES)
                    if e.title == title and e.status == "completed"
                ),
                None,
            ) or exports.create(project_id, title=title, request_options=NO_RETRIES)
            export_id = int(export.id)
            deadline = time.monotonic() + timeout
            while export.status not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise LabelStudioError(
                        f"Export {export_id} of project {project_id} did not finish in {timeout} s"
                    )
                time.sleep(0.5)
                export = exports.get(project_id, export_id, request_options=NO_RETRIES)
            if export.status == "failed":
                raise LabelStudioError(
                    f"Label Studio export {export_id} of project {project_id} failed at {self.url}"
                )
            data = b"".join(
                exports.download(project_id, export_id, export_type="JSON", request_options=NO_RETRIES)
            )
        return export_id, list(json.loads(data) if data else [])
