"""The key-value service's protocol factory and its statistics.

Role: :class:`KVServer`, the factory a listener calls once per connection (every
:class:`~handlers.services.kv.connection.KVProtocol` it makes shares its
:data:`DATABASES` databases, each a :class:`~handlers.services.kv.store.KVStore`), its
settings (parser limits, the request deadline, what ``CONFIG GET`` reports) and
:class:`KVStatistics`.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from dataclasses import dataclass

from handlers.framers.resp import (
    DEFAULT_MAX_ARRAY_LENGTH,
    DEFAULT_MAX_BULK_LENGTH,
    DEFAULT_MAX_COMMAND_SIZE,
    DEFAULT_MAX_INLINE_LENGTH,
    RespParser,
)

from .connection import KVProtocol
from .peers import DEFAULT_TIMEOUT, Replication, parse_peer, proxy_header
from .replicating import ReplicatingProtocol
from .store import KVStore, Scheduler
from .table import DATABASES

__all__ = ["DATABASES", "KVServer", "KVStatistics"]


@dataclass(frozen=True)
class KVStatistics:
    """An immutable snapshot of a :class:`KVServer`.

    Attributes:
        keys: keys in all databases (expired ones not yet deleted included).
        expiring: keys with a TTL.
        expired_keys: keys deleted because their TTL passed.
        clients: connections open now.
        connections_total: connections ever made.
        commands_processed: commands run (including failed ones).
        protocol_errors: malformed requests seen.
    """

    keys: int
    expiring: int
    expired_keys: int
    clients: int
    connections_total: int
    commands_processed: int
    protocol_errors: int


class KVServer:
    """The protocol factory of a key-value service; every protocol shares its databases.

    Args:
        loop: the reactor or asyncio loop the service runs on (timers for expiry);
            None: bound to the loop of the first connection.
        store: the store to serve as database 0 (a new one by default); databases 1
            to 15 are new stores.
        max_bulk_length: the longest bulk string accepted (a longer one is refused
            before its payload is read, and the connection closed).
        max_array_length: the most arguments one command may have.
        max_inline_length: the longest inline command line.
        max_command_size: the most bytes one command may declare.
        request_timeout: seconds a client has to finish sending a command once its
            first bytes arrived (None: no limit).
        requirepass: the password a client must give (``AUTH``, ``HELLO 3 AUTH
            default``) before any other command; None: none (see :mod:`.auth`). Kept
            out of logs and of ``CONFIG GET``.
        replicate_to: the peers (``"HOST:PORT"`` or ``(host, port)``, other kv hosts)
            every write is sent to before its reply (see :mod:`.replicating`); needs
            ``replication_secret`` and a reactor as ``loop``.
        min_replicas: peers that must acknowledge each write (default: 1 with peers);
            with fewer live peers a write is refused with ``NOREPLICAS``, unapplied.
        replication_secret: the secret the links to the peers present and the links
            from them must present (``REPLLINK``); a server with a secret and no peers
            only accepts links.
        replication_timeout: seconds a peer has to connect and to acknowledge each
            write before it is marked down.
        replication_header: ``v1``, ``v2`` or ``any``: the links send this PROXY
            protocol header first (a LOCAL one), for peers that serve with
            ``--proxy-protocol``; None: no header.

    Example::

        server = KVServer(reactor)
        reactor.listen_tcp("127.0.0.1", 6379, server)
    """

    def __init__(
        self,
        loop: Scheduler | None = None,
        *,
        store: KVStore | None = None,
        max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
        max_array_length: int = DEFAULT_MAX_ARRAY_LENGTH,
        max_inline_length: int = DEFAULT_MAX_INLINE_LENGTH,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        request_timeout: float | None = None,
        requirepass: str | bytes | None = None,
        replicate_to: list[str] | list[tuple[str, int]] | None = None,
        min_replicas: int | None = None,
        replication_secret: str | bytes | None = None,
        replication_timeout: float = DEFAULT_TIMEOUT,
        replication_header: str | None = None,
    ) -> None:
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be a positive number of seconds or "
                             f"None, not {request_timeout}")
        self.request_timeout = request_timeout
        if isinstance(requirepass, str):
            requirepass = requirepass.encode()
        if requirepass == b"":  # as Redis: an empty requirepass means no password
            requirepass = None
        self.requirepass: bytes | None = requirepass
        self.replication = _replication(replicate_to, min_replicas, replication_secret,
                                        replication_timeout, replication_header)
        if self.replication is not None and self.replication.links and loop is None:
            raise ValueError("kv replication needs the reactor as loop (to reach its peers)")
        self._protocol = KVProtocol if self.replication is None else ReplicatingProtocol
        self.store = store if store is not None else KVStore()
        self.databases = [self.store, *(KVStore() for _ in range(DATABASES - 1))]
        self.bound = False
        if loop is not None:
            self.bind(loop)
        self.max_bulk_length = max_bulk_length
        self.max_array_length = max_array_length
        self.max_inline_length = max_inline_length
        self.max_command_size = max_command_size
        self.clients: dict[int, KVProtocol] = {}
        self.connections_total = 0
        self.commands_processed = 0
        self.protocol_errors = 0
        self.new_parser()  # validates the limits now rather than at the first connection

    def __call__(self) -> KVProtocol:
        return self._protocol(self)

    def bind(self, loop: Scheduler, *, keep_bound: bool = False) -> None:
        """Drive every database's expiry with ``loop``'s clock and timers; with
        ``keep_bound``, a database bound to another loop stays so.

        Raises:
            LocalProtocolError: a database is already bound to another loop (and not
                ``keep_bound``).
        """
        for store in self.databases:
            if not keep_bound or store.loop is None:
                store.bind(loop)
        self.bound = True
        if self.replication is not None:
            self.replication.start(loop)

    def close(self) -> None:
        """Close the replication links (nothing else to close)."""
        if self.replication is not None:
            self.replication.close()

    def new_parser(self) -> RespParser:
        """A parser with this server's limits."""
        return RespParser(
            max_bulk_length=self.max_bulk_length,
            max_array_length=self.max_array_length,
            max_inline_length=self.max_inline_length,
            max_command_size=self.max_command_size,
        )

    def config(self) -> dict[str, str]:
        """The values ``CONFIG GET`` reports (what clients and benchmarks ask for)."""
        return {
            "save": "",
            "appendonly": "no",
            "appendfsync": "no",
            "databases": str(DATABASES),
            "maxmemory": "0",
            "maxmemory-policy": "noeviction",
            "maxclients": "0",
            "timeout": "0",
            "proto-max-bulk-len": str(self.max_bulk_length),
            "client-query-buffer-limit": str(self.max_command_size),
            "cluster-enabled": "no",
            "replica-read-only": "yes",
            "slave-read-only": "yes",
            "io-threads": "1",
        }

    def statistics(self) -> KVStatistics:
        """A snapshot of the databases and connection counters."""
        databases = self.databases
        return KVStatistics(
            keys=sum(len(store) for store in databases),
            expiring=sum(store.expiring for store in databases),
            expired_keys=sum(store.expired_keys for store in databases),
            clients=len(self.clients),
            connections_total=self.connections_total,
            commands_processed=self.commands_processed,
            protocol_errors=self.protocol_errors,
        )


def _replication(
    replicate_to: list[str] | list[tuple[str, int]] | None, min_replicas: int | None,
    secret: str | bytes | None, timeout: float, header: str | None,
) -> Replication | None:
    """The server's :class:`~.peers.Replication`, None without peers nor a secret.

    Raises:
        ValueError: peers without a secret, a bad peer address, ``min_replicas`` out of
            range, a timeout that is not positive.
    """
    if isinstance(secret, str):
        secret = secret.encode()
    peers = [parse_peer(peer) if isinstance(peer, str) else peer
             for peer in replicate_to or ()]
    if not secret:
        if peers or min_replicas is not None:
            raise ValueError("kv replication needs a replication secret (the same on "
                             "every host)")
        return None
    return Replication(peers, secret, min_replicas=min_replicas, timeout=timeout,
                       header=proxy_header(header))
