"""Counting things in messages: "1 connection", "2 connections", "0 connections".

Log lines and replies say how many of something there are; an f-string that always
adds an "s" writes "1 connections". :func:`counted` picks the form. Socket-free, like
the rest of :mod:`reactor.sansio`, so the handlers' services use it too.
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` followed by the noun in the form that fits it.

    Args:
        count: how many.
        singular: the noun for one, e.g. ``"connection"``.
        plural: the noun for any other number (default: ``singular + "s"``), for
            nouns such as ``"child process"`` -> ``"child processes"``.

    >>> counted(1, "member"), counted(3, "member"), counted(0, "child", "children")
    ('1 member', '3 members', '0 children')
    """
    noun = singular if count == 1 else (plural if plural is not None else singular + "s")
    return f"{count} {noun}"
