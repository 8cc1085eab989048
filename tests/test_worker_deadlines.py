"""``--worker-start-timeout`` and ``--worker-timeout``: workers that hang at start-up,
reloads whose new workers hang, workers whose loop blocks once ready.

Real processes, port 0, a deadline on every wait; the whole process tree is killed at
the end whatever happened. A worker "hangs" by waiting on an Event nobody sets (in its
factory) or by a protocol that blocks its loop (``servekit:SlowLines``' ``slow S``).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from servekit import TESTS, WAIT, ServerProcess, read_lines, read_until_closed, serve
from workerkit import READY, kill_tree, wait_until, worker_pids

from reactor.cli import argtypes

pytestmark = pytest.mark.timeout(120)


# the factory hangs while the file argv[1] exists (a service blocked on a lock or a DNS
# lookup); argv[3] is the start-up timeout, argv[4] the number of workers
HANGING = """
import logging, os, sys, time
sys.path.insert(0, sys.argv[2])
from reactor.cli.graceful import Server
from reactor.cli.supervisor import Supervisor
from servekit import SlowLines
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
def make_server(binds):
    while os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    return Server(SlowLines, binds)
sys.exit(Supervisor(make_server, ["127.0.0.1:0"], workers=int(sys.argv[4]),
                    worker_start_timeout=float(sys.argv[3])).serve())
