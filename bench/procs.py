"""A server under test in a child process, and what it holds, measured from outside.

One kit for the benchmark (:mod:`bench.measure`) and the tests (``tests/servekit.py``,
``tests/faults/faultlib.py``):

* :class:`ServerProcess` -- start a server program as a child (its own session if asked,
  a descriptor limit, inherited descriptors), collect its log (stderr, line by line in
  memory for ``wait_for``; or straight into a file, so that nothing in the measuring
  process reads while a benchmark runs), find where it listens (a ready line on stdout,
  a log line, or a port that accepts), and stop it with a signal and a deadline
  (optionally SIGKILL for the whole session after it).
* :class:`Sampler` -- psutil figures of a process and its descendants: :class:`Usage`
  (RSS, PSS, descriptors, threads, processes), CPU seconds (with or without reaped
  children), the share of a core over a window, and :meth:`Sampler.wait_back_to` a
  baseline. :class:`Watch` samples in a thread and keeps the peaks.
* :func:`core_busy` -- the busy time of one CPU core (all processes), :func:`free_port`.

Standard library and psutil only: this module must not import ``bench.run`` or the
other benchmark modules (the tests import it), nor ``reactor`` or ``handlers`` (the
server runs in the child, not here).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from signal import SIGTERM
from typing import IO, Any

import psutil

__all__ = ["WAIT", "Sampler", "ServerProcess", "Usage", "Watch", "core_busy", "free_port",
           "wait_for_port"]

WAIT = 30.0  # generous: the machine is shared and may be loaded
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


# -- a process tree, measured from outside -------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Resources held by a process tree at one moment.

    Attributes:
        fds, threads, rss: summed over the processes that could be measured.
        children: descendants listed (zombies included: an unreaped child is held).
        pss: summed like RSS, when asked for (0 otherwise).
        procs: processes measured (the root included; zombies not).
    """

    fds: int = 0
    threads: int = 0
    children: int = 0
    rss: int = 0
    pss: int = 0
    procs: int = 0

    def __str__(self) -> str:
        return (f"fds={self.fds} threads={self.threads} children={self.children} "
                f"rss={self.rss / 2**20:.1f} MiB")

    def most(self, other: Usage) -> Usage:
        """The larger of each figure of the two."""
        return Usage(*map(max, astuple(self), astuple(other)))


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3 onwards).

    Raises:
        OSError: no such process, or no /proc.
    """
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rfind(")") + 2:].split()


def _own_and_reaped_cpu(proc: psutil.Process) -> float:
    """user+sys of ``proc`` and of its reaped children, zombies included.

    A worker that just exited is a zombie until its parent reaps it: psutil's
    ``cpu_times`` may refuse it, and its time is not yet in the parent's reaped-children
    counters, so it would vanish from the tree for a moment. /proc/PID/stat still has it.
    """
    try:
        fields = _stat_fields(proc.pid)
        return sum(int(x) for x in fields[11:15]) / _CLK_TCK  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        pass
    try:
        t = proc.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except _GONE:
        return 0.0


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user+sys) of ``proc``, its reaped children and its live descendants.

    The parent is read before its children: a child reaped in between is missed (for
    microseconds of its life) rather than counted twice."""
    total = _own_and_reaped_cpu(proc)
    try:
        children = proc.children()
    except _GONE:
        return total
    for child in children:
        total += _tree_cpu(child)
    return total


