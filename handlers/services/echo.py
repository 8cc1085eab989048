"""The echo service (RFC 862 over TCP): every byte received is sent back.

:class:`EchoHandler` adds no per-connection state to
:class:`~handlers.base.StreamHandler`, so an idle echo connection costs the reactor's
row, its socket and two slots here. A client that sends without reading cannot grow
the server's memory: when the transport's write buffer passes its high-water mark the
handler stops reading from that client, and reads again once the buffer has drained.
When the client finishes sending, the echoes still queued are flushed, then the
connection closes.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from handlers.base import StreamHandler

__all__ = ["EchoHandler"]


class EchoHandler(StreamHandler):
    """Send every byte back to the peer, with back-pressure.

    Callback order::

        connection_made [data_received | pause_writing | resume_writing]*
        [eof_received] connection_lost
    """

    __slots__ = ()

    # the logger keeps its name from before the move to services/ (log settings use it)
    logger: ClassVar[logging.Logger] = logging.getLogger("handlers.echo")

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
