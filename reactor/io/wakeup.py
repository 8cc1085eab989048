"""The reactor's wake-up channel, and the signals delivered through it.

:class:`Waker` is a non-blocking socketpair registered for reading like any other
descriptor. Other threads write a byte to it (:meth:`Waker.wake`) to end a poll at
once. :func:`signal.set_wakeup_fd` makes the C signal handler write the signal's number
to it, so a signal is dispatched by the reactor's thread when it reads the channel,
never inside a Python signal handler: :class:`SignalHandlers` keeps which signals a
reactor handles, the handlers they replaced, and the wake-up descriptor it replaced.

Part of the I/O layer; holds no reference to the reactor (it is handed callables and
the ready queue). Must not import the loop, the facades or the command line.
"""

from __future__ import annotations

import collections
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..sansio.errors import LocalProtocolError
from ..sansio.timers import Handle

__all__ = ["SignalHandlers", "Waker"]

logger = logging.getLogger("reactor")  # the loop's logger: these lines came from it


class Waker:
    """The wake-up channel: a non-blocking socketpair read by the reactor.

    Args:
        on_signal: called with each signal number read from the channel.
    """

    __slots__ = ("_on_signal", "_pending", "rsock", "wsock")

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self.rsock, self.wsock = socket.socketpair()
        self.rsock.setblocking(False)
        self.wsock.setblocking(False)
        self._pending = False

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        try:
            self.wsock.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full: the reactor will wake anyway
        except OSError:
            if self.wsock.fileno() != -1:
                raise

    def _read_ready(self) -> None:
        try:
            while True:
                try:
                    data = self.rsock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    return
                if not data:
                    return
                if data.strip(b"\0"):
                    for signum in data:
                        if signum:
                            self._on_signal(signum)
        finally:
            # Cleared only after draining: clearing first let another thread's wake()
            # set the flag and send a byte that this loop then drained, leaving the
            # flag set with nothing to read, so every later wake() was skipped (a lost
            # wake-up). A wake() that finds the flag still set here needs no byte: its
            # callback or stop request is seen later in this same iteration.
            self._pending = False

    def _write_ready(self) -> None:  # never registered for writing
        pass

    def close(self) -> None:
        self.rsock.close()
        self.wsock.close()


def _noop_signal_handler(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the real work happens through the wake-up fd."""


class SignalHandlers:
    """The signals one reactor handles, and what they replaced.

    Args:
        ready: the reactor's ready queue; :meth:`deliver` appends a signal's handle.
    """

    __slots__ = ("_handlers", "_old_handlers", "_old_wakeup_fd", "_ready")

    def __init__(self, ready: collections.deque[Handle]) -> None:
        self._ready = ready
        self._handlers: dict[int, Handle] = {}
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd: int | None = None

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def add(self, sig: int, handle: Handle, wakeup_fd: int) -> None:
        """Handle ``sig`` with ``handle``; the first signal points the C handler's
        wake-up descriptor at ``wakeup_fd``. Main thread only.

        Raises:
            LocalProtocolError: the wake-up descriptor cannot be set, or ``sig``
                cannot be caught.
        """
        if not self._handlers:
            try:
                old = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
            except (ValueError, OSError) as exc:
                raise LocalProtocolError(str(exc)) from exc
            self._old_wakeup_fd = old
        if sig not in self._old_handlers:
            try:
                self._old_handlers[sig] = signal.signal(sig, _noop_signal_handler)
            except (ValueError, OSError) as exc:
                if not self._handlers:
                    self._restore_wakeup_fd()
                raise LocalProtocolError(f"cannot handle signal {sig}: {exc}") from exc
            if sig != signal.SIGALRM:
                signal.siginterrupt(sig, False)
        self._handlers[sig] = handle

    def remove(self, sig: int) -> bool:
        """Stop handling ``sig`` and restore its previous handler; False if not handled."""
        if self._handlers.pop(sig, None) is None:
            return False
        previous = self._old_handlers.pop(sig)
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        if not self._handlers:
            self._restore_wakeup_fd()
        return True

    def remove_all(self, *, tolerant: bool = False) -> None:
        """Remove every handler; ``tolerant``: ignore the errors of a process forked
        off the main thread (it cannot touch signal handlers)."""
        for sig in list(self._handlers):
            try:
                self.remove(sig)
            except (ValueError, OSError):
                if not tolerant:
                    raise

    def point_wakeup_at(self, wakeup_fd: int) -> None:
        """Point the C handler's wake-up descriptor at ``wakeup_fd`` if signals are
        handled (a forked child's new waker); logs when it cannot."""
        if not self._handlers:
            return
        try:
            signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:  # pragma: no cover - not the main thread
            logger.warning("signals will not wake the forked reactor: %s", exc)

    def deliver(self, signum: int) -> None:
        """``signum`` arrived: queue its handle to run in the next iteration."""
        handle = self._handlers.get(signum)
        if handle is not None:
            self._ready.append(handle)

    def _restore_wakeup_fd(self) -> None:
        old = self._old_wakeup_fd
        self._old_wakeup_fd = None
        try:
            signal.set_wakeup_fd(old if old is not None else -1)
        except ValueError:  # not the main thread any more (e.g. closed from a worker)
            logger.warning("could not restore the signal wake-up descriptor")
