"""``reactor serve --workers N``: the supervisor, its workers, reloads and signals.

Every test starts the command as a child process (port 0, a deadline on every wait) and
kills the whole process tree at the end, whatever happened.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from servekit import TESTS, WAIT, ServerProcess, read_lines, read_until_closed, serve
from workerkit import READY, echo_once, wait_until, worker_pids

pytestmark = pytest.mark.timeout(120)

def start(started: list[ServerProcess], *args: str, workers: int = 2) -> ServerProcess:
    srv = serve(*args, "--workers", str(workers))
    started.append(srv)
    srv.wait_for(READY, count=workers)
    return srv


def test_workers_share_the_listener_and_drain_on_sigterm(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0")
    address = srv.tcp_address()
    pids = worker_pids(srv)
    assert len(pids) == 2
    supervisor = psutil.Process(srv.proc.pid)
    for n in range(20):
        assert echo_once(address, b"hello %d" % n) == b"hello %d" % n
    assert not [c for c in supervisor.net_connections("tcp") if c.status == "ESTABLISHED"]
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
    assert not [pid for pid in pids if psutil.pid_exists(pid)]  # reaped before it exited
    assert "stopped: every worker exited" in srv.log


def test_sigterm_answers_what_each_worker_received(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "servekit:SlowLines", "-b", "127.0.0.1:0", workers=1)
    with srv.connect() as sock:
        sock.sendall(b"slow 1\n")  # the worker is busy when SIGTERM reaches it
        assert read_lines(sock, 1) == [b"started"]
        srv.signal(signal.SIGTERM)
        sock.sendall(b"after\n")  # received before the stop: answered
        assert read_until_closed(sock) == b"slow 1 done\nafter done\n"
    assert srv.wait() == 0


def test_reload_refuses_no_connection_and_loses_no_request(
        supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0", "--graceful-timeout", "10")
    address = srv.tcp_address()
    first = worker_pids(srv)
    done = threading.Event()
    errors: list[str] = []
    answered = [0]

    def client(k: int) -> None:
        n = 0
        while not done.is_set():
            payload = b"client %d request %d\n" % (k, n)
            try:
                reply = echo_once(address, payload)
            except OSError as exc:
                errors.append(f"{payload!r}: {exc!r}")
                continue
            if reply != payload:
                errors.append(f"{payload!r} answered {reply!r}")
            answered[0] += 1
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: answered[0] > 50, "requests before the reload")
        for reloads in (1, 2):
            srv.signal(signal.SIGHUP)
            srv.wait_for(r"reload done", count=reloads)
            before = answered[0]
            wait_until(lambda b=before: answered[0] > b + 50, "requests after the reload")
    finally:
        done.set()
        for thread in threads:
            thread.join(WAIT)
    assert errors == []
    # every worker was replaced; the last old ones may still be finishing their drain
    wait_until(lambda: not first & worker_pids(srv) and len(worker_pids(srv)) == 2,
               "two new workers only")
    assert len(re.findall(r"draining worker \d+ .*\(replaced\)", srv.log)) == 4


def test_a_persistent_connection_is_answered_through_a_reload(
        supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "servekit:SlowLines", "-b", "127.0.0.1:0", workers=1)
    with srv.connect() as sock:
        sock.sendall(b"slow 1\n")  # the worker is busy when the reload begins
        assert read_lines(sock, 1) == [b"started"]
        srv.signal(signal.SIGHUP)
        sock.sendall(b"after\n")
        assert read_lines(sock, 2) == [b"slow 1 done", b"after done"]
    srv.wait_for("reload done")


def test_a_dead_worker_is_replaced(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0")
    victim = min(worker_pids(srv))
    psutil.Process(victim).kill()
    srv.wait_for(rf"worker \d+ \(pid {victim}\) died \(signal SIGKILL\); starting another")
    srv.wait_for(READY, count=3)
    assert len(worker_pids(srv)) == 2 and victim not in worker_pids(srv)
    assert echo_once(srv.tcp_address(), b"x") == b"x"


def test_ttin_and_ttou_add_and_remove_a_worker(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0")
    srv.signal(signal.SIGTTIN)
    srv.wait_for(READY, count=3)
    wait_until(lambda: len(worker_pids(srv)) == 3, "three workers")
    srv.signal(signal.SIGTTOU)
    srv.wait_for(r"draining worker 3 .*\(fewer workers wanted\)")
    srv.wait_for(r"worker 3 \(pid \d+\) exited \(exit status 0\)")
    wait_until(lambda: len(worker_pids(srv)) == 2, "two workers")


def test_sigusr1_logs_each_worker_and_the_sum(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0")
    for _ in range(10):
        echo_once(srv.tcp_address(), b"0123456789")
    srv.signal(signal.SIGUSR1)
    total = srv.wait_for(r"statistics: workers=2 answered=2 open=0 opened_total=(\d+) "
                         r"closed_total=\d+ bytes_in=(\d+) bytes_out=(\d+)")
    assert total.groups() == ("10", "100", "100")
    srv.wait_for(r"statistics: worker \d+ \(pid \d+\) serving: ", count=2)
    lines = re.findall(r"statistics: worker \d+ .*opened_total=(\d+)", srv.log)
    assert sum(map(int, lines)) == 10


def test_supervisor_killed_leaves_no_worker(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0")
    workers = [psutil.Process(pid) for pid in worker_pids(srv)]
    srv.proc.kill()
    srv.proc.wait(WAIT)
    gone, alive = psutil.wait_procs(workers, timeout=WAIT)
    assert alive == [] and len(gone) == 2


def test_max_requests_recycles_a_worker_after_starting_its_replacement(
        supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0", "--max-requests", "3", workers=1)
    for n in range(3):
        assert echo_once(srv.tcp_address(), b"r%d" % n) == b"r%d" % n
    srv.wait_for(r"worker 1 \(pid \d+\) exited \(exit status 0\)")
    log = srv.log
    assert log.index("worker 1 (pid") < log.index("started worker 2")
    assert log.index("started worker 2") < log.index("draining worker 1")
    ready = re.search(r"worker 2 \(pid \d+\) is ready", log)
    assert ready is not None and ready.start() < log.index("draining worker 1")
    assert echo_once(srv.tcp_address(), b"after") == b"after"


def test_second_sigint_stops_at_once(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "servekit:Stubborn", "-b", "127.0.0.1:0", workers=1)
    with srv.connect() as sock:
        sock.sendall(b"hello\n")
        assert read_lines(sock, 1) == [b"hello done"]
        srv.signal(signal.SIGINT)
        assert read_lines(sock, 1) == [b"shutting down"]  # draining: it never finishes
        srv.signal(signal.SIGINT)
        assert srv.wait() == 130
    assert "second SIGINT" in srv.log


def test_reuse_port_workers_bind_their_own_sockets(supervised: list[ServerProcess]) -> None:
    srv = start(supervised, "echo", "-b", "127.0.0.1:0", "--reuse-port")
    host, port = srv.tcp_address()
    listening = [c for p in worker_pids(srv)
                 for c in psutil.Process(p).net_connections("tcp") if c.status == "LISTEN"]
    assert sorted(c.laddr.port for c in listening) == [port, port]
    supervisor = psutil.Process(srv.proc.pid)
    assert not [c for c in supervisor.net_connections("tcp") if c.status == "LISTEN"]
    for n in range(10):
        assert echo_once((host, port), b"%d" % n) == b"%d" % n
    srv.signal(signal.SIGHUP)
    srv.wait_for("reload done")
    assert echo_once((host, port), b"again") == b"again"


STARTUP_FAILURE = """
import logging, sys
from reactor.cli.supervisor import Supervisor
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
def make_server(binds):
    sys.exit(3)  # a worker that cannot start
