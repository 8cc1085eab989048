"""kv replication without sockets: the hold-back order of replies
(handlers/services/kv/holdback.py) and the replication link's commands
(handlers/services/kv/replwire.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.framers.resp import RespParser
from handlers.services.kv.holdback import ReplyQueue, Ticket
from handlers.services.kv.peers import parse_peer, proxy_header
from handlers.services.kv.replwire import (
    NOREPLICAS_AFTER,
    ReplicationInputError,
    encode_replexec,
    encode_repllink,
    encode_replwrite,
    parse_replexec,
    parse_replwrite,
)
from handlers.services.kv.table import COMMANDS


class Owner:
    def __init__(self) -> None:
        self.calls = 0

    def ticket_done(self) -> None:
        self.calls += 1


# -- tickets ----------------------------------------------------------------------------


def test_a_ticket_is_done_once_enough_peers_acknowledged() -> None:
    owner = Owner()
    ticket = Ticket(owner, needed=2, outstanding=3)
    ticket.ack()
    assert not ticket.done
    ticket.fail()
    assert not ticket.done  # 1 acked + 1 outstanding can still make 2
    ticket.ack()
    assert ticket.done and not ticket.failed and owner.calls == 1
    ticket.ack()  # late: counted, no second call
    assert owner.calls == 1


def test_a_ticket_fails_once_too_few_peers_are_left() -> None:
    owner = Owner()
    ticket = Ticket(owner, needed=2, outstanding=2)
    ticket.fail()
    assert ticket.done and ticket.failed and owner.calls == 1
    ticket.ack()
    assert ticket.failed and owner.calls == 1


def test_a_ticket_needing_none_or_sent_to_too_few_is_done_at_once() -> None:
    assert Ticket(None, 0, 0).done and not Ticket(None, 0, 0).failed
    short = Ticket(None, 2, 1)
    assert short.done and short.failed


# -- the order of replies ---------------------------------------------------------------


def test_a_held_reply_holds_back_the_replies_after_it() -> None:
    queue = ReplyQueue()
    first, second = Ticket(None, 1, 1), Ticket(None, 1, 1)
    queue.add(b"+OK\r\n", first)
    queue.add(b"$1\r\na\r\n")  # a read after a held write waits
    queue.add(b":1\r\n", second)
    queue.add(b"+PONG\r\n")
    assert queue.ready() == b""
    second.ack()  # the later write settles first: still nothing
    assert queue.ready() == b""
    first.ack()
    assert queue.ready() == b"+OK\r\n$1\r\na\r\n:1\r\n+PONG\r\n"
    assert len(queue) == 0


def test_a_failed_ticket_replaces_its_reply_with_noreplicas() -> None:
    queue = ReplyQueue()
    ticket = Ticket(None, 1, 1)
    queue.add(b"+OK\r\n", ticket)
    queue.add(b"+PONG\r\n")
    ticket.fail()
    assert queue.ready() == NOREPLICAS_AFTER + b"+PONG\r\n"


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30), st.randoms())
def test_replies_come_out_in_command_order_whatever_order_tickets_settle(
    commands: list[tuple[bool, bool]], rnd: object,
) -> None:
    """Each command is (held?, will its ticket fail?); tickets settle in a random
    order; the output is every reply once, in command order, and a reply comes out
    only once its ticket and every earlier one are settled."""
    import random

    assert isinstance(rnd, random.Random)
    queue = ReplyQueue()
    tickets: list[tuple[int, Ticket, bool]] = []
    expected: list[bytes] = []
    for n, (held, fails) in enumerate(commands):
        reply = b":%d\r\n" % n
        if held:
            ticket = Ticket(None, 1, 1)
            tickets.append((n, ticket, fails))
            queue.add(reply, ticket)
            expected.append(NOREPLICAS_AFTER if fails else reply)
        else:
            queue.add(reply)
            expected.append(reply)
    out = queue.ready()
    first_held = min((n for n, _t, _f in tickets), default=len(commands))
    assert out == b"".join(expected[:first_held])  # nothing held: straight through
    rnd.shuffle(tickets)
    for _n, ticket, fails in tickets:
        ticket.fail() if fails else ticket.ack()
        out += queue.ready()
        settled = [n for n, t, _f in sorted((x for x in tickets), key=lambda x: x[0])
                   if not t.done]
        upto = min(settled, default=len(commands))
        assert out == b"".join(expected[:upto])
    assert out == b"".join(expected) and len(queue) == 0


# -- the link's commands -----------------------------------------------------------------


def parsed(data: bytes) -> list[bytes]:
    parser = RespParser()
    parser.feed(data)
    args = parser.next_command()
    assert args is not None and parser.next_command() is None
    return args


WRITES = sorted({c.name for c in COMMANDS.values() if c.write})
_arg = st.binary(max_size=20)


@given(st.integers(0, 15), st.sampled_from(WRITES), st.lists(_arg, min_size=1, max_size=6))
def test_replwrite_round_trips_through_the_parser(db: int, name: str,
                                                  rest: list[bytes]) -> None:
    args = [name.encode(), *rest]
    command = COMMANDS[name.encode()]
    arity = command.arity
    fits = len(args) == arity if arity > 0 else len(args) >= -arity
    received = parsed(encode_replwrite(db, args))
    assert received[:2] == [b"REPLWRITE", str(db).encode()]
    if fits:
        assert parse_replwrite(received) == (db, command, args)
    else:
        with pytest.raises(ReplicationInputError, match="wrong number of arguments"):
            parse_replwrite(received)


_write = st.tuples(st.integers(0, 15), st.sampled_from(WRITES),
                   st.lists(_arg, min_size=1, max_size=4))


@given(st.lists(_write, min_size=1, max_size=5))
def test_replexec_round_trips_through_the_parser(
    writes: list[tuple[int, str, list[bytes]]],
) -> None:
    sent = [(db, [name.encode(), *rest]) for db, name, rest in writes]
    received = parsed(encode_replexec(sent))
    fits = all(
        len(args) == COMMANDS[args[0]].arity if COMMANDS[args[0]].arity > 0
        else len(args) >= -COMMANDS[args[0]].arity for _db, args in sent)
    if fits:
        assert parse_replexec(received) == [(db, COMMANDS[args[0]], args)
                                            for db, args in sent]
    else:
        with pytest.raises(ReplicationInputError, match="wrong number of arguments"):
            parse_replexec(received)


@given(st.lists(st.sampled_from([b"0", b"1", b"2", b"3", b"15", b"SET", b"k", b"v",
                                 b"DEL", b"GET", b"x", b"-1", b"99"]), max_size=10))
def test_any_replexec_input_parses_or_is_refused_never_crashes(rest: list[bytes]) -> None:
    try:
        writes = parse_replexec([b"REPLEXEC", *rest])
    except ReplicationInputError as exc:
        assert exc.reply.startswith(b"-REPLERR ") and exc.reply.count(b"\r\n") == 1
    else:
        assert writes and sum(2 + len(words) for _db, _c, words in writes) == len(rest)
        assert all(0 <= db <= 15 and command.write for db, command, _w in writes)


@pytest.mark.parametrize("args, why", [
    ([b"REPLEXEC"], "at least one write"),
    ([b"REPLEXEC", b"0", b"1"], "at least one write"),
    ([b"REPLEXEC", b"0", b"3", b"SET", b"k"], "cut short"),
    ([b"REPLEXEC", b"0", b"3", b"SET", b"k", b"v", b"0"], "cut short"),
    ([b"REPLEXEC", b"0", b"4", b"SET", b"k", b"v"], "cut short"),
    ([b"REPLEXEC", b"0", b"03", b"SET", b"k", b"v"], "not a number"),
    ([b"REPLEXEC", b"0", b"0", b"SET", b"k", b"v"], "not a number"),
    ([b"REPLEXEC", b"0", b"3", b"SET", b"k", b"v", b"1", b"2", b"GET", b"k"], "not a write"),
])
def test_bad_replexecs_are_refused(args: list[bytes], why: str) -> None:
    with pytest.raises(ReplicationInputError, match=why):
        parse_replexec(args)


@given(st.lists(st.binary(max_size=12), max_size=6))
def test_any_replwrite_input_parses_or_is_refused_never_crashes(rest: list[bytes]) -> None:
    try:
        db, command, words = parse_replwrite([b"REPLWRITE", *rest])
    except ReplicationInputError as exc:
        assert exc.reply.startswith(b"-REPLERR ") and exc.reply.count(b"\r\n") == 1
    else:
        assert 0 <= db <= 15 and command.write and words == rest[1:]


@pytest.mark.parametrize("args, why", [
    ([b"REPLWRITE"], "needs a database"),
    ([b"REPLWRITE", b"0"], "needs a database"),
    ([b"REPLWRITE", b"16", b"SET", b"k", b"v"], "out of range"),
    ([b"REPLWRITE", b"-1", b"SET", b"k", b"v"], "not a number"),
    ([b"REPLWRITE", b"01", b"SET", b"k", b"v"], "not a number"),
    ([b"REPLWRITE", b" 1", b"SET", b"k", b"v"], "not a number"),
    ([b"REPLWRITE", b"0", b"GET", b"k"], "not a write"),
    ([b"REPLWRITE", b"0", b"NOPE", b"k"], "not a write"),
    ([b"REPLWRITE", b"0", b"SET", b"k"], "wrong number"),
])
def test_bad_replwrites_are_refused(args: list[bytes], why: str) -> None:
    with pytest.raises(ReplicationInputError, match=why):
        parse_replwrite(args)


def test_the_link_commands_are_plain_resp() -> None:
    assert parsed(encode_repllink(b"s\r\n3")) == [b"REPLLINK", b"s\r\n3"]
    assert parse_replwrite(parsed(encode_replwrite(3, [b"set", b"k", b"v"])))[0] == 3


def test_peer_addresses_and_proxy_headers() -> None:
    assert parse_peer("127.0.0.2:6379") == ("127.0.0.2", 6379)
    assert parse_peer("[::1]:6380") == ("::1", 6380)
    for bad in ("nohost", ":6379", "h:0", "h:65536", "h:x"):
        with pytest.raises(ValueError):
            parse_peer(bad)
    assert proxy_header(None) == b""
    assert proxy_header("any") == proxy_header("v2") != proxy_header("v1")
    with pytest.raises(ValueError):
        proxy_header("v3")


# -- the order of replies on a connection, against a server that does not replicate ----

_COMMAND = st.sampled_from([
    [b"SET", b"k", b"v"], [b"GET", b"k"], [b"INCR", b"n"], [b"PING"], [b"DEL", b"k"],
    [b"LPUSH", b"l", b"x"], [b"LRANGE", b"l", b"0", b"-1"], [b"INCR", b"k"],
    [b"EXPIRE", b"k", b"100"], [b"TTL", b"k"], [b"MULTI"], [b"EXEC"], [b"SELECT", b"1"],
])


@given(st.lists(st.lists(_COMMAND, min_size=1, max_size=6), min_size=1, max_size=6),
       st.lists(st.integers(0, 3), min_size=1, max_size=20))
def test_a_replicating_connection_answers_as_a_plain_one_in_the_same_order(
    chunks: list[list[list[bytes]]], releases: list[int],
) -> None:
    """The same pipelined chunks to a plain server and to one replicating to a peer
    whose acknowledgements come a few at a time, between chunks: the replicating
    connection's replies, once all are acknowledged, are the plain one's, in order."""
    from handlers.framers.resp import encode_command
    from handlers.services.kv import KVServer
    from reactor import FakeClock, Reactor
    from reactor.testing import FakeSelector, FakeTransport

    clock = FakeClock()
    reactor = Reactor(selector=FakeSelector(clock), clock=clock)
    try:
        plain = FakeTransport(KVServer(reactor)(), peername=("192.0.2.1", 1))
        server = KVServer(reactor, replicate_to=["192.0.2.9:6379"], replication_secret="s")
        assert server.replication is not None
        link = server.replication.links[0]
        link_transport = FakeTransport(link, peername=("192.0.2.9", 6379))
        link.data_received(b"+OK\r\n")
        link_transport.take()
        replicating = FakeTransport(server(), peername=("192.0.2.1", 1))
        unacked = 0
        out = b""
        releases = releases * (len(chunks) // len(releases) + 1)
        for chunk, release in zip(chunks, releases, strict=False):
            data = b"".join(encode_command(args) for args in chunk)
            plain.feed(data)
            replicating.feed(data)
            reactor.run_once(0)
            unacked += link_transport.take().count(b"*")  # one array per replicated write
            acks = min(release, unacked)
            link.data_received(b"+OK\r\n" * acks)
            unacked -= acks
            reactor.run_once(0)
            out += replicating.take()
        link.data_received(b"+OK\r\n" * unacked)
        reactor.run_once(0)
        out += replicating.take()
        assert out == plain.take()
    finally:
        reactor.close()
