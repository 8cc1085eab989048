"""handlers.rpc.blocking: procedures that block run in a bounded pool, off the reactor.

In memory, a :class:`ManualExecutor` runs the submitted work only when the test says
and the reactor's ``call_soon_threadsafe`` is a list the test drains, so every order
(replies overtaking one another, a full pool, EOF with calls in flight) is forced
without threads. On the reactor, a procedure held on an event shows that the reactor
keeps answering meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from rpckit import DEADLINE, read_replies, serving

from handlers.framers.rpcrecord import RecordMarkingFramer, encode_record
from handlers.rpc.blocking import BlockingPool, blocking, is_blocking
from handlers.rpc.dispatch import Call, Dispatcher, Procedure, Program, Version
from handlers.rpc.message import AcceptStat, Reply, decode_reply, encode_call
from handlers.rpc.server import RPCDatagramProtocol, RPCServer
from handlers.rpc.xdr import Int, decode, encode
from reactor.testing import FakeTransport

PROG = 0x2000_0888
SLOW, FAST, BROKEN = 1, 2, 3
A = ("10.0.0.1", 700)


class ManualExecutor:
    """Holds submitted work until :meth:`run` (in the test's thread)."""

    def __init__(self) -> None:
        self.work: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self.shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.work.append((fn, future))
        return future

    def run(self, index: int = 0) -> None:
        fn, future = self.work.pop(index)
        future.set_result(fn())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shut = True
        if cancel_futures:
            for _, future in self.work:
                future.cancel()


class Loop:
    """A stand-in for the reactor's ``call_soon_threadsafe``: callbacks queued, run by
    :meth:`drain`."""

    def __init__(self) -> None:
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self.ready.append((callback, args))

    def drain(self) -> None:
        while self.ready:
            callback, args = self.ready.pop(0)
            callback(*args)


class Service:
    def __init__(self) -> None:
        self.runs: list[int] = []

    @blocking
    def slow(self, call: Call, n: int) -> int:
        self.runs.append(n)
        return n * 10

    def fast(self, call: Call, n: int) -> int:
        return n + 1

    @blocking
    def broken(self, call: Call, n: int) -> int:
        raise RuntimeError("the disk is gone")


def program(service: Service) -> Program:
    version = Version(1)
    for number, function in ((SLOW, service.slow), (FAST, service.fast),
                             (BROKEN, service.broken)):
        version.add(Procedure(number, function, Int(), Int()))
    return Program(PROG, {1: version})


def call(xid: int, proc: int, n: int = 0) -> bytes:
    return encode_call(xid, PROG, 1, proc, encode(Int(), n))


def replies(transport: FakeTransport) -> list[Reply]:
    framer = RecordMarkingFramer()
    framer.feed(transport.take())
    out = []
    while (record := framer.next_record()) is not None:
        out.append(decode_reply(record))
    return out


def results(got: list[Reply]) -> list[tuple[int, int]]:
    return [(r.xid, decode(Int(), r.results)) for r in got]


def setup(max_workers: int = 4, max_queue: int = 4
          ) -> tuple[Service, ManualExecutor, Loop, RPCServer]:
    service, executor, loop = Service(), ManualExecutor(), Loop()
    pool = BlockingPool(max_workers, max_queue, executor=executor)
    pool.bind(loop.call_soon_threadsafe)
    return service, executor, loop, RPCServer([program(service)], pool=pool)


def test_the_mark_reaches_the_procedure() -> None:
    service = Service()
    assert is_blocking(service.slow) and not is_blocking(service.fast)
    version = program(service).versions[1]
    assert version.procedures[SLOW].blocking and not version.procedures[FAST].blocking
    assert Procedure(9, service.fast, blocking=True).blocking
    with pytest.raises(ValueError, match="max_workers"):
        BlockingPool(0)
    with pytest.raises(RuntimeError, match="bind"):
        BlockingPool().submit(lambda: 1, lambda r: None)


def test_replies_on_one_connection_come_back_as_each_call_finishes() -> None:
    service, executor, loop, server = setup()
    transport = FakeTransport(server.stream_handler())
    transport.feed(b"".join(encode_record(c) for c in (
        call(1, SLOW, 1), call(2, FAST, 2), call(3, SLOW, 3), call(4, BROKEN))))
    assert results(replies(transport)) == [(2, 3)]  # the fast one did not wait
    assert service.runs == [] and len(executor.work) == 3
    executor.run(1)  # the second slow call finishes first
    assert replies(transport) == []  # nothing is sent from a worker's thread
    loop.drain()
    assert results(replies(transport)) == [(3, 30)]
    executor.run(1)
    executor.run(0)
    loop.drain()
    broken, first = replies(transport)
    assert (broken.xid, broken.accept_stat) == (4, AcceptStat.SYSTEM_ERR)
    assert results([first]) == [(1, 10)]
    assert service.runs == [3, 1] and server.pool.in_flight == 0


def test_a_full_pool_stops_the_reading_and_loses_no_call() -> None:
    service, executor, loop, server = setup(max_workers=1, max_queue=1)
    transport = FakeTransport(server.stream_handler())
    transport.feed(b"".join(encode_record(c) for c in (
        call(1, SLOW, 1), call(2, SLOW, 2), call(3, SLOW, 3), call(4, FAST, 4),
        call(5, SLOW, 5))))
    assert len(executor.work) == 2 and server.pool.full
    assert not transport.is_reading()  # call 3 waits for room, 4 and 5 behind it
    assert replies(transport) == []
    assert server.pool.refused == 1
    executor.run(0)
    loop.drain()  # 1 answered; 3 takes the room, 4 is answered, 5 waits again
    assert results(replies(transport)) == [(1, 10), (4, 5)]
    assert not transport.is_reading()
    for _ in range(3):
        executor.run(0)
        loop.drain()
    assert results(replies(transport)) == [(2, 20), (3, 30), (5, 50)]
    assert transport.is_reading() and service.runs == [1, 2, 3, 5]


def test_a_full_pool_serves_waiting_connections_in_turn() -> None:
    _, executor, loop, server = setup(max_workers=1, max_queue=0)
    first, second = (FakeTransport(server.stream_handler()) for _ in range(2))
    first.feed(encode_record(call(1, SLOW, 1)))
    second.feed(encode_record(call(2, SLOW, 2)))
    assert not second.is_reading()
    executor.run(0)
    loop.drain()
    assert results(replies(first)) == [(1, 10)] and second.is_reading()
    executor.run(0)
    loop.drain()
    assert results(replies(second)) == [(2, 20)]


def test_eof_waits_for_the_calls_in_flight() -> None:
    _, executor, loop, server = setup()
    transport = FakeTransport(server.stream_handler())
    transport.feed(encode_record(call(1, SLOW, 1)))
    transport.feed_eof()
    assert not transport.is_closing()
    executor.run(0)
    loop.drain()
    assert results(replies(transport)) == [(1, 10)]
    assert transport.is_closing()


def test_a_reply_for_a_closed_connection_is_dropped() -> None:
    _, executor, loop, server = setup()
    transport = FakeTransport(server.stream_handler())
    transport.feed(encode_record(call(1, SLOW, 1)))
    transport.close()
    executor.run(0)
    loop.drain()
    assert replies(transport) == [] and server.pool.in_flight == 0


def test_closing_the_server_cancels_the_waiting_calls() -> None:
    _, executor, loop, server = setup(max_workers=1, max_queue=1)
    transport = FakeTransport(server.stream_handler())
    transport.feed(encode_record(call(1, SLOW, 1)))
    server.close()
    loop.drain()
    assert executor.shut
    [reply] = replies(transport)
    assert (reply.xid, reply.accept_stat) == (1, AcceptStat.SYSTEM_ERR)
    transport.feed(encode_record(call(2, SLOW, 2)))  # refused: held, never run
    assert len(executor.work) == 1 and not transport.is_reading()


class Sent:
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))

    def is_closing(self) -> bool:
        return False


