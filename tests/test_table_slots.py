"""The connection table keeps a stream row whose descriptor the reactor alone holds in a
list at that number, not as a dict key (``reactor.sansio.table``): 8 bytes a row
instead of 30 to 49.

What must not change: every row is found (iteration, ``len``, ``in``, the statistics)
however it came in and whatever happened to its number, and each leaves once.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from netkit import Net

from reactor import Connection, ConnectionTable, ConnState, Reactor, Row


def _row(n: int) -> Row:
    row = Connection(ConnState.OPEN, ("192.0.2.1", n), 0.0)
    row.bytes_in = n
    return row


_OPS = st.lists(
    st.tuples(st.sampled_from(["add", "add-slot", "unslot", "leave", "leave-slot",
                               "leave-wrong"]),
              st.integers(0, 7), st.integers(0, 40)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_the_table_agrees_with_a_set_of_rows(ops: list[tuple[str, int, int]]) -> None:
    """Random adds (with and without a number, numbers reused behind a row's back),
    unslots and leaves (with the right number, none, or a wrong one) against a plain
    set: the same rows, the same length, and each leave counted once."""
    table = ConnectionTable()
    rows = [_row(n) for n in range(8)]
    slot_of: dict[int, int] = {}
    model: set[int] = set()
    left = 0
    for op, which, number in ops:
        row = rows[which]
        if op.startswith("add"):
            if which in model:
                continue  # a row is added once
            if op == "add-slot":
                table.add(row, number)
                slot_of[which] = number
            else:
                table.add(row)
            model.add(which)
        elif op == "unslot":
            table.unslot(row, slot_of.get(which, number))
        else:
            slot = {"leave": -1, "leave-slot": slot_of.get(which, -1),
                    "leave-wrong": number}[op]
            table.leave(row, 0, slot)
            if which in model:
                model.discard(which)
                slot_of.pop(which, None)
                left += 1
        assert len(table) == len(model)
        assert {id(r) for r in table} == {id(rows[i]) for i in model}
        assert all((r in table) == (i in model) for i, r in enumerate(rows))
        assert len(list(table)) == len(model)  # no row twice
        assert sum(table.ends) == left
    stats = table.statistics()
    assert stats.open == len(model) and stats.closed_total == left


def test_a_row_whose_number_is_taken_stays_in_the_table() -> None:
    table = ConnectionTable()
    first, second = _row(1), _row(2)
    table.add(first, 5)
    table.add(second, 5)  # the descriptor was closed behind first's back and reused
    assert set(map(id, table)) == {id(first), id(second)} and len(table) == 2
    table.leave(first, 0, 5)  # the number is second's now: first is found anyway
    assert list(table) == [second]
    table.leave(second, 0, 5)
    assert len(table) == 0 and sum(table.ends) == 2


def test_an_accepted_connection_costs_the_table_no_dict_entry(
    reactor: Reactor, net: Net
) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    assert tr in reactor.connections and len(reactor.connections) == 1
    assert not reactor.connections._rows  # the row is at its descriptor's number
    assert reactor.connections._slots[tr._sock.fileno()] is tr
    tr.abort()
    net.wait(lambda: proto.closed)
    assert len(reactor.connections) == 0 and tr not in reactor.connections
    peer.close()


def test_a_socket_handed_out_moves_its_row_to_the_dict(reactor: Reactor, net: Net) -> None:
    """Once the socket is handed out its owner may close it, and the number may come
    back for another connection while the row lives: the row no longer counts on it
    (the reuse itself: test_a_row_whose_number_is_taken_stays_in_the_table)."""
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    number = tr._sock.fileno()
    assert tr.get_extra_info("socket").fileno() == number
    table = reactor.connections
    assert tr in table._rows and table._slots[number] is None
    assert list(table) == [tr] and len(table) == 1
    tr.get_extra_info("socket")  # a second time: nothing to move
    assert len(table) == 1
    tr.abort()
    net.wait(lambda: proto.closed)
    assert len(table) == 0 and not table._rows
    peer.close()


def test_a_detached_socket_moves_its_row_to_the_dict(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    number = tr._sock.fileno()
    sock = tr.detach_socket()  # a blocking handler's now: it may close it while the row lives
    table = reactor.connections
    assert tr in table._rows and table._slots[number] is None
    sock.close()  # the number is free for another connection; the row is still found
    assert list(table) == [tr]
    tr.release(close_socket=False)
    assert len(table) == 0
    peer.close()


def test_the_table_allocates_a_few_bytes_per_connection(reactor: Reactor, net: Net) -> None:
    """The table's own allocations for 300 accepted connections: a list slot each and
    its growth (a dict entry would be 30 to 49 bytes). Under 1 024 descriptors in all,
    for select()."""
    listener = net.listen_tcp()
    kept = [net.accept(listener) for _ in range(20)]  # the list exists and has grown once
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept += [net.accept(listener) for _ in range(300)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    table_file = "reactor/sansio/table.py"
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                if stat.traceback[0].filename.endswith(table_file))
    # the descriptors of this test's client sockets sit between the server's: about
    # two list slots per connection, with the list's growth
    assert grown / 300 <= 24, grown / 300
    for peer, proto in kept:
        proto.transport.abort()
        peer.close()
