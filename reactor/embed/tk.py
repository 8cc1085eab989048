"""Run a reactor inside a Tk program (:mod:`tkinter`).

Tk's event loop (``mainloop``) can watch a descriptor (``createfilehandler``, on Unix)
and run a callback after a delay (``after``): that is all an embedding needs. The
reactor's callbacks then run on Tk's thread, between the window's own events, so a
protocol may update widgets directly::

    root = tkinter.Tk()
    reactor = Reactor()
    reactor.listen_tcp("127.0.0.1", 0, ChatServer)
    embedding = reactor_tk.attach(reactor, root)
    root.mainloop()
    embedding.detach()

A turn of the reactor runs inside a Tk callback and must stay short, as any Tk callback
must: the reactor never blocks in it (``run_once(0)``).
"""

from __future__ import annotations

import math
import tkinter

from ..io.loop import Reactor
from .base import Embedding

__all__ = ["TkEmbedding", "attach"]


class TkEmbedding(Embedding):
    """A reactor driven by a Tk interpreter's event loop; made by :func:`attach`."""

    def __init__(self, reactor: Reactor, widget: tkinter.Misc) -> None:
        super().__init__(reactor)
        self.widget = widget
        self._after: str | None = None

    def _watch(self, fd: int) -> None:
        self.widget.tk.createfilehandler(fd, tkinter.READABLE, self._readable)

    def _unwatch(self, fd: int) -> None:
        self.widget.tk.deletefilehandler(fd)

    def _readable(self, fd: int, mask: int) -> None:
        self._turn()

    def _timer_fired(self) -> None:
        self._after = None
        self._turn()

    def _set_timer(self, delay: float) -> None:
        # Tk counts whole milliseconds; rounding up never wakes the reactor early
        self._after = self.widget.after(math.ceil(delay * 1000), self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._after is not None:
            self.widget.after_cancel(self._after)
            self._after = None


def attach(reactor: Reactor, widget: tkinter.Misc) -> TkEmbedding:
    """Drive ``reactor`` from the Tk interpreter of ``widget`` (a ``Tk`` or any widget)
    until detached; call it from Tk's thread.

    Returns:
        The embedding; call its :meth:`~reactor.embed.base.Embedding.detach` to stop.
    """
    embedding = TkEmbedding(reactor, widget)
    embedding.attach()
    return embedding
