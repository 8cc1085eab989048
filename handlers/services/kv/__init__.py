"""A Redis-protocol key-value service: an :class:`asyncio.Protocol` for the reactor or asyncio.

Role: a ready service that real Redis clients (redis-py, ``redis-cli``,
``redis-benchmark``) talk to. It speaks RESP2, and RESP3 to clients that ask for it with
``HELLO 3`` (redis-py 8 does so by default), over any stream transport; ``reactor serve
kv`` loads it.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: the protocol only
sees its transport, and time and timers come from the loop it is bound to.

Pieces (one module each, imported in this order)
------------------------------------------------
* :mod:`.glob` -- :func:`compile_glob` and :func:`glob_match`, the ``KEYS`` and ``SCAN``
  patterns.
* :mod:`.scan` -- :class:`ScanIndex`, the order ``SCAN`` walks a database in, and its
  cursors.
* :mod:`.watch` -- :class:`Watch`, the keys one connection WATCHes.
* :mod:`.store` -- :class:`KVStore`, one database (the server has :data:`DATABASES`,
  shared by every connection; SELECT picks one per connection): strings, lists, hashes
  and sets, with expiry: *lazy* (a read of an expired key deletes it) and *active* (one
  timer on the loop, armed for the nearest deadline, deletes keys nobody reads).
* :mod:`.auth` -- the password (``requirepass``): :func:`password_matches` and the
  NOAUTH and WRONGPASS replies.
* :mod:`.table` -- :class:`Command`, :data:`COMMANDS` and :class:`CommandError`.
* :mod:`.session_commands`, :mod:`.data_commands`, :mod:`.collection_commands`,
  :mod:`.server_commands` -- the commands, registered in :data:`COMMANDS` as they are
  imported (the order ``COMMAND`` lists them in).
* :mod:`.connection` -- :class:`KVProtocol`, one per connection: feeds a
  :class:`~handlers.framers.resp.RespParser`, runs every complete command of a chunk
  and writes all their replies in one ``write``; the request deadline and flow control.
* :mod:`.replwire`, :mod:`.holdback`, :mod:`.peers`, :mod:`.replicating` -- synchronous
  replication to peer hosts (``KVServer(replicate_to=..., replication_secret=...)``):
  the link's commands (REPLLINK, REPLWRITE, REPLEXEC), the replies held back until the
  peers acknowledged, the outbound links, and the connection class of a replicating
  server (a server without replication makes plain :class:`KVProtocol` connections).
* :mod:`.server` -- :class:`KVServer`, the protocol factory:
  ``reactor.listen_tcp(host, port, KVServer(reactor))`` or
  ``loop.create_server(KVServer(loop), host, port)``. Unbound (``KVServer()``), the
  store binds itself to the loop of its first connection.
"""

from __future__ import annotations

# isort: off
# the command modules first, in the order COMMAND lists the commands
from . import session_commands, data_commands, collection_commands, server_commands  # noqa: F401
# isort: on
from .connection import FLUSH_SIZE, KVProtocol
from .glob import compile_glob, glob_match
from .scan import ScanIndex
from .server import KVServer, KVStatistics
from .store import KVStore, Scheduler
from .table import COMMANDS, DATABASES, Command, CommandError
from .watch import Watch

__all__ = [
    "COMMANDS",
    "DATABASES",
    "FLUSH_SIZE",
    "Command",
    "CommandError",
    "KVProtocol",
    "KVServer",
    "KVStatistics",
    "KVStore",
    "ScanIndex",
    "Scheduler",
    "Watch",
    "compile_glob",
    "glob_match",
]
