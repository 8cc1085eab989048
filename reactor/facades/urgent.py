"""Urgent data for blocking handlers: ``handle_urgent(byte)``, called from their reads.

A handler class with a method ``handle_urgent(self, byte)`` opts in. Its server then
hands it, as ``self.request``, an :class:`UrgentRequestSocket`.

Which thread: the handler's own, from inside its reads. A blocking handler owns its
socket while it runs (a worker thread, a forked child, or the reactor's thread for a
plain ``TCPServer``), and the reactor no longer watches it, so nobody else may read
from it: a call from another thread would race the handler's own reads, and the
kernel forgets an urgent byte that an ordinary read steps over (see
:mod:`reactor.io.urgent`). So the socket's ``recv`` and ``recv_into`` (hence
``rfile``) wait for input *or* an urgent byte (``poll`` with ``POLLIN|POLLPRI``,
within the socket's timeout), return the bytes before the mark first (an ordinary
read stops there), and at the mark read the urgent byte with ``recv(1, MSG_OOB)`` and
call ``handle_urgent(byte)`` before they read on. A handler blocked in a read is
woken by an urgent byte alone; a handler busy elsewhere sees it at its next read (the
kernel holds one urgent byte: a later one takes its place). Bytes before the mark may
still wait in ``rfile``'s buffer when ``handle_urgent`` runs.

Reads with ``MSG_OOB`` or ``MSG_PEEK``, ``recvmsg``, ``select`` and ``sockatmark``
(:func:`reactor.io.urgent.at_mark`) are the kernel's own and left alone; a handler
that sets ``SO_OOBINLINE`` gets the byte in the stream instead (its ``handle_urgent``
is then never called).

The multiplexing server's handlers are protocols on reactor transports: they opt in
with ``urgent_data_received`` (:mod:`reactor.io.urgent`). Not covered: a server whose
``get_request`` is overridden (it makes its own sockets), and an urgent byte that
arrives while the reactor buffers the first request (``request_buffer``): that read
is the reactor's, and Linux drops the byte when the read steps over it.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from ..io.urgent import at_mark
from .requests import BufferedRequestSocket

__all__ = ["UrgentRequestSocket", "wants_urgent"]

logger = logging.getLogger("reactor.servers")

_MSG_OOB: Final = socket.MSG_OOB
_KERNEL_FLAGS: Final = socket.MSG_OOB | socket.MSG_PEEK
_POLLPRI: Final = select.POLLPRI
_WAIT_FOR: Final = select.POLLIN | select.POLLPRI


def wants_urgent(handler_class: Any) -> bool:
    """Whether a handler class takes urgent bytes (it has ``handle_urgent``)."""
    return callable(getattr(handler_class, "handle_urgent", None))


class UrgentRequestSocket(BufferedRequestSocket):
    """A handler's connected socket whose reads deliver urgent bytes first.

    Attributes:
        on_urgent: called with each urgent byte, from the reading thread. None (the
            default): the ``handle_urgent`` of the handler that reads, found at the
            first urgent byte as the ``self`` of a calling frame whose ``request`` is
            this socket (the handler's constructor runs ``handle``, so its frame is
            there whenever the handler reads), then kept. Nothing here adds to the
            request path: ``finish_request`` makes the handler as it always did, and
            may be overridden. No handler found: the byte is dropped, logged at debug
            level.
    """

    __slots__ = ("on_urgent",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_urgent: Callable[[bytes], object] | None = None

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if not self._prefix and not flags & _KERNEL_FLAGS:
            self._urgent_first()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        if not self._prefix and not flags & _KERNEL_FLAGS:
            self._urgent_first()
        return super().recv_into(buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        if not self._prefix and not flags & _KERNEL_FLAGS:
            self._urgent_first()
        return super().recvfrom(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> tuple[int, Any]:
        if not self._prefix and not flags & _KERNEL_FLAGS:
            self._urgent_first()
        return super().recvfrom_into(buffer, nbytes, flags)

    def _urgent_first(self) -> None:
        """Wait (within the timeout) until an ordinary read can go on, handing every
        urgent byte met at the mark on the way to :attr:`on_urgent`.

        Raises:
            TimeoutError: nothing arrived within the socket's timeout.
            BlockingIOError: a non-blocking socket with nothing to read.
        """
        timeout = self.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self, _WAIT_FOR)
        while True:
            if deadline is None:
                ready = poller.poll()
            else:
                ready = poller.poll(max(0, int((deadline - time.monotonic()) * 1000 + 0.999)))
            if not ready:
                if timeout == 0:
                    raise BlockingIOError(errno.EAGAIN, "no data to read")
                raise TimeoutError("timed out")
            events = ready[0][1]
            if not events & _POLLPRI or not self._at_mark():
                return  # bytes before the mark, the end of the stream, or an error
            byte = self._take_urgent()
            if not byte:
                return  # inline, or read already: the ordinary read takes what is there
            self._deliver(byte)

    def _at_mark(self) -> bool:
        try:
            return at_mark(self)
        except OSError:
            return False

    def _take_urgent(self) -> bytes:
        """``recv(1, MSG_OOB)`` without Python's wait for readability (an urgent byte
        alone makes nothing readable): b"" when there is none to take."""
        timeout = self.gettimeout()
        if timeout:
            self.settimeout(0.0)
        try:
            return super().recv(1, _MSG_OOB)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # SO_OOBINLINE, or read already
                return b""
            raise
        finally:
            if timeout:
                self.settimeout(timeout)

    def _deliver(self, byte: bytes) -> None:
        on_urgent = self.on_urgent
        if on_urgent is None:
            on_urgent = self.on_urgent = self._find_handler()
        if on_urgent is None:
            logger.debug("an urgent byte %r with no handler to take it: dropped", byte)
            return
        on_urgent(byte)

    def _find_handler(self) -> Callable[[bytes], object] | None:
        """The ``handle_urgent`` of the handler reading this socket, from the stack."""
        frame = sys._getframe(1)
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if candidate is not None and getattr(candidate, "request", None) is self:
                method = getattr(candidate, "handle_urgent", None)
                if callable(method):
                    return method  # type: ignore[no-any-return]
            frame = frame.f_back  # type: ignore[assignment]
        return None
