"""Run a reactor inside a Twisted program.

Twisted's reactor watches descriptors through ``IReadDescriptor`` providers
(``addReader``) and runs delayed calls (``callLater``): the embedding gives it one reader
for our reactor's descriptor and keeps one delayed call for our next deadline::

    from twisted.internet import reactor as host

    reactor = Reactor()
    reactor.listen_tcp("127.0.0.1", 0, Echo)
    embedding = reactor_twisted.attach(reactor, host)
    host.run()

Two reactors meet here; in this module "the host" is Twisted's and "the reactor" ours.
If Twisted drops the reader by itself (the descriptor was closed under it), the
embedding logs it once and counts as detached.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorCore, IReadDescriptor
from zope.interface import implementer

from ..io.loop import Reactor
from .base import Embedding

__all__ = ["TwistedEmbedding", "attach"]


@implementer(IReadDescriptor)
class _Descriptor:
    """What Twisted watches: our reactor's descriptor, handing every read to a turn
    (the method names are Twisted's)."""

    def __init__(self, embedding: TwistedEmbedding, fd: int) -> None:
        self._embedding = embedding
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._embedding._turn()

    def connectionLost(self, reason: object) -> None:
        self._embedding._lost(reason)

    def logPrefix(self) -> str:
        return "socketreactor"


class TwistedEmbedding(Embedding):
    """A reactor driven by a Twisted reactor; made by :func:`attach`."""

    def __init__(self, reactor: Reactor, host: Any) -> None:
        super().__init__(reactor)
        self.host = host
        self._descriptor: _Descriptor | None = None
        self._call: Any = None  # an IDelayedCall

    def _watch(self, fd: int) -> None:
        self._descriptor = _Descriptor(self, fd)
        self.host.addReader(self._descriptor)

    def _unwatch(self, fd: int) -> None:
        if self._descriptor is not None:
            self.host.removeReader(self._descriptor)
            self._descriptor = None

    def _timer_fired(self) -> None:
        self._call = None
        self._turn()

    def _set_timer(self, delay: float) -> None:
        self._call = self.host.callLater(delay, self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None


def attach(reactor: Reactor, host: IReactorCore | None = None) -> TwistedEmbedding:
    """Drive ``reactor`` from the Twisted reactor ``host`` (default: the installed one,
    ``twisted.internet.reactor``) until detached; call it from Twisted's thread.

    ``host`` must provide ``IReactorFDSet`` and ``IReactorTime`` (every Twisted reactor
    on Unix does).

    Returns:
        The embedding; call its :meth:`~reactor.embed.base.Embedding.detach` to stop.
    """
    if host is None:
        from twisted.internet import reactor as installed

        host = installed
    embedding = TwistedEmbedding(reactor, host)
    embedding.attach()
    return embedding
