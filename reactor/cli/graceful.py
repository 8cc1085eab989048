"""Graceful serving: bind addresses, run the reactor, drain connections on a stop request.

:class:`Server` is what ``reactor serve`` runs, and it is usable on its own::

    server = Server(MyProtocol, ["127.0.0.1:0", "unix:/run/my.sock"], graceful_timeout=10)
    server.start()              # binds; logs "listening on 127.0.0.1:40123" per address
    exit_status = server.serve()  # returns after SIGTERM/SIGINT (or stop_threadsafe())

Addresses (:func:`parse_bind`, from :mod:`reactor.cli.addresses`, re-exported here):
``HOST:PORT``, ``[IPV6]:PORT`` (``[::]`` also serves IPv4 clients), ``unix:PATH``
(``unix:@NAME`` for the Linux abstract namespace) and ``fd://N``, a listening stream
socket inherited from the parent (systemd, a supervisor).

Signals (main thread only, through :meth:`Reactor.add_signal_handler`, so they are
handled on the reactor thread via the wake-up descriptor): SIGTERM and SIGINT start a
graceful stop; a second SIGINT during the stop aborts what is left and returns
:data:`EXIT_FORCED` (130) at once; a second SIGTERM is only logged (the grace period is
already running). SIGUSR1 logs :meth:`Reactor.statistics` and the connection table's
counts by state; ``stats_interval`` does the same periodically from a timer. SIGHUP
calls ``on_hangup`` (``reactor serve``: reopen the log files) and never stops the server.

Theory of operation: the graceful stop
--------------------------------------
The promise is that *a request the server received before the stop request gets its
complete response*. "Received" includes bytes still in the kernel's receive buffer and
connections still in the listener's backlog, which the reactor has not looked at yet.
Closing a connection at that point would lose them (and closing a socket with unread
input makes the kernel send RST, which may destroy response bytes still in flight). So:

1. **Stop accepting.** One last bounded accept pass takes the connections already
   queued in the backlog (their clients connected before the signal), then every
   listener is closed (a Unix socket path is removed).
2. **Tell the protocols.** A protocol may define ``begin_shutdown()``; it is called once.
   Returning True means "I am busy and will close the transport myself when my work is
   done" (for protocols that answer asynchronously, from timers or threads); the server
   then only enforces the grace deadline on that connection. Any other return value (or
   no hook: a plain :class:`asyncio.Protocol`) leaves the connection to step 3.
3. **Drain.** The connection keeps being read and its protocol keeps answering. Every
   :data:`DRAIN_CHECK_INTERVAL` the server checks whether it is *quiet*: nothing queued
   for writing, nothing unread in the kernel (a non-blocking ``MSG_PEEK``), and no byte
   moved either way for ``quiet_interval`` seconds *and* across at least
   :data:`QUIET_CHECKS` consecutive checks (so a process stall, which delays the checks
   and the protocol's own timers alike, cannot make a busy connection look quiet). A
   protocol that answers from inside ``data_received`` (every ready service here), or
   from timers that fire more often than ``quiet_interval``, has answered everything
   by then; one that may stay silent longer while it works should use the hook.
4. **Lingering close.** A quiet connection is half-closed: the protocol is swapped for
   a stand-in that discards further input and still forwards ``connection_lost`` to the
   real protocol (called exactly once, as always), and ``write_eof()`` sends FIN after
   the last response byte. The client reads every response, then EOF, and closes its
   side; the server closes on that EOF, or after ``linger_timeout``. Closing only after
   the peer's EOF means no unread input is left, so no RST can cut a response short.
5. **Deadline.** At ``graceful_timeout`` after the stop request whatever is left is
   aborted (logged with the count); :meth:`Server.serve` then returns :data:`EXIT_OK`.

A client that never stops sending keeps its connection in step 3 until the deadline:
without help from the protocol the server cannot tell where a request ends.

Built on the reactor's public API, plus two looks below it: the listener's own accept
step for the final accept pass, and a ``MSG_PEEK`` on a draining connection's socket.
Never imports ``handlers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from ssl import SSLContext
from typing import Any, Final, Literal

from ..io.listeners import DEFAULT_BACKLOG, Listener
from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..io.transports import TransportOptions
from ..sansio.connection import ConnState
from ..sansio.errors import LocalProtocolError
from ..sansio.proxy_policy import DEFAULT_PROXY_TIMEOUT, ProxyPolicy
from ..sansio.timers import TimerHandle
from ..sansio.words import counted
from .access import log_refused, wrap_factory
from .addresses import (
    BadBindAddress,
    BindAddress,
    BindError,
    format_listener,
    listen_on,
    parse_bind,
    parse_binds,
    scope_note,
)

__all__ = [
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DRAIN_CHECK_INTERVAL",
    "EXIT_FORCED",
    "EXIT_OK",
    "QUIET_CHECKS",
    "BadBindAddress",
    "BindAddress",
    "BindError",
    "Server",
    "format_listener",
    "parse_bind",
]

logger = logging.getLogger("reactor.serve")  # the name it had before the layers became folders

EXIT_OK: Final = 0
EXIT_FORCED: Final = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
DEFAULT_GRACEFUL_TIMEOUT: Final = 30.0
DEFAULT_QUIET_INTERVAL: Final = 0.1
DEFAULT_LINGER_TIMEOUT: Final = 2.0
DRAIN_CHECK_INTERVAL: Final = 0.025
QUIET_CHECKS: Final = 2
ABORT_SLACK: Final = 1.0  # after the deadline, how long aborted connections may take to go
FINAL_ACCEPT_ROUNDS: Final = 8
_PROXY_HEADER: Final = ConnState.PROXY_HEADER

ProtocolFactory = Callable[[], Any]

# -- draining -----------------------------------------------------------------------------


class _Lingering(asyncio.Protocol):
    """Stands in for a drained connection's protocol until the peer's EOF.

    Input after the drain point is discarded; ``connection_lost`` goes to the real
    protocol, so it still sees exactly one.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.discarded = 0

    def data_received(self, data: bytes) -> None:
        self.discarded += len(data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes: both directions are done

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.discarded:
            logger.debug("discarded %s received after the drain point",
                         counted(self.discarded, "byte"))
        self.inner.connection_lost(exc)


@dataclasses.dataclass
class _Drain:
    """One connection's progress through the graceful stop."""

    seen: tuple[int, int]  # (bytes_in, bytes_out) at the last check
    since: float  # when bytes last moved (as far as the checks know)
    quiet_checks: int = 0  # consecutive checks that saw nothing move
    phase: Literal["draining", "protocol", "lingering"] = "draining"
    linger_until: float = 0.0


# -- the server ---------------------------------------------------------------------------


class Server:
    """Serve a protocol on one or more addresses and stop gracefully.

    Args:
        protocol_factory: makes one :class:`asyncio.Protocol` per connection (a class
            or any callable taking no arguments).
        binds: addresses, as :class:`BindAddress` or :func:`parse_bind` strings.
        reactor: the reactor to use; a new one (closed by :meth:`serve`) when None.
        backlog: the kernel's queue of connections not yet accepted.
        max_connections: per bound address, stop accepting while this many are open.
        reuse_port: set SO_REUSEPORT on TCP sockets this server creates.
        options: per-connection settings (idle and first-byte timeouts ...).
        graceful_timeout: seconds a stop request waits for connections to finish
            before aborting the rest.
        stats_interval: log statistics every this many seconds (None: only on SIGUSR1).
        quiet_interval: how long nothing must move on a draining connection before it
            is half-closed.
        linger_timeout: how long a half-closed connection waits for the peer's EOF.
        handle_signals: install SIGTERM, SIGINT, SIGUSR1 and SIGHUP handlers while serving
            (only possible on the main thread; elsewhere a warning is logged).
        name: what is served, for log messages.
        unix_mode: permission bits for the ``unix:PATH`` sockets this server binds,
            set through the umask at bind (see :func:`reactor.io.listeners.listen_unix`).
        access_log: log every connection as it closes (see :mod:`reactor.cli.access`);
            with the ``reactor.serve`` logger at DEBUG, accepts and closes go there.
        on_hangup: called on SIGHUP (None: SIGHUP is only logged).
        proxy_protocol / proxy_allow_from / proxy_timeout: every listener requires a
            PROXY header (see :mod:`reactor.io.proxy`); a connection still sending its
            header when a stop begins is not drained, only bounded by the deadlines.
        ssl: serve TLS on every address with this server context (see
            :mod:`reactor.io.tls`); a quiet connection's lingering close is then
            close_notify and a close (TLS has no half-close).
        ssl_handshake_timeout: seconds the TLS handshake may take (None: the default).
        at_cap / cap_reply: at ``max_connections``, wait or refuse, and what a refused
            client is sent (see :mod:`reactor.io.refusal`); with the access log, each
            refused client has its line, reason ``cap``.
        listener_options: more listener keywords by kind, "tcp" and "unix" (access lists).

    Raises:
        ValueError: a bind address does not parse, or a number is out of range.
    """

    def __init__(
        self,
        protocol_factory: ProtocolFactory,
        binds: Iterable[BindAddress | str] = ("127.0.0.1:8888",),
        *,
        reactor: Reactor | None = None,
        backlog: int = DEFAULT_BACKLOG,
        max_connections: int | None = None,
        reuse_port: bool = False,
        options: TransportOptions | None = None,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        stats_interval: float | None = None,
        quiet_interval: float = DEFAULT_QUIET_INTERVAL,
        linger_timeout: float = DEFAULT_LINGER_TIMEOUT,
        handle_signals: bool = True,
        name: str | None = None,
        unix_mode: int | None = None,
        access_log: bool = False,
        on_hangup: Callable[[], object] | None = None,
        proxy_protocol: str | None = None,
        proxy_allow_from: Iterable[str] | None = None,
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        at_cap: str = "wait",
        cap_reply: bytes = b"",
        listener_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.binds = parse_binds(binds)
        if graceful_timeout < 0:
            raise ValueError("graceful_timeout must not be negative")
        if stats_interval is not None and stats_interval <= 0:
            raise ValueError("stats_interval must be positive")
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.protocol_factory = protocol_factory
        self.name = name or getattr(protocol_factory, "__qualname__", repr(protocol_factory))
        self._owns_reactor = reactor is None
        self.reactor = reactor if reactor is not None else Reactor()
        self.backlog = backlog
        self.max_connections = max_connections
        self.reuse_port = reuse_port
        self.options = options if options is not None else TransportOptions()
        self.graceful_timeout = graceful_timeout
        self.stats_interval = stats_interval
        self.quiet_interval = quiet_interval
        self.linger_timeout = linger_timeout
        self.handle_signals = handle_signals
        self.unix_mode = unix_mode
        self.access_log = access_log
        self.on_hangup = on_hangup
        # checked now (a bad value fails before anything is bound), passed to listeners
        self.proxy: dict[str, Any] = {} if proxy_protocol is None else {
            "proxy_protocol": ProxyPolicy.of(proxy_protocol, proxy_allow_from,
                                             proxy_timeout).accept,
            "proxy_allow_from": proxy_allow_from, "proxy_timeout": proxy_timeout}
        self._tls = {"ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout} if ssl else {}
        self._cap = {"at_cap": at_cap, "cap_reply": cap_reply}
        self._by_kind = listener_options or {}
        self.listeners: list[Listener] = []
        self.exit_status = EXIT_OK
        self._stopping = False
        self._deadline = 0.0
        self._drains: dict[StreamTransport, _Drain] = {}
        self._aborted = 0
        self._check_timer: TimerHandle | None = None
        self._stats_timer: TimerHandle | None = None
        self._signals: list[int] = []
        self._served = False

    # -- binding ----------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The bound addresses, with the real ports (see :func:`format_listener`)."""
        return [format_listener(listener) for listener in self.listeners]

    @property
    def stopping(self) -> bool:
        """Whether a stop request has been received."""
        return self._stopping

    def start(self) -> list[str]:
        """Bind every address and start accepting (the reactor runs in :meth:`serve`).

        Returns:
            The bound addresses, each also logged as ``listening on ADDRESS``.

        Raises:
            BindError: an address cannot be bound (an :class:`OSError` naming the
                address); nothing stays bound.
            BadBindAddress: an inherited descriptor is not a listening stream socket,
                or a Unix path is too long (a :class:`ValueError` naming the address).
        """
        if self.listeners:
            return self.addresses
        try:
            for bind in self.binds:
                try:
                    self.listeners.append(self._bind(bind))
                except OSError as exc:
                    raise BindError(bind, exc) from exc
                except ValueError as exc:
                    raise BadBindAddress(bind, exc) from exc
        except BaseException:
            for listener in self.listeners:
                listener.close()
            self.listeners.clear()
            raise
        for address in self.addresses:
            logger.info("listening on %s%s", address, scope_note(address))
        return self.addresses

    def _bind(self, bind: BindAddress) -> Listener:
        kw: dict[str, Any] = {  # for every listener
            "backlog": self.backlog, "max_connections": self.max_connections,
            "options": self.options, **self.proxy, **self._tls, **self._cap,
        }
        factory = self.protocol_factory
        if self.access_log or logger.isEnabledFor(logging.DEBUG):  # else: no cost at all
            factory = wrap_factory(factory, self, self.access_log)
        listener = listen_on(self.reactor, bind, factory, unix_mode=self.unix_mode,
                             reuse_port=self.reuse_port, by_kind=self._by_kind, **kw)
        if self.access_log or logger.isEnabledFor(logging.DEBUG):
            listener.on_refused = log_refused(self.access_log)
        return listener

    # -- running ----------------------------------------------------------------------

    def serve(self) -> int:
        """Bind (if :meth:`start` was not called), run until stopped, clean up.

        Returns:
            :data:`EXIT_OK` after a graceful stop (also when the grace period ran out
            and connections were aborted), :data:`EXIT_FORCED` when a second SIGINT
            (or ``stop(force=True)``) cut it short.

        Raises:
            LocalProtocolError: :meth:`serve` was called before (a server serves once).
            OSError, ValueError: as for :meth:`start`.
        """
        if self._served:
            raise LocalProtocolError("this Server has served already; make a new one")
        self._served = True
        try:
            self.start()
        except BaseException:
            self._cleanup()
            raise
        self._install_signals()
        if self.stats_interval is not None:
            self._stats_timer = self.reactor.call_later(self.stats_interval, self._stats_tick)
        logger.info("serving %s%s (graceful timeout %g s)", self.name,
                    " over TLS" if self._tls else "", self.graceful_timeout)
        try:
            self.reactor.run()
            for _ in range(3):  # let aborted connections run connection_lost
                if not self._own_rows():
                    break
                self.reactor.run_once(0)
        finally:
            self._cleanup()
        return self.exit_status

    def _cleanup(self) -> None:
        for timer in (self._check_timer, self._stats_timer):
            if timer is not None:
                timer.cancel()
        self._check_timer = self._stats_timer = None
        for sig in self._signals:
            self.reactor.remove_signal_handler(sig)
        self._signals.clear()
        for listener in self.listeners:
            listener.close()
        if self._owns_reactor and not self.reactor.is_closed():
            self.reactor.close()

    def _install_signals(self) -> None:
        if not self.handle_signals:
            return
        if threading.current_thread() is not threading.main_thread():
            logger.warning("not on the main thread: SIGTERM/SIGINT/SIGUSR1 are not handled")
            return
        handlers: dict[int, Callable[..., object]] = {
            signal.SIGTERM: self._on_stop_signal, signal.SIGINT: self._on_stop_signal,
        }
        if hasattr(signal, "SIGUSR1"):
            handlers[signal.SIGUSR1] = self._on_stats_signal
        if hasattr(signal, "SIGHUP"):  # not the default: it would end the process
            handlers[signal.SIGHUP] = self._on_hangup
        for sig, callback in handlers.items():
            try:
                self.reactor.add_signal_handler(sig, callback, sig)
            except LocalProtocolError as exc:
                logger.warning("cannot handle %s: %s", signal.Signals(sig).name, exc)
            else:
                self._signals.append(sig)

    def _on_stop_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self._stopping:
            self.stop(reason=name)
        elif sig == signal.SIGINT:
            self.stop(force=True, reason=f"second {name}")
        else:
            logger.info("%s: already stopping; %s left, %.1f s of grace remain",
                        name, counted(len(self._own_rows()), "connection"),
                        max(0.0, self._deadline - self.reactor.time()))

    def _on_stats_signal(self, sig: int) -> None:
        self.log_statistics()

    def _on_hangup(self, sig: int) -> None:
        if self.on_hangup is None:
            logger.info("SIGHUP: nothing to reload; still serving")
            return
        try:
            self.on_hangup()
        except Exception:
            logger.exception("SIGHUP: the reload failed; still serving")

    def stop_threadsafe(self, force: bool = False, reason: str = "stop requested") -> None:
        """:meth:`stop` from any thread."""
        self.reactor.call_soon_threadsafe(self.stop, force, reason)

    def stop(self, force: bool = False, reason: str = "stop requested") -> None:
        """Start the graceful stop (on the reactor thread), or with ``force`` abort
        every connection and stop at once."""
        if force:
            self._force(reason)
            return
        if self._stopping:
            return
        self._stopping = True
        self.reactor.connections.begin_stopping()  # closes from now on: "shutdown"
        now = self.reactor.time()
        self._deadline = now + self.graceful_timeout
        self._final_accept()
        for listener in self.listeners:
            listener.close()
        rows = self._own_rows()
        logger.info("%s: stopping gracefully: no longer accepting; draining %s "
                    "for up to %g s", reason, counted(len(rows), "connection"),
                    self.graceful_timeout)
        for row in rows:
            self._drain_state(row, now)
        self._check_drain()

    def _force(self, reason: str) -> None:
        self._stopping = True
        self.reactor.connections.begin_stopping()
        rows = self._own_rows()
        logger.warning("%s: exiting at once; aborting %s", reason,
                       counted(len(rows), "connection"))
        for listener in self.listeners:
            listener.close()
        for row in rows:
            row.abort()
        self.exit_status = EXIT_FORCED
        self.reactor.stop()

    def _final_accept(self) -> None:
        """Take the connections already waiting in the backlog before closing."""
        for listener in self.listeners:
            for _ in range(FINAL_ACCEPT_ROUNDS):
                before = listener.accepted
                if not listener.accepting:
                    break
                listener._read_ready()
                if listener.accepted == before:
                    break

    def _own_rows(self) -> list[StreamTransport]:
        mine = set(self.listeners)
        return [row for row in self.reactor.connections
                if isinstance(row, StreamTransport) and row.listener in mine]

    # -- the drain --------------------------------------------------------------------

    def _drain_state(self, row: StreamTransport, now: float) -> _Drain:
        state = self._drains.get(row)
        if state is not None:
            return state
        state = self._drains[row] = _Drain((row.bytes_in, row.bytes_out), row.last_activity)
        hook = getattr(row.get_protocol(), "begin_shutdown", None)
        if callable(hook):
            try:
                if hook() is True:
                    state.phase = "protocol"
            except Exception:
                logger.exception("%s: begin_shutdown raised", row.describe())
        return state

    def _check_drain(self) -> None:
        self._check_timer = None
        now = self.reactor.time()
        rows = self._own_rows()
        if not rows:
            self._finished()
            return
        if now >= self._deadline + ABORT_SLACK:
            logger.error("%s did not go away after being aborted; stopping anyway",
                         counted(len(rows), "connection"))
            self._finished()
            return
        if now >= self._deadline:
            live = [row for row in rows if not row.is_closing() or row.get_write_buffer_size()]
            if live:
                logger.warning("graceful timeout (%g s): aborting %s",
                               self.graceful_timeout, counted(len(live), "connection"))
                self._aborted += len(live)
                for row in live:
                    row.abort()
        else:
            for row in rows:
                self._check_row(row, self._drain_state(row, now), now)
        due = now + DRAIN_CHECK_INTERVAL
        if now < self._deadline:
            due = min(due, self._deadline)
        self._check_timer = self.reactor.call_at(due, self._check_drain)

    def _check_row(self, row: StreamTransport, state: _Drain, now: float) -> None:
        if row.is_closing() or state.phase == "protocol":
            return
        if row.state is _PROXY_HEADER:  # no request yet; the header's deadline bounds it
            self._drains.pop(row, None)  # its protocol's begin_shutdown is still to come
            return
        if state.phase == "lingering":
            if now >= state.linger_until:
                logger.debug("%s: no EOF from the peer within %g s; closing",
                             row.describe(), self.linger_timeout)
                row.close()
            return
        seen = (row.bytes_in, row.bytes_out)
        if seen != state.seen or row.get_write_buffer_size() or row.unread_input() is not False:
            state.seen, state.since, state.quiet_checks = seen, now, 0
            return
        state.quiet_checks += 1
        if state.quiet_checks < QUIET_CHECKS or now - state.since < self.quiet_interval:
            return
        # quiet: every request read so far has been answered and sent to the kernel
        state.phase = "lingering"
        state.linger_until = min(now + self.linger_timeout, self._deadline)
        if row.get_extra_info("tls") is not None:  # no half-close in TLS:
            row.get_protocol().close()  # its layer sends close_notify, then closes
            return
        if not row.can_write_eof():
            row.close()
            return
        row.set_protocol(_Lingering(row.get_protocol()))
        row.resume_reading()
        row.write_eof()

    def _finished(self) -> None:
        logger.info("stopped: every connection closed (%d aborted at the deadline)",
                    self._aborted)
        self.reactor.stop()

    # -- statistics -------------------------------------------------------------------

    def log_statistics(self) -> None:
        """Log the reactor's statistics and the connection table's counts by state."""
        stats = self.reactor.statistics()
        counts = self.reactor.connections.counts()
        by_state = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
        logger.info(
            "statistics: open=%d opened_total=%d closed_total=%d bytes_in=%d bytes_out=%d "
            "write_buffered=%d listeners=%d pending_timers=%d iterations=%d backend=%s "
            "refused_by_address=%d refused_by_credentials=%d; by state: %s",
            stats.open, stats.opened_total, stats.closed_total, stats.bytes_in,
            stats.bytes_out, stats.write_buffered, stats.listeners, stats.pending_timers,
            stats.iterations, stats.backend, stats.refused_by_address,
            stats.refused_by_credentials, by_state,
        )

    def _stats_tick(self) -> None:
        self.log_statistics()
        assert self.stats_interval is not None
        timer = self._stats_timer
        due = (timer.when() if timer is not None else self.reactor.time()) + self.stats_interval
        now = self.reactor.time()
        while due <= now:  # skip ticks missed while the loop was busy
            due += self.stats_interval
        self._stats_timer = self.reactor.call_at(due, self._stats_tick)
