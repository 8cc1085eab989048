"""The access log of ``reactor serve``: one line per connection when it closes.

:func:`wrap_factory` wraps the served protocol factory so that every protocol it makes
sits inside a :class:`Logged` (or, for an :class:`asyncio.BufferedProtocol`,
:class:`BufferedLogged`) that forwards every callback and hook unchanged
(``connection_made``, ``data_received`` or ``get_buffer``/``buffer_updated``,
``eof_received`` with its return value, ``pause_writing``, ``resume_writing``,
``connection_lost``, ``begin_shutdown`` with its return value, any other attribute)
and, at ``connection_lost``, reads the connection's row (bytes in and out, creation
time) and logs through the logger ``reactor.access``::

    127.0.0.1:40512 on 127.0.0.1:8888: client-eof after 1.204 s, 12 bytes in, 12 out, 3 requests

with the same values as fields of the record (``extra=``), so ``--log-format json``
gives them as keys:

* ``peer``, ``local`` -- the client's and our address (``HOST:PORT``, ``[V6]:PORT``,
  ``unix:PATH``);
* ``duration`` -- seconds from the accept to the close;
* ``bytes_in``, ``bytes_out`` -- bytes received and sent;
* ``requests`` -- how many requests the protocol answered, or None: a protocol that
  counts its requests exposes an ``int`` attribute (or property) named ``requests``,
  read once at the close (the kv service counts its commands there);
* ``reason`` -- why it closed: ``client-eof`` (the client closed first), ``reset``
  (the client reset the connection, or the pipe broke), ``idle-timeout``,
  ``first-byte-timeout``, ``request-timeout``, ``write-timeout`` (the connection's
  deadlines), ``cap`` (refused at ``--max-connections`` with ``--on-max-connections
  refuse``: closed at once), ``shutdown`` (the server was stopping: drained, or aborted
  at the graceful timeout), ``server-close`` (the service closed it: a QUIT, a protocol
  error, a size limit), ``error`` (a socket error, or a callback raised);
* ``error`` -- the exception behind ``reset`` and ``error``, else None.

The reasons are :func:`reactor.sansio.closes.close_reason`'s (re-exported here), the
names the metrics count them by (``reactor_connection_closes_total{reason}``, counted
by the transports for every connection, logged or not).

At ``--log-level debug`` (on ``reactor.serve``) the same wrapper also logs each accept,
and, without the access log, each close at DEBUG.

Cost: nothing when neither is asked for (the factory is not wrapped); otherwise one
small object and one extra Python call per callback. The core's rows and hot paths do
not change. A protocol that replaces itself with ``transport.set_protocol`` drops the
wrapper and with it its line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..io.validate import address_text
from ..sansio.closes import close_reason

__all__ = ["BufferedLogged", "Logged", "close_reason", "format_address", "log_refused",
           "wrap_factory"]

access_logger = logging.getLogger("reactor.access")
serve_logger = logging.getLogger("reactor.serve")


class _Stopping(Protocol):
    @property
    def stopping(self) -> bool: ...


def format_address(address: Any) -> str:
    """A socket address as the access log writes it: :func:`address_text`'s notation,
    with ``unix:`` before a Unix socket's path and ``-`` for none."""
    if address is None:
        return "-"
    text = address_text(address)
    if isinstance(address, (str, bytes)):
        return "unix:" + (text or "(unnamed)")
    return text


class Logged(asyncio.Protocol):
    """Forwards everything to ``inner`` and logs the connection when it closes."""

    __slots__ = ("_access", "_eof", "_local", "_peer", "_server", "_transport", "inner")

    def __init__(self, inner: Any, server: _Stopping, access: bool) -> None:
        self.inner = inner
        self._server = server
        self._access = access
        self._transport: asyncio.BaseTransport | None = None
        self._peer = self._local = "-"
        self._eof = False

    def __getattr__(self, name: str) -> Any:  # only for names not defined here
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._peer = format_address(transport.get_extra_info("peername"))
        self._local = format_address(transport.get_extra_info("sockname"))
        if serve_logger.isEnabledFor(logging.DEBUG):
            serve_logger.debug("accepted %s on %s", self._peer, self._local,
                               extra={"peer": self._peer, "local": self._local})
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def begin_shutdown(self) -> object:
        """The inner protocol's hook (see :mod:`reactor.cli.graceful`), if it has one."""
        hook = getattr(self.inner, "begin_shutdown", None)
        return hook() if callable(hook) else None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self._log_close(exc)

    def _log_close(self, exc: BaseException | None) -> None:
        # the reason is close_reason's, as the transports count it for the metrics
        # (reactor.io.closes): this wrapper logs, it does not count
        if not self._access and not serve_logger.isEnabledFor(logging.DEBUG):
            return
        transport = self._transport
        row: Any = transport.get_extra_info("connection") if transport is not None else None
        reactor = getattr(row, "reactor", None)
        duration = (reactor.time() - row.created) if reactor is not None else 0.0
        requests = getattr(self.inner, "requests", None)
        _write(self._access, {
            "peer": self._peer,
            "local": self._local,
            "duration": round(max(duration, 0.0), 6),
            "bytes_in": getattr(row, "bytes_in", 0),
            "bytes_out": getattr(row, "bytes_out", 0),
            "requests": requests if isinstance(requests, int) else None,
            "reason": close_reason(exc, self._eof, self._server.stopping),
            "error": None if exc is None else f"{type(exc).__name__}: {exc}",
        })


def _write(access: bool, fields: dict[str, Any]) -> None:
    """One line for one closed connection, to the access log (or at DEBUG)."""
    counted = "" if fields["requests"] is None else (
        f", {fields['requests']} request{'' if fields['requests'] == 1 else 's'}")
    error = fields["error"]
    log = access_logger.info if access else serve_logger.debug
    log("%s on %s: %s after %.3f s, %d bytes in, %d out%s%s", fields["peer"],
        fields["local"], fields["reason"], fields["duration"], fields["bytes_in"],
        fields["bytes_out"], counted, "" if error is None else f" ({error})", extra=fields)


def log_refused(access: bool) -> Callable[[Any, Any, int], None]:
    """A listener's ``on_refused`` that writes the line of a client refused at the cap
    (reason ``cap``; the reply it was sent counts as its bytes out)."""

    def refused(listener: Any, address: Any, sent: int) -> None:
        if not access and not serve_logger.isEnabledFor(logging.DEBUG):
            return
        _write(access, {
            "peer": format_address(address), "local": format_address(listener.address),
            "duration": 0.0, "bytes_in": 0, "bytes_out": sent,
            "requests": None, "reason": "cap", "error": None,
        })

    return refused


class BufferedLogged(Logged, asyncio.BufferedProtocol):
    """:class:`Logged` for an :class:`asyncio.BufferedProtocol` (the transport reads
    into the inner protocol's buffer through these two)."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)


def wrap_factory(
    factory: Callable[[], Any], server: _Stopping, access: bool
) -> Callable[[], Logged]:
    """``factory`` with each protocol it makes wrapped for the access log.

    Args:
        factory: the served protocol factory.
        server: tells whether a stop is under way (``stopping``), for the reason.
        access: log each close to ``reactor.access`` (else at DEBUG only).
    """

    def make() -> Logged:
        inner = factory()
        if isinstance(inner, asyncio.BufferedProtocol):
            return BufferedLogged(inner, server, access)
        return Logged(inner, server, access)

    return make