"""


def hanging(supervised: list[ServerProcess], tmp_path: Path, timeout: float,
            workers: int, hang: bool) -> tuple[ServerProcess, Path]:
    script = tmp_path / "hanging.py"
    script.write_text(HANGING)
    flag = tmp_path / "hang"
    if hang:
        flag.touch()
    srv = ServerProcess(str(flag), str(TESTS), str(timeout), str(workers),
                        command=[sys.executable, str(script)])
    supervised.append(srv)
    return srv, flag


def ask(srv: ServerProcess, line: bytes) -> list[bytes]:
    with srv.connect() as sock:
        sock.sendall(line + b"\n")
        return read_lines(sock, 1)


def test_a_worker_hanging_at_start_up_is_killed_and_retried_with_backoff(
        supervised: list[ServerProcess], tmp_path: Path) -> None:
    srv, _ = hanging(supervised, tmp_path, 0.5, 1, hang=True)
    srv.wait_for(r"worker 1 \(pid \d+\) not ready after 0\.\d s \(worker start timeout\): "
                 r"killed; restarting in 0.1 s \(1 start-up failure in a row\)")
    time.sleep(3.0)  # a window to count starts in: 0.5 s deadlines, no fork loop
    starts = len(re.findall(r"started worker", srv.log))
    # with the backoff: starts at 0, 0.6, 1.3, 2.2, 3.5 s; with none, one every 0.5 s
    assert 3 <= starts <= 5, srv.log
    delays = re.findall(r"not ready after .* restarting in (\d+\.\d) s", srv.log)
    assert delays[:3] == ["0.1", "0.2", "0.4"], srv.log
    assert "is ready" not in srv.log
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
    assert "stopped: every worker exited" in srv.log


def test_a_reload_whose_new_workers_hang_is_abandoned(
        supervised: list[ServerProcess], tmp_path: Path) -> None:
    srv, flag = hanging(supervised, tmp_path, 2.0, 2, hang=False)
    srv.wait_for(READY, count=2)
    old = worker_pids(srv)
    assert ask(srv, b"before") == [b"before done"]
    flag.touch()  # the next generation hangs in its factory
    srv.signal(signal.SIGHUP)
    srv.wait_for(r"started worker 4")
    srv.wait_for(r"reload abandoned: the new workers were not all ready after 2 s "
                 r"\(2 starting\); the old workers keep serving")
    wait_until(lambda: worker_pids(srv) == old, "only the old workers")
    for n in range(6):  # served by the old generation: no worker is starting
        assert ask(srv, b"after %d" % n) == [b"after %d done" % n]
    assert "reload done" not in srv.log and "draining worker" not in srv.log
    flag.unlink()  # the supervisor is still usable: the next reload succeeds
    srv.signal(signal.SIGHUP)
    srv.wait_for("reload done")
    wait_until(lambda: not old & worker_pids(srv) and len(worker_pids(srv)) == 2,
               "two new workers only")
    assert ask(srv, b"new") == [b"new done"]
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0


def test_a_supervisor_killed_before_its_worker_is_ready_leaves_no_worker(
        supervised: list[ServerProcess], tmp_path: Path) -> None:
    srv, flag = hanging(supervised, tmp_path, 30.0, 1, hang=True)
    worker = psutil.Process(int(srv.wait_for(r"started worker 1 \(pid (\d+)\)").group(1)))
    srv.proc.kill()
    srv.proc.wait(WAIT)
    flag.unlink()  # the worker goes on: its "ready" meets a closed link (EPIPE), no EOF
    try:
        worker.wait(WAIT)  # it stops (psutil.TimeoutExpired if not): no orphan serving
    finally:
        kill_tree(srv, {worker.pid})
    assert not worker.is_running()


def test_a_worker_whose_loop_blocks_is_replaced(supervised: list[ServerProcess]) -> None:
    srv = serve("servekit:SlowLines", "-b", "127.0.0.1:0", "--workers", "1",
                "--worker-timeout", "1", "--graceful-timeout", "1")
    supervised.append(srv)
    srv.wait_for(READY)
    # a healthy worker beats: 2.5 s of requests, well past the 1 s timeout, and no kill
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        assert ask(srv, b"alive") == [b"alive done"]
    assert "silent" not in srv.log
    (victim,) = worker_pids(srv)
    with srv.connect() as sock:
        sock.sendall(b"slow 60\n")  # its loop blocks for a minute
        assert read_lines(sock, 1) == [b"started"]
        match = srv.wait_for(rf"worker 1 \(pid {victim}\) silent for (\d+\.\d) s "
                             r"\(worker timeout 1 s\): killing it and starting another")
        assert 1.0 <= float(match.group(1)) < 10
        # its SIGTERM handler cannot run in a blocked loop: SIGKILL after the grace
        srv.wait_for(rf"worker 1 \(pid {victim}\) still alive 2\.\d s after its SIGTERM: "
                     r"SIGKILL")
        srv.wait_for(rf"worker 1 \(pid {victim}\) exited \(signal SIGKILL\)")
        assert read_until_closed(sock) == b""
    srv.wait_for(r"worker 2 \(pid \d+\) is ready")
    assert ask(srv, b"again") == [b"again done"]
    assert victim not in worker_pids(srv)
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "1e9", "86401", "x"])
def test_a_bad_start_timeout_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        argtypes.worker_start_timeout(text)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "0.5", "1e9", "86401", "x"])
def test_a_bad_worker_timeout_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        argtypes.worker_timeout(text)


def test_the_ranges_and_their_edges() -> None:
    assert argtypes.worker_start_timeout("0.01") == 0.01
    assert argtypes.worker_start_timeout("86400") == 86400
    assert argtypes.worker_timeout("0") == 0  # off
    assert argtypes.worker_timeout("1") == 1
    assert argtypes.worker_timeout("86400") == 86400


@pytest.mark.parametrize(("args", "message"), [
    (("--worker-timeout", "5"), "--worker-start-timeout and --worker-timeout need --workers"),
    (("--workers", "1", "--worker-start-timeout", "inf"),
     "argument --worker-start-timeout: 'inf' is not a finite number"),
])
def test_the_command_line_checks_them(args: tuple[str, ...], message: str) -> None:
    with serve("echo", *args) as srv:
        assert srv.wait() == 2
        assert message in srv.log


def test_a_drained_worker_whose_loop_blocks_is_killed_after_the_grace(
        supervised: list[ServerProcess]) -> None:
    srv = serve("servekit:SlowLines", "-b", "127.0.0.1:0", "--workers", "1",
                "--worker-timeout", "0", "--graceful-timeout", "1")
    supervised.append(srv)
    srv.wait_for(READY)
    (victim,) = worker_pids(srv)
    with srv.connect() as sock:
        sock.sendall(b"slow 60\n")  # blocked: it can never finish its graceful stop
        assert read_lines(sock, 1) == [b"started"]
        srv.signal(signal.SIGHUP)
        srv.wait_for("reload done")
        # no heartbeat asked for: only the drain deadline (1 s + 5 s) ends it
        srv.wait_for(rf"worker 1 \(pid {victim}\) still alive [67]\.\d s after its "
                     r"SIGTERM: SIGKILL")
        srv.wait_for(rf"worker 1 \(pid {victim}\) exited \(signal SIGKILL\)")
        assert read_until_closed(sock) == b""
    assert "silent" not in srv.log
    assert ask(srv, b"after") == [b"after done"]
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
