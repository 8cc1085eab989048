"""The forking mix-in: each request in a child process.

:class:`ForkingMixIn` -- a child process per request, at most ``max_children`` at a time
(the rest wait in the table); children are reaped as they exit, through the selector (a
pidfd per child) or SIGCHLD on the wake-up channel, never by a polling loop unless
neither is available. A forked child drops the parent's reactor with
:meth:`~reactor.io.loop.Reactor.close_after_fork` and closes its copies of the other
requests' sockets. :class:`ChildWork` is the engine's side of it.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from ..sansio.connection import ConnEvent, ConnState
from ..sansio.errors import LocalProtocolError
from ..sansio.serverlife import ServerEvent, ServerPhase
from ..sansio.timers import TimerHandle
from .engine import close_deadline
from .pipeline import InlineWork, RequestPath
from .requests import WAITING
from .servers import BaseServer, needs_no_period

if TYPE_CHECKING:
    from .requests import RequestRow
    _Base = BaseServer
else:
    _Base = object

__all__ = ["ChildWork", "ForkingMixIn"]

logger = logging.getLogger("reactor.mixins")  # the name it had before the layers became folders

_DISPATCHED_CHILD: Final = ConnState.DISPATCHED_CHILD
_DISPATCH_CHILD: Final = ConnEvent.DISPATCH_CHILD
_FINISH: Final = ConnEvent.FINISH
_CHILD_CHECK: Final = 0.01  # seconds between checks for an exited child, without pidfds


def _pidfd_works() -> bool:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return False
    try:
        os.close(opener(os.getpid()))
    except OSError:  # an old kernel, or a sandbox that forbids it
        return False
    return True


class _ChildWatch:
    """A child's pidfd, registered with the selector: readable when the child exits."""

    __slots__ = ("fd", "pid", "work")

    def __init__(self, work: ChildWork, pid: int, fd: int) -> None:
        self.work = work
        self.pid = pid
        self.fd = fd

    def _read_ready(self) -> None:
        self.work.reap(self.pid)

    def _write_ready(self) -> None:
        pass

    def describe(self) -> str:
        return f"child {self.pid}"


def _wait_for_an_exit(pids: list[int], timeout: float) -> None:
    """Return when one of ``pids`` (children not reaped yet) has exited, or after
    ``timeout`` seconds: poll their pidfds where the kernel has them, otherwise check
    again after a short while."""
    opener = getattr(os, "pidfd_open", None)
    fds: list[int] = []
    try:
        if opener is not None:
            try:
                for pid in pids:
                    fds.append(opener(pid))
            except OSError:  # reaped meanwhile (ESRCH), no pidfds here, out of fds
                pass
            else:
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                poller.poll(math.ceil(timeout * 1000))
                return
        time.sleep(min(timeout, _CHILD_CHECK))
    finally:
        for fd in fds:
            os.close(fd)


