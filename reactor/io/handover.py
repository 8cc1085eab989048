"""Handing a stream connection over to code outside the reactor (:class:`SocketHandover`,
a mix-in of :class:`~reactor.io.stream.StreamTransport`).

A facade that hands a connection to a blocking handler takes the socket out of the
reactor with :meth:`SocketHandover.detach_socket`: unregistered, no deadline timer left
that could close it, blocking again. The row stays
in the connection table while the handler runs, the facade moves its state on, and
:meth:`SocketHandover.release` ends it: out of the table, the listener's slot freed,
the socket closed unless the caller keeps it. Callers that drain connections (a
graceful stop, a server's close) ask :meth:`SocketHandover.unread_input` whether the
kernel still holds input the reactor has not read.

None of this is on the data path. The mix-in stores nothing itself: its ``__slots__``
is empty and the attributes it reads (the host's contract, declared below for the type
checker) are slots of :class:`~reactor.io.stream.StreamTransport`.

Must not import the stream transport, the listeners or anything above the I/O layer
(the loop and the listeners only for type checking).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from .compactrow import listener_of
from .transports import _CLOSED, _CLOSING, _ENDING, _F_SHARED, _MARK_SHIFT, _READ_CLOSED

if TYPE_CHECKING:
    from ..sansio.connection import ConnState
    from .deadlines import _Aux
    from .loop import Reactor
    from .transports import TransportOptions

__all__ = ["SocketHandover"]


class SocketHandover:
    """Detach a stream connection's socket, release the detached row, peek for input.

    A mix-in with no storage of its own; :class:`~reactor.io.stream.StreamTransport`
    inherits it and declares the slots.
    """

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    # the host's contract: what the transport stores and provides
    _sock: Any
    _mask: int
    _flags: int
    _aux: _Aux | None
    _opts: TransportOptions  # with the listener, if any (see .compactrow)
    _reactor: Reactor
    state: ConnState

    if TYPE_CHECKING:

        def lose(self) -> None: ...

        def _set_mask(self, mask: int) -> None: ...

        def _cancel_deadline(self) -> None: ...

    def unread_input(self) -> bool | None:
        """Whether the kernel holds input for this connection that the reactor has not
        read yet (bytes, or an EOF the protocol has not seen): True or False, or None when
        the socket reports an error instead (the next read will). A peek, for the rare
        callers that drain connections (a graceful stop, a server's close); never on the
        data path."""
        state = self.state
        if state is _READ_CLOSED or state is _CLOSING or state is _ENDING:
            return False  # the reactor reads no more
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return None
        return True

    def detach_socket(self) -> socket.socket:
        """Hand the socket over to other code (a worker thread, a child process).

        The socket is unregistered and returned as a blocking :class:`socket.socket`;
        the row stays in the table, and the caller moves its state on and finally calls
        :meth:`release`.
        """
        sock = self._sock
        if sock is None:
            raise ValueError("the transport has no socket")
        self._set_mask(0)
        self._cancel_deadline()  # the new owner's business now: no timer may close it
        if not isinstance(sock, socket.socket):
            sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        sock.setblocking(True)
        self._sock = sock
        self._share()
        return sock

    def _share(self) -> None:
        """The socket is held elsewhere too from now on (handed out or detached): no
        shortcut that assumes the reactor alone holds the descriptor applies (the
        close's ``epoll_ctl(DEL)``, the table's row kept at the descriptor's number)."""
        flags = self._flags
        if not flags & _F_SHARED:
            self._flags = flags | _F_SHARED
            if self._sock is not None:
                self._reactor.connections.unslot(self, self._sock.fileno())  # type: ignore[arg-type]  # a Row

    def release(self, close_socket: bool = True) -> None:
        """End a detached connection: leave the table, optionally close the socket."""
        if self.state is _CLOSED:
            return
        if self._mask:  # a facade's blocking request was never registered
            self._set_mask(0)
        self.lose()
        if self._aux is not None:
            self._cancel_deadline()
        sock, self._sock = self._sock, None
        fd = sock.fileno() if sock is not None else -1  # where the table may hold the row
        if close_socket and sock is not None:  # a facade's request: False, tested first
            sock.close()
        # counted by reason, as in the teardown (see .closes)
        self._reactor.connections.leave(
            self, self._flags >> _MARK_SHIFT, fd)  # type: ignore[arg-type]  # a Row
        listener = listener_of(self._opts)
        if listener is not None:
            listener.release_slot()
