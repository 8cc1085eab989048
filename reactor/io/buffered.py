"""Reading into an :class:`asyncio.BufferedProtocol`'s own buffer (:class:`BufferedReads`,
a mix-in of :class:`~reactor.io.stream.StreamTransport`).

asyncio's rule: for a BufferedProtocol each readiness event is one
``protocol.get_buffer(-1)`` (-1: any size), one ``recv_into`` that buffer and one
``protocol.buffer_updated(nbytes)``; no bytes object is made per read. An empty buffer
or a callback that raises closes the connection with the error, as a raising
``data_received`` does; an EOF goes to ``eof_received`` as for any protocol.

*Why a variant class.* The loop calls ``_read_ready`` on every readable event. Testing
the protocol's kind there, with a flag, measured 228 more instructions per echo
request for every plain protocol (``python -m bench.instructions --seeds 3``: 8 705
against 8 477). Instead, setting a BufferedProtocol (``attach``, ``set_protocol``,
``start_reading``) switches the transport's class to its *buffered variant*, a
subclass with no storage of its own whose ``_read_ready`` is :meth:`_read_into`, and a
plain protocol switches it back. The variant is made once per class
(:func:`buffered_variant`), also for the subclasses debug mode switches transports to
(:mod:`.debug`), whose checks it keeps since it subclasses them.

The mix-in stores nothing itself: its ``__slots__`` is empty and the attributes it
reads (the host's contract, declared below for the type checker) are slots of
:class:`~reactor.io.stream.StreamTransport`. Must not import the stream transport, the
listeners or anything above the I/O layer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .transports import _EXIT_EXC
from .urgent import URGENT_METHOD, UrgentReads, urgent_variant, watch_urgent

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["BufferedReads", "buffered_variant"]


class BufferedReads:
    """Set a protocol (:meth:`_use_protocol`) and read into a BufferedProtocol's buffer
    (:meth:`_read_into`). A mix-in with no storage of its own."""

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    #: on a buffered variant, the plain class it was made from (a class attribute)
    _plain_class: type[BufferedReads] | None = None

    # the host's contract: what the transport stores and provides
    _protocol: Any
    _sock: Any
    _reactor: Reactor
    bytes_in: int
    last_activity: float

    if TYPE_CHECKING:

        def _callback_failed(self, exc: BaseException, where: str) -> None: ...

        def _connection_error(self, exc: OSError) -> None: ...

        def _read_eof(self) -> None: ...

        def _registration_failed(self, exc: OSError) -> None: ...

    def _use_protocol(self, protocol: Any) -> None:
        """Deliver reads to ``protocol`` from now on, the way its kind takes them: a
        BufferedProtocol switches the transport to its class's buffered variant, a
        protocol with ``urgent_data_received`` to an urgent variant (:mod:`.urgent`),
        any other protocol back to the plain class."""
        self._protocol = protocol
        cls = self._plain_class or type(self)
        if isinstance(protocol, asyncio.BufferedProtocol):
            cls = buffered_variant(cls)
        urgent = hasattr(protocol, URGENT_METHOD)
        if urgent:
            cls = urgent_variant(cls)
        if cls is not type(self):
            was_urgent = isinstance(self, UrgentReads)
            self.__class__ = cls
            if urgent is not was_urgent:  # the registration made before the switch
                try:
                    watch_urgent(self, urgent)
                except OSError as exc:
                    self._registration_failed(exc)

    def _read_into(self) -> None:
        """One read for a BufferedProtocol: into its buffer, then ``buffer_updated``
        (the ``_read_ready`` of the buffered variants)."""
        protocol = self._protocol
        try:
            buffer = protocol.get_buffer(-1)
            if not len(buffer):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            self._callback_failed(exc, "get_buffer")
            return
        try:
            size = self._sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._connection_error(exc)
            return
        if not size:
            self._read_eof()
            return
        self.bytes_in += size
        self.last_activity = self._reactor.now
        try:
            protocol.buffer_updated(size)
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            self._callback_failed(exc, "buffer_updated")


_variants: dict[type[BufferedReads], type[BufferedReads]] = {}


def buffered_variant(cls: type[BufferedReads]) -> type[BufferedReads]:
    """``cls`` reading into a BufferedProtocol's buffers: a subclass with no storage of
    its own (so an instance can switch to it and back), made once per class."""
    variant = _variants.get(cls)
    if variant is None:
        variant = _variants[cls] = type(
            f"{cls.__name__}[buffered]", (cls,),
            {"__slots__": (), "_read_ready": cls._read_into, "_plain_class": cls,
             "__module__": cls.__module__},
        )
    return variant
