"""The server's HTTP protocol turns Nagle's algorithm off on every connection, including
those of a listening socket made the way uvicorn makes it for several workers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from bandit_platform.api.uvicorn_protocol import NoDelayH11Protocol


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # pragma: no cover
    raise AssertionError("no request is sent")


async def _accepted_nodelay(protocol_class: type[asyncio.Protocol]) -> int:
    config = Config(_app, http=protocol_class, log_level="warning")
    config.load()
    state = ServerState()
    made: list[Any] = []

    def factory() -> asyncio.Protocol:
        protocol = protocol_class(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
        made.append(protocol)
        return protocol

    # As uvicorn's `Config.bind_socket` does for several workers: `proto` is 0, not TCP.
    listening = socket.socket(family=socket.AF_INET)
    listening.bind(("127.0.0.1", 0))
    assert listening.proto == 0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, sock=listening)
    try:
        _, writer = await asyncio.open_connection(*listening.getsockname())
        while not made:
            await asyncio.sleep(0.01)
        accepted = made[0].transport.get_extra_info("socket")
        value = int(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


def test_connections_of_a_multi_worker_socket_have_nagle_off() -> None:
    assert asyncio.run(_accepted_nodelay(NoDelayH11Protocol)) != 0


def test_uvicorns_own_protocol_leaves_nagle_on_there() -> None:
    """Why the protocol exists: should a uvicorn release fix this, this test says so."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    assert asyncio.run(_accepted_nodelay(H11Protocol)) == 0
