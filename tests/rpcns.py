"""Run ``reactor serve rpc`` beside port 111, in a network and mount namespace of its own.

Not a test module: tests/test_rpc_serve.py runs it as
``unshare --net --mount PYTHON tests/rpcns.py MODE APP_DIR SPEC PROG``, so that port 111
and ``/run/rpcbind.sock`` belong to this namespace only (a tmpfs on ``/run``, the
loopback interface up) and nothing of the machine's is touched or needed free.

MODE ``rpcbind``: the system's rpcbind runs on 111, our server (port 0) registers with
it (``--register``); ``rpcinfo`` looks at rpcbind's table before and after our server
stops. MODE ``portmapper``: our server is the portmapper itself, on 111
(``--portmapper``), and ``rpcinfo`` speaks versions 2, 3 and 4 to it. Prints a JSON
object: each command's exit status and output, and the server's log.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEADLINE = 20.0
ROOT = Path(__file__).resolve().parent.parent
RPCINFO = shutil.which("rpcinfo", path="/usr/sbin:/usr/bin:/sbin:/bin") or "rpcinfo"
RPCBIND = shutil.which("rpcbind", path="/usr/sbin:/usr/bin:/sbin:/bin") or "rpcbind"


def run(*argv: str) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE,
                          check=False)
    return {"status": done.returncode, "out": done.stdout, "err": done.stderr}


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_server(app_dir: str, spec: str, *flags: str
                 ) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor", "serve", "rpc", spec, "--app-dir", app_dir,
         *flags], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    port = 0
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        if "listening on udp 127.0.0.1:" in line:
            port = int(line.rsplit(":", 1)[1])
        if "serving rpc" in line:
            return proc, port, log
    raise SystemExit(f"the server did not start (status {proc.wait()})")


def stop_server(proc: subprocess.Popen[str], log: list[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    return {"status": proc.returncode, "err": "".join(log) + err}


def main(mode: str, app_dir: str, spec: str, prog: str) -> dict[str, Any]:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    Path("/run/rpcbind").mkdir()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result: dict[str, Any] = {}
    if mode == "rpcbind":
        rpcbind = subprocess.Popen([RPCBIND, "-f"])
        try:
            wait_for(Path("/run/rpcbind.sock").exists, "rpcbind's socket")
            server, port, log = start_server(app_dir, spec, "--bind", "127.0.0.1:0",
                                             "--register")
            result["port"] = port
            result["dump"] = run(RPCINFO, "-p", "127.0.0.1")
            result["dump4"] = run(RPCINFO, "127.0.0.1")
            result["tcp"] = run(RPCINFO, "-t", "127.0.0.1", prog, "1")
            result["udp"] = run(RPCINFO, "-T", "udp", "127.0.0.1", prog, "1")
            result["server"] = stop_server(server, log)
            result["after"] = run(RPCINFO, "-p", "127.0.0.1")
        finally:
            rpcbind.terminate()
            rpcbind.wait(DEADLINE)
    else:
        server, port, log = start_server(app_dir, spec, "--bind", "127.0.0.1:111",
                                         "--portmapper")
        result["port"] = port
        result["dump"] = run(RPCINFO, "-p", "127.0.0.1")
        result["dump4"] = run(RPCINFO, "127.0.0.1")
        result["getaddr"] = run(RPCINFO, "-T", "tcp", "127.0.0.1", prog, "1")
        result["getaddr_udp"] = run(RPCINFO, "-T", "udp", "127.0.0.1", prog, "1")
        result["getport"] = run(RPCINFO, "-u", "127.0.0.1", prog, "1")
        result["missing"] = run(RPCINFO, "-T", "tcp", "127.0.0.1", str(int(prog) + 1), "1")
        result["server"] = stop_server(server, log)
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