class ChildWork(InlineWork):
    """Where a forking server's requests run: a child process each, at most
    ``max_children`` at a time; the engine's side of :class:`ForkingMixIn`."""

    accept_batch: ClassVar[int] = 8

    def __init__(self, engine: RequestPath) -> None:
        super().__init__(engine)
        self.forking = cast("ForkingMixIn", engine.server)
        self.mode: str | None = None  # how exits are noticed, decided at the first fork
        self.rows: dict[int, RequestRow] = {}  # pid -> the row of the request it serves
        self.watches: dict[int, _ChildWatch] = {}
        self.poll_timer: TimerHandle | None = None
        # server_close's deadline (time.monotonic()), for drain
        self.close_deadline: float | None = None
        self.closed_waiting = 0  # requests still waiting for a slot at the deadline


    def full(self) -> bool:
        """Whether ``max_children`` children run."""
        server = self.forking
        return len(server.active_children or ()) >= server.max_children

    def process(self, request: Any, client_address: Any) -> None:
        """Fork a child for the request, or let it wait for a free slot."""
        if self.full():
            self.forking.collect_children()
        if self.full():
            engine = self.engine
            row = engine.rows.get(id(request))
            if row is not None:
                row.set_meta(WAITING, True)
                engine.waiting.append((request, client_address, row))
            return
        self.fork(request, client_address)

    def fork(self, request: Any, client_address: Any) -> None:
        """Fork; the child runs the request and exits, the parent watches for that."""
        server = self.forking
        mode = self.watch_mode()
        row = self.engine.mark(request, _DISPATCH_CHILD)
        try:
            pid = os.fork()
        except BaseException:
            if row is not None and row.state is _DISPATCHED_CHILD:
                row.advance(_FINISH)
            raise
        if pid:
            if server.active_children is None:
                server.active_children = set()
            server.active_children.add(pid)
            if row is not None and row.state is _DISPATCHED_CHILD:
                self.rows[pid] = row
            self.watch(pid, mode)
            server.close_request(request)
            return
        self.become_child(request, row)
        status = 1
        try:
            server.finish_request(request, client_address)
            status = 0
        except Exception:
            server.handle_error(request, client_address)
        finally:
            try:
                server.shutdown_request(request)
            finally:
                os._exit(status)

    def become_child(self, request: Any, row: RequestRow | None) -> None:
        """In the child: drop the parent's reactor and its other sockets."""
        engine = self.engine
        engine.move(ServerEvent.FORK)
        for watch in self.watches.values():
            try:
                os.close(watch.fd)
            except OSError:
                pass
        self.watches.clear()
        self.rows.clear()
        server = self.forking
        server.active_children = set()
        reactor = engine.reactor
        if reactor is None:
            return
        keep = (request, getattr(server, "socket", None))
        for other in reactor.connections:
            sock = getattr(other, "get_extra_info", lambda _n: None)("socket")
            if other is not row and sock is not None and all(sock is not k for k in keep):
                try:
                    sock.close()
                except OSError:
                    pass
        reactor.close_after_fork()

    # -- noticing exits ---------------------------------------------------------------

    def watch_mode(self) -> str:
        """How exits are noticed (``child_watcher``), decided once."""
        if self.mode is not None:
            return self.mode
        server = self.forking
        mode = server.child_watcher
        if mode not in ("auto", "pidfd", "signal", "poll"):
            raise ValueError(f"child_watcher must be auto, pidfd, signal or poll, not {mode!r}")
        on_main = threading.current_thread() is threading.main_thread()
        if mode == "auto":
            mode = "pidfd" if _pidfd_works() else ("signal" if on_main else "poll")
        if mode == "signal":
            try:
                self.engine.get_reactor().add_signal_handler(signal.SIGCHLD,
                                                             server.collect_children)
            except LocalProtocolError as exc:
                logger.warning("%s: cannot watch SIGCHLD (%s); checking for exited "
                               "children every poll_interval", type(server).__name__, exc)
                mode = "poll"
        self.mode = mode
        return mode

    def watch(self, pid: int, mode: str) -> None:
        """Notice when ``pid`` exits."""
        if mode == "pidfd":
            try:
                fd = os.pidfd_open(pid)
            except OSError as exc:
                logger.warning("pidfd_open(%d) failed: %s; polling for it", pid, exc)
                mode = "poll"
            else:
                watch = _ChildWatch(self, pid, fd)
                self.watches[pid] = watch
                self.engine.get_reactor().selector.register(fd, 1, watch)
                return
        if mode == "poll":
            self.schedule_poll()

    def schedule_poll(self) -> None:
        """Check for exited children after ``poll_interval``."""
        engine = self.engine
        reactor = engine.reactor
        if self.poll_timer is None and reactor is not None and not reactor.is_closed():
            self.poll_timer = reactor.call_later(engine.poll_interval, self.poll)

    def poll(self) -> None:
        """Reap the children that exited; check again while some run."""
        self.poll_timer = None
        server = self.forking
        server.collect_children()
        if server.active_children:
            self.schedule_poll()

    def reap(self, pid: int, blocking: bool = False) -> bool:
        """Wait for ``pid`` (without blocking unless asked); True once it is reaped."""
        try:
            done, _status = os.waitpid(pid, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped by someone else
        if not done:
            return False
        self.exited(pid)
        return True

    def exited(self, pid: int) -> None:
        """``pid`` was reaped: end its row, start a request waiting for a slot."""
        server = self.forking
        if server.active_children is not None:
            server.active_children.discard(pid)
        watch = self.watches.pop(pid, None)
        engine = self.engine
        if watch is not None:
            reactor = engine.reactor
            if reactor is not None and not reactor.is_closed():
                try:
                    reactor.selector.unregister(watch.fd)
                except (KeyError, ValueError):
                    pass
            os.close(watch.fd)
        row = self.rows.pop(pid, None)
        if row is not None:
            engine.end_row(row)
        self.start_waiting()

    def start_waiting(self) -> None:
        """Fork for the requests waiting for a slot, while there are slots."""
        engine = self.engine
        waiting = engine.waiting
        while waiting and not self.full() and engine.phase is not ServerPhase.CHILD:
            request, client_address, row = waiting.popleft()
            engine.serve_request(request, client_address, row, run=self.fork)

    def drain(self) -> None:
        """The server is closing: with ``block_on_close``, fork for the requests still
        waiting as slots free up (until the deadline); close the rest."""
        server = self.forking
        if not server.block_on_close:
            super().drain()
            return
        deadline = self.close_deadline
        engine = self.engine
        waiting = engine.waiting
        while waiting:
            if self.full() and server.active_children:
                if deadline is None:
                    self.reap(next(iter(server.active_children)), blocking=True)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                _wait_for_an_exit(list(server.active_children), left)
                server.collect_children()
                continue
            request, client_address, row = waiting.popleft()
            engine.serve_request(request, client_address, row, run=self.fork)
        self.closed_waiting = len(waiting)
        super().drain()  # the deadline passed: close those still waiting

    def wait_children(self, deadline: float | None) -> None:
        """Reap the children as they exit, until none is left or ``deadline`` (a
        :func:`time.monotonic` time; None: wait for all of them)."""
        server = self.forking
        if deadline is None:
            server.collect_children(blocking=True)
            return
        while True:
            server.collect_children()
            pids = list(server.active_children or ())
            left = deadline - time.monotonic()
            if not pids or left <= 0:
                return
            _wait_for_an_exit(pids, left)

    def workers(self) -> tuple[int, int]:
        return 0, len(self.forking.active_children or ())

    def after_close(self) -> None:
        """After the server closed: reap (or wait for) the children, warn about those
        left; a background thread reaps those."""
        server = self.forking
        if server.block_on_close:
            self.wait_children(self.close_deadline)
        else:
            server.collect_children()
        left = set(server.active_children or ())
        if server.block_on_close and (left or self.closed_waiting):
            logger.warning(
                "%s: server_close() stopped waiting after block_on_close_timeout=%s s: "
                "%d child process(es) still running (pids %s), not killed, reaped when "
                "they exit; %d request(s) waiting for a child slot closed",
                type(server).__name__, server.block_on_close_timeout, len(left),
                " ".join(map(str, sorted(left))) or "-", self.closed_waiting)
        for pid in left:
            watch = self.watches.pop(pid, None)
            if watch is not None:
                os.close(watch.fd)
        if left:
            threading.Thread(target=self.reap_later, args=(left,), daemon=True,
                             name=f"{type(server).__name__} reaper").start()

    def reap_later(self, pids: set[int]) -> None:
        """Reap ``pids`` as they exit (in a background thread)."""
        server = self.forking
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            if server.active_children is not None:
                server.active_children.discard(pid)


class ForkingMixIn(_Base):
    """Handle each request in a child process.

    Class attributes (also settable on instances):

    - ``max_children`` -- at most this many children at a time (40); further requests
      wait in the reactor's table (state VERIFIED) until a child exits, while the
      server keeps accepting and answering ``shutdown()``
    - ``block_on_close`` -- ``server_close`` waits for the children (True); otherwise a
      background thread reaps them, so none is left a zombie
    - ``block_on_close_timeout`` -- how long ``server_close`` waits for the children
      (and for slots for the requests still waiting for one), in seconds; None (the
      default) waits for ever, as the standard library. When it passes,
      ``server_close`` closes the requests still waiting for a slot, returns, and logs
      a warning naming the children still running. They are not killed: a child may
      be half-way through a reply or a transaction that a signal would cut short, and
      the program can signal them itself (``active_children``); a background thread
      reaps them as they exit, so none is left a zombie
    - ``timeout`` -- 300: ``handle_request`` reaps after that long without a request
    - ``child_watcher`` -- how exits are noticed: ``"auto"`` (a pidfd per child when
      the kernel has them, else SIGCHLD through the reactor's wake-up channel when
      serving on the main thread, else a check every ``poll_interval``), or one of
      ``"pidfd"``, ``"signal"``, ``"poll"``

    Instance attributes: ``active_children`` -- the pids of running children (None
    before the first fork).

    Methods for the caller: ``collect_children(*, blocking=False)`` -- reap the
    children that exited (wait for all of them when ``blocking``).
    """

    timeout: float | None = 300
    active_children: set[int] | None = None
    max_children: int = 40
    block_on_close: bool = True
    block_on_close_timeout: float | None = None
    child_watcher: str = "auto"
    _reactor_work: ClassVar[type[InlineWork]] = ChildWork

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap the children that exited; with ``blocking``, wait for every child."""
        work = cast(ChildWork, self._reactor_engine.work)
        for pid in list(self.active_children or ()):
            work.reap(pid, blocking=blocking)

    def handle_timeout(self) -> None:
        """``handle_request`` timed out: reap the children that exited."""
        self.collect_children()

    @needs_no_period
    def service_actions(self) -> None:
        """Reap the children that exited. Children are reaped as they exit anyway, so
        this adds no periodic wake-up to ``serve_forever``."""
        self.collect_children()
        super().service_actions()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Fork a child for the request, or let it wait for a free slot."""
        self._reactor_engine.work.process(request, client_address)

    def server_close(self) -> None:
        """Close the server, then reap the children (waiting for them with
        ``block_on_close``, for at most ``block_on_close_timeout`` seconds when that is
        set; a background thread reaps the rest)."""
        work = cast(ChildWork, self._reactor_engine.work)
        if self.block_on_close:
            work.close_deadline = close_deadline(self.block_on_close_timeout)
        super().server_close()
        work.after_close()