sys.exit(Supervisor(make_server, ["127.0.0.1:0"], workers=1).serve())
"""


def test_a_worker_dying_at_start_up_is_restarted_with_backoff(
        supervised: list[ServerProcess], tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(STARTUP_FAILURE)
    srv = ServerProcess(command=[sys.executable, str(script)])
    supervised.append(srv)
    srv.wait_for(r"died at start-up \(exit status 3\); restarting in 0.1 s "
                 r"\(1 start-up failure in a row\)")
    time.sleep(2.0)  # a window to count restarts in: no fork loop
    starts = len(re.findall(r"started worker", srv.log))
    assert 3 <= starts <= 7, srv.log
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0


PYTHON_API = """
import logging, sys
from reactor.cli.graceful import Server
from reactor.cli.supervisor import Supervisor
sys.path.insert(0, sys.argv[2])
from servekit import SlowLines
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
supervisor = Supervisor(lambda binds: Server(SlowLines, binds), ["unix:" + sys.argv[1]],
                        workers=2)
sys.exit(supervisor.serve())
"""


def test_the_python_api_on_a_unix_socket(supervised: list[ServerProcess],
                                         tmp_path: Path) -> None:
    script = tmp_path / "api.py"
    script.write_text(PYTHON_API)
    path = tmp_path / "s.sock"
    srv = ServerProcess(str(path), str(TESTS), command=[sys.executable, str(script)])
    supervised.append(srv)
    srv.wait_for(READY, count=2)
    for n in range(6):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(path))
            sock.sendall(b"line %d\n" % n)
            assert read_lines(sock, 1) == [b"line %d done" % n]
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
    assert not path.exists()  # the supervisor bound it, the supervisor removed it


def test_usage_errors() -> None:
    srv = serve("echo", "--max-requests", "3")
    assert srv.wait() == 2
    assert "--max-requests and --max-requests-jitter need --workers" in srv.log
    srv.close()
    srv = serve("echo", "--workers", "2", "--control", "unix:/nonexistent/ctl")
    assert srv.wait() == 2
    assert "--control, --metrics and --status do not combine with --workers" in srv.log
    srv.close()
    assert TESTS.is_dir()
