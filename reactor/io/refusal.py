"""Refusing clients at a listener's cap, as Redis does at ``maxclients``.

A listener at ``max_connections`` waits by default: it stops polling and new clients
queue in the kernel's backlog until a connection closes (see :mod:`.listeners`). With
``at_cap="refuse"`` it keeps accepting instead, and closes each client accepted while
it is full at once, after a best-effort, non-blocking send of ``cap_reply`` (kv's is
Redis's ``-ERR max number of clients reached``), so a client learns at once that the
server is full rather than waiting in the backlog without a word.

While the listener is full, the selector's entry for its socket points at a
:class:`CapRefuser` instead of the listener itself (one ``epoll_ctl`` when the cap is
reached and one when a slot frees), so the accept path of a listener under its cap
has no extra test at all.

The reply is written in one ``send`` on a socket that was never read: a client that
had already sent bytes may see a reset instead of the reply (the kernel resets a
connection closed with unread data). Refusals are logged once per episode, with the
cap's (:func:`.episodes.cap_reached`), counted in the listener's ``refused`` and, with
an ``on_refused`` callback (the command line's access log), reported one by one.

Must not import the stream transport or anything above the I/O layer.
"""

from __future__ import annotations

import _socket
import logging
from typing import TYPE_CHECKING, Final

from ..sansio.closes import CAP

if TYPE_CHECKING:
    from .listeners import Listener

__all__ = ["AT_CAP_CHOICES", "CapRefuser", "check_at_cap"]

logger = logging.getLogger("reactor.listeners")

AT_CAP_CHOICES: Final = ("wait", "refuse")


def check_at_cap(at_cap: str, cap_reply: bytes) -> str:
    """``at_cap`` when it is one of :data:`AT_CAP_CHOICES`.

    Raises:
        ValueError: another value, or a ``cap_reply`` without ``at_cap="refuse"``.
        TypeError: ``cap_reply`` is not bytes.
    """
    if at_cap not in AT_CAP_CHOICES:
        raise ValueError(f"at_cap must be 'wait' or 'refuse', not {at_cap!r}")
    if not isinstance(cap_reply, (bytes, bytearray)):
        raise TypeError(f"cap_reply must be bytes, not {type(cap_reply).__name__}")
    if cap_reply and at_cap != "refuse":
        raise ValueError("cap_reply is sent only with at_cap='refuse'")
    return at_cap


class CapRefuser:
    """Stands in the selector for a full listener: accepts and refuses.

    Args:
        listener: the listener it stands for (its socket, batch, reply and counters).
    """

    __slots__ = ("listener",)

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def _read_ready(self) -> None:
        listener = self.listener
        sock = listener.sock
        family, type_, proto = listener.kind
        reply = listener.cap_reply
        for _ in range(listener.accept_batch):
            if listener.refuser is not self:
                return  # a slot freed (or the listener closed) during this batch
            try:
                fd, addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                listener.accept_failed(exc)
                return
            conn = _socket.socket(family, type_, proto, fd)
            sent = 0
            try:
                if reply:
                    conn.setblocking(False)
                    sent = conn.send(reply)
            except OSError:
                pass  # gone already: the close says it all
            finally:
                conn.close()
            listener.refused += 1
            listener.reactor.connections.closes[CAP] += 1  # a close by reason, never a row
            if listener.on_refused is not None:
                try:
                    listener.on_refused(listener, addr, sent)
                except Exception as exc:
                    logger.error("%s: on_refused raised", listener.describe(), exc_info=exc)

    def _write_ready(self) -> None:  # never registered for writing
        pass
