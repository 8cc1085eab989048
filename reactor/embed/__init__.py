"""Run a reactor inside another program's loop.

Each host has its own module here with an ``attach(reactor, host...)`` that returns an
:class:`Embedding` whose ``detach()`` hands the reactor back intact (to be attached again
or run by itself). All of them are built on the same three calls of
:class:`~reactor.Reactor`: :meth:`~reactor.Reactor.fileno` (a descriptor readable
whenever the reactor has work), :meth:`~reactor.Reactor.next_timeout` (how long the host
may sleep) and ``run_once(0)`` (one turn that never blocks); :mod:`reactor.embed.base`
holds what they share.

- :mod:`reactor.embed.asyncio`: a running :mod:`asyncio` loop (``attach`` is also
  importable from here, as before).
- :mod:`reactor.embed.tk`: a Tk interpreter (``createfilehandler`` and ``after``).
- :mod:`reactor.embed.trio`: a trio task (``wait_readable`` under a deadline).
- :mod:`reactor.embed.twisted`: a Twisted reactor (an ``IReadDescriptor`` and
  ``callLater``).
- A program's own ``select``/``poll``/``epoll`` loop needs no module: it watches
  ``fileno()``, sleeps at most ``next_timeout()`` and calls ``run_once(0)`` each time
  round (examples/select_host.py; :mod:`reactor.embed.asyncio` shows the loop).

For a host that cannot watch a descriptor and only offers "call this function soon,
from any thread" (Qt, a Windows message loop, a game loop, Tk's ``after_idle``):

- :mod:`reactor.embed.guest`: guest mode. :func:`reactor.embed.guest.start` returns a
  :class:`~reactor.embed.guest.GuestRun`; a helper thread makes the blocking poll and
  every callback runs in the host's thread, as trio's guest mode does.

For a synchronous program with no loop at all, :meth:`Reactor.background()
<reactor.Reactor.background>` runs the reactor in a daemon thread instead
(:mod:`reactor.io.background`).

Every one of them passes the same conformance checks (tests/embedkit.py): serving,
detach and reattach, timers on time, cross-thread wake-up, a protocol's exception kept
in the reactor, the host's loop going on after a detach, signals left to the host.

Only the asyncio module is imported here: the others import their host library, which
the program that uses them has (guest mode needs none, but is imported by name too).
"""

from __future__ import annotations

from .asyncio import AsyncioEmbedding, attach
from .base import Embedding

__all__ = ["AsyncioEmbedding", "Embedding", "attach"]
