"""Redis glob patterns (``KEYS``): compiled once, matched in linear time.

Role: the pattern matching of the key-value service, a pure function of bytes.
Must not import ``socket``, ``selectors``, ``threading`` or ``os``, nor any
other module of the service.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

__all__ = ["compile_glob", "glob_match"]


_ANY: Final = bytes([1]) * 256
_LITERALS: Final = tuple(bytes(1 if c == i else 0 for c in range(256)) for i in range(256))


def _glob_tokens(pattern: bytes) -> list[bytes | None]:
    """Compile a glob into tokens: None for ``*``, else a 256-entry table of the bytes
    the position accepts. Follows Redis's rules, quirks included: ``\\`` escapes the
    next byte (a trailing one is literal), ``[^...]`` negates, ``a-z`` is a range (ends
    swapped if reversed), and an unterminated ``[`` class ends with the pattern."""
    tokens: list[bytes | None] = []
    classes: dict[bytes, bytes] = {}  # one table per distinct class, however often it is used
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == 42:  # *
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
            i += 1
        elif c == 63:  # ?
            tokens.append(_ANY)
            i += 1
        elif c == 91:  # [
            i += 1
            negate = i < n and pattern[i] == 94  # ^
            if negate:
                i += 1
            table = bytearray(256)
            while i < n:
                c = pattern[i]
                if c == 92 and n - i >= 2:  # an escaped byte
                    table[pattern[i + 1]] = 1
                    i += 2
                elif c == 93:  # ]
                    i += 1
                    break
                elif n - i >= 3 and pattern[i + 1] == 45:  # a range
                    low, high = sorted((c, pattern[i + 2]))
                    table[low : high + 1] = bytes([1]) * (high - low + 1)
                    i += 3
                else:
                    table[c] = 1
                    i += 1
            if negate:
                table = bytearray(1 - bit for bit in table)
            key = bytes(table)
            tokens.append(classes.setdefault(key, key))
        elif c == 92 and n - i >= 2:  # \x
            tokens.append(_LITERALS[pattern[i + 1]])
            i += 2
        else:
            tokens.append(_LITERALS[c])
            i += 1
    return tokens


def _match_tokens(tokens: list[bytes | None], text: bytes) -> bool:
    # The classic greedy walk with one backtrack point (the last star): O(len(text) *
    # len(tokens)) at worst, never exponential, unlike a recursive matcher or a regex.
    p = i = 0
    m = len(tokens)
    n = len(text)
    star = -1
    star_i = 0
    while i < n:
        token = tokens[p] if p < m else b""
        if token is None:
            star = p
            star_i = i
            p += 1
        elif token and token[text[i]]:
            p += 1
            i += 1
        elif star >= 0:
            star_i += 1
            i = star_i
            p = star + 1
        else:
            return False
    while p < m and tokens[p] is None:
        p += 1
    return p == m


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """Compile a Redis glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\`` escapes)
    into a predicate on bytes (the last 256 patterns up to 1 KiB are kept compiled)."""
    if len(pattern) > _CACHED_LENGTH:  # a client's huge pattern is not kept
        return _compile(pattern)
    return _compile_cached(pattern)


_CACHED_LENGTH: Final = 1024


def _compile(pattern: bytes) -> Callable[[bytes], bool]:
    if not any(c in pattern for c in b"*?[\\"):
        return pattern.__eq__
    tokens = _glob_tokens(pattern)
    if tokens == [None]:
        return lambda text: True
    return functools.partial(_match_tokens, tokens)


_compile_cached = functools.lru_cache(maxsize=256)(_compile)


def glob_match(pattern: bytes, text: bytes) -> bool:
    """Whether ``text`` matches the Redis glob ``pattern``."""
    return compile_glob(pattern)(text)
