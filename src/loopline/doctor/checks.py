"""What a check finds, how it is kept free of secrets, and how the checks run side by side within a
deadline (a dead server makes doctor fast, never hung)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Status = Literal["ok", "warning", "failed"]

MASK = "***"


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it went, what was found and (unless ok) how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warning(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warning", detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, "failed", detail, fix)


def mask_url(url: str) -> str:
    """``url`` with the password of its user part and the values of secret-looking query parameters
    replaced by ``***`` (``postgresql://me:pw@db/x`` → ``postgresql://me:***@db/x``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, has_password, _ = user.partition(":")
        netloc = f"{name}:{MASK}@{host}" if has_password else f"{user}@{host}"
    query = re.sub(
        r"(?i)((?:^|&)[^=&]*(?:password|passwd|secret|token|key|signature|credential)[^=&]*=)[^&]*",
        rf"\g<1>{MASK}",
        parts.query,
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The password in ``url`` (raw and as written), for :class:`Redactor`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    from urllib.parse import unquote

    return [password, unquote(password)]


class Redactor:
    """Replaces every known secret value in a text by ``***``: the last guard before anything is printed
    (an error message of a driver or a server could quote a URL or a header)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret that contains another is masked whole. Very short values would mask
        # ordinary words; real credentials are longer.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def check(self, check: Check) -> Check:
        return replace(check, detail=self(check.detail), fix=self(check.fix))


@dataclass(frozen=True)
class Probe:
    """A group of checks against one service; ``name`` names it when it gives no answer in time."""

    name: str
    run: Callable[[], list[Check]]
    fix: str


def run_probes(probes: Sequence[Probe], deadline_s: float) -> list[Check]:
    """Run every probe side by side; those still busy after ``deadline_s`` seconds are reported failed.

    Each probe also bounds its own requests; the deadline is the backstop for a client that does not
    (a server that accepts a connection and never answers). Probes run in daemon threads, so one that is
    stuck does not keep the process alive."""
    results: list[list[Check] | None] = [None] * len(probes)

    def work(index: int, probe: Probe) -> None:
        try:
            results[index] = probe.run()
        except Exception as exc:  # a probe's own bug or an unexpected client error: still one line
            results[index] = [
                failed(probe.name, f"the check itself failed: {type(exc).__name__}: {exc}", probe.fix)
            ]

    threads = [threading.Thread(target=work, args=(i, p), daemon=True) for i, p in enumerate(probes)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    checks: list[Check] = []
    for probe, found in zip(probes, results, strict=True):
        if found is None:
            checks.append(failed(probe.name, f"no answer within {deadline_s:g} s", probe.fix))
        else:
            checks.extend(found)
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    """1 when any check failed (warnings do not fail), else 0."""
    return 1 if any(c.status == "failed" for c in checks) else 0
