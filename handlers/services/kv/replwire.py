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
* ``REPLEXEC <db> <argc> <command> <args...> [<db> <argc> <command> <args...>]...`` --
  a transaction's writes (what its EXEC ran, each with its database), applied together
  (no other command runs between them on the peer), checked whole before the first is
  applied; one reply, ``+OK`` or the first command error, as for ``REPLWRITE``.

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
    "REPLEXEC",
    "REPLLINK",
    "REPLWRITE",
    "ReplicationInputError",
    "encode_replexec",
    "encode_repllink",
    "encode_replwrite",
    "parse_replexec",
    "parse_replwrite",
]

REPLLINK: Final = b"REPLLINK"
REPLWRITE: Final = b"REPLWRITE"
REPLEXEC: Final = b"REPLEXEC"

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


# the start of a REPLWRITE up to its database, by database
_HEADS: Final = tuple(b"$9\r\nREPLWRITE\r\n$%d\r\n%d\r\n" % (len(b"%d" % db), db)
                      for db in range(DATABASES))


def encode_replwrite(db: int, args: list[bytes]) -> bytes:
    """``REPLWRITE db args...``: the write ``args`` (name first) of database ``db``."""
    return b"*%d\r\n%b%b" % (len(args) + 2, _HEADS[db],
                             b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args]))


def encode_replexec(writes: list[tuple[int, list[bytes]]]) -> bytes:
    """``REPLEXEC``: the writes ``(db, args)`` of one transaction, in order."""
    words = [REPLEXEC]
    for db, args in writes:
        words += [b"%d" % db, b"%d" % len(args), *args]
    return encode_command(words)


def _database(raw: bytes, name: str) -> int:
    if not (0 < len(raw) <= 2 and raw.isdigit() and (raw == b"0" or raw[0] != 48)):
        raise ReplicationInputError(f"{name}: the database is not a number from 0 "
                                    f"to {DATABASES - 1}")
    db = int(raw)
    if db >= DATABASES:
        raise ReplicationInputError(f"{name}: database {db} is out of range")
    return db


def _write_command(words: list[bytes], name: str) -> Command:
    command = COMMANDS.get(words[0]) or COMMANDS.get(words[0].lower())
    if command is None or not command.write:
        shown = words[0][:64].decode("ascii", "backslashreplace")
        raise ReplicationInputError(f"{name}: '{shown}' is not a write command")
    arity = command.arity
    if (len(words) != arity) if arity > 0 else (len(words) < -arity):
        raise ReplicationInputError(
            f"{name}: wrong number of arguments for '{command.name}'")
    return command


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
    db = _database(args[1], "REPLWRITE")
    words = args[2:]
    return db, _write_command(words, "REPLWRITE"), words


def parse_replexec(args: list[bytes]) -> list[tuple[int, Command, list[bytes]]]:
    """Check a received ``REPLEXEC`` whole (``args[0]`` is its name).

    Returns:
        ``(db, command, command_args)`` for each write, in order.

    Raises:
        ReplicationInputError: no write, a count that is not a decimal or runs past
            the end, or a write ``REPLWRITE`` would refuse.
    """
    writes = []
    at = 1
    if len(args) < 4:
        raise ReplicationInputError("REPLEXEC needs at least one write")
    while at < len(args):
        if at + 2 >= len(args):
            raise ReplicationInputError("REPLEXEC: a write is cut short")
        db = _database(args[at], "REPLEXEC")
        raw = args[at + 1]
        if not (0 < len(raw) <= 10 and raw.isdigit() and raw[0] != 48):
            raise ReplicationInputError("REPLEXEC: an argument count is not a number")
        count = int(raw)
        words = args[at + 2:at + 2 + count]
        if len(words) != count:
            raise ReplicationInputError("REPLEXEC: a write is cut short")
        writes.append((db, _write_command(words, "REPLEXEC"), words))
        at += 2 + count
    return writes
