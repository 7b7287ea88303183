"""A small, typed client for the Label Studio REST API (the parts loopline uses).

Every failure names the server URL and the fix: unreachable (``LabelStudioUnavailable``, worth a retry),
token rejected, project missing, or a validation error with Label Studio's own field messages.
Projects are found by a key written into their description, so get-or-create is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from loopline.errors import LabelStudioError, LabelStudioUnavailable, ProjectMissing

KEY_MARKER = "loopline-key:"


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
    """Label Studio at ``url`` with an API token (legacy ``Token`` scheme)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, project_id: int | None = None, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is not reachable ({type(exc).__name__}: {exc}). To fix this, "
                "start it (`loopline services up`) or point LOOPLINE_LABEL_STUDIO_URL at a running server."
            ) from exc
        if response.status_code == 401:
            raise LabelStudioError(
                f"Label Studio at {self.url} rejected the API token (401). To fix this, set "
                "LOOPLINE_LABEL_STUDIO_TOKEN to a valid token (Account & Settings → Access Token)."
            )
        if response.status_code == 404 and project_id is not None:
            raise ProjectMissing(
                f"Label Studio project {project_id} no longer exists at {self.url}. Its labels are not lost "
                "if an export was taken; to continue, rerun the flow: it creates the project again."
            )
        if response.status_code >= 500:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} failed with {response.status_code} on {method} {path}: "
                f"{response.text[:300]}"
            )
        if response.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio at {self.url} refused {method} {path} ({response.status_code}): "
                f"{response.text[:500]}"
            )
        return response.json() if response.content else None

    # -- projects -----------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/current-user/whoami")
        return result

    def find_project(self, key: str) -> Project | None:
        page = 1
        while True:
            body = self.request("GET", "/api/projects", params={"page": page, "page_size": 100})
            for p in body.get("results", []):
                if f"{KEY_MARKER} {key}" in (p.get("description") or ""):
                    return self._project(p, key, created=False)
            if not body.get("next"):
                return None
            page += 1

    def get_or_create_project(
        self, key: str, title: str, label_config: str, maximum_annotations: int, description: str = ""
    ) -> Project:
        """The project with this key, created if missing (never a second one)."""
        found = self.find_project(key)
        if found is not None:
            return found
        body = self.request(
            "POST",
            "/api/projects",
            json={
                "title": title[:50],
                "description": f"{description}\n\n{KEY_MARKER} {key}".strip(),
                "label_config": label_config,
                "maximum_annotations": maximum_annotations,
                "show_skip_button": True,
            },
        )
        return self._project(body, key, created=True)

    def _project(self, body: dict[str, Any], key: str, created: bool) -> Project:
        return Project(
            id=int(body["id"]),
            title=body.get("title", ""),
            key=key,
            label_config=body.get("label_config", ""),
            maximum_annotations=int(body.get("maximum_annotations") or 1),
            created=created,
        )

    def set_maximum_annotations(self, project_id: int, maximum_annotations: int) -> None:
        self.request(
            "PATCH",
            f"/api/projects/{project_id}",
            project_id=project_id,
            json={"maximum_annotations": maximum_annotations},
        )

    def request_annotations(self, project_id: int, overlaps: dict[int, int]) -> None:
        """Ask for ``overlap`` annotations on each task (task id → overlap), e.g. one more for a tie.

        Label Studio Community keeps a per-task ``overlap``; PATCHing it alone leaves the task's
        ``is_labeled`` flag stale (the task stays "finished" and out of the labeling queue until its next
        annotation), so the flag is cleared in the same call. Changing the project's
        ``maximum_annotations`` later resets the overlap of every task above 1 to the new maximum.
        """
        for task_id, overlap in sorted(overlaps.items()):
            self.request(
                "PATCH",
                f"/api/tasks/{task_id}",
                project_id=project_id,
                json={"overlap": overlap, "is_labeled": False},
            )

    def task_states(self, project_id: int, task_ids: list[int]) -> dict[int, TaskState]:
        """Task id → its annotations (skipped ones included) and overlap; one request per task, so for
        a few tasks (Label Studio's exports leave the overlap out)."""
        states = {}
        for task_id in sorted(task_ids):
            body = self.request("GET", f"/api/tasks/{task_id}", project_id=project_id)
            states[task_id] = TaskState(len(body.get("annotations") or []), int(body.get("overlap") or 1))
        return states

    def progress(self, project_id: int) -> ProjectProgress:
        body = self.request("GET", f"/api/projects/{project_id}", project_id=project_id)
        return ProjectProgress(
            tasks=int(body.get("task_number") or 0),
            finished=int(body.get("finished_task_number") or 0),
            annotations=int(body.get("total_annotations_number") or 0),
            skipped=int(body.get("skipped_annotations_number") or 0),
        )

    # -- storage and tasks --------------------------------------------------------------------------

    def ensure_local_storage(self, project_id: int, path: str) -> int:
        """A Local Files storage for ``path`` (Label Studio serves task images only from one)."""
        existing = self.request("GET", "/api/storages/localfiles", params={"project": project_id})
        for storage in existing or []:
            if storage.get("path") == path:
                return int(storage["id"])
        body = self.request(
            "POST",
            "/api/storages/localfiles",
            project_id=project_id,
            json={"project": project_id, "path": path, "use_blob_urls": True, "title": "loopline data root"},
        )
        return int(body["id"])

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
        existing = self.request("GET", "/api/storages/s3", params={"project": project_id})
        for storage in existing or []:
            if storage.get("bucket") == bucket and (storage.get("prefix") or "") == prefix:
                return int(storage["id"])
        body = self.request(
            "POST",
            "/api/storages/s3",
            project_id=project_id,
            json={
                "project": project_id,
                "title": "loopline data root",
                "bucket": bucket,
                "prefix": prefix,
                "use_blob_urls": True,
                "presign": False,
                "s3_endpoint": endpoint_url or "",
                "region_name": region,
                "aws_access_key_id": access_key_id or "",
                "aws_secret_access_key": secret_access_key or "",
            },
        )
        return int(body["id"])

    def _tasks(self, project_id: int, fields: str) -> Iterator[dict[str, Any]]:
        """Every task of the project, page by page."""
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
        body = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            project_id=project_id,
            params={"return_task_ids": "true"},
            json=tasks,
        )
        return [int(i) for i in body.get("task_ids", [])]

    # -- annotations and exports --------------------------------------------------------------------

    def ensure_user(self, email: str, first_name: str, last_name: str = "") -> int:
        for user in self.request("GET", "/api/users") or []:
            if user.get("email") == email:
                return int(user["id"])
        username = email.split("@")[0]
        body = self.request(
            "POST",
            "/api/users",
            json={"email": email, "username": username, "first_name": first_name, "last_name": last_name},
        )
        return int(body["id"])

    def annotate(
        self, task_id: int, result: list[dict[str, Any]], completed_by: int, cancelled: bool = False
    ) -> int:
        body = self.request(
            "POST",
            f"/api/tasks/{task_id}/annotations",
            json={"result": result, "completed_by": completed_by, "was_cancelled": cancelled},
        )
        return int(body["id"])

    def tasks_with_annotations(self, project_id: int) -> list[dict[str, Any]]:
        """Every task with its annotations and predictions."""
        return list(self._tasks(project_id, "all"))

    def exports(self, project_id: int) -> list[dict[str, Any]]:
        """The project's exports (id, title, status, created_at, ...), as Label Studio lists them."""
        return list(self.request("GET", f"/api/projects/{project_id}/exports", project_id=project_id) or [])

    def export_size(self, project_id: int, export_id: int) -> int | None:
        """Bytes of an export's JSON file (its download's length, the body left unread); None if unknown."""
        path = f"/api/projects/{project_id}/exports/{export_id}/download"
        with self._client.stream("GET", path, params={"exportType": "JSON"}) as response:
            length = response.headers.get("content-length", "")
            return int(length) if response.status_code == 200 and length.isdigit() else None

    def delete_export(self, project_id: int, export_id: int) -> None:
        """Delete an export and its file (Label Studio removes the file with the record)."""
        self.request("DELETE", f"/api/projects/{project_id}/exports/{export_id}", project_id=project_id)

    def snapshot_export(
        self, project_id: int, title: str, timeout: float = 300.0
    ) -> tuple[int, list[dict[str, Any]]]:
        """A snapshot export named ``title`` (reused if one exists), downloaded as Label Studio JSON."""
        exports = self.request("GET", f"/api/projects/{project_id}/exports", project_id=project_id) or []
        export = next(
            (e for e in exports if e.get("title") == title and e.get("status") == "completed"), None
        )
        if export is None:
            export = self.request(
                "POST", f"/api/projects/{project_id}/exports", project_id=project_id, json={"title": title}
            )
        export_id = int(export["id"])
        deadline = time.monotonic() + timeout
        while export.get("status") not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise LabelStudioError(
                    f"Export {export_id} of project {project_id} did not finish in {timeout} s"
                )
            time.sleep(0.5)
            export = self.request(
                "GET", f"/api/projects/{project_id}/exports/{export_id}", project_id=project_id
            )
        if export.get("status") == "failed":
            raise LabelStudioError(
                f"Label Studio export {export_id} of project {project_id} failed at {self.url}"
            )
        data = self.request(
            "GET",
            f"/api/projects/{project_id}/exports/{export_id}/download",
            project_id=project_id,
            params={"exportType": "JSON"},
        )
        return export_id, list(data or [])
