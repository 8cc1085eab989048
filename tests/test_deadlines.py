"""Per-connection deadlines: idle, first byte, absolute request deadline, stalled write.

Two kinds of tests: exact ones on a real selector with a FakeClock (the reactor is
stepped with ``run_once(0)`` and time moves only when the test says so), and a few with
small real timeouts and generous upper bounds, to show the timers fire on their own.
"""

from __future__ import annotations

import logging
import selectors
import time
from collections.abc import Callable, Iterator

import pytest
from netkit import WAIT, Net, Peer, Recorder

from reactor import DeadlineExceeded, FakeClock, Reactor
from reactor.sansio.episodes import DEFAULT_QUIET

START = 1000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def fake_reactor(backend: type[selectors.BaseSelector], clock: FakeClock) -> Iterator[Reactor]:
    """A real selector (every backend) and a fake clock."""
    r = Reactor(selector=backend(), clock=clock)
    yield r
    r.close()


@pytest.fixture
def fnet(fake_reactor: Reactor) -> Iterator[Net]:
    n = Net(fake_reactor)
    yield n
    n.close()


@pytest.fixture
def net(default_reactor: Reactor) -> Iterator[Net]:
    n = Net(default_reactor)
    yield n
    n.close()


def step(reactor: Reactor, times: int = 3) -> None:
    """Run a few non-blocking iterations (time does not move on a FakeClock)."""
    for _ in range(times):
        reactor.run_once(0)