def udp(server: RPCServer) -> tuple[RPCDatagramProtocol, Sent]:
    protocol = server.datagram_protocol()
    sent = Sent()
    protocol.connection_made(sent)  # type: ignore[arg-type]
    return protocol, sent


def test_udp_a_retransmission_while_the_call_runs_is_not_run_again() -> None:
    service, executor, loop, server = setup()
    protocol, sent = udp(server)
    protocol.datagram_received(call(1, SLOW, 1), A)
    protocol.datagram_received(call(1, SLOW, 1), A)  # the client's retransmission
    protocol.datagram_received(call(2, FAST, 2), A)
    assert len(executor.work) == 1
    assert [decode_reply(d).xid for d, _ in sent.datagrams] == [2]
    executor.run(0)
    loop.drain()
    protocol.datagram_received(call(1, SLOW, 1), A)  # late: the cached reply
    assert [(decode_reply(d).xid, a) for d, a in sent.datagrams[1:]] == [(1, A), (1, A)]
    assert service.runs == [1] and server.cache.hits == 1


def test_udp_a_full_pool_drops_the_call_and_its_retransmission_runs() -> None:
    service, executor, loop, server = setup(max_workers=1, max_queue=0)
    protocol, sent = udp(server)
    protocol.datagram_received(call(1, SLOW, 1), A)
    protocol.datagram_received(call(2, SLOW, 2), A)  # no room: dropped, not marked
    assert server.pool.refused == 1 and len(executor.work) == 1
    executor.run(0)
    loop.drain()
    protocol.datagram_received(call(2, SLOW, 2), A)  # retransmitted: room now
    executor.run(0)
    loop.drain()
    assert [decode_reply(d).xid for d, _ in sent.datagrams] == [1, 2]
    assert service.runs == [1, 2]


