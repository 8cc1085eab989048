"""The socketserver facades' own lifecycle: the table, and the servers that follow it.

The table is data (:data:`reactor.sansio.serverlife.SERVER_LIFECYCLE`); the servers'
phases are checked through ``_reactor_engine.phase`` at the points where the flags it
replaced used to be read in a careful order (a shutdown before serving, a close from
inside a handler, a forked child).
"""

from __future__ import annotations

import inspect
import os
import socket
import socketserver as std
import threading
from typing import Any

import pytest
from sskit import serving, wait_for

from reactor import IllegalTransition, socketserver
from reactor.facades import children, multiplexing, servers, threads
from reactor.sansio.serverlife import SERVER_LIFECYCLE, ServerEvent, ServerPhase

HOST = "127.0.0.1"
P, E = ServerPhase, ServerEvent


def walk(phase: ServerPhase, *events: ServerEvent) -> ServerPhase:
    for event in events:
        phase = SERVER_LIFECYCLE.next(phase, event)
    return phase


def test_serve_then_shutdown_returns_to_idle() -> None:
    assert walk(P.IDLE, E.SERVE, E.SHUTDOWN, E.RETURN) is P.IDLE


def test_a_shutdown_before_serving_makes_serving_return_at_once() -> None:
    assert walk(P.IDLE, E.SHUTDOWN, E.SERVE, E.RETURN) is P.IDLE


def test_closing_while_running_waits_for_the_run_to_return() -> None:
    assert walk(P.IDLE, E.SERVE, E.CLOSE_RUNNING) is P.CLOSING
    assert walk(P.CLOSING, E.RETURN) is P.CLOSED


def test_closed_is_final_but_for_a_fork_and_shutdown_calls() -> None:
    assert SERVER_LIFECYCLE.events(P.CLOSED) == {E.SHUTDOWN, E.FORK}
    for event in (E.SERVE, E.CLOSE, E.CLOSE_RUNNING, E.RETURN):
        with pytest.raises(IllegalTransition):
            SERVER_LIFECYCLE.next(P.CLOSED, event)


def test_a_child_never_leaves_the_child_phase() -> None:
    for state, event, target in SERVER_LIFECYCLE.edges():
        if state is P.CHILD:
            assert target is P.CHILD, event
    with pytest.raises(IllegalTransition):
        SERVER_LIFECYCLE.next(P.CHILD, E.SERVE)


def test_every_phase_is_in_the_table_and_reachable_from_idle() -> None:
    seen, todo = {P.IDLE}, [P.IDLE]
    while todo:
        phase = todo.pop()
        for event in SERVER_LIFECYCLE.events(phase):
            nxt = SERVER_LIFECYCLE.next(phase, event)
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(P)


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def test_shutdown_before_serve_forever_makes_it_return_at_once() -> None:
    server = socketserver.TCPServer((HOST, 0), Echo)
    done = threading.Event()

    def shut() -> None:
        server.shutdown()  # waits until serve_forever has returned
        done.set()

    stopper = threading.Thread(target=shut)
    stopper.start()
    wait_for(lambda: server._reactor_engine.phase is P.STOPPING)
    server.serve_forever(poll_interval=0.05)
    stopper.join(10)
    assert done.is_set()
    assert server._reactor_engine.phase is P.IDLE
    server.server_close()
    assert server._reactor_engine.phase is P.CLOSED
    with pytest.raises(ValueError, match="closed"):
        server.serve_forever()


def test_server_close_from_a_handler_ends_serve_forever_and_closes_the_reactor() -> None:
    phases: list[ServerPhase] = []

    class Closing(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"bye\n")
            self.server.server_close()
            phases.append(self.server._reactor_engine.phase)

    server = socketserver.TCPServer((HOST, 0), Closing)
    address = server.server_address
    result: list[bytes] = []

    def client() -> None:
        with socket.create_connection(address, timeout=10) as c:
            result.append(c.recv(10))

    helper = threading.Thread(target=client)
    helper.start()
    serving_thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    serving_thread.start()
    serving_thread.join(10)
    helper.join(10)
    assert not serving_thread.is_alive(), "serve_forever kept running after server_close"
    assert result == [b"bye\n"]
    assert phases == [P.CLOSING]
    assert server._reactor_engine.phase is P.CLOSED
    assert server.reactor.is_closed()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_in_the_child_phase() -> None:
    read_end, write_end = os.pipe()

    class Report(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            os.write(write_end, self.server._reactor_engine.phase.value.encode())
            self.request.sendall(b"ok")

    server = socketserver.ForkingTCPServer((HOST, 0), Report)
    try:
        with serving(server):
            with socket.create_connection(server.server_address, timeout=10) as c:
                assert c.recv(2) == b"ok"
            wait_for(lambda: server.statistics().children == 0)
        assert os.read(read_end, 100) == b"child"
        assert server._reactor_engine.phase is not P.CHILD  # the parent's
    finally:
        os.close(read_end)
        os.close(write_end)


USER_CLASSES = [servers.BaseServer, servers.TCPServer, servers.UDPServer,
                threads.ThreadingMixIn, children.ForkingMixIn, multiplexing.MultiplexingMixIn]


@pytest.mark.parametrize("cls", USER_CLASSES, ids=lambda c: c.__name__)
def test_classes_users_subclass_carry_only_the_standard_librarys_methods(cls: type) -> None:
    """The request path is the engine's: a subclass of TCPServer sees the standard
    library's hooks, plus the few public additions (statistics, reactor,
    connections), and no private methods but the standard library's own."""
    # ours: the snapshot and the reactor; fileno() on BaseServer (the standard library
    # documents it for subclasses) and get_request() (BaseServer declares what the
    # subclasses provide); MultiplexingMixIn's whole surface is its hooks
    extra = {"statistics", "reactor", "connections", "collect_children", "fileno",
             "get_request"}
    stdlib_private = {"_handle_request_noblock"}
    twin = getattr(std, cls.__name__, std.BaseServer)
    for name, value in vars(cls).items():
        if name.startswith("__") or not (inspect.isfunction(value)
                                         or isinstance(value, property)):
            continue
        assert not name.startswith("_") or name in stdlib_private, (cls.__name__, name)
        assert hasattr(twin, name) or name in extra, (cls.__name__, name)


def test_a_probe_method_on_a_facade_is_caught() -> None:
    class Probe(servers.TCPServer):
        def _reactor_take(self) -> Any:  # what BaseServer used to carry
            return None

    with pytest.raises(AssertionError):
        test_classes_users_subclass_carry_only_the_standard_librarys_methods(Probe)
