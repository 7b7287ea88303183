"""Credentials of the local Label Studio: from settings, else generated once and kept under the home."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from loopline.local_secrets import read_or_create_secret
from loopline.settings import Settings

LABEL_STUDIO_USER = "admin@loopline.local"


@dataclass(frozen=True)
class LabelStudioCredentials:
    username: str
    password: SecretStr
    token: SecretStr


def label_studio_credentials(settings: Settings) -> LabelStudioCredentials:
    """The token from LOOPLINE_LABEL_STUDIO_TOKEN, or the one generated for the local server."""
    folder = settings.resolved_home / "secrets"
    token = settings.label_studio_token or SecretStr(read_or_create_secret(folder / "label-studio-token", 20))
    password = SecretStr(read_or_create_secret(folder / "label-studio-password", 16))
    return LabelStudioCredentials(LABEL_STUDIO_USER, password, token)
