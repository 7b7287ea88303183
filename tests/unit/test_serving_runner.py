"""The workers' shared listening socket: asyncio sets TCP_NODELAY only on connections accepted from a socket
created with IPPROTO_TCP (a protocol-0 socket, as ``uvicorn --workers`` binds, leaves Nagle on)."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from loopline.errors import ServiceError
from loopline.serving.runner import freeze_startup_heap, listening_socket

pytestmark = pytest.mark.unit


def nodelay_of_accepted(listener: socket.socket) -> int:
    async def body() -> int:
        seen: list[int] = []

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            await reader.read()  # until the server closes it
            writer.close()
        return seen[0]

    return asyncio.run(body())


def test_the_workers_socket_gets_tcp_nodelay_on_every_connection() -> None:
    listener = listening_socket("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP
    assert nodelay_of_accepted(listener) != 0


def test_a_protocol_zero_socket_would_leave_nagle_on() -> None:  # the trap the runner avoids
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    assert nodelay_of_accepted(listener) == 0


def test_a_busy_port_is_a_named_error() -> None:
    taken = listening_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    with pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{port}.*another one"):
        listening_socket("127.0.0.1", port)
    taken.close()


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    gc.unfreeze()
    kept = [[n] for n in range(1000)]  # alive before serving starts, like the model and the libraries
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(kept)
        scanned = {id(tracked) for tracked in gc.get_objects()}  # what a collection still looks at
        assert not any(id(x) in scanned for x in kept)
    finally:
        gc.unfreeze()
