"""RESP inline commands: a line of words split as a shell would, ``"..."`` and
``'...'`` quoting with backslash escapes, as redis-server splits them.

Split from :mod:`handlers.framers.resp` (which re-exports :func:`split_inline`). Must
not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from typing import Final

from .resp_encode import RespProtocolError

__all__ = ["split_inline"]

_WHITESPACE: Final = frozenset(b" \t\n\r\x0b\x0c")
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:  # noqa: C901, PLR0912 -- a quote-aware scanner
    """Split an inline command into arguments, the way Redis does.

    Words are separated by ASCII whitespace. ``"..."`` quotes a word and understands
    ``\\n \\r \\t \\b \\a \\xHH`` and backslash-anything escapes; ``'...'`` quotes a word
    with only ``\\'`` as an escape. A closing quote must end the word.

    Raises:
        RespProtocolError: unbalanced quotes (not fatal: the line is over).
    """
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in _WHITESPACE:
            i += 1
        if i >= n:
            return args
        word = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    raise RespProtocolError("unbalanced quotes in request", fatal=False)
                break
            c = line[i]
            if quote == 34:  # inside "..."
                if (
                    c == 92 and i + 3 < n and line[i + 1] == 120
                    and line[i + 2] in _HEX and line[i + 3] in _HEX
                ):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                    continue
                if c == 92 and i + 1 < n:
                    nxt = line[i + 1]
                    word.append(_ESCAPES.get(nxt, nxt))
                    i += 2
                    continue
                if c == 34:
                    if i + 1 < n and line[i + 1] not in _WHITESPACE:
                        raise RespProtocolError("unbalanced quotes in request", fatal=False)
                    i += 1
                    break
                word.append(c)
            elif quote == 39:  # inside '...'
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    word.append(39)
                    i += 2
                    continue
                if c == 39:
                    if i + 1 < n and line[i + 1] not in _WHITESPACE:
                        raise RespProtocolError("unbalanced quotes in request", fatal=False)
                    i += 1
                    break
                word.append(c)
            elif c in _WHITESPACE:
                break
            elif c in (34, 39):
                quote = c
            else:
                word.append(c)
            i += 1
        args.append(bytes(word))
