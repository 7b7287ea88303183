"""The few ASGI primitives the router's handlers share: a bounded body, a bytes answer, a JSON error."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Send


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes (the rest is not read).

    Raises:
        ClientGone: the client went away first.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    chunks, size = [body], len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_bytes(body: Any) -> bytes:
    return json.dumps(body).encode()


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, status: int, message: str) -> None:
    """``{"error": message}`` with ``status``."""
    await respond(send, status, json_bytes({"error": message}))
