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

Only the asyncio module is imported here: the others import their host library, which
the program that uses them has.
"""

from __future__ import annotations

from .asyncio import AsyncioEmbedding, attach
from .base import Embedding

__all__ = ["AsyncioEmbedding", "Embedding", "attach"]
