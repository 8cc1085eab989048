"""Totals of rare events, kept beside their owners for the metrics endpoint.

Refusals, accept pauses and callback errors are counted here, by the code that already
handles them: that code runs only when something is refused, paused or fails, never on
a path that serves a request, so counting costs nothing while connections just work.
(The closes by reason are the connection table's: see :mod:`reactor.io.closes`.)

Totals are kept per owner (a reactor, a listener) in a weak
dictionary: nothing is added to the owner's own storage, and a closed owner leaves no
trace. :func:`count` adds one; :func:`read` gives a copy.

Part of the I/O layer only because its owners live there; it holds plain numbers and
must not import the loop, the facades or the command line.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, Final

__all__ = ["count", "read"]

_BOOK: Final[weakref.WeakKeyDictionary[Any, dict[str, collections.Counter[str]]]] = (
    weakref.WeakKeyDictionary())


def count(owner: Any, family: str, label: str, n: int = 1) -> None:
    """Add ``n`` to ``owner``'s total of ``family`` (``refused``, ``paused``,
    ``errors`` ...) for ``label`` (the reason or kind).

    An owner that cannot be weakly referenced is not counted (never an error: this
    runs on paths that are already handling a failure).
    """
    try:
        book = _BOOK.get(owner)
        if book is None:
            book = _BOOK[owner] = {}
    except TypeError:
        return
    totals = book.get(family)
    if totals is None:
        totals = book[family] = collections.Counter()
    totals[label] += n


def read(owner: Any, family: str) -> dict[str, int]:
    """``owner``'s totals of ``family`` by label (empty when nothing was counted)."""
    try:
        book = _BOOK.get(owner)
    except TypeError:
        return {}
    if book is None or family not in book:
        return {}
    return dict(book[family])
