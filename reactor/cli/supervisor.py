"""The supervisor behind ``reactor serve --workers N``: worker processes, reloads, signals.

From Python::

    def make_server(binds):  # runs in each worker, after the fork
        return Server(MyProtocol, binds, graceful_timeout=10)

    supervisor = Supervisor(make_server, ["127.0.0.1:8000"], workers=4)
    supervisor.start()             # binds; logs "listening on 127.0.0.1:8000"
    exit_status = supervisor.serve()

Theory of operation
-------------------
The supervisor binds (or inherits) the listening sockets (:mod:`.sharedsockets`), then
forks workers; each runs ``make_server(binds)`` on a reactor of its own and accepts on
the inherited sockets (or, with ``reuse_port``, on sockets of its own at the same
port). The supervisor never accepts a connection: its own reactor watches only its
signals and its workers' links (:mod:`.workers`). Every worker's life is a
:class:`~reactor.sansio.workerlife.WorkerState`, moved through its table.

One rule keeps the number of workers right, :meth:`Supervisor._reconcile`, run after
every change: while fewer than ``workers`` *current* workers (starting or serving) are
alive, start one (after the start-up backoff, if the last ones died starting); while
more are alive, drain the newest extra; and drain *retiring* workers (the previous
generation after SIGHUP, or one that reached ``max_requests``) one for each current
worker that is ready, so there is never less capacity than before the reload. Since
the listening sockets stay open in the supervisor the whole time, a client connecting
during a reload waits in the backlog at worst: none is refused, and each drained
worker answers what it received (its graceful stop).

Deadlines (one timer per worker, :mod:`.supervised`): a worker not ready within
``worker_start_timeout`` is killed and counts as a start-up failure; during a reload
that abandons the reload instead (so does the reload's own timer, with the same
length): the new workers are killed and the retired ones serve on. A ready worker
beats over its link; one silent for ``worker_timeout`` is killed and replaced. A
killed worker gets SIGTERM, then SIGKILL :data:`~reactor.sansio.workerlife.KILL_GRACE`
seconds later; a drained one SIGKILL at ``graceful_timeout`` plus :data:`KILL_SLACK`.

Signals: SIGTERM and SIGINT drain every worker (SIGTERM to each) and exit 0 when all
are gone; a second SIGINT sends SIGINT to the workers (their forced stop) and exits
130. SIGHUP reopens the log files and reloads (a new generation of workers).
SIGTTIN/SIGTTOU add or remove one worker. SIGUSR1 asks every worker for its figures
over its link and logs each worker's line and their sum. SIGCHLD reaps.

With a :class:`~reactor.cli.activation.Notifier`, systemd hears READY=1 once the first
generation is ready, RELOADING=1 then READY=1 around a reload, STOPPING=1 at a stop.

Part of the command line layer; never imports ``handlers``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..io.listeners import DEFAULT_BACKLOG
from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..sansio.timers import TimerHandle
from ..sansio.words import counted
from ..sansio.workerlife import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_WORKER_TIMEOUT,
    KILL_GRACE,
    StartupBackoff,
    WorkerDeadlines,
    WorkerEvent,
    WorkerState,
)
from .activation import Notifier
from .addresses import BindAddress, parse_binds
from .graceful import DEFAULT_GRACEFUL_TIMEOUT, EXIT_FORCED, EXIT_OK, Server
from .sharedsockets import SharedSocket, bind_shared
from .supervised import Worker
from .workers import STAT_FIELDS, run_worker

__all__ = ["KILL_SLACK", "STATS_WAIT", "Supervisor", "Worker"]

logger = logging.getLogger("reactor.supervisor")

KILL_SLACK: Final = 5.0  # after graceful_timeout, how long before SIGKILL
STATS_WAIT: Final = 1.0  # how long SIGUSR1 waits for the workers' figures
_LIVE: Final = (WorkerState.STARTING, WorkerState.SERVING)
_SIGNALS: Final = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGTTIN", "SIGTTOU", "SIGCHLD")


class Supervisor:
    """Run ``workers`` processes serving the same addresses (see the module docstring).

    Args:
        make_server: called in each new worker with its addresses; returns the
            :class:`~reactor.cli.graceful.Server` the worker runs (not started; with a
            reactor of its own, or none given: it makes one).
        binds: addresses, as :class:`BindAddress` or ``--bind`` strings.
        workers: how many workers to keep.
        reuse_port: each worker binds its own ``SO_REUSEPORT`` socket for TCP addresses.
        backlog: the listen backlog of the sockets the supervisor binds.
        unix_mode: the permissions of ``unix:PATH`` sockets.
        max_requests / max_requests_jitter: recycle a worker after this many
            connections (plus a random 0..jitter), a replacement started first.
        graceful_timeout: how long a drained worker has (SIGKILL after it and
            :data:`KILL_SLACK`).
        notifier: systemd's notify socket (None: no notifications).
        on_hangup: called on SIGHUP before the reload (``reactor serve``: reopen logs).
        backoff: the start-up backoff (None: the default one).
        worker_start_timeout: seconds a new worker has to report ready; one that does
            not is killed and counts as a start-up failure (backoff), and a reload whose
            new workers are not all ready in that time is abandoned.
        worker_timeout: seconds a ready worker may go without a heartbeat before it is
            killed and replaced (0: no heartbeat, no check).

    Raises:
        ValueError: no address, fewer than one worker, a bad address, or a timeout out
            of its range (see :class:`~reactor.sansio.workerlife.WorkerDeadlines`).
    """

    def __init__(
        self,
        make_server: Callable[[list[BindAddress]], Server],
        binds: Iterable[BindAddress | str],
        *,
        workers: int = 1,
        reuse_port: bool = False,
        backlog: int = DEFAULT_BACKLOG,
        unix_mode: int | None = None,
        max_requests: int | None = None,
        max_requests_jitter: int = 0,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        notifier: Notifier | None = None,
        on_hangup: Callable[[], object] | None = None,
        backoff: StartupBackoff | None = None,
        worker_start_timeout: float = DEFAULT_START_TIMEOUT,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    ) -> None:
        self.binds = parse_binds(binds)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if max_requests is not None and max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.make_server = make_server
        self.workers = workers
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.unix_mode = unix_mode
        self.max_requests = max_requests
        self.max_requests_jitter = max(0, max_requests_jitter)
        self.graceful_timeout = graceful_timeout
        self.notifier = notifier or Notifier({})
        self.on_hangup = on_hangup
        self.backoff = backoff or StartupBackoff()
        self.deadlines = WorkerDeadlines(worker_start_timeout, worker_timeout,
                                         graceful_timeout + KILL_SLACK, KILL_GRACE)
        self.shared: list[SharedSocket] = []
        self.reactor: Reactor | None = None
        self.exit_status = EXIT_OK
        self._workers: dict[int, Worker] = {}
        self._numbers = 0
        self._stopping = False
        self._restart_timer: TimerHandle | None = None
        self._restart_due = 0.0
        self._reload_timer: TimerHandle | None = None
        self._retired: set[int] = set()  # pids the pending reload retired
        self._stats_timer: TimerHandle | None = None
        self._announced = False
        self._reloading = False

    # -- binding and running ----------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The bound addresses, with the real ports."""
        return [item.describe() for item in self.shared]

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers alive now."""
        return sorted(self._workers)

    def start(self) -> list[str]:
        """Bind every address (nothing is forked yet).

        Raises:
            BindError, BadBindAddress: as for :meth:`Server.start`.
        """
        if not self.shared:
            self.shared = bind_shared(self.binds, backlog=self.backlog,
                                      reuse_port=self.reuse_port, unix_mode=self.unix_mode)
            for address in self.addresses:
                logger.info("listening on %s (shared by the workers)", address)
        return self.addresses

    def serve(self) -> int:
        """Bind if needed, start the workers, supervise until stopped.

        Returns:
            :data:`EXIT_OK` after a graceful stop, :data:`EXIT_FORCED` after a second
            SIGINT.
        """
        self.start()
        reactor = self.reactor = Reactor()
        try:
            for name in _SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    reactor.add_signal_handler(sig, self._on_signal, sig)
            logger.info("supervising %s (pid %d)", counted(self.workers, "worker"),
                        os.getpid())
            self._reconcile()
            reactor.run()
        finally:
            for item in self.shared:
                item.close()
            reactor.close()
        return self.exit_status

    # -- workers ----------------------------------------------------------------------

    def _spawn(self) -> None:
        assert self.reactor is not None
        self._numbers += 1
        number = self._numbers
        mine, theirs = socket.socketpair()
        mine.setblocking(False)
        theirs.setblocking(False)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's loop
            mine.close()
            os._exit(self._child(theirs))
        theirs.close()
        worker = Worker(number, pid, mine, reactor=self.reactor, deadlines=self.deadlines,
                        on_message=self._message, on_overdue=self._overdue)
        self._workers[pid] = worker
        StreamTransport(self.reactor, mine, f"worker {number}").attach(worker)
        logger.info("started %s", worker.name())

    def _child(self, link: socket.socket) -> int:
        status = 1
        try:
            for name in _SIGNALS:  # the worker's server installs its own
                if hasattr(signal, name):  # SIGTTIN/SIGTTOU mean nothing to a worker
                    ignored = name in ("SIGTTIN", "SIGTTOU")
                    signal.signal(getattr(signal, name),
                                  signal.SIG_IGN if ignored else signal.SIG_DFL)
            for other in self._workers.values():  # so each link's EOF means its owner died
                other.sock.close()
            binds = []
            for item in self.shared:
                if item.for_worker.kind == "fd":
                    item.sock.detach()  # the worker's listener owns the descriptor now
                else:
                    item.sock.close()  # reuse-port: only the supervisor holds the port
                binds.append(item.for_worker)
            status = run_worker(self.make_server(binds), link, self.max_requests,
                                self.max_requests_jitter, self.deadlines.heartbeat)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("the worker failed")
        finally:
            logging.shutdown()
        return status

    def _message(self, worker: Worker, message: dict[str, Any]) -> None:
        if "ready" in message and worker.life is WorkerState.STUCK:
            logger.info("%s reported ready too late: it is being killed", worker.name())
        elif "ready" in message:
            worker.move(WorkerEvent.READY)
            self.backoff.succeeded()
            logger.info("%s is ready", worker.name())
            self._reconcile()
        if "recycle" in message and worker.life is WorkerState.SERVING:
            logger.info("%s served %s: replacing it", worker.name(),
                        counted(int(message["recycle"]), "connection"))
            worker.move(WorkerEvent.RETIRE)
            self._reconcile()
        if "stats" in message and isinstance(message["stats"], dict):
            worker.stats = {k: int(v) for k, v in message["stats"].items()}
            if all(w.stats is not None for w in self._workers.values()
                   if w.life is not WorkerState.EXITED):
                self._log_statistics()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self._workers.pop(pid, None)
            if worker is not None:
                self._exited(worker, status)
        if self._stopping and not self._workers:
            self._finish()
            return
        self._reconcile()

    def _exited(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        expected = worker.life in (WorkerState.DRAINING, WorkerState.STUCK)
        started = worker.life is WorkerState.STARTING
        worker.move(WorkerEvent.EXIT)
        if worker.transport is not None:
            worker.transport.abort()
        if expected or self._stopping:
            logger.info("%s exited (%s)", worker.name(), how)
        elif started:
            self._failed_start(worker, f"died at start-up ({how})")
        else:
            logger.error("%s died (%s); starting another", worker.name(), how)
            self.notifier.status(f"{worker.name()} died ({how}); starting another")

    def _failed_start(self, worker: Worker, what: str) -> None:
        """Count a start-up failure: the next start waits for the backoff."""
        delay = self.backoff.failed()
        logger.error("%s %s; restarting in %.1f s (%s in a row)", worker.name(), what,
                     delay, counted(self.backoff.failures, "start-up failure"))
        self._restart_due = self.reactor.time() + delay if self.reactor else 0.0
        self.notifier.status(f"{worker.name()} {what}; retrying in {delay:.1f} s")

    # -- deadlines (WorkerDeadlines: one timer per worker, in Worker) ---------------

    def _overdue(self, worker: Worker) -> None:
        """``worker`` missed its state's deadline (see :class:`WorkerDeadlines`)."""
        assert self.reactor is not None
        now = self.reactor.time()
        life, waited = worker.life, now - worker.entered
        if life is WorkerState.STARTING and self._reloading:
            self._abandon_reload(f"{worker.name()} not ready after {waited:.1f} s")
        elif life is WorkerState.STARTING:
            self._stop_stuck(worker, WorkerEvent.LATE)
            self._failed_start(worker, f"not ready after {waited:.1f} s "
                                       "(worker start timeout): killed")
        elif life in (WorkerState.SERVING, WorkerState.RETIRING):
            logger.error("%s silent for %.1f s (worker timeout %g s): killing it%s",
                         worker.name(), now - worker.heard, self.deadlines.silence,
                         "" if life is WorkerState.RETIRING else " and starting another")
            self.notifier.status(f"{worker.name()} stopped answering: killed")
            self._stop_stuck(worker, WorkerEvent.SILENT)
        else:
            logger.error("%s still alive %.1f s after its SIGTERM: SIGKILL", worker.name(),
                         waited)
            self._kill(worker.pid, signal.SIGKILL)
            return
        self._reconcile()

    def _stop_stuck(self, worker: Worker, event: WorkerEvent) -> None:
        worker.move(event)
        self._kill(worker.pid, signal.SIGTERM)  # SIGKILL at the STUCK deadline

    def _abandon_reload(self, reason: str) -> None:
        """The new generation missed its deadline: kill it, keep the old one."""
        if self._reload_timer is not None:
            self._reload_timer.cancel()
            self._reload_timer = None
        self._reloading = False
        logger.error("reload abandoned: %s; the old workers keep serving", reason)
        self.notifier.status(f"reload abandoned: {reason}")
        for worker in list(self._workers.values()):
            if worker.life is WorkerState.STARTING:
                self._stop_stuck(worker, WorkerEvent.LATE)
            elif worker.life is WorkerState.RETIRING and worker.pid in self._retired:
                worker.move(WorkerEvent.KEEP)
        self._retired.clear()

    def _reload_overdue(self) -> None:
        self._reload_timer = None
        if self._reloading and not self._stopping:
            waiting = sum(1 for w in self._workers.values() if w.life is WorkerState.STARTING)
            self._abandon_reload(f"the new workers were not all ready after "
                                 f"{self.deadlines.start:g} s ({waiting} starting)")
            self._reconcile()

    def _reconcile(self) -> None:
        """Bring the workers to the wanted number (see the module docstring)."""
        if self._stopping or self.reactor is None:
            return
        workers = list(self._workers.values())
        current = [w for w in workers if w.life in _LIVE]
        retiring = [w for w in workers if w.life is WorkerState.RETIRING]
        ready = sum(1 for w in current if w.life is WorkerState.SERVING)
        # never less capacity: one retiring worker goes for each current one ready
        for worker in retiring[: max(0, len(retiring) - max(0, self.workers - ready))]:
            self._drain(worker, "replaced")
        extra = max(0, len(current) - self.workers)
        for worker in sorted(current, key=lambda w: -w.number)[:extra]:
            self._drain(worker, "fewer workers wanted")
            current.remove(worker)
        missing = self.workers - len(current)
        if missing > 0:
            delay = self._restart_due - self.reactor.time()
            if delay > 0:
                if self._restart_timer is None:
                    self._restart_timer = self.reactor.call_later(delay, self._restart)
            else:
                for _ in range(missing):
                    self._spawn()
        if not self._announced and ready >= self.workers and not retiring:
            self._announced = True
            status = f"{counted(ready, 'worker')} serving on {', '.join(self.addresses)}"
            if self._reloading:
                self._reloading = False
                self._retired.clear()
                if self._reload_timer is not None:
                    self._reload_timer.cancel()
                    self._reload_timer = None
                logger.info("reload done: %s", status)
            self.notifier.ready(status)

    def _restart(self) -> None:
        self._restart_timer = None
        self._reconcile()

    def _drain(self, worker: Worker, why: str) -> None:
        worker.move(WorkerEvent.DRAIN)
        logger.info("draining %s (%s)", worker.name(), why)
        self._kill(worker.pid, signal.SIGTERM)

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # exited; SIGCHLD will tell

    # -- signals ----------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if name == "SIGCHLD":
            self._reap()
        elif name in ("SIGTERM", "SIGINT"):
            self._on_stop(sig, name)
        elif name == "SIGHUP":
            self.reload()
        elif name == "SIGUSR1":
            self.request_statistics()
        elif not self._stopping:  # SIGTTIN, SIGTTOU
            self.workers = max(1, self.workers + (1 if name == "SIGTTIN" else -1))
            logger.info("%s: now %s wanted", name, counted(self.workers, "worker"))
            self._reconcile()

    def _on_stop(self, sig: int, name: str) -> None:
        if not self._stopping:
            self.stop(name)
        elif sig == signal.SIGINT:
            logger.warning("second SIGINT: stopping %s at once",
                           counted(len(self._workers), "worker"))
            self.exit_status = EXIT_FORCED
            for pid in self._workers:
                self._kill(pid, signal.SIGINT)
        else:
            logger.info("%s: already stopping; %s left", name,
                        counted(len(self._workers), "worker"))

    def stop(self, reason: str = "stop requested") -> None:
        """Drain every worker, then return from :meth:`serve` (on the reactor thread)."""
        if self._stopping or self.reactor is None:
            return
        self._stopping = True
        logger.info("%s: stopping gracefully: draining %s", reason,
                    counted(len(self._workers), "worker"))
        self.notifier.stopping(f"stopping: draining {counted(len(self._workers), 'worker')}")
        for timer in (self._restart_timer, self._reload_timer):
            if timer is not None:
                timer.cancel()
        self._restart_timer = self._reload_timer = None
        for worker in self._workers.values():  # each gets SIGKILL at its drain deadline
            if worker.life not in (WorkerState.DRAINING, WorkerState.STUCK):
                worker.move(WorkerEvent.DRAIN)
                self._kill(worker.pid, signal.SIGTERM)
        if not self._workers:
            self._finish()

    def _finish(self) -> None:
        logger.info("stopped: every worker exited")
        assert self.reactor is not None
        self.reactor.stop()

    def reload(self) -> None:
        """Start a new generation of workers and drain the old one as the new is ready."""
        if self._stopping:
            return
        if self.on_hangup is not None:
            try:
                self.on_hangup()
            except Exception:
                logger.exception("SIGHUP: the hang-up hook failed")
        old = [w for w in self._workers.values() if w.life in _LIVE]
        logger.info("reloading: starting %s, then draining %s",
                    counted(self.workers, "new worker"), counted(len(old), "old one"))
        self._reloading = True
        self._announced = False
        self.notifier.reloading(f"reloading: replacing {counted(len(old), 'worker')}")
        if self._reload_timer is not None:
            self._reload_timer.cancel()
        assert self.reactor is not None
        self._reload_timer = self.reactor.call_later(self.deadlines.start,
                                                     self._reload_overdue)
        for worker in old:
            if worker.life is WorkerState.STARTING:  # serves nothing yet: no need to wait
                self._drain(worker, "reloaded before it was ready")
            else:
                worker.move(WorkerEvent.RETIRE)
                self._retired.add(worker.pid)
        self._reconcile()

    # -- statistics -------------------------------------------------------------------

    def request_statistics(self) -> None:
        """Ask every worker for its figures; log them as they arrive (or after
        :data:`STATS_WAIT` with those that came)."""
        assert self.reactor is not None
        for worker in self._workers.values():
            worker.stats = None
            worker.send({"stats": True})
        if self._stats_timer is not None:
            self._stats_timer.cancel()
        self._stats_timer = self.reactor.call_later(STATS_WAIT, self._log_statistics)

    def _log_statistics(self) -> None:
        if self._stats_timer is not None:
            self._stats_timer.cancel()
            self._stats_timer = None
        answered = [w for w in self._workers.values() if w.stats is not None]
        total = {name: sum((w.stats or {}).get(name, 0) for w in answered)
                 for name in STAT_FIELDS}
        logger.info("statistics: workers=%d answered=%d %s", len(self._workers),
                    len(answered), _figures(total))
        for worker in sorted(answered, key=lambda w: w.number):
            logger.info("statistics: %s %s: %s", worker.name(), worker.life.value,
                        _figures(worker.stats or {}))
            worker.stats = None


def _figures(stats: dict[str, int]) -> str:
    return " ".join(f"{name}={stats.get(name, 0)}" for name in STAT_FIELDS)
