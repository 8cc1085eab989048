"""The echo protocol shared by every event loop in the benchmark.

One plain :class:`asyncio.Protocol` class, used unchanged by the reactor, asyncio's
default loop and uvloop, so their comparison is like for like: the same Python code
runs in ``data_received``; only the loop and the transport underneath differ.
"""

from __future__ import annotations

import asyncio

__all__ = ["EchoProtocol"]


class EchoProtocol(asyncio.Protocol):
    """Write back every chunk as it arrives; close when the peer finishes writing."""

    __slots__ = ("transport",)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # let the transport close the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
