"""The replication link's commands: what one kv host sends its peers, and their checks.

Role: the two commands a replication link speaks, after an optional PROXY header,
on an ordinary kv connection to a peer (see :mod:`.peers` for the sending side and
:mod:`.replicating` for the receiving side):

* ``REPLLINK <secret>`` -- the first command of a link: the peer compares the secret
  with its own (``replication_secret``) and from then on takes the connection for a
  replication link (authenticated, its writes never replicated further). A wrong
  secret, or a peer with none, replies ``-REPLERR ...`` and closes.
* ``REPLWRITE <db> <command> <args...>`` -- one write command to apply to database
  ``db``, as the origin's client sent it. The peer replies ``+OK`` once it is applied,
  or the command's own error (``-WRONGTYPE ...``: the hosts' stores differ, see
  the README); both count as an acknowledgement. Bad input (not a link, a database out
  of range, an unknown or read-only command, a wrong number of arguments) replies
  ``-REPLERR ...`` and closes the link.

Every reply on a link is one line, so the origin matches replies to writes by counting
lines, in order.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from typing import Final

from handlers.framers.resp import encode_command, encode_error

from .table import COMMANDS, DATABASES, Command

__all__ = [
    "NOREPLICAS",
    "NOREPLICAS_AFTER",
    "REPLLINK",
    "REPLWRITE",
    "ReplicationInputError",
    "encode_repllink",
    "encode_replwrite",
    "parse_replwrite",
]

REPLLINK: Final = b"REPLLINK"
REPLWRITE: Final = b"REPLWRITE"

# Redis's min-replicas-to-write refusal, worded as Redis words it: nothing was applied
NOREPLICAS: Final = encode_error("NOREPLICAS Not enough good replicas to write.")
# the write was applied here but too few peers acknowledged it in time
NOREPLICAS_AFTER: Final = encode_error(
    "NOREPLICAS Not enough good replicas acknowledged the write; it was applied on "
    "this host and may be on some of its peers")


class ReplicationInputError(Exception):
    """A REPLLINK or REPLWRITE the receiving host refuses; :attr:`reply` is the
    ``-REPLERR`` line it sends before it closes the link."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = encode_error("REPLERR " + message)


def encode_repllink(secret: bytes) -> bytes:
    """The first command of a link."""
    return encode_command([REPLLINK, secret])


def encode_replwrite(db: int, args: list[bytes]) -> bytes:
    """``REPLWRITE db args...``: the write ``args`` (name first) of database ``db``."""
    parts = [b"*%d\r\n$9\r\nREPLWRITE\r\n" % (len(args) + 2),
             b"$%d\r\n%d\r\n" % (len(str(db)), db)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_replwrite(args: list[bytes]) -> tuple[int, Command, list[bytes]]:
    """Check a received ``REPLWRITE`` (``args[0]`` is its name).

    Returns:
        ``(db, command, command_args)``: the database, the write command's entry and
        its arguments, the name first, ready for ``command.handler``.

    Raises:
        ReplicationInputError: a database that is not a decimal in 0 to 15, a command
            that is unknown or not a write, a wrong number of arguments.
    """
    if len(args) < 3:
        raise ReplicationInputError("REPLWRITE needs a database and a command")
    raw = args[1]
    if not (0 < len(raw) <= 2 and raw.isdigit() and (raw == b"0" or raw[0] != 48)):
        raise ReplicationInputError("REPLWRITE: the database is not a number from 0 "
                                    f"to {DATABASES - 1}")
    db = int(raw)
    if db >= DATABASES:
        raise ReplicationInputError(f"REPLWRITE: database {db} is out of range")
    name = args[2]
    command = COMMANDS.get(name) or COMMANDS.get(name.lower())
    if command is None or not command.write:
        shown = name[:64].decode("ascii", "backslashreplace")
        raise ReplicationInputError(f"REPLWRITE: {shown!r} is not a write command")
    words = args[2:]
    arity = command.arity
    if (len(words) != arity) if arity > 0 else (len(words) < -arity):
        raise ReplicationInputError(
            f"REPLWRITE: wrong number of arguments for {command.name!r}")
    return db, command, words
