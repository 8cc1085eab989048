"""Scenario 10: exceptions raised by handlers, by ``connection_lost``, by
``eof_received``, by timers and by the protocol factory.

Each is logged once, with a traceback and the connection it concerns; only that
connection is closed (the failing ``connection_lost``'s socket too); the loop survives
and the other connections are served.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from faultlib import TRACEBACK, FaultServer, assert_idle, log_lines
from servekit import read_lines, read_until_closed


@pytest.mark.timeout(60)
def test_each_exception_is_logged_once_and_closes_only_its_connection(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:flaky_factory", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    conns: list[socket.socket] = []

    def connect() -> socket.socket:
        """A connection the factory accepted (it refuses every second one)."""
        while True:
            sock = srv.connect()
            sock.sendall(b"hello\n")
            try:
                if read_lines(sock, 1) == [b"hello"]:
                    conns.append(sock)
                    return sock
            except (AssertionError, ConnectionResetError):
                pass
            sock.close()

    bystander = connect()
    data_fault, lost_fault, eof_fault, timer_fault = (connect() for _ in range(4))
    srv.wait_for("protocol factory raised")

    data_port = data_fault.getsockname()[1]
    data_fault.sendall(b"raise\n")
    assert read_until_closed(data_fault) == b""
    lost_fault.sendall(b"raise-lost\n")
    assert read_until_closed(lost_fault) == b"armed\n"
    eof_fault.sendall(b"raise-eof\n")
    assert read_lines(eof_fault, 1) == [b"armed"]
    eof_fault.shutdown(socket.SHUT_WR)
    assert read_until_closed(eof_fault) == b""
    timer_fault.sendall(b"raise-timer\n")
    assert read_lines(timer_fault, 1) == [b"armed"]
    srv.wait_for("raise in a timer callback")
    timer_fault.sendall(b"still here\n")  # a timer's exception is not the connection's
    assert read_lines(timer_fault, 1) == [b"still here"]
    bystander.sendall(b"and me\n")
    assert read_lines(bystander, 1) == [b"and me"]
    assert_idle(srv, "after five kinds of exceptions")

    for sock in conns:
        sock.close()
    srv.wait_for(r"lost #1", count=len(conns))
    srv.wait_back_to(baseline)  # the failing connection_lost's socket closed too
    assert srv.stats()["open"] == 0
    assert srv.stop() == 0  # the loop survived all of it
    log = srv.log  # complete now that the server exited
    for needle in ("data_received raised; closing the connection", "connection_lost raised",
                   "eof_received raised; closing the connection"):
        assert len(log_lines(log, needle)) == 1, (needle, log)
    timer_lines = [line for line in log_lines(log, "callback") if "raised" in line]
    assert len(timer_lines) == 1 and "_boom" in timer_lines[0], log
    # each logged once, with its traceback; the refused connections have one each too
    refused = len(log_lines(log, "protocol factory raised"))
    assert log.count("RuntimeError: faultkit: raise in") == 4
    assert log.count(TRACEBACK) == 4 + refused
    # with the context: which connection failed
    line = log_lines(log, "data_received raised")[0]
    assert f"('127.0.0.1', {data_port})" in line, line
    assert "lost #2" not in log
