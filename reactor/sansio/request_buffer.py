"""Request buffering: deciding, from bytes alone, when a connection's first request is
complete, so a blocking handler gets the connection only once it has work to do.

Theory of operation
-------------------
A server's ``request_buffer`` is a :class:`RequestBuffer`: limits (``max_size`` bytes,
``timeout`` seconds from accept to a complete request) plus a factory of per-connection
*scanners*. While a connection is in state BUFFERING the reactor reads it without
blocking and feeds every chunk to the connection's scanner:

* :meth:`RequestScanner.feed` returns :attr:`Progress.MORE` (keep reading) or
  :attr:`Progress.READY` (hand the connection to the handler now; every byte read so
  far is replayed to the handler first), or raises :class:`RequestRejected` (the peer
  sent something this buffer refuses; its ``response`` is sent before the close);
* :meth:`RequestScanner.feed_eof` says whether what arrived before the peer's EOF is
  worth a handler (READY) or not (MORE: the connection is closed).

The server enforces the limits: more than ``max_size`` bytes without READY is refused
with :meth:`RequestBuffer.too_large_response`, and a request not READY within
``timeout`` seconds is refused with :meth:`RequestBuffer.timeout_response`. A scanner
keeps only what it needs to decide (a partial line, a few counters), never the
request itself, and looks at each byte once, so a request that arrives one byte at a
time costs linear time.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, Protocol

from .errors import RemoteProtocolError

__all__ = [
    "FirstBytesRequestBuffer",
    "HTTPRequestBuffer",
    "HTTPRequestScanner",
    "LineRequestBuffer",
    "Progress",
    "RequestBuffer",
    "RequestRejected",
    "RequestScanner",
]

DEFAULT_MAX_SIZE: Final = 64 * 1024
DEFAULT_TIMEOUT: Final = 10.0


class Progress(Enum):
    """What a scanner says after a chunk."""

    MORE = "more"  # not complete yet: keep reading
    READY = "ready"  # hand the connection to the handler now


class RequestRejected(RemoteProtocolError):
    """The peer's first request is refused; the connection is closed.

    Attributes:
        reason: why, for the log.
        response: bytes to send before closing (may be empty).
    """

    def __init__(self, reason: str, response: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class RequestScanner(Protocol):
    """Per-connection state that watches the first request arrive."""

    def feed(self, data: bytes) -> Progress:
        """Look at the next chunk.

        Raises:
            RequestRejected: the bytes break this buffer's rules.
        """

    def feed_eof(self) -> Progress:
        """The peer finished sending: READY to hand over what arrived, MORE to close."""


class RequestBuffer:
    """When a connection's first request is complete, with a size cap and a deadline.

    Subclasses implement :meth:`scanner`; they may override the two responses.

    Args:
        max_size: the most bytes read before the request must be READY.
        timeout: seconds from accept for the request to become READY (None: no
            limit; not recommended, a client that never finishes holds a row forever).

    Raises:
        ValueError: a limit is not positive.
    """

    def __init__(
        self, *, max_size: int = DEFAULT_MAX_SIZE, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, not {max_size!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        self.max_size = max_size
        self.timeout = timeout

    def scanner(self) -> RequestScanner:
        """A fresh scanner for one connection."""
        raise NotImplementedError

    def timeout_response(self) -> bytes:
        """Bytes sent to a client that did not complete its request in time."""
        return b""

    def too_large_response(self) -> bytes:
        """Bytes sent to a client whose request passed ``max_size`` unfinished."""
        return b""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} max_size={self.max_size} timeout={self.timeout}>"


# -- the first bytes ----------------------------------------------------------------------


class _CountScanner:
    __slots__ = ("_need", "_seen")

    def __init__(self, need: int) -> None:
        self._need = need
        self._seen = 0

    def feed(self, data: bytes) -> Progress:
        self._seen += len(data)
        return Progress.READY if self._seen >= self._need else Progress.MORE

    def feed_eof(self) -> Progress:
        return Progress.READY if self._seen else Progress.MORE


class FirstBytesRequestBuffer(RequestBuffer):
    """READY once ``min_bytes`` bytes arrived: keeps silent clients away from handlers.

    A client that connects and sends nothing within ``timeout`` is closed without ever
    reaching a thread or a child process.
    """

    def __init__(
        self, min_bytes: int = 1, *, max_size: int = DEFAULT_MAX_SIZE,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if min_bytes < 1:
            raise ValueError("min_bytes must be at least 1")
        super().__init__(max_size=max(max_size, min_bytes), timeout=timeout)
        self.min_bytes = min_bytes

    def scanner(self) -> RequestScanner:
        return _CountScanner(self.min_bytes)


# -- one line -----------------------------------------------------------------------------


class _LineScanner:
    __slots__ = ("_seen", "_tail", "_terminator")

    def __init__(self, terminator: bytes) -> None:
        self._terminator = terminator
        self._tail = b""  # the last len(terminator) - 1 bytes, for a split terminator
        self._seen = 0

    def feed(self, data: bytes) -> Progress:
        self._seen += len(data)
        keep = len(self._terminator) - 1
        window = self._tail + data if keep else data
        if self._terminator in window:
            return Progress.READY
        if keep:
            self._tail = window[-keep:]
        return Progress.MORE

    def feed_eof(self) -> Progress:
        return Progress.READY if self._seen else Progress.MORE


class LineRequestBuffer(RequestBuffer):
    """READY once the first line (up to ``terminator``) arrived: line protocols.

    Args:
        terminator: the end of a line (``b"\\n"`` also accepts ``b"\\r\\n"``).
        max_size: the longest first line accepted; a longer one is refused.
        timeout: seconds for the first line to arrive.
    """

    def __init__(
        self, terminator: bytes = b"\n", *, max_size: int = DEFAULT_MAX_SIZE,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if not terminator:
            raise ValueError("terminator must not be empty")
        super().__init__(max_size=max_size, timeout=timeout)
        self.terminator = terminator

    def scanner(self) -> RequestScanner:
        return _LineScanner(self.terminator)


# -- HTTP/1.x -----------------------------------------------------------------------------


def _http_response(status: str, text: str) -> bytes:
    body = (text + "\n").encode("ascii")
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HTTPRequestScanner:
    """Watches an HTTP/1.x request arrive: the head, then a Content-Length body.

    READY when the head ended and the body is complete; also READY right after the
    head when the handler must take over: a chunked body, ``Expect: 100-continue`` (the
    client waits for the handler's interim reply), a body that would not fit in
    ``max_size`` (the handler reads the rest itself), or a head the handler should
    judge (an unparsable Content-Length; the handler answers such requests with its
    own error). An HTTP/0.9 request line (``GET /path``) is READY at once.

    Args:
        max_size: the buffer's ``max_size``; bodies that do not fit are not waited for.
    """

    __slots__ = (
        "_body_left",
        "_content_length",
        "_expect_continue",
        "_head_size",
        "_http09",
        "_in_body",
        "_line",
        "_max_size",
        "_request_line_seen",
        "_seen",
        "_unbuffered_body",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._max_size = max_size
        self._line = bytearray()  # the current, unfinished head line
        self._seen = 0
        self._head_size = 0
        self._request_line_seen = False
        self._content_length: int | None = None
        self._unbuffered_body = False  # chunked, or a Content-Length we cannot use
        self._expect_continue = False
        self._in_body = False
        self._body_left = 0
        self._http09 = False

    def feed(self, data: bytes) -> Progress:
        self._seen += len(data)
        if self._in_body:
            return self._body(len(data))
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._line += data[start:]
                return Progress.MORE
            self._line += data[start:end]
            start = end + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            if self._head_line(line):
                return self._head_done(len(data) - start)
            if self._http09:
                return Progress.READY

    def _head_line(self, line: bytes) -> bool:
        """Take one complete head line; True when it ended the head."""
        if not self._request_line_seen:
            if not line:
                return False  # blank lines before the request line are ignored
            self._request_line_seen = True
            self._http09 = len(line.split()) == 2
            return False
        if not line:
            return True
        name, sep, value = line.partition(b":")
        if not sep or line[:1] in (b" ", b"\t"):
            return False  # a folded or malformed line: the handler will judge it
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit() or (
                self._content_length is not None and int(value) != self._content_length
            ):
                self._unbuffered_body = True
            else:
                self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._unbuffered_body = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        return False

    def _head_done(self, after_head: int) -> Progress:
        self._head_size = self._seen - after_head
        length = self._content_length
        if self._unbuffered_body or self._expect_continue or not length:
            return Progress.READY
        if self._head_size + length > self._max_size:
            return Progress.READY  # too big to buffer: the handler streams it
        self._in_body = True
        self._body_left = length
        return self._body(after_head)

    def _body(self, received: int) -> Progress:
        self._body_left -= received
        return Progress.READY if self._body_left <= 0 else Progress.MORE

    def feed_eof(self) -> Progress:
        return Progress.READY if self._seen else Progress.MORE


class HTTPRequestBuffer(RequestBuffer):
    """Buffers an HTTP/1.x request (head, then a Content-Length body) before dispatch.

    A head larger than ``max_size`` gets ``431 Request Header Fields Too Large``; a
    request not complete within ``timeout`` seconds gets ``408 Request Timeout``; both
    close the connection. Only the first request of a connection is buffered: after
    it the handler owns the connection (keep-alive requests are read by the handler).
    """

    def scanner(self) -> RequestScanner:
        return HTTPRequestScanner(self.max_size)

    def timeout_response(self) -> bytes:
        return _http_response("408 Request Timeout", "request not received in time")

    def too_large_response(self) -> bytes:
        return _http_response("431 Request Header Fields Too Large", "request head too large")