def core_busy(cpu: int) -> float | None:
    """Busy CPU seconds of core ``cpu`` so far (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    # user nice system idle iowait irq softirq steal ...
                    ticks = [int(x) for x in line.split()[1:9]]
                    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK
    except (OSError, ValueError):
        pass
    return None


class Sampler:
    """psutil measurements of a process and its descendants."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:  # the root is gone (zombies included)
            return []

    def usage(self, pss: bool = False) -> Usage:
        """Descriptors, threads, children and RSS of the tree now (and PSS if asked:
        slower, it reads every mapping)."""
        fds = threads = rss = pss_sum = procs = 0
        tree = self._tree()
        for proc in tree:
            try:
                with proc.oneshot():
                    if pss:
                        full = proc.memory_full_info()
                        rss += full.rss
                        pss_sum += getattr(full, "pss", full.rss)
                    else:
                        rss += proc.memory_info().rss
                    fds += proc.num_fds()
                    threads += proc.num_threads()
                    procs += 1
            except _GONE:
                continue
        return Usage(fds, threads, max(0, len(tree) - 1), rss, pss_sum, procs)

    def rss(self) -> int:
        return self.usage().rss

    def descriptors(self) -> dict[int, list[str]]:
        """What each process of the tree has open, by pid (for failure messages)."""
        held: dict[int, list[str]] = {}
        for proc in self._tree():
            fds = Path(f"/proc/{proc.pid}/fd")
            try:
                held[proc.pid] = sorted(f"{fd.name}->{os.readlink(fd)}" for fd in fds.iterdir())
            except OSError:  # gone, or no /proc
                continue
        return held

    def children(self) -> list[psutil.Process]:
        try:
            return list(self.proc.children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self, reaped: bool = False) -> float:
        """CPU seconds (user+sys) used so far by the processes of the tree alive now, or
        with ``reaped`` by the root, its reaped children and its live descendants (read
        from /proc, so that a worker that just exited is not lost for a moment)."""
        if reaped:
            return _tree_cpu(self.proc)
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def user_cpu(self) -> float | None:
        """User-space CPU seconds of the root process so far, or None once it has
        children (a server with worker processes) or cannot be read."""
        try:
            if self.proc.children():
                return None
            return int(_stat_fields(self.proc.pid)[11]) / _CLK_TCK  # utime
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def cpu_fraction(self, seconds: float = 2.0,
                     during: Callable[[float], object] | None = None) -> float:
        """The tree's CPU use over ``seconds`` as a fraction of one core.

        ``during(left)`` is called repeatedly meanwhile (e.g. to pump client sockets);
        it should block for about ``left`` seconds at most.
        """
        cpu0, t0 = self.cpu_seconds(), time.monotonic()
        deadline = t0 + seconds
        while (left := deadline - time.monotonic()) > 0:
            if during is None:
                time.sleep(left)  # a measurement window, not an ordering
            else:
                during(left)
        return (self.cpu_seconds() - cpu0) / (time.monotonic() - t0)

    def watch(self, interval: float) -> Watch:
        return Watch(self, interval)

    def rss_watch(self, interval: float = 0.02) -> Watch:
        """A :class:`Watch` for ``with`` (``peak``: the largest RSS seen)."""
        return Watch(self, interval)

    def wait_back_to(self, baseline: Usage, *, rss_slack: int = 8 * 2**20,
                     timeout: float = WAIT,
                     allowance: Callable[[], tuple[int, int]] | None = None) -> Usage:
        """Poll until descriptors, threads and children are at most the baseline's and
        RSS at most ``rss_slack`` above it. ``allowance()``, if given, says how many more
        descriptors and threads are excused at that moment.

        Raises:
            AssertionError: not back within ``timeout``; says what is still held.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = self.usage()
            fds, threads = allowance() if allowance is not None else (0, 0)
            if (now.fds <= baseline.fds + fds
                    and now.threads <= baseline.threads + threads
                    and now.children <= baseline.children
                    and now.rss <= baseline.rss + rss_slack):
                return now
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"not back to the baseline within {timeout} s:\n  baseline {baseline}\n"
                    f"  now      {now}\n  (rss slack {rss_slack / 2**20:.1f} MiB, "
                    f"excused {fds} descriptors and {threads} threads)\n"
                    f"  descriptors held: {self.descriptors()}")
            time.sleep(0.05)  # polling a condition with a deadline


class Watch:
    """Samples a tree every ``interval`` in a thread and keeps the peaks.

    ``start()``/``stop()`` sample only from the thread (the benchmark's way: the first
    sample one interval after the start); as a context manager it also samples on entry
    and exit. Set ``pss_due`` (a ``time.monotonic()`` value) to have one sample, the
    first after it, include PSS: it is kept in ``pss_sample``.
    """

    def __init__(self, sampler: Sampler, interval: float) -> None:
        self.sampler = sampler
        self.interval = interval
        self.highest = Usage()
        self.samples = 0
        self.pss_due: float | None = None
        self.pss_sample: Usage | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def peak(self) -> int:
        """The largest RSS seen."""
        return self.highest.rss

    def _sample(self) -> None:
        due = self.pss_due
        take_pss = due is not None and time.monotonic() >= due
        now = self.sampler.usage(pss=take_pss)
        if take_pss:
            self.pss_sample = now
            self.pss_due = None
        self.highest = self.highest.most(now)
        self.samples += 1

    def _run(self) -> None:
        while not self._halt.wait(self.interval):
            self._sample()

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=WAIT)

    def __enter__(self) -> Watch:
        self._sample()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._sample()


# -- the server process ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for a server that must be told its port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` accepts a connection before ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)  # polling a condition with a deadline
    return False


class ServerProcess:
    """A server program in a child process: its log, its readiness, its end.

    Args:
        command: the program and its arguments.
        cwd, env: its directory; variables added to this process's environment.
        pass_fds: descriptors it inherits.
        nofile: its RLIMIT_NOFILE soft limit (None: inherited).
        log_path: None: stderr is read by a thread into :attr:`lines` (see
            :meth:`wait_for`); a path: stderr is appended to that file by the child
            itself, after a ``--- NAME TIME`` header, and :attr:`log` reads it back.
        stdout: ``"devnull"``, ``"pipe"`` (a ready line: :meth:`read_line`) or ``"log"``
            (with stderr).
        new_session: its own session, so that :meth:`stop` can kill what it forked.
        name: for messages and the log header.

    :meth:`start` runs it (the constructor does not); :attr:`proc` is the
    :class:`subprocess.Popen`, :attr:`sampler` a :class:`Sampler` of its tree.
    """

    port = 0  # where it listens, once known (a subclass may make it a property)

    def __init__(
        self, command: Sequence[str], *, cwd: str | Path | None = None,
        env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = (),
        nofile: int | None = None, log_path: Path | None = None, stdout: str = "devnull",
        new_session: bool = False, name: str | None = None,
    ) -> None:
        self.command = list(command)
        self.cwd = cwd
        self.env = env or {}
        self.pass_fds = pass_fds
        self.nofile = nofile
        self.log_path = log_path
        self.stdout = stdout
        self.new_session = new_session
        self.name = name or Path(self.command[0]).name
        self.lines: list[str] = []
        self._proc: subprocess.Popen[Any] | None = None
        self._sampler: Sampler | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    # -- starting

    def start(self) -> ServerProcess:
        environ = dict(os.environ)
        environ.update(self.env)
        preexec = None
        if self.nofile is not None:
            limit = self.nofile

            def preexec() -> None:
                import resource

                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

        stderr: Any = subprocess.PIPE
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _release()
            header = f"--- {self.name} {_dt.datetime.now().isoformat()}\n".encode()
            self._log_file.write(header)
            self._log_file.flush()
            self._log_offset = self._log_file.tell()
            stderr = self._log_file
        out: Any = {"devnull": subprocess.DEVNULL, "pipe": subprocess.PIPE,
                    "log": stderr if self.log_path is not None else subprocess.STDOUT,
                    }[self.stdout]
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=stderr,
            text=self.log_path is None, cwd=self.cwd, env=environ, pass_fds=self.pass_fds,
            preexec_fn=preexec,  # noqa: PLW1509 - setrlimit only, no lock taken
            start_new_session=self.new_session,
        )
        self._sampler = Sampler(self._proc.pid)  # now: psutil refuses a pid once reaped
        if self.log_path is None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    @property
    def proc(self) -> subprocess.Popen[Any]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    @property
    def sampler(self) -> Sampler:
        if self._sampler is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._sampler

    @property
    def started(self) -> bool:
        return self._proc is not None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- the log

    def _read(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def log(self) -> str:
        """What it logged so far (for a log file: since this start's header)."""
        if self.log_path is not None:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self._log_offset)
                    return f.read().decode(errors="replace")
            except OSError:
                return ""
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = WAIT, count: int = 1) -> re.Match[str]:
        """Wait until ``count`` log lines match ``pattern``; return the last match
        (stderr read into :attr:`lines` only).

        Raises:
            AssertionError: it exited first, or not within ``timeout``; with the log.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                if "<EOF>" in self.lines:
                    raise AssertionError(f"server exited before logging {pattern!r}:\n"
                                         + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r} within "
                                         f"{timeout} s:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def read_line(self, deadline: float) -> str:
        """The first line it prints on stdout (``stdout="pipe"``), or "" at the
        deadline (monotonic) or at EOF."""
        stream = self.proc.stdout
        assert stream is not None
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return ""
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    return buf.decode(errors="replace")
                buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace")

    # -- signals and the end

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the exit; returns the status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout``.
        """
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def stop(self, sig: int = SIGTERM, timeout: float = WAIT, *,
             kill_after: bool = False) -> int | None:
        """Send ``sig`` if it still runs and wait ``timeout`` for the exit; returns the
        status (None: never started).

        ``kill_after``: past the deadline SIGKILL it (its whole session with
        ``new_session``) instead of raising; and with ``new_session`` kill whatever is
        left in the session afterwards (a forking server's workers).

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` (without
                ``kill_after``).
        """
        if self._proc is None:
            return None
        popen = self._proc
        if popen.poll() is None:
            popen.send_signal(sig)
        try:
            if not kill_after:
                return self.wait(timeout)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                popen.wait(timeout=timeout)
            if self.new_session:
                self._kill()
            return popen.returncode
        finally:
            if popen.returncode is not None:
                self._release()

    def _kill(self) -> None:
        """SIGKILL it, or with ``new_session`` every process of its session."""
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.new_session:
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                self._proc.kill()

    def close(self) -> None:
        """Kill it if it still runs, and wait for the exit."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._kill()
        self._proc.wait(WAIT)
        if self._reader is not None:
            self._reader.join(WAIT)
        self._release()

    def _release(self) -> None:
        assert self._proc is not None
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
