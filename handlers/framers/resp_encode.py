"""RESP replies: the encoders the kv service answers with, the reply constants, and
:class:`RespProtocolError` (whose reply it encodes).

Role: turn reply values into RESP bytes (and a command into its canonical multibulk
form, for clients and tests). Split from :mod:`handlers.framers.resp`, which re-exports
every name here. Must not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

from reactor.sansio.errors import RemoteProtocolError

__all__ = [
    "CRLF", "NULL_ARRAY", "NULL_BULK", "NULL_RESP3", "OK", "PONG", "QUEUED", "EncodableValue",
    "RespProtocolError",
    "encode", "encode_array", "encode_bulk", "encode_command", "encode_error",
    "encode_integer", "encode_map", "encode_simple",
]

CRLF: Final = b"\r\n"
OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
QUEUED: Final = b"+QUEUED\r\n"
NULL_BULK: Final = b"$-1\r\n"
NULL_ARRAY: Final = b"*-1\r\n"
NULL_RESP3: Final = b"_\r\n"

class RespProtocolError(RemoteProtocolError):
    """The client broke RESP.

    Attributes:
        message: what was wrong, for the log, without the ``ERR Protocol error:``
            prefix; it may say more than the reply (the bytes seen, the limit passed).
        fatal: True when the stream cannot be resynchronised (reply, then close).
        reply_text: the text of the reply after ``ERR Protocol error:``, worded as
            redis-server words it (by default ``message``).
    """

    def __init__(self, message: str, *, fatal: bool = True,
                 reply_text: str | bytes | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal
        self.reply_text = message if reply_text is None else reply_text

    @property
    def reply(self) -> bytes:
        """The error reply to send, ``-ERR Protocol error: ...``."""
        text = self.reply_text
        return encode_error(b"ERR Protocol error: "
                            + (text.encode() if isinstance(text, str) else text))



def encode_simple(text: str | bytes) -> bytes:
    """``+text\\r\\n``.

    Raises:
        ValueError: the text contains CR or LF.
    """
    raw = text.encode() if isinstance(text, str) else text
    if b"\r" in raw or b"\n" in raw:
        raise ValueError("a simple string cannot contain CR or LF")
    return b"+" + raw + CRLF


def encode_error(message: str | bytes) -> bytes:
    """``-message\\r\\n``; CR and LF in the message become spaces.

    By convention the message starts with an upper-case code: ``ERR``, ``WRONGTYPE``...
    """
    raw = message.encode() if isinstance(message, str) else message
    return b"-" + raw.replace(b"\r", b" ").replace(b"\n", b" ") + CRLF


def encode_integer(value: int) -> bytes:
    """``:value\\r\\n``."""
    return b":%d\r\n" % value


def encode_bulk(value: bytes | None) -> bytes:
    """``$len\\r\\nvalue\\r\\n``, or the RESP2 null bulk string for None."""
    if value is None:
        return NULL_BULK
    return b"$%d\r\n%b\r\n" % (len(value), value)


def encode_array(items: Sequence[bytes] | None) -> bytes:
    """An array of already encoded items, or the null array for None."""
    if items is None:
        return NULL_ARRAY
    return b"*%d\r\n" % len(items) + b"".join(items)


def encode_map(pairs: Sequence[tuple[bytes, bytes]], *, resp3: bool = False) -> bytes:
    """A map of already encoded keys and values: a RESP3 map (``%``), or in RESP2 the
    flat array ``key1 value1 key2 value2 ...`` Redis sends instead."""
    head = b"%%%d\r\n" % len(pairs) if resp3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(key + value for key, value in pairs)


EncodableValue: TypeAlias = "bytes | str | int | Sequence[EncodableValue] | None"


def encode(value: EncodableValue) -> bytes:
    """Encode a Python value: bytes and str as bulk strings, int as an integer, None as
    the null bulk string, lists and tuples as arrays (recursively).

    Raises:
        TypeError: a value of another type (bool included, to avoid surprises).
    """
    if isinstance(value, bytes):
        return encode_bulk(value)
    if isinstance(value, str):
        return encode_bulk(value.encode())
    if isinstance(value, bool):
        raise TypeError("cannot encode a bool in RESP2; use an int")
    if isinstance(value, int):
        return encode_integer(value)
    if value is None:
        return NULL_BULK
    if isinstance(value, (list, tuple)):
        return encode_array([encode(item) for item in value])
    raise TypeError(f"cannot encode {type(value).__name__} in RESP")


def encode_command(args: Iterable[bytes | str | int]) -> bytes:
    """Encode a command the way clients send it: an array of bulk strings.

    Raises:
        ValueError: no arguments.
    """
    parts: list[bytes] = []
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    if not parts:
        raise ValueError("a command needs at least one argument")
    return b"*%d\r\n" % len(parts) + b"".join(parts)
