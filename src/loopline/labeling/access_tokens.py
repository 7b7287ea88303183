"""A Label Studio personal access token without a browser: log in as the user (Django's session and CSRF
cookies, as the login page does), then ``POST /api/token/`` with that session.

Label Studio (1.20+) keeps one live personal access token per user; it answers 409 while one exists. The
token is a JWT refresh token (200 years by default, the organization's ``api_token_ttl_days``); clients
exchange it at ``/api/token/refresh/`` for access tokens (5 minutes). Tokens are never logged.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from loopline.errors import LabelStudioError
from loopline.labeling.studio_errors import unreachable

LOGIN = "/user/login/"


def create_personal_access_token(
    url: str, email: str, password: SecretStr, timeout: float = 30.0
) -> SecretStr:
    """A new personal access token for the user ``email``.

    Raises:
        LabelStudioUnavailable: the server does not answer.
        LabelStudioError: the login failed, personal access tokens are off, or the user has one already.
    """
    url = url.rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            client.get(LOGIN)  # sets the csrftoken cookie
            login = client.post(
                LOGIN,
                data={
                    "email": email,
                    "password": password.get_secret_value(),
                    "csrfmiddlewaretoken": client.cookies.get("csrftoken") or "",
                },
                headers={"Referer": f"{url}{LOGIN}"},
            )
            if login.status_code != 302 or "sessionid" not in client.cookies:
                raise LabelStudioError(
                    f"Could not log in to Label Studio at {url} as {email} ({login.status_code}). To fix "
                    "this, check the user's email and password (LABEL_STUDIO_USERNAME / "
                    "LABEL_STUDIO_PASSWORD of the server's first start)."
                )
            created = client.post(
                "/api/token/",
                headers={"X-CSRFToken": client.cookies.get("csrftoken") or "", "Referer": f"{url}{LOGIN}"},
            )
    except httpx.TransportError as exc:
        raise unreachable(url, exc) from exc
    if created.status_code == 409:
        raise LabelStudioError(
            f"{email} already has a personal access token at {url}, and Label Studio keeps one per user. To "
            "fix this, use that token, or revoke it (Account & Settings → Personal Access Token) and create "
            "another."
        )
    if created.status_code != 201:
        raise LabelStudioError(
            f"Label Studio at {url} did not create a personal access token for {email} "
            f"({created.status_code}: {created.text[:300]}). To fix this, ask an organization admin to "
            "enable personal access tokens (Organization → API Tokens Settings)."
        )
    return SecretStr(str(created.json()["token"]))
