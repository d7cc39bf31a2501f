"""uvicorn's h11 protocol with TCP_NODELAY set on every connection.

asyncio sets TCP_NODELAY on an accepted connection only when the socket says it is TCP
(`proto == IPPROTO_TCP`). With several workers, uvicorn binds the listening socket itself with
`socket.socket(family=...)`, whose `proto` is 0, and the accepted connections inherit it; so
the connections of a multi-worker server keep Nagle's algorithm on, and a response written in
two parts (head, then body) waits for the client's delayed ACK, about 40 ms, on every
keep-alive request: a two-worker hello-world served 363 requests/s instead of about 6,000.
This protocol sets the option itself (`benchmarks/README.md`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

#: What `uvicorn.run(http=...)` takes; a string, so that worker processes import it.
PROTOCOL = "bandit_platform.api.uvicorn_protocol:NoDelayH11Protocol"


class NoDelayH11Protocol(H11Protocol):
    """`H11Protocol` that turns Nagle's algorithm off for its connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
