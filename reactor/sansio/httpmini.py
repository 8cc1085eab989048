"""Just enough HTTP/1.1 for the observation endpoints: one bounded GET, one reply.

The metrics endpoint and the status page (:mod:`reactor.io.observe`) answer a request
line and headers, nothing more: no body is read, one response is sent and the
connection closes (``Connection: close``). Scrapers and browsers handle that.

* :class:`RequestReader` -- collects a request head up to :data:`MAX_HEAD` bytes and
  parses it into a :class:`Request`, or raises :class:`BadRequest` with the status to
  answer (400 malformed, 431 too long, 501 a body we will not read, 505 another
  version).
* :func:`response` -- a complete response as bytes.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_HEAD", "REASONS", "BadRequest", "Request", "RequestReader", "response"]

MAX_HEAD: Final = 8192
REASONS: Final = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    500: "Internal Server Error",
    431: "Request Header Fields Too Large", 501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_TOKEN: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                          b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """The request cannot be answered; ``status`` is what to reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head.

    Attributes:
        method: ``GET``, ``HEAD`` ... (as sent, case kept).
        path: the target's path, without the query.
        query: what followed ``?``, or empty.
        headers: header names lowercased, values stripped (the last one wins).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]


def _parse(head: bytes) -> Request:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith(b"HTTP/1."):
        raise BadRequest(505, "only HTTP/1.x is served")
    if not target.startswith(b"/") or any(c < 33 or c > 126 for c in target):
        raise BadRequest(400, "the target must be an origin-form path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TOKEN:
            raise BadRequest(400, "malformed header line")
        headers[name.decode("ascii").lower()] = value.strip().decode("latin-1")
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest(501, "request bodies are not read here")
    path, _, query = target.decode("ascii").partition("?")
    return Request(method.decode("ascii"), path, query, headers)


class RequestReader:
    """Collects one request head (up to the empty line) of at most ``max_head`` bytes."""

    __slots__ = ("_buffer", "max_head")

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Request | None:
        """The request, once its head is complete; None while more is needed.

        Bare ``\\n`` line ends are accepted as ``\\r\\n``.

        Raises:
            BadRequest: malformed, or longer than ``max_head``.
        """
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        size = end + 4
        if end < 0:
            end = buffer.find(b"\n\n")
            size = end + 2
        if end < 0:
            if len(buffer) > self.max_head:
                raise BadRequest(431, f"request head over {self.max_head} bytes")
            return None
        if end > self.max_head:
            raise BadRequest(431, f"request head over {self.max_head} bytes")
        head = bytes(buffer[:end]).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        del buffer[:size]
        return _parse(head)


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             *, head_only: bool = False, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response that closes the connection (``head_only``: no body,
    for ``HEAD``; the length is still the body's)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
             "Cache-Control: no-store", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
