"""The engine behind the socketserver facades: one server's request path, run and
closed.

:class:`RequestEngine` is the request path of :mod:`~reactor.facades.pipeline` plus
what the server's caller drives: ``serve_forever``, ``shutdown``, ``handle_request``,
``server_close`` and ``statistics``. The server's own lifecycle is
:data:`~reactor.sansio.serverlife.SERVER_LIFECYCLE` (the ``phase``), moved under the
engine's lock wherever another thread can move it too, and read -- never a set of
flags -- to decide.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import MappingProxyType
from typing import Final

from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..sansio.connection import ConnState
from ..sansio.serverlife import ServerEvent, ServerPhase
from .pipeline import EVENT_READ, TRANSPORT_ENDS, InlineWork, RequestPath
from .requests import ReadyReader, ServerStatistics, peek_count

__all__ = ["InlineWork", "RequestEngine", "close_deadline", "remaining"]

_P: Final = ServerPhase
_BUFFERING: Final = ConnState.BUFFERING
_CLOSED: Final = ConnState.CLOSED


def close_deadline(timeout: float | None) -> float | None:
    """The :func:`time.monotonic` time at which ``server_close`` stops waiting, from
    ``block_on_close_timeout`` (None or infinite: never)."""
    if timeout is None:
        return None
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"block_on_close_timeout must be None or a number of seconds "
                         f">= 0, not {timeout!r}")
    if math.isinf(seconds):
        return None
    return time.monotonic() + seconds


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a :func:`time.monotonic` time; None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class RequestEngine(RequestPath):
    """A server's engine: its request path, run by ``serve_forever`` or
    ``handle_request``, stopped by ``shutdown``, closed by ``server_close``."""

    __slots__ = ()

    # -- the reactor --------------------------------------------------------------

    def start(self) -> Reactor:
        """The reactor, with the server's source registered on it."""
        phase = self.phase
        if phase is _P.CLOSED or phase is _P.CLOSING:
            raise ValueError("the server is closed")
        reactor = self.get_reactor()
        from .servers import BaseServer  # at run time: servers imports this module

        self.run_inline = getattr(self.server.process_request, "__func__", None) is (
            BaseServer.process_request)
        unregistered = self.listener is None and self.reader is None and self.endpoint is None
        if unregistered and not self.work.register(reactor):
            self.register(reactor)
        return reactor

    def register(self, reactor: Reactor) -> None:
        """Register the request source: the server's ``fileno()``, read when readable."""
        fd = self.server.fileno()
        self.reader = reader = ReadyReader(self, fd, 1)
        reactor.selector.register(fd, EVENT_READ, reader)

    def run(self, reactor: Reactor, limit: float | None) -> None:
        """Run the reactor until stopped (or ``limit`` seconds); re-raise what a
        request raised past the handler; finish a close that came while it ran."""
        stopper = reactor.call_later(limit, reactor.stop) if limit is not None else None
        self.loop_thread = threading.get_ident()
        try:
            reactor.run()
        finally:
            self.loop_thread = None
            if stopper is not None:
                stopper.cancel()
            if self.phase is _P.CLOSING:
                self.finish_close(reactor)
        exc, self.deferred = self.deferred, None
        if exc is not None:
            raise exc

    # -- serve_forever, shutdown, handle_request --------------------------------------

    def serve_forever(self, poll_interval: float) -> None:
        """The body of ``serve_forever``."""
        self.is_shut_down.clear()
        try:
            reactor = self.start()
            with self.lock:
                if self.move(ServerEvent.SERVE) is not _P.SERVING:
                    return  # shutdown() came first
                self.serving_thread = threading.get_ident()
            self.poll_interval = poll_interval
            if self.listener is not None:
                self.listener.accept_batch = self.work.accept_batch
            if not getattr(type(self.server).service_actions, "_needs_no_period", False):
                self.tick = reactor.call_later(poll_interval, self.service_tick,
                                               poll_interval)
            try:
                while self.phase is _P.SERVING:
                    self.run(reactor, None)
            finally:
                with self.lock:
                    self.serving_thread = None
                if self.tick is not None:
                    self.tick.cancel()
                    self.tick = None
        finally:
            with self.lock:
                if self.phase in (_P.SERVING, _P.STOPPING):  # not closed meanwhile
                    self.move(ServerEvent.RETURN)
            self.is_shut_down.set()

    def service_tick(self, interval: float) -> None:
        """Call ``service_actions`` every ``interval`` seconds while serving."""
        self.tick = None
        try:
            self.server.service_actions()
        except BaseException as exc:  # propagates from serve_forever, as before
            self.defer(exc)
            return
        if self.serving_thread is not None:
            self.tick = self.get_reactor().call_later(interval, self.service_tick, interval)

    def shutdown(self) -> None:
        """The body of ``shutdown``."""
        me = threading.get_ident()
        with self.lock:
            self.move(ServerEvent.SHUTDOWN)
            serving = self.serving_thread
            if serving is not None and self.reactor is not None:
                self.reactor.stop()
        if me in (serving, self.loop_thread):
            return
        self.is_shut_down.wait()

    def serve_one(self, timeout: float | None, on_timeout: Callable[[], None] | None) -> None:
        """Serve one request, waiting at most ``timeout`` seconds; call ``on_timeout``
        when none came."""
        reactor = self.start()
        deadline = None if timeout is None else reactor.time() + timeout
        target = self.handled + 1
        self.one_request = True
        if self.listener is not None:
            self.listener.accept_batch = 1
        first = True
        try:
            while self.handled < target and self.phase is not _P.CLOSED:
                remaining = None if deadline is None else deadline - reactor.time()
                if remaining is not None and remaining <= 0 and not first:
                    if on_timeout is not None:
                        on_timeout()
                    return
                first = False
                self.run(reactor, None if remaining is None else max(remaining, 0.0))
        finally:
            self.one_request = False

    def timeout(self) -> float | None:
        """``handle_request``'s wait: the smaller of the server's ``timeout`` and its
        listening socket's own."""
        server = self.server
        sock: socket.socket | None = getattr(server, "socket", None)
        sock_timeout: float | None = None
        if sock is not None:
            current = sock.gettimeout()
            if self.listener is None or self.own_accept:  # the socket's mode is the program's
                sock_timeout = current
            else:
                if current != 0.0:  # the caller set a timeout since the listener began
                    self.socket_timeout = current
                    sock.setblocking(False)
                sock_timeout = self.socket_timeout
        if sock_timeout is None:
            return server.timeout
        if server.timeout is None:
            return sock_timeout
        return min(sock_timeout, server.timeout)

    # -- what the server is doing ------------------------------------------------------

    def statistics(self) -> ServerStatistics:
        """The snapshot ``statistics()`` returns."""
        with self.lock:
            errors = self.errors
        rows = self.own_rows()
        threads, children = self.work.workers()
        reactor = self.reactor
        server = self.server
        return ServerStatistics(
            server=type(server).__name__,
            address=server.server_address,
            serving=self.serving_thread is not None,
            in_flight=len(rows),
            by_state=MappingProxyType(dict(Counter(r.state.name for r in rows))),
            waiting=len(self.waiting) + self.work.waiting(),
            threads=threads,
            children=children,
            reactor=reactor.statistics() if reactor is not None and not reactor.is_closed()
            else None,
            accepted=self.accepted,
            rejected=self.rejected,
            buffered=self.buffered,
            buffer_timeouts=self.buffer_timeouts,
            buffer_refused=self.buffer_refused,
            dispatched_inline=self.dispatched_inline,
            dispatched_thread=peek_count(self.dispatched_thread),
            dispatched_child=self.dispatched_child,
            attached=self.attached,
            finished=self.finished,
            errors=errors,
            get_request_errors=self.get_request_errors,
            tls_failed=getattr(self, "tls_failed", 0),  # a stream server's (sources)
        )

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """The body of ``server_close``: stop taking requests and release the reactor
        side of the server.

        Requests still waiting for a worker are handed on or closed (see the work
        kinds), requests being buffered are closed, requests running in workers keep
        their sockets, and a reactor the server made is closed (when it is running,
        once its run returns).
        """
        phase = self.phase
        if phase is _P.CLOSED or phase is _P.CLOSING:
            return
        me = threading.get_ident()
        if self.serving_thread is not None and self.serving_thread != me:
            self.shutdown()  # serve_forever runs elsewhere: stop it first
        reactor = self.reactor
        # closed from inside a run of the reactor it made (a handler, service_actions):
        # that run returns first, then the reactor closes; a shared reactor runs on
        running = self.owns_reactor and reactor is not None and reactor.is_running()
        with self.lock:
            self.move(ServerEvent.CLOSE_RUNNING if running else ServerEvent.CLOSE)
        if reactor is None:
            return
        if self.owns_reactor:  # a shared reactor's closes are not this server's to name
            reactor.connections.begin_stopping()  # what closes from now on: "shutdown"
        self.stop_taking(reactor)
        self.work.drain()
        self.release_ended()
        for row in list(self.rows.values()):
            if row.state in TRANSPORT_ENDS and isinstance(row, StreamTransport):
                row.abort()
            elif row.state is not _CLOSED:
                self.release_row(row)  # its worker still owns the socket
        self.rows.clear()
        if running:
            reactor.stop()  # the run returns, then finish_close
        else:
            self.finish_close(reactor)

    def finish_close(self, reactor: Reactor) -> None:
        """The last step of closing, with the reactor not running."""
        if self.phase is _P.CLOSING:
            with self.lock:
                self.move(ServerEvent.RETURN)
        if self.owns_reactor:
            if not reactor.is_closed():
                self.work.wind_down(reactor)
                reactor.close()
        else:
            for row in self.own_rows():  # multiplexed connections on a shared reactor
                abort = getattr(row, "abort", None)
                if abort is not None and row.state is not _CLOSED:
                    abort()

    def stop_taking(self, reactor: Reactor) -> None:
        """Close the listener, unregister the source."""
        if self.listener is not None:
            self.listener.close()
        if self.reader is not None and not reactor.is_closed():
            try:
                reactor.selector.unregister(self.reader.fd)
            except (KeyError, ValueError):
                pass
            self.reader = None
        if self.endpoint is not None:
            self.endpoint.abort()
