"""Credentials of the local Label Studio: from settings, else generated once and kept under the home."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from loopline.local_secrets import read_or_create_secret
from loopline.settings import Settings

LABEL_STUDIO_USER = "admin@loopline.local"


@dataclass(frozen=True)
class LabelStudioCredentials:
    username: str
    password: SecretStr
    token: SecretStr  # what clients send: a personal access token or a legacy token
    legacy_token: SecretStr  # the server's LABEL_STUDIO_USER_TOKEN (refused when legacy tokens are off)


LEGACY_TOKEN_FILE = "label-studio-token"
PERSONAL_TOKEN_FILE = "label-studio-pat"


def label_studio_credentials(settings: Settings) -> LabelStudioCredentials:
    """The token from LOOPLINE_LABEL_STUDIO_TOKEN, else the local server's: on the team tier its personal
    access token (once `loopline services up` made one), on the laptop tier its generated legacy token."""
    folder = settings.resolved_home / "secrets"
    legacy = SecretStr(read_or_create_secret(folder / LEGACY_TOKEN_FILE, 20))
    password = SecretStr(read_or_create_secret(folder / "label-studio-password", 16))
    personal = folder / PERSONAL_TOKEN_FILE
    if settings.label_studio_token is not None:
        token = settings.label_studio_token
    elif settings.resolved_tier == "team" and personal.exists():
        token = SecretStr(personal.read_text().strip())
    else:
        token = legacy
    return LabelStudioCredentials(LABEL_STUDIO_USER, password, token, legacy)


def ensure_personal_access_token(settings: Settings) -> None:
    """On the team tier, make the local Label Studio user's personal access token once (the server runs
    with legacy tokens off, as a team's does) and keep it under the home's secrets."""
    from loopline.labeling.access_tokens import create_personal_access_token

    path = settings.resolved_home / "secrets" / PERSONAL_TOKEN_FILE
    if settings.resolved_tier != "team" or settings.label_studio_token is not None or path.exists():
        return
    creds = label_studio_credentials(settings)
    token = create_personal_access_token(settings.resolved_label_studio_url, creds.username, creds.password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token.get_secret_value() + "\n")


def configured_label_studio_token(settings: Settings) -> str | None:
    """The token clients use (as :func:`label_studio_credentials`), or None where no local platform ever
    ran in this home and none is configured: readers such as `loopline doctor` generate no credentials."""
    if settings.label_studio_token is not None:
        return settings.label_studio_token.get_secret_value()
    if not (settings.resolved_home / "secrets" / LEGACY_TOKEN_FILE).is_file():
        return None
    return label_studio_credentials(settings).token.get_secret_value()
