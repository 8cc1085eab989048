"""The connection lifecycle table and the connection table, without sockets."""

from __future__ import annotations

from enum import Enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor import LIFECYCLE, ConnectionTable, ConnEvent, ConnState, IllegalTransition
from reactor.sansio.connection import Connection
from reactor.sansio.machine import TransitionTable


def row(state: ConnState = ConnState.ACCEPTED) -> Connection:
    return Connection(state, ("127.0.0.1", 1234), 0.0)


def walk(conn: Connection, *events: ConnEvent) -> ConnState:
    for event in events:
        conn.advance(event)
    return conn.state


def test_protocol_path() -> None:
    c = row()
    assert walk(c, ConnEvent.ATTACH, ConnEvent.EOF, ConnEvent.CLOSE, ConnEvent.LOST) is (
        ConnState.CLOSED
    )


def test_half_close_both_ways_ends_in_closing() -> None:
    assert walk(row(), ConnEvent.ATTACH, ConnEvent.EOF, ConnEvent.WRITE_EOF) is ConnState.CLOSING
    assert walk(row(), ConnEvent.ATTACH, ConnEvent.WRITE_EOF, ConnEvent.EOF) is ConnState.CLOSING


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (ConnEvent.DISPATCH_INLINE, ConnState.DISPATCHED_INLINE),
        (ConnEvent.DISPATCH_THREAD, ConnState.DISPATCHED_THREAD),
        (ConnEvent.DISPATCH_CHILD, ConnState.DISPATCHED_CHILD),
    ],
)
def test_facade_path(event: ConnEvent, state: ConnState) -> None:
    c = row()
    assert walk(c, ConnEvent.VERIFY, ConnEvent.BUFFER, event) is state
    assert walk(c, ConnEvent.FINISH, ConnEvent.LOST) is ConnState.CLOSED


def test_illegal_transitions_raise_and_leave_the_state_alone() -> None:
    c = row()
    with pytest.raises(IllegalTransition, match="FINISH"):
        c.advance(ConnEvent.FINISH)
    assert c.state is ConnState.ACCEPTED
    walk(c, ConnEvent.LOST)
    with pytest.raises(IllegalTransition):
        c.advance(ConnEvent.LOST)  # CLOSED is final


def test_every_state_but_closed_can_be_lost() -> None:
    for state in ConnState:
        if state is ConnState.CLOSED:
            assert LIFECYCLE.events(state) == frozenset()
        else:
            assert LIFECYCLE.next(state, ConnEvent.LOST) is ConnState.CLOSED


def test_every_state_is_reachable_from_a_start_state() -> None:
    seen = {ConnState.ACCEPTED, ConnState.CONNECTING}
    frontier = list(seen)
    while frontier:
        state = frontier.pop()
        for event in LIFECYCLE.events(state):
            nxt = LIFECYCLE.next(state, event)
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(ConnState)


@given(st.lists(st.sampled_from(list(ConnEvent)), max_size=20))
def test_random_event_sequences_follow_the_table(events: list[ConnEvent]) -> None:
    c = row()
    for event in events:
        before = c.state
        if LIFECYCLE.allows(before, event):
            assert c.advance(event) is LIFECYCLE.next(before, event)
        else:
            with pytest.raises(IllegalTransition):
                c.advance(event)
            assert c.state is before


def test_transition_table_edges_and_errors() -> None:
    class S(Enum):
        A = 1
        B = 2

    class E(Enum):
        GO = 1

    table = TransitionTable("t", {S.A: {E.GO: S.B}})
    assert list(table.edges()) == [(S.A, E.GO, S.B)]
    assert not table.allows(S.B, E.GO)
    with pytest.raises(IllegalTransition, match="t: no transition for GO in state B"):
        table.next(S.B, E.GO)


def test_table_counts_and_totals_survive_removal() -> None:
    table = ConnectionTable()
    a, b = row(), row()
    a.bytes_in, a.bytes_out = 10, 20
    b.bytes_in = 5
    table.add(a)
    table.add(b)
    b.advance(ConnEvent.ATTACH)
    stats = table.statistics()
    assert stats.open == 2
    assert dict(stats.by_state) == {"ACCEPTED": 1, "OPEN": 1}
    assert stats.bytes_in == 15 and stats.bytes_out == 20
    table.remove(a)
    table.remove(a)  # removing twice counts once
    stats = table.statistics()
    assert stats.open == 1 and stats.closed_total == 1 and stats.opened_total == 2
    assert stats.bytes_in == 15 and stats.bytes_out == 20
    with pytest.raises(TypeError):
        stats.by_state["X"] = 1  # type: ignore[index]
    assert "OPEN" in table.format()
    assert table.in_state(ConnState.OPEN) == [b]


