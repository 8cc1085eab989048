"""Run a reactor inside another program's loop.

Each host has its own module here with an ``attach(reactor, ...)`` that returns an
embedding whose ``detach()`` hands the reactor back intact. All of them are built on the
same three calls of :class:`~reactor.Reactor`: :meth:`~reactor.Reactor.fileno` (a
descriptor readable whenever the reactor has work), :meth:`~reactor.Reactor.next_timeout`
(how long the host may sleep) and ``run_once(0)`` (one turn that never blocks).

- :mod:`reactor.embed.asyncio`: a running :mod:`asyncio` loop (``attach`` is also
  importable from here, as before).
"""

from __future__ import annotations

from .asyncio import AsyncioEmbedding, attach

__all__ = ["AsyncioEmbedding", "attach"]
