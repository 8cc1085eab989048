"""Run a reactor inside another event loop.

A host loop needs two things from the reactor: a descriptor to watch
(:meth:`Reactor.fileno`, readable whenever the reactor has I/O or queued work) and how
long it may sleep (:meth:`Reactor.next_timeout`). When either says so, the host calls
``reactor.run_once(0)``, which never blocks.

:func:`attach` does this for a running :mod:`asyncio` loop: one reader on the reactor's
descriptor and one timer handle for the reactor's next deadline, refreshed after every
turn. Both loops then share one thread and neither starves the other.

For a host program that owns a plain ``select`` loop, the same three calls suffice::

    while running:
        timeout = reactor.next_timeout()
        readable, _, _ = select.select([reactor.fileno(), *my_fds], [], [], timeout)
        ...  # the host's own descriptors
        reactor.run_once(0)

:meth:`Reactor.next_timeout` never exceeds :data:`reactor.io.loop.MAX_WAIT` (one day), however
far the next timer is, so a host may hand it to ``select``, ``poll`` or ``epoll`` as is.

The reactor's selector must have a descriptor of its own (epoll, kqueue, devpoll): the
default selector on Linux and the BSDs.
"""

from __future__ import annotations

import asyncio

from ..io.loop import Reactor
from .base import Embedding

__all__ = ["AsyncioEmbedding", "attach"]


class AsyncioEmbedding(Embedding):
    """A reactor driven by an asyncio loop; made by :func:`attach`."""

    def __init__(self, reactor: Reactor, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reactor)
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None

    def _watch(self, fd: int) -> None:
        self.loop.add_reader(fd, self._turn)

    def _unwatch(self, fd: int) -> None:
        self.loop.remove_reader(fd)

    def _set_timer(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._turn)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def attach(reactor: Reactor, loop: asyncio.AbstractEventLoop | None = None) -> AsyncioEmbedding:
    """Drive ``reactor`` from ``loop`` (default: the running loop) until detached.

    Returns:
        The embedding; call its :meth:`~AsyncioEmbedding.detach` to stop.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    embedding = AsyncioEmbedding(reactor, loop)
    embedding.attach()
    return embedding
