"""Run a reactor inside a trio program.

trio has no callbacks to hand a descriptor to; it has tasks. The embedding is one task
that waits for the reactor's descriptor (``trio.lowlevel.wait_readable``) under a
deadline (the reactor's next timer), gives the reactor a turn, and waits again::

    async def main():
        reactor = Reactor()
        reactor.listen_tcp("127.0.0.1", 0, Echo)
        async with trio.open_nursery() as nursery:
            embedding = reactor_trio.attach(reactor, nursery)
            ...  # the program's own tasks
            embedding.detach()

Without a nursery the task is a trio system task: it lives until :meth:`detach` or the
end of ``trio.run``. :meth:`detach` cancels the task; it may be called from trio's
thread at any time, from a reactor callback too. Attaching again starts a new task at
once: trio lets one task at a time wait on a descriptor, and cancelling the old task's
scope takes its wait off the descriptor there and then (trio aborts a blocked wait
synchronously), so the two never wait together.
"""

from __future__ import annotations

import trio

from ..io.loop import Reactor
from .base import Embedding

__all__ = ["TrioEmbedding", "attach"]


class TrioEmbedding(Embedding):
    """A reactor driven by a trio task; made by :func:`attach`."""

    def __init__(self, reactor: Reactor, nursery: trio.Nursery | None = None) -> None:
        super().__init__(reactor)
        self.nursery = nursery
        self._delay: float | None = None
        self._scope: trio.CancelScope | None = None

    def _watch(self, fd: int) -> None:
        scope = self._scope = trio.CancelScope()
        if self.nursery is None:
            trio.lowlevel.spawn_system_task(self._run, fd, scope,
                                            name="socketreactor embedding")
        else:
            self.nursery.start_soon(self._run, fd, scope, name="socketreactor embedding")

    def _unwatch(self, fd: int) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    def _set_timer(self, delay: float) -> None:
        self._delay = delay

    def _cancel_timer(self) -> None:
        self._delay = None

    async def _run(self, fd: int, scope: trio.CancelScope) -> None:
        # Every await below is a checkpoint, which lets trio's other tasks run before
        # the next turn; a cancel scope is made only when a deadline needs one (most
        # turns of a busy server have none, or have work due at once).
        wait_readable = trio.lowlevel.wait_readable
        try:
            with scope:
                while True:
                    delay = self._delay
                    if delay is None:
                        await wait_readable(fd)
                    elif delay <= 0:
                        await trio.lowlevel.checkpoint()
                    else:
                        with trio.move_on_after(delay):
                            await wait_readable(fd)
                    self._turn()
        finally:
            if self._scope is scope:  # ended by trio itself (the run is over)
                self._lost("the trio task ended")
                self._scope = None


def attach(reactor: Reactor, nursery: trio.Nursery | None = None) -> TrioEmbedding:
    """Drive ``reactor`` from a trio task in ``nursery`` (default: a system task) until
    detached; call it from trio's thread, inside ``trio.run``.

    Returns:
        The embedding; call its :meth:`~reactor.embed.base.Embedding.detach` to stop.
    """
    embedding = TrioEmbedding(reactor, nursery)
    embedding.attach()
    return embedding
