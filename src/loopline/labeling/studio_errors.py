"""What Label Studio's refusals mean for a loopline user: one named error per case, with the server URL
and the fix. The token kinds (a legacy token or a personal access token) get different fixes."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from loopline.errors import LabelStudioError, LabelStudioUnavailable, ProjectMissing

TokenKind = Literal["legacy token", "personal access token"]


def token_kind(token: str) -> TokenKind:
    """A personal access token is a JWT (``header.payload.signature``, the header JSON with ``alg``); anything
    else is a legacy token (40 hex characters for one Label Studio made)."""
    parts = token.split(".")
    if len(parts) != 3:
        return "legacy token"
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return "legacy token"
    return "personal access token" if isinstance(header, dict) and "alg" in header else "legacy token"


def token_fix(kind: TokenKind) -> str:
    """How to get a token Label Studio accepts, for a user who sent one of this kind."""
    make = (
        "create a personal access token (Label Studio → Account & Settings → Personal Access Token) and set "
        "LOOPLINE_LABEL_STUDIO_TOKEN to it"
    )
    if kind == "legacy token":
        return (
            f"To fix this, {make}; or, if legacy tokens are meant to work, check the token (Account & "
            "Settings → Legacy Token) and ask an organization admin to enable legacy tokens (Organization → "
            "API Tokens Settings)."
        )
    return (
        "The token may have expired or been revoked, or personal access tokens are off for the "
        f"organization. To fix this, {make} (a new one replaces a revoked or expired one)."
    )


def detail(body: Any) -> str:
    """Label Studio's own words from an error body: its field messages when it lists them."""
    if isinstance(body, dict):
        errors = body.get("validation_errors")
        if isinstance(errors, dict) and errors:
            return "; ".join(
                f"{field}: {' '.join(map(str, m)) if isinstance(m, list) else m}"
                for field, m in errors.items()
            )
        if body.get("detail"):
            return str(body["detail"])
        return json.dumps(body, default=str)
    return str(body or "")


def refusal(
    url: str, status: int, body: Any, what: str, kind: TokenKind, project_id: int | None = None
) -> LabelStudioError:
    """The named error for Label Studio answering ``status`` to ``what``."""
    said = detail(body)
    if status == 401:
        return LabelStudioError(
            f"Label Studio at {url} rejected the {kind} (401: {said[:200]}). {token_fix(kind)}"
        )
    if status == 404 and project_id is not None:
        return ProjectMissing(
            f"Label Studio project {project_id} no longer exists at {url}. Its labels are not lost "
            "if an export was taken; to continue, rerun the flow: it creates the project again."
        )
    if status >= 500:
        return LabelStudioUnavailable(f"Label Studio at {url} failed with {status} on {what}: {said[:300]}")
    return LabelStudioError(f"Label Studio at {url} refused {what} ({status}): {said[:500]}")


def unreachable(url: str, exc: Exception) -> LabelStudioUnavailable:
    return LabelStudioUnavailable(
        f"Label Studio at {url} is not reachable ({type(exc).__name__}: {exc}). To fix this, "
        "start it (`loopline services up`) or point LOOPLINE_LABEL_STUDIO_URL at a running server."
    )
