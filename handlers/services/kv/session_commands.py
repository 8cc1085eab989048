"""The key-value service's connection and transaction commands.

Role: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT; MULTI, EXEC, DISCARD, WATCH,
UNWATCH. Each function is registered in :data:`~handlers.services.kv.table.COMMANDS`
by ``@_command`` when this module is imported; the package imports the command modules
in the order ``COMMAND`` lists them.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the
connection only for type checking.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from handlers.framers.resp import (
    NULL_ARRAY,
    NULL_RESP3,
    OK,
    PONG,
    encode_bulk,
    encode_integer,
    encode_map,
)

from .auth import DEFAULT_USER, E_HELLO_NOAUTH, E_NO_PASSWORD, E_WRONGPASS, password_matches
from .table import (
    _ALL_KEYS,
    DATABASES,
    E_SYNTAX,
    INT32_MAX,
    INT32_MIN,
    SERVER_VERSION,
    CommandError,
    _arity_error,
    _c_string,
    _command,
    _parse_int,
    _unknown_subcommand,
)

if TYPE_CHECKING:
    from .connection import KVProtocol

__all__: list[str] = []  # the commands are reached through COMMANDS

logger = logging.getLogger("handlers.kv")  # the service's logger (see .connection)


# connection


@_command("ping", -1, "fast", "connection", "Returns the server's liveliness response.")
def _ping(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) == 1:
        return PONG
    if len(a) == 2:
        return encode_bulk(a[1])
    return _arity_error("ping")


@_command("echo", 2, "fast", "connection", "Returns the given string.")
def _echo(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_bulk(a[1])


@_command("quit", -1, "fast", "connection", "Closes the connection.", immediate=True,
          no_auth=True)
def _quit(c: KVProtocol, a: list[bytes]) -> bytes:
    c.close()
    return OK


@_command("select", 2, "fast", "connection", "Changes the selected database.")
def _select(c: KVProtocol, a: list[bytes]) -> bytes:
    index = _parse_int(a[1])
    if not INT32_MIN <= index <= INT32_MAX:  # Redis parses the index as a C int first
        raise CommandError(
            f"ERR value is out of range, value must between {INT32_MIN} and {INT32_MAX}")
    if not 0 <= index < DATABASES:
        raise CommandError("ERR DB index is out of range")
    c.select(index)
    return OK


@_command("auth", -2, "fast", "connection", "Authenticates the connection.", no_auth=True)
def _auth(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) > 3:
        raise CommandError(E_SYNTAX)
    requirepass = c._server.requirepass
    if len(a) == 2:
        if requirepass is None:
            raise CommandError(E_NO_PASSWORD)
        _authenticate(c, DEFAULT_USER, a[1])
    else:
        _authenticate(c, a[1], a[2])
    return OK


def _authenticate(c: KVProtocol, user: bytes, password: bytes) -> None:
    """Mark ``c`` authenticated, or raise WRONGPASS (and log it, without the password)."""
    if not password_matches(c._server.requirepass, user, password):
        logger.info("kv client %s: authentication failed", c.address)
        raise CommandError(E_WRONGPASS)
    c.authenticated = True


def _check_name(value: bytes, what: str) -> None:
    if any(c < 33 or c > 126 for c in value):
        raise CommandError(f"ERR {what} cannot contain spaces, newlines or special characters.")


@_command("hello", -1, "fast", "connection", "Handshakes with the server.",
          no_auth=True)
def _hello(c: KVProtocol, a: list[bytes]) -> bytes:
    version = 3 if c.resp3 else 2
    if len(a) >= 2:
        try:
            version = _parse_int(a[1])
        except CommandError:
            raise CommandError(
                "ERR Protocol version is not an integer or out of range"
            ) from None
        if version not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    i = 2
    name: bytes | None = None
    credentials: tuple[bytes, bytes] | None = None
    while i < len(a):
        option = a[i].upper()
        if option == b"AUTH" and i + 2 < len(a):
            credentials = (a[i + 1], a[i + 2])
            i += 3
        elif option == b"SETNAME" and i + 1 < len(a):
            name = a[i + 1]
            _check_name(name, "Client names")
            i += 2
        else:
            raise CommandError(b"ERR Syntax error in HELLO option '%b'" % _c_string(a[i]))
    if credentials is not None:  # as Redis: the options are parsed first
        _authenticate(c, *credentials)
    if not c.authenticated:
        raise CommandError(E_HELLO_NOAUTH)
    if name is not None:
        c.name = name
    c.set_protocol_version(version)
    return encode_map(
        [
            (encode_bulk(b"server"), encode_bulk(b"redis")),
            (encode_bulk(b"version"), encode_bulk(SERVER_VERSION.encode())),
            (encode_bulk(b"proto"), encode_integer(version)),
            (encode_bulk(b"id"), encode_integer(c.client_id)),
            (encode_bulk(b"mode"), encode_bulk(b"standalone")),
            (encode_bulk(b"role"), encode_bulk(b"master")),
            (encode_bulk(b"modules"), b"*0\r\n"),
        ],
        resp3=c.resp3,
    )


@_command("client", -2, "", "connection", "A container for client commands.")
def _client(c: KVProtocol, a: list[bytes]) -> bytes:
    sub = a[1].lower()
    if sub == b"setname" and len(a) == 3:
        _check_name(a[2], "Client names")
        c.name = a[2]
        return OK
    if sub == b"getname" and len(a) == 2:
        return encode_bulk(c.name) if c.name else c.null
    if sub == b"id" and len(a) == 2:
        return encode_integer(c.client_id)
    if sub == b"setinfo" and len(a) == 4:
        attr = a[2].lower()
        if attr == b"lib-name":
            _check_name(a[3], "lib-name")
            c.lib_name = a[3]
        elif attr == b"lib-ver":
            _check_name(a[3], "lib-ver")
            c.lib_ver = a[3]
        else:
            raise CommandError(b"ERR Unrecognized option '%b'" % _c_string(a[2]))
        return OK
    if sub == b"info" and len(a) == 2:
        return encode_bulk(c.describe().encode() + b"\n")
    if sub == b"list" and len(a) == 2:
        lines = "".join(p.describe() + "\n" for p in c._server.clients.values())
        return encode_bulk(lines.encode())
    if sub in (b"setname", b"getname", b"id", b"setinfo", b"info", b"list"):
        return _arity_error(f"client|{sub.decode()}")
    raise _unknown_subcommand(a)


# transactions


@_command("multi", 1, "fast", "transactions", "Starts a transaction.", immediate=True)
def _multi(c: KVProtocol, a: list[bytes]) -> bytes:
    if c._multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    c._multi = []
    c._multi_dirty = False
    return OK


@_command("exec", 1, "", "transactions", "Executes all commands in a transaction.", immediate=True)
def _exec(c: KVProtocol, a: list[bytes]) -> bytes:
    queued = c._multi
    if queued is None:
        raise CommandError("ERR EXEC without MULTI")
    c._multi = None
    changed = c.watched_key_changed()
    c.unwatch()
    if c._multi_dirty:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    if changed:
        return NULL_RESP3 if c.resp3 else NULL_ARRAY
    replies = []
    for command, args in queued:
        try:
            replies.append(command.handler(c, args))
        except CommandError as exc:
            replies.append(exc.reply)
    return b"*%d\r\n" % len(replies) + b"".join(replies)


@_command("discard", 1, "fast", "transactions", "Discards a transaction.", immediate=True)
def _discard(c: KVProtocol, a: list[bytes]) -> bytes:
    if c._multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    c._multi = None
    c.unwatch()
    return OK


@_command("watch", -2, "fast", "transactions",
          "Monitors changes to keys to determine the execution of a transaction.",
          keys=_ALL_KEYS, immediate=True)
def _watch(c: KVProtocol, a: list[bytes]) -> bytes:
    if c._multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    store = c.store
    for key in a[1:]:
        c.watch(store, key)
    return OK


@_command("unwatch", 1, "fast", "transactions",
          "Forgets about watched keys of a transaction.")
def _unwatch(c: KVProtocol, a: list[bytes]) -> bytes:
    c.unwatch()
    return OK
