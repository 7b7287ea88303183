"""Credentials of the local Label Studio: from settings, else generated once and kept under the home."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from loopline.settings import Settings

LABEL_STUDIO_USER = "admin@loopline.local"


@dataclass(frozen=True)
class LabelStudioCredentials:
    username: str
    password: SecretStr
    token: SecretStr


def read_or_create_secret(path: Path, nbytes: int) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = secrets.token_hex(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def label_studio_credentials(settings: Settings) -> LabelStudioCredentials:
    """The token from LOOPLINE_LABEL_STUDIO_TOKEN, or the one generated for the local server."""
    folder = settings.resolved_home / "secrets"
    token = settings.label_studio_token or SecretStr(read_or_create_secret(folder / "label-studio-token", 20))
    password = SecretStr(read_or_create_secret(folder / "label-studio-password", 16))
    return LabelStudioCredentials(LABEL_STUDIO_USER, password, token)
