"""The tokens of the ``.x`` language (RFC 4506 section 6, RFC 5531 section 12).

:func:`tokenize` turns the text of a ``.x`` file into :class:`Token` s, each with its
line and column, for :mod:`handlers.rpc.xdrlang`. It drops comments (``/* ... */`` and,
as ``rpcgen``'s preprocessor does, ``// ...``) and the ``%`` lines ``rpcgen`` passes
through to its C output. Preprocessor directives (``#define``, ``#ifdef``) are refused
with a clear error rather than skipped: skipping them would silently read code a C
preprocessor would have left out.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["Token", "XDRSyntaxError", "tokenize"]


class XDRSyntaxError(ValueError):
    """A ``.x`` text is not valid: the message names the file, line and column.

    Attributes:
        filename, line, column: where (1-based).
        reason: what.
    """

    def __init__(self, reason: str, line: int, column: int, filename: str = "<xdr>"
                 ) -> None:
        super().__init__(f"{filename}:{line}:{column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column
        self.filename = filename


class Token(NamedTuple):
    """A word, number or punctuation mark, and where it starts."""

    kind: str  # "ident", "number" or "punct"; "eof" at the end
    text: str
    line: int
    column: int


_TOKEN: Final = re.compile(r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>/\*)
  | (?P<linecomment>//[^\n]*)
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|[0-9]+)(?![A-Za-z_0-9]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]<>();,=:*])
""", re.VERBOSE)


def tokenize(text: str, filename: str = "<xdr>") -> list[Token]:
    """The tokens of ``text``, ending with one of kind ``eof``.

    Raises:
        XDRSyntaxError: an unknown character, an unterminated comment, a ``#`` line.
    """
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    at_line_start = True
    size = len(text)
    while pos < size:
        column = pos - line_start + 1
        if at_line_start:
            stripped = pos
            while stripped < size and text[stripped] in " \t":
                stripped += 1
            if stripped < size and text[stripped] in "%#":
                if text[stripped] == "#":
                    raise XDRSyntaxError("preprocessor directives are not supported "
                                         "(declare constants with const)", line,
                                         stripped - line_start + 1, filename)
                end = text.find("\n", stripped)
                pos = size if end < 0 else end
                continue
            at_line_start = False
        match = _TOKEN.match(text, pos)
        if match is None:
            raise XDRSyntaxError(f"unexpected character {text[pos]!r}", line, column,
                                 filename)
        kind = match.lastgroup
        assert kind is not None
        if kind == "newline":
            line += 1
            line_start = match.end()
            at_line_start = True
        elif kind == "comment":
            end = text.find("*/", match.end())
            if end < 0:
                raise XDRSyntaxError("unterminated comment", line, column, filename)
            newlines = text.count("\n", pos, end)
            if newlines:
                line += newlines
                line_start = text.rfind("\n", pos, end) + 1
            pos = end + 2
            continue
        elif kind in ("number", "ident", "punct"):
            tokens.append(Token(kind, match.group(), line, column))
        pos = match.end()
    tokens.append(Token("eof", "end of file", line, pos - line_start + 1))
    return tokens