# -- the end of a connection: CLOSING, ENDING, CLOSED ----------------------------------

LIVE = [s for s in ConnState if s not in (ConnState.ENDING, ConnState.CLOSED)]


def test_orderly_close_flushes_then_ends() -> None:
    c = row()
    assert walk(c, ConnEvent.ATTACH, ConnEvent.CLOSE) is ConnState.CLOSING
    assert walk(c, ConnEvent.FLUSHED) is ConnState.ENDING
    assert walk(c, ConnEvent.LOST) is ConnState.CLOSED


@pytest.mark.parametrize("state", LIVE)
def test_abort_ends_every_state_before_the_end(state: ConnState) -> None:
    assert LIFECYCLE.next(state, ConnEvent.ABORT) is ConnState.ENDING
    c = row(state)
    assert walk(c, ConnEvent.ABORT, ConnEvent.LOST) is ConnState.CLOSED


@pytest.mark.parametrize("state", [ConnState.ENDING, ConnState.CLOSED])
def test_abort_is_illegal_once_ending(state: ConnState) -> None:
    c = row(state)
    with pytest.raises(IllegalTransition, match="ABORT"):
        c.advance(ConnEvent.ABORT)
    assert c.state is state


@pytest.mark.parametrize("state", [s for s in ConnState if s is not ConnState.CLOSING])
def test_flushed_only_ends_a_closing_connection(state: ConnState) -> None:
    assert LIFECYCLE.next(ConnState.CLOSING, ConnEvent.FLUSHED) is ConnState.ENDING
    c = row(state)
    with pytest.raises(IllegalTransition, match="FLUSHED"):
        c.advance(ConnEvent.FLUSHED)
    assert c.state is state


def test_ending_allows_only_a_late_attach_and_the_loss() -> None:
    assert LIFECYCLE.events(ConnState.ENDING) == {ConnEvent.ATTACH, ConnEvent.LOST}
    c = row(ConnState.ENDING)
    assert c.advance(ConnEvent.ATTACH) is ConnState.ENDING  # a connect completing late
    for event in set(ConnEvent) - {ConnEvent.ATTACH, ConnEvent.LOST}:
        with pytest.raises(IllegalTransition):
            c.advance(event)
        assert c.state is ConnState.ENDING
    assert c.advance(ConnEvent.LOST) is ConnState.CLOSED


def test_every_live_state_can_be_closed_or_aborted_but_a_dispatched_one_not_closed() -> None:
    handed_over = {ConnState.DISPATCHED_INLINE, ConnState.DISPATCHED_THREAD,
                   ConnState.DISPATCHED_CHILD, ConnState.FINISHED, ConnState.CLOSING}
    for state in LIVE:
        assert LIFECYCLE.allows(state, ConnEvent.ABORT)
        assert LIFECYCLE.allows(state, ConnEvent.CLOSE) is (state not in handed_over)


FAST_TRANSITIONS: list[tuple[str, tuple[ConnEvent, ...]]] = [
    ("verify", (ConnEvent.VERIFY,)),
    ("dispatch_inline", (ConnEvent.DISPATCH_INLINE,)),
    ("verify_inline", (ConnEvent.VERIFY, ConnEvent.DISPATCH_INLINE)),
    ("on_attach", (ConnEvent.ATTACH,)),
    ("on_eof", (ConnEvent.EOF,)),
    ("on_close", (ConnEvent.CLOSE,)),
    ("on_flushed", (ConnEvent.FLUSHED,)),
    ("on_abort", (ConnEvent.ABORT,)),
    ("lose", (ConnEvent.LOST,)),
]


@pytest.mark.parametrize(("name", "events"), FAST_TRANSITIONS,
                         ids=[n for n, _ in FAST_TRANSITIONS])
@pytest.mark.parametrize("state", list(ConnState), ids=lambda s: s.name)
def test_each_named_fast_transition_is_advance(name: str, events: tuple[ConnEvent, ...],
                                                state: ConnState) -> None:
    """Row.verify/dispatch_inline/verify_inline/lose skip the table lookups from their
    usual source state: from every state they must end where advance() of their events,
    in turn, ends, or raise where it raises (leaving the state it reached)."""
    fast, slow = row(state), row(state)
    slow_raised = fast_raised = False
    try:
        for event in events:
            slow.advance(event)
    except IllegalTransition:
        slow_raised = True
    try:
        getattr(fast, name)()
    except IllegalTransition:
        fast_raised = True
    assert fast_raised is slow_raised
    assert fast.state is slow.state
