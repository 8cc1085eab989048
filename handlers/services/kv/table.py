"""The command table of the key-value service: entries, registration, errors.

Role: :class:`Command` (one command's arity, flags, key positions, documentation and
handler), :data:`COMMANDS` (every command by name, filled by the ``@_command``
decorator as the command modules are imported, in the order ``COMMAND`` lists them),
:class:`CommandError` and the error replies and argument helpers the commands share.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the
connection only for type checking (handlers receive it as their first argument).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from handlers.framers.resp import encode_bulk, encode_error, encode_integer, encode_map

if TYPE_CHECKING:
    from .connection import KVProtocol

__all__ = ["COMMANDS", "Command", "CommandError", "Handler"]

SERVER_VERSION: Final = "7.0.0"  # what INFO and HELLO report, for clients that check
DATABASES: Final = 16  # SELECT 0 to 15, as in redis-server's default configuration
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# the error replies, worded as Redis words them (clients match on them)
E_NOT_INT: Final = "ERR value is not an integer or out of range"
E_SYNTAX: Final = "ERR syntax error"
E_WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
E_OVERFLOW: Final = "ERR increment or decrement would overflow"


class CommandError(Exception):
    """A command failed; :attr:`reply` is the RESP error sent to the client.

    Args:
        message: the error text starting with its code, e.g. ``"ERR syntax error"``.
    """

    def __init__(self, message: str | bytes) -> None:
        super().__init__(message)
        self.reply = encode_error(message)


def _arity_error(name: str) -> bytes:
    return encode_error(f"ERR wrong number of arguments for '{name}' command")


def _c_string(raw: bytes) -> bytes:
    """``raw`` up to its first NUL: what Redis's ``%s`` prints of an argument."""
    return raw.split(b"\0", 1)[0]


def _unknown_command(args: list[bytes]) -> bytes:
    # Redis's wording and limits: the name cut at 128 bytes, then the arguments while
    # the list is under 128 bytes, each cut to what is left; bytes as they came
    rest = b""
    for arg in args[1:]:
        if len(rest) >= 128:
            break
        rest += b"'" + _c_string(arg)[: 128 - len(rest)] + b"' "
    return encode_error(b"ERR unknown command '" + _c_string(args[0])[:128]
                        + b"', with args beginning with: " + rest)


def _unknown_subcommand(args: list[bytes]) -> CommandError:
    # the bytes as they came, as Redis prints them (%.128s)
    return CommandError(b"ERR unknown subcommand '%b'. Try %b HELP."
                        % (_c_string(args[1])[:128], _c_string(args[0]).upper()))


def _parse_int(raw: bytes) -> int:
    """Parse a 64-bit integer written exactly as Redis writes one (no sign, space,
    leading zero or underscore tricks).

    Raises:
        CommandError: not such an integer.
    """
    if len(raw) > 20:
        raise CommandError(E_NOT_INT)
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(E_NOT_INT) from None
    if b"%d" % value != raw or not INT64_MIN <= value <= INT64_MAX:
        raise CommandError(E_NOT_INT)
    return value


Handler = Callable[["KVProtocol", list[bytes]], bytes]


_CATEGORIES: Final = {"readonly": b"read", "write": b"write", "fast": b"fast"}


@dataclass(frozen=True)
class Command:
    """One command's entry in :data:`COMMANDS` (also what ``COMMAND`` reports).

    Attributes:
        name: the lower-case name.
        arity: Redis's arity: N means exactly N words (name included), -N at least N.
        flags: Redis's command flags (``readonly``, ``write``, ``fast`` ...).
        first_key: position of the first key argument (0: none).
        last_key: position of the last key (-1: the last argument).
        step: distance between keys.
        group: the documentation group (``string``, ``generic``, ``connection`` ...).
        summary: one line for ``COMMAND DOCS``.
        handler: runs the command, returns the encoded reply.
        immediate: runs even inside MULTI instead of being queued.
        no_auth: runs before the connection authenticated (Redis's ``no_auth`` flag:
            AUTH, HELLO, QUIT), when the server has a password.
        write: the ``write`` flag as a boolean: the command may change the store
            (what replication sends to the peers, see :mod:`.replicating`).
    """

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    handler: Handler
    immediate: bool = False
    no_auth: bool = False
    write: bool = False

    def info(self, resp3: bool = False) -> bytes:
        """The encoded ``COMMAND INFO`` entry (Redis 7's ten fields)."""
        set_head = b"~%d\r\n" if resp3 else b"*%d\r\n"
        flags = [b"+%s\r\n" % flag.encode() for flag in self.flags]
        categories = [b"+@%s\r\n" % _CATEGORIES[flag] for flag in self.flags
                      if flag in _CATEGORIES]
        categories.append(b"+@%s\r\n" % self.group.encode())
        return b"".join([
            b"*10\r\n", encode_bulk(self.name.encode()), encode_integer(self.arity),
            set_head % len(flags), *flags,
            encode_integer(self.first_key), encode_integer(self.last_key),
            encode_integer(self.step),
            set_head % len(categories), *categories,
            set_head % 0, set_head % 0, set_head % 0,  # tips, key specs, subcommands
        ])

    def docs(self, resp3: bool) -> bytes:
        """The encoded ``COMMAND DOCS`` value (a map) of this command."""
        return encode_map(
            [
                (encode_bulk(b"summary"), encode_bulk(self.summary.encode())),
                (encode_bulk(b"since"), encode_bulk(b"1.0.0")),
                (encode_bulk(b"group"), encode_bulk(self.group.encode())),
            ],
            resp3=resp3,
        )


COMMANDS: dict[bytes, Command] = {}
"""Every command by name, in lower and upper case."""
_COMMAND_LIST: list[Command] = []


def _command(
    name: str, arity: int, flags: str, group: str, summary: str,
    *, keys: tuple[int, int, int] = (0, 0, 0), immediate: bool = False,
    no_auth: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        words = tuple(flags.split())
        command = Command(name, arity, words, *keys, group, summary, handler,
                          immediate, no_auth, "write" in words)
        COMMANDS[name.encode()] = COMMANDS[name.upper().encode()] = command
        _COMMAND_LIST.append(command)
        return handler

    return register


_ONE_KEY: Final = (1, 1, 1)
_ALL_KEYS: Final = (1, -1, 1)


def _string(c: KVProtocol, key: bytes) -> bytes | None:
    value = c.store.get(key)
    if value is None or type(value) is bytes:
        return value
    raise CommandError(E_WRONGTYPE)


def _list(c: KVProtocol, key: bytes) -> deque[bytes] | None:
    value = c.store.get(key)
    if value is None or type(value) is deque:
        return value
    raise CommandError(E_WRONGTYPE)


def _array(items: Iterable[bytes]) -> bytes:
    encoded = [encode_bulk(item) for item in items]
    return b"*%d\r\n" % len(encoded) + b"".join(encoded)


_TYPE_NAMES: Final[dict[type, bytes]] = {bytes: b"string", deque: b"list", dict: b"hash",
                                         set: b"set"}


def _type_name(value: object) -> bytes:
    """What TYPE answers for a value of the store."""
    return _TYPE_NAMES[type(value)]
