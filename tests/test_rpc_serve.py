"""``reactor serve rpc MODULE:PROGRAM``: TCP and UDP from the same --bind addresses,
``--portmapper`` beside it, ``--register`` with the system's rpcbind.

Registering with rpcbind, and rpcinfo's rpcbind 3/4 forms (they always ask port 111),
are tested in a network and mount namespace of the test's own (tests/rpcns.py), where
rpcbind or our portmapper may own port 111; where ``unshare`` cannot make one (not
root), those tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rpckit import DEADLINE, read_replies, rpcinfo

from handlers.framers.rpcrecord import encode_record
from handlers.rpc.message import decode_reply, encode_call
from handlers.rpc.portmap import IPPROTO_UDP, PMAP_PROG, SPEC
from handlers.rpc.xdr import Int, String, UnsignedInt, decode, encode

ROOT = Path(__file__).resolve().parent.parent
PROG = 0x2000_0999
DOUBLER = f'''
from handlers.rpc import Int, Procedure, Program, Version, blocking

PROG = {PROG}


class Doubler:
    def double(self, call, n):
        return 2 * n

    @blocking
    def slow_double(self, call, n):
        return 2 * n

    def program(self):
        return Program(PROG, {{1: Version(1, {{
            1: Procedure(1, self.double, Int(), Int(), "DOUBLE"),
            2: Procedure(2, self.slow_double, Int(), Int(), "SLOW_DOUBLE")}})}})


NOT_A_PROGRAM = 42
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "doubler.py").write_text(DOUBLER)
    return tmp_path


def reactor_serve(*argv: str, env: dict[str, str] | None = None
                  ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reactor", "serve", *argv], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


class Served:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.port = 0
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)
            if match := re.search(r"listening on udp 127\.0\.0\.1:(\d+)", line):
                self.port = int(match[1])
            if "serving rpc" in line:
                return
        raise AssertionError(f"the server did not start: {''.join(self.log)}")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=DEADLINE)
        assert self.proc.returncode == 0, err
        return "".join(self.log) + err


@pytest.fixture
def served(app_dir: Path) -> Iterator[Served]:
    proc = reactor_serve("rpc", "doubler:Doubler", "--app-dir", str(app_dir), "--bind",
                         "127.0.0.1:0", env={"REACTOR_PORTMAPPER": "1"})
    try:
        yield Served(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=DEADLINE)


def udp_call(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(DEADLINE)
        udp.sendto(data, ("127.0.0.1", port))
        return udp.recv(65536)


@pytest.mark.timeout(120)
def test_tcp_and_udp_from_one_bind_with_the_portmapper_beside(served: Served) -> None:
    port = served.port
    assert f"listening on 127.0.0.1:{port}" in "".join(served.log)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as tcp:
        tcp.sendall(encode_record(encode_call(1, PROG, 1, 2, encode(Int(), 20)))
                    + encode_record(encode_call(2, PROG, 1, 1, encode(Int(), 5))))
        replies = {r.xid: decode(Int(), r.results) for r in read_replies(tcp, 2)}
    assert replies == {1: 40, 2: 10}
    reply = decode_reply(udp_call(port, encode_call(3, PROG, 1, 2, encode(Int(), 4))))
    assert decode(Int(), reply.results) == 8
    # the portmapper (REACTOR_PORTMAPPER=1) knows the program, version 2 and 4 alike
    mapping = encode(SPEC.types["mapping"], {"prog": PROG, "vers": 1, "prot": IPPROTO_UDP,
                                             "port": 0})
    reply = decode_reply(udp_call(port, encode_call(4, PMAP_PROG, 2, 3, mapping)))
    assert decode(UnsignedInt(), reply.results) == port
    rpcb = encode(SPEC.types["rpcb"], {"r_prog": PROG, "r_vers": 1, "r_netid": "tcp",
                                       "r_addr": "", "r_owner": ""})
    reply = decode_reply(udp_call(port, encode_call(5, PMAP_PROG, 4, 3, rpcb)))
    assert decode(String(), reply.results) == f"127.0.0.1.{port >> 8}.{port & 0xFF}"
    log = served.stop()
    assert "registered with the portmapper beside it" in log


@pytest.mark.timeout(300)
@pytest.mark.parametrize("netid", ["tcp", "udp"])
def test_rpcinfo_reaches_the_served_program(served: Served, netid: str) -> None:
    uaddr = f"127.0.0.1.{served.port >> 8}.{served.port & 0xFF}"
    for prog, versions in ((PROG, [1]), (PMAP_PROG, [2, 3, 4])):
        done = subprocess.run([rpcinfo(), "-a", uaddr, "-T", netid, str(prog)],
                              capture_output=True, text=True, timeout=DEADLINE,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"program {prog} version {v} ready and waiting" for v in versions]
    served.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "message"), [
    (["rpc"], "name the program"),
    (["rpc", "doubler"], "expected MODULE:PROGRAM"),
    (["rpc", "doubler:Missing"], "has no Missing"),
    (["rpc", "doubler:NOT_A_PROGRAM"], "int is not an RPC program"),
    (["rpc", "doubler:Doubler", "--requirepass", "x"], "--requirepass"),
    (["echo", "doubler:Doubler"], "only apply to the rpc service"),
    (["echo", "--portmapper"], "only apply to the rpc service"),
])
def test_usage_errors(app_dir: Path, argv: list[str], message: str) -> None:
    proc = reactor_serve(*argv, "--app-dir", str(app_dir), "--bind", "127.0.0.1:0")
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2, err
    assert message in err


@pytest.mark.timeout(60)
def test_register_without_rpcbind_warns_and_serves(app_dir: Path, tmp_path: Path) -> None:
    if Path("/run/rpcbind.sock").exists():
        pytest.skip("an rpcbind runs on this machine; the namespace test covers --register")
    served = Served(reactor_serve("rpc", "doubler:Doubler", "--app-dir", str(app_dir),
                                  "--bind", "127.0.0.1:0", "--register"))
    assert "no rpcbind is running" in "".join(served.log)
    reply = decode_reply(udp_call(served.port, encode_call(1, PROG, 1, 1,
                                                           encode(Int(), 1))))
    assert decode(Int(), reply.results) == 2
    served.stop()


# -- in a namespace of our own, where port 111 is free -----------------------------------


def in_namespace(mode: str, app_dir: Path) -> dict[str, Any]:
    rpcinfo()  # installs rpcbind (rpcinfo and rpcbind come together) or skips
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare (util-linux) to make a network namespace")
    probe = subprocess.run([unshare, "--net", "--mount", "true"], capture_output=True,
                           text=True, timeout=DEADLINE, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.strip()}")
    if mode == "rpcbind" and shutil.which("rpcbind", path="/usr/sbin:/sbin") is None:
        pytest.skip("rpcbind is not installed")
    done = subprocess.run(
        [unshare, "--net", "--mount", sys.executable, str(ROOT / "tests" / "rpcns.py"),
         mode, str(app_dir), "doubler:Doubler", str(PROG)],
        capture_output=True, text=True, timeout=DEADLINE * 6, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.timeout(300)
def test_register_with_the_system_rpcbind(app_dir: Path) -> None:
    result = in_namespace("rpcbind", app_dir)
    port = int(result["port"])
    rows = {tuple(line.split()[:4]) for line in result["dump"]["out"].splitlines()}
    assert {(str(PROG), "1", "tcp", str(port)), (str(PROG), "1", "udp", str(port))} <= rows
    assert f"127.0.0.1.{port >> 8}.{port & 0xFF}" in result["dump4"]["out"]
    assert str(os.getuid()) in result["dump4"]["out"]  # the owner
    for netid in ("tcp", "udp"):
        assert result[netid]["status"] == 0, result[netid]["err"]
        assert result[netid]["out"] == f"program {PROG} version 1 ready and waiting\n"
    assert "registered with rpcbind" in result["server"]["err"]
    assert str(PROG) not in result["after"]["out"]  # unregistered at exit
    assert "100000" in result["after"]["out"]


@pytest.mark.timeout(300)
def test_rpcinfo_speaks_rpcbind_3_and_4_to_our_portmapper(app_dir: Path) -> None:
    result = in_namespace("portmapper", app_dir)
    assert result["port"] == 111
    rows = {tuple(line.split()[:4]) for line in result["dump"]["out"].splitlines()}
    assert {(str(PROG), "1", "tcp", "111"), ("100000", "4", "udp", "111")} <= rows
    dump4 = [line.split() for line in result["dump4"]["out"].splitlines()[1:]]
    assert [str(PROG), "1", "tcp", "127.0.0.1.0.111"] in [row[:4] for row in dump4]
    for key in ("getaddr", "getaddr_udp", "getport"):
        assert result[key]["status"] == 0, result[key]["err"]
        assert result[key]["out"] == f"program {PROG} version 1 ready and waiting\n"
    assert result["missing"]["status"] != 0
    assert "not registered" in result["missing"]["err"]
    assert result["server"]["status"] == 0