def wait_fake(net: Net, condition: Callable[[], object]) -> None:
    """Run non-blocking iterations until ``condition()`` (for the FakeClock reactors,
    whose ``run_until`` timeout would be measured in fake seconds)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        net.reactor.run_once(0.01)


def accept(net: Net, **listen_kwargs: object) -> tuple[Peer, Recorder]:
    listener = net.listen_tcp(**listen_kwargs)
    n = len(net.protocols)
    peer = net.connect(listener.address)
    wait_fake(net, lambda: len(net.protocols) > n)
    return peer, net.protocols[n]


# -- with a fake clock: exact -------------------------------------------------------------


def test_idle_timeout_closes_an_idle_connection(fake_reactor: Reactor, fnet: Net,
                                                clock: FakeClock,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reactor")
    peer, proto = accept(fnet, idle_timeout=10)
    clock.advance(9.9)
    step(fake_reactor)
    assert not proto.closed
    clock.advance(0.2)
    step(fake_reactor)
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], DeadlineExceeded)
    assert isinstance(proto.lost[0], TimeoutError)
    assert "idle" in str(proto.lost[0])
    wait_fake(fnet, lambda: peer.eof)
    lines = [r for r in caplog.records if "idle timeout" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert str(peer.sock.getsockname()[1]) in lines[0].getMessage()
    assert len(fake_reactor.connections) == 0
    assert fake_reactor.statistics().pending_timers == 0


def test_activity_postpones_the_idle_timeout(fake_reactor: Reactor, fnet: Net,
                                             clock: FakeClock) -> None:
    peer, proto = accept(fnet, idle_timeout=10,
                         on_data=lambda p, d: p.transport.write(d))
    for _ in range(5):  # a byte every 6 s keeps it alive for 30 s
        clock.advance(6)
        peer.send_all(b".")
        n = len(peer.received)
        wait_fake(fnet, lambda: len(peer.received) > n)  # noqa: B023
        assert not proto.closed
    clock.advance(9.9)
    step(fake_reactor)
    assert not proto.closed
    clock.advance(0.2)
    step(fake_reactor)
    assert proto.closed and isinstance(proto.lost[0], DeadlineExceeded)


def test_outgoing_bytes_count_as_activity(fake_reactor: Reactor, fnet: Net,
                                          clock: FakeClock) -> None:
    _peer, proto = accept(fnet, idle_timeout=10)
    clock.advance(8)
    step(fake_reactor)  # the iteration's clock reading moves on
    proto.transport.write(b"server push")
    clock.advance(8)
    step(fake_reactor)
    assert not proto.closed  # 16 s since connect, 8 since our write
    clock.advance(2.1)
    step(fake_reactor)
    assert proto.closed


def test_first_byte_timeout(fake_reactor: Reactor, fnet: Net, clock: FakeClock,
                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reactor")
    listener = fnet.listen_tcp(first_byte_timeout=5)
    silent = fnet.connect(listener.address)
    talker = fnet.connect(listener.address)
    wait_fake(fnet, lambda: len(fnet.protocols) == 2)
    talker.send_all(b"x")
    wait_fake(fnet, lambda: sum(len(p.data) for p in fnet.protocols) == 1)
    clock.advance(5.1)
    step(fake_reactor)
    closed = [p for p in fnet.protocols if p.closed]
    assert len(closed) == 1 and closed[0].data == b""
    assert "no data" in str(closed[0].lost[0])
    wait_fake(fnet, lambda: silent.eof)
    clock.advance(1000)  # the talker has no other deadline
    step(fake_reactor)
    assert not talker.eof and sum(p.closed for p in fnet.protocols) == 1
    assert fake_reactor.statistics().pending_timers == 0
    assert any("no data received" in r.getMessage() for r in caplog.records)


def test_set_deadline_closes_even_a_trickling_client(fake_reactor: Reactor, fnet: Net,
                                                     clock: FakeClock) -> None:
    peer, proto = accept(fnet, idle_timeout=10,
                         on_made=lambda p: p.transport.set_deadline(30))
    for _ in range(29):  # one byte a second: never idle
        clock.advance(1)
        peer.send_all(b"G")
        n = len(proto.data)
        wait_fake(fnet, lambda: len(proto.data) > n)  # noqa: B023
    assert not proto.closed
    clock.advance(1.01)
    step(fake_reactor)
    assert proto.closed
    assert "request deadline" in str(proto.lost[0])


def test_set_deadline_none_removes_it(fake_reactor: Reactor, fnet: Net,
                                      clock: FakeClock) -> None:
    _peer, proto = accept(fnet, on_made=lambda p: p.transport.set_deadline(5))
    assert fake_reactor.statistics().pending_timers == 1
    proto.transport.set_deadline(None)
    assert fake_reactor.statistics().pending_timers == 0
    clock.advance(60)
    step(fake_reactor)
    assert not proto.closed
    proto.transport.set_deadline(2)  # a new one, measured from now
    clock.advance(1.9)
    step(fake_reactor)
    assert not proto.closed
    clock.advance(0.2)
    step(fake_reactor)
    assert proto.closed


def test_write_timeout_aborts_when_the_peer_does_not_read(fake_reactor: Reactor,
                                                          fnet: Net,
                                                          clock: FakeClock) -> None:
    peer, proto = accept(fnet, write_timeout=5)
    peer.stop_reading()
    tr = proto.transport
    assert fake_reactor.statistics().pending_timers == 0  # nothing queued yet
    tr.write(b"x" * (8 << 20))
    assert tr.get_write_buffer_size() > 0
    assert fake_reactor.statistics().pending_timers == 1
    clock.advance(4.9)
    step(fake_reactor)
    assert not proto.closed
    clock.advance(0.2)
    step(fake_reactor)
    assert proto.closed
    assert "write stalled" in str(proto.lost[0])
    assert tr.get_write_buffer_size() == 0


def test_write_timeout_is_not_delayed_by_a_later_idle_deadline(fake_reactor: Reactor,
                                                                fnet: Net,
                                                                clock: FakeClock) -> None:
    peer, proto = accept(fnet, idle_timeout=30, write_timeout=5)
    peer.stop_reading()
    assert fake_reactor.statistics().pending_timers == 1  # the idle timer, at +30
    proto.transport.write(b"x" * (8 << 20))
    clock.advance(5.1)
    step(fake_reactor)
    assert proto.closed
    assert "write stalled" in str(proto.lost[0])


def test_write_timeout_spares_a_slow_but_steady_reader(fake_reactor: Reactor, fnet: Net,
                                                       clock: FakeClock) -> None:
    peer, proto = accept(fnet, write_timeout=5)
    peer.stop_reading()
    tr = proto.transport
    total = 8 << 20
    tr.write(b"x" * total)
    while tr.get_write_buffer_size():
        clock.advance(4)  # less than the timeout between bits of progress
        while peer.recv_some(1 << 20):
            pass
        step(fake_reactor)
        assert not proto.closed
    # the queue drained: nothing is due any more
    clock.advance(100)
    step(fake_reactor)
    assert not proto.closed
    assert fake_reactor.statistics().pending_timers == 0


def test_no_timer_work_without_timeouts(fake_reactor: Reactor, fnet: Net,
                                        clock: FakeClock) -> None:
    listener = fnet.listen_tcp(on_data=lambda p, d: p.transport.write(d))
    peers = [fnet.connect(listener.address) for _ in range(5)]
    wait_fake(fnet, lambda: len(fnet.protocols) == 5)
    for peer in peers:
        peer.send_all(b"ping")
    wait_fake(fnet, lambda: all(p.received == b"ping" for p in peers))
    peers[0].stop_reading()
    fnet.protocols[0].transport.write(b"x" * (8 << 20))  # a queued write, too
    stats = fake_reactor.statistics()
    assert stats.pending_timers == 0
    assert fake_reactor.next_timeout() is None
    clock.advance(1e6)
    step(fake_reactor)
    assert not any(p.closed for p in fnet.protocols)


def test_one_timer_per_connection_with_timeouts(fake_reactor: Reactor, fnet: Net,
                                                clock: FakeClock) -> None:
    listener = fnet.listen_tcp(idle_timeout=30, first_byte_timeout=10, write_timeout=20)
    peers = [fnet.connect(listener.address) for _ in range(4)]
    wait_fake(fnet, lambda: len(fnet.protocols) == 4)
    assert fake_reactor.statistics().pending_timers == 4
    for peer in peers:
        peer.send_all(b"a")
    wait_fake(fnet, lambda: all(p.data for p in fnet.protocols))
    clock.advance(10.5)  # first-byte deadlines pass; all sent a byte: re-armed for idle
    step(fake_reactor)
    assert not any(p.closed for p in fnet.protocols)
    assert fake_reactor.statistics().pending_timers == 4
    clock.advance(20)
    step(fake_reactor)
    assert all(p.closed for p in fnet.protocols)
    # no connection's timer is left; one timer waits for a quiet second to log how many
    # the idle timeout closed (once per episode), then goes too
    assert fake_reactor.statistics().pending_timers == 1
    clock.advance(DEFAULT_QUIET + 0.1)
    step(fake_reactor)
    assert fake_reactor.statistics().pending_timers == 0


def test_deadline_options_are_validated(default_reactor: Reactor) -> None:
    for name in ("idle_timeout", "first_byte_timeout", "write_timeout"):
        with pytest.raises(ValueError, match=name):
            default_reactor.listen_tcp("127.0.0.1", 0, Recorder, **{name: 0})
        with pytest.raises(ValueError, match=name):
            default_reactor.listen_tcp("127.0.0.1", 0, Recorder, **{name: -1.0})
        with pytest.raises(ValueError, match=name):  # NaN is neither positive nor not
            default_reactor.listen_tcp("127.0.0.1", 0, Recorder, **{name: float("nan")})
    assert default_reactor.listeners == []


# -- with the real clock: the timers fire by themselves --------------------------------------


@pytest.mark.timeout(30)
def test_real_idle_and_first_byte_timeouts(default_reactor: Reactor, net: Net) -> None:
    reactor = default_reactor
    idle = net.listen_tcp(idle_timeout=0.3)
    first = net.listen_tcp(first_byte_timeout=0.3)
    start = reactor.time()
    p_idle, proto_idle = net.accept(idle)
    p_first, proto_first = net.accept(first)
    net.wait(lambda: proto_idle.closed and proto_first.closed)
    elapsed = reactor.time() - start
    assert 0.3 - 1e-3 <= elapsed < WAIT
    assert isinstance(proto_idle.lost[0], DeadlineExceeded)
    assert isinstance(proto_first.lost[0], DeadlineExceeded)
    net.wait(lambda: p_idle.eof and p_first.eof)


@pytest.mark.timeout(30)
def test_real_request_deadline_against_a_trickle(default_reactor: Reactor, net: Net) -> None:
    reactor = default_reactor
    listener = net.listen_tcp(on_made=lambda p: p.transport.set_deadline(0.8))
    start = reactor.time()
    peer, proto = net.accept(listener)

    def trickle() -> None:  # one byte every 0.05 s, driven by the reactor's own timers
        if not peer.closed and not proto.closed:
            peer.send(b".")
            reactor.call_later(0.05, trickle)

    trickle()
    net.wait(lambda: proto.closed)
    elapsed = reactor.time() - start
    assert 0.8 - 1e-3 <= elapsed < WAIT
    assert isinstance(proto.lost[0], DeadlineExceeded)
    assert "request deadline" in str(proto.lost[0])
    assert len(proto.data) > 3  # it was not silent: activity did not postpone it


@pytest.mark.timeout(30)
def test_real_write_timeout(default_reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(write_timeout=0.3)
    peer, proto = net.accept(listener)
    peer.stop_reading()
    proto.transport.write(b"x" * (8 << 20))
    net.wait(lambda: proto.closed)
    assert "write stalled" in str(proto.lost[0])


def test_a_detached_socket_is_out_of_reach_of_the_deadlines(fake_reactor: Reactor,
                                                            fnet: Net,
                                                            clock: FakeClock) -> None:
    """A socket handed to a worker (detach_socket) belongs to the worker: no idle or
    request deadline may close it under the worker's feet."""
    peer, proto = accept(fnet, idle_timeout=10,
                         on_made=lambda p: p.transport.set_deadline(5))
    tr = proto.transport
    sock = tr.detach_socket()
    assert sock.gettimeout() is None  # blocking, for the worker
    clock.advance(60)
    step(fake_reactor)
    assert not proto.closed
    assert sock.fileno() != -1
    assert fake_reactor.statistics().pending_timers == 0
    sock.sendall(b"from the worker")
    wait_fake(fnet, lambda: peer.received == b"from the worker")
    tr.release()
    assert sock.fileno() == -1 and tr not in fake_reactor.connections