# -- on the reactor, with threads --------------------------------------------------------


class Gate:
    """A blocking procedure that waits for the test to open it."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.runs = 0
        self.threads: set[str] = set()

    @blocking
    def wait(self, call: Call, n: int) -> int:
        self.runs += 1
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.opened.wait(DEADLINE)
        return n

    def gated(self) -> RPCServer:
        version = Version(1, {SLOW: Procedure(SLOW, self.wait, Int(), Int())})
        return RPCServer(Dispatcher([Program(PROG, {1: version})]))


@pytest.mark.timeout(60)
def test_the_reactor_answers_while_a_procedure_blocks() -> None:
    gate = Gate()
    server = gate.gated()
    with serving(server) as served, \
            socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as tcp:
        tcp.sendall(encode_record(call(1, SLOW, 7)) + encode_record(
            encode_call(2, PROG, 1, 0)))
        assert [r.xid for r in read_replies(tcp, 1)] == [2]  # NULL overtook it
        assert gate.entered.wait(DEADLINE)
        with socket.create_connection(("127.0.0.1", served.port),
                                      timeout=DEADLINE) as other:
            other.sendall(encode_record(encode_call(3, PROG, 1, 0)))
            assert [r.xid for r in read_replies(other, 1)] == [3]
        gate.opened.set()
        [reply] = read_replies(tcp, 1)
        assert (reply.xid, decode(Int(), reply.results)) == (1, 7)
    server.close()
    assert gate.threads and all(t.startswith("rpc-blocking") for t in gate.threads)


@pytest.mark.timeout(60)
def test_udp_retransmissions_during_a_run_are_dropped_on_the_reactor() -> None:
    gate = Gate()
    server = gate.gated()
    with serving(server) as served, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", served.port))
        sock.send(call(1, SLOW, 5))
        assert gate.entered.wait(DEADLINE)
        for _ in range(3):
            sock.send(call(1, SLOW, 5))
        sock.send(encode_call(2, PROG, 1, 0))  # the retransmissions were read before
        assert decode_reply(sock.recv(65536)).xid == 2
        gate.opened.set()
        reply = decode_reply(sock.recv(65536))
        assert (reply.xid, decode(Int(), reply.results)) == (1, 5)
        sock.send(encode_call(3, PROG, 1, 0))
        assert decode_reply(sock.recv(65536)).xid == 3  # no second reply to 1 came
    server.close()
    assert gate.runs == 1


def test_a_graceful_stop_waits_for_the_calls_in_flight() -> None:
    _, executor, loop, server = setup()
    idle, busy = (server.stream_handler() for _ in range(2))
    FakeTransport(idle)
    transport = FakeTransport(busy)
    transport.feed(encode_record(call(1, SLOW, 1)))
    assert not idle.begin_shutdown() and busy.begin_shutdown()
    assert not transport.is_closing()
    executor.run(0)
    loop.drain()
    assert results(replies(transport)) == [(1, 10)] and transport.is_closing()
