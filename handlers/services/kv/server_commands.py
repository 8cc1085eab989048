"""The key-value service's server commands.

Role: DBSIZE, FLUSHDB, FLUSHALL, TIME, INFO, CONFIG, COMMAND. Each function is registered in
:data:`~handlers.services.kv.table.COMMANDS` by ``@_command`` when this module is
imported; the package imports the command modules in the order ``COMMAND`` lists them.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the
connection only for type checking.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from handlers.framers.resp import OK, encode_bulk, encode_integer, encode_map

from .glob import compile_glob
from .table import (
    _COMMAND_LIST,
    COMMANDS,
    E_SYNTAX,
    SERVER_VERSION,
    CommandError,
    _arity_error,
    _array,
    _c_string,
    _command,
    _unknown_subcommand,
)

if TYPE_CHECKING:
    from .connection import KVProtocol

__all__: list[str] = []  # the commands are reached through COMMANDS


# server


@_command("dbsize", 1, "readonly fast", "server",
          "Returns the number of keys in the database.")
def _dbsize(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_integer(len(c.store))


def _check_flush_mode(a: list[bytes]) -> None:
    if len(a) > 2 or (len(a) == 2 and a[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(E_SYNTAX)


@_command("flushdb", -1, "write", "server", "Removes all keys from the database.")
def _flushdb(c: KVProtocol, a: list[bytes]) -> bytes:
    _check_flush_mode(a)
    c.store.flush()
    return OK


@_command("flushall", -1, "write", "server", "Removes all keys from all databases.")
def _flushall(c: KVProtocol, a: list[bytes]) -> bytes:
    _check_flush_mode(a)
    for store in c._server.databases:
        store.flush()
    return OK


@_command("time", 1, "fast", "server", "Returns the server time.")
def _time(c: KVProtocol, a: list[bytes]) -> bytes:
    micros = time.time_ns() // 1000
    return _array([b"%d" % (micros // 1_000_000), b"%d" % (micros % 1_000_000)])


@_command("info", -1, "", "server", "Returns information and statistics about the server.")
def _info(c: KVProtocol, a: list[bytes]) -> bytes:
    server = c._server
    stats = server.statistics()
    sections = {
        "server": [f"redis_version:{SERVER_VERSION}", "redis_mode:standalone",
                   "server_name:socketreactor-kv"],
        "clients": [f"connected_clients:{stats.clients}"],
        "persistence": ["loading:0", "rdb_changes_since_last_save:0", "aof_enabled:0"],
        "stats": [f"total_connections_received:{stats.connections_total}",
                  f"total_commands_processed:{stats.commands_processed}",
                  f"expired_keys:{stats.expired_keys}",
                  f"protocol_errors:{stats.protocol_errors}"],
        "replication": ["role:master", "connected_slaves:0"],
        "keyspace": [f"db{index}:keys={len(store)},expires={store.expiring},avg_ttl=0"
                     for index, store in enumerate(server.databases) if len(store)],
    }
    wanted = {arg.decode("utf-8", "replace").lower() for arg in a[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(sections)
    text = "\r\n".join(
        f"# {name.capitalize()}\r\n" + "".join(line + "\r\n" for line in lines)
        for name, lines in sections.items() if name in wanted
    )
    return encode_bulk(text.encode())


@_command("config", -2, "", "server", "A container for server configuration commands.")
def _config(c: KVProtocol, a: list[bytes]) -> bytes:
    sub = a[1].lower()
    if sub == b"get":
        if len(a) < 3:
            return _arity_error("config|get")
        values = c._server.config()
        pairs: list[tuple[bytes, bytes]] = []
        for raw in a[2:]:
            match = compile_glob(raw.lower())
            for name, value in values.items():
                if match(name.encode()) and all(name.encode() != p[0] for p in pairs):
                    pairs.append((name.encode(), value.encode()))
        return encode_map([(encode_bulk(k), encode_bulk(v)) for k, v in pairs], resp3=c.resp3)
    if sub == b"set":
        if len(a) < 4 or len(a) % 2:
            return _arity_error("config|set")
        raise CommandError(b"ERR Unknown option or number of arguments for CONFIG SET - "
                           b"'%b'" % _c_string(a[2]))
    if sub == b"resetstat" and len(a) == 2:
        server = c._server
        server.commands_processed = server.protocol_errors = 0
        for store in server.databases:
            store.expired_keys = 0
        return OK
    raise _unknown_subcommand(a)


@_command("command", -1, "", "server", "Returns detailed information about all commands.")
def _command_cmd(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) == 1:
        infos = [cmd.info(c.resp3) for cmd in _COMMAND_LIST]
        return b"*%d\r\n" % len(infos) + b"".join(infos)
    sub = a[1].lower()
    if sub == b"count" and len(a) == 2:
        return encode_integer(len(_COMMAND_LIST))
    if sub == b"list" and len(a) == 2:
        return _array([cmd.name.encode() for cmd in _COMMAND_LIST])
    if sub == b"info":
        infos = []
        for name in a[2:]:
            cmd = COMMANDS.get(name.lower())
            infos.append(cmd.info(c.resp3) if cmd is not None else c.null)
        return b"*%d\r\n" % len(infos) + b"".join(infos)
    if sub == b"docs":
        wanted = [COMMANDS.get(name.lower()) for name in a[2:]] if len(a) > 2 else _COMMAND_LIST
        found = [cmd for cmd in wanted if cmd is not None]
        return encode_map(
            [(encode_bulk(cmd.name.encode()), cmd.docs(c.resp3)) for cmd in found], resp3=c.resp3
        )
    raise _unknown_subcommand(a)
