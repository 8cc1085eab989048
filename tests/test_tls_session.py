"""The socket-free part of TLS (reactor/sansio/tls.py): the session's lifecycle table,
the record tracker fed whole, byte by byte and in random chunks, and subjects."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.sansio.errors import IllegalTransition
from reactor.sansio.tls import (
    TLS_LIFECYCLE,
    RecordTracker,
    TLSEvent,
    TLSSession,
    TLSState,
    subject_text,
)


def test_every_state_but_closed_reaches_closed() -> None:
    for state in TLSState:
        if state is not TLSState.CLOSED:
            assert TLS_LIFECYCLE.next(state, TLSEvent.LOST) is TLSState.CLOSED
    assert TLS_LIFECYCLE.events(TLSState.CLOSED) == frozenset()


def test_the_orderly_path() -> None:
    session = TLSSession(server_side=True)
    assert session.state is TLSState.HANDSHAKING
    session.established("TLSv1.3", "TLS_AES_128_GCM_SHA256", "CN=client")
    assert session.state is TLSState.ESTABLISHED
    assert session.describe() == "established TLSv1.3 TLS_AES_128_GCM_SHA256 peer=CN=client"
    session.begin_close()
    assert session.state is TLSState.SHUTTING_DOWN
    session.lost()
    session.lost()  # once CLOSED, nothing
    assert session.state is TLSState.CLOSED


def test_the_state_moves_only_through_the_table() -> None:
    session = TLSSession(server_side=True)
    with pytest.raises(AttributeError):
        session.state = TLSState.ESTABLISHED  # type: ignore[misc]
    assert session.state is TLSState.HANDSHAKING
    session.cipher = "TLS_AES_128_GCM_SHA256"  # the other attributes are plain
    with pytest.raises(IllegalTransition):
        session.begin_close()


def test_a_failure_is_reported_once() -> None:
    session = TLSSession(server_side=False)
    assert session.fail("handshake timed out after 1 s")
    assert not session.fail("the connection was lost during the handshake")
    assert session.state is TLSState.FAILED
    assert session.reason == "handshake timed out after 1 s"
    assert "failed (handshake timed out" in repr(session)
    session.lost()
    assert not session.fail("late")


# a way to each state through legal moves
PATHS = {
    TLSState.HANDSHAKING: [],
    TLSState.ESTABLISHED: [TLSEvent.HANDSHAKE_DONE],
    TLSState.SHUTTING_DOWN: [TLSEvent.HANDSHAKE_DONE, TLSEvent.CLOSE],
    TLSState.FAILED: [TLSEvent.FAIL],
    TLSState.CLOSED: [TLSEvent.LOST],
}


@pytest.mark.parametrize(("state", "event"), [
    (TLSState.HANDSHAKING, TLSEvent.CLOSE),
    (TLSState.ESTABLISHED, TLSEvent.HANDSHAKE_DONE),
    (TLSState.SHUTTING_DOWN, TLSEvent.CLOSE),
    (TLSState.FAILED, TLSEvent.HANDSHAKE_DONE),
    (TLSState.CLOSED, TLSEvent.LOST),
])
def test_illegal_moves_raise(state: TLSState, event: TLSEvent) -> None:
    session = TLSSession(server_side=True)
    for step in PATHS[state]:
        session.advance(step)
    assert session.state is state
    with pytest.raises(IllegalTransition):
        session.advance(event)
    assert session.state is state


def records(*sizes: int) -> bytes:
    return b"".join(b"\x17\x03\x03" + size.to_bytes(2, "big") + b"r" * size for size in sizes)


STREAM = records(10, 0, 16384, 1, 300)


def test_record_tracker_whole_and_byte_by_byte() -> None:
    whole = RecordTracker()
    whole.feed(STREAM)
    assert whole.at_boundary and whole.missing == 0
    ends = {5 + 10, 5 + 10 + 5, 5 + 10 + 5 + 5 + 16384, len(STREAM) - 305, len(STREAM)}
    tracker = RecordTracker()
    for n in range(len(STREAM)):
        tracker.feed(STREAM[n:n + 1])
        assert tracker.at_boundary == (n + 1 in ends), n + 1


def test_record_tracker_counts_what_is_missing() -> None:
    tracker = RecordTracker()
    tracker.feed(STREAM[:3])
    assert not tracker.at_boundary and tracker.missing == 2
    tracker.feed(STREAM[3:9])
    assert tracker.missing == 6


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_record_tracker_any_chunking(cuts: list[int]) -> None:
    points = sorted({0, len(STREAM), *cuts})
    tracker = RecordTracker()
    for start, end in itertools.pairwise(points):
        tracker.feed(memoryview(STREAM)[start:end])
    assert tracker.at_boundary
    tracker.feed(STREAM[:-1])
    assert tracker.missing == 1


def missing_after(sizes: list[int], consumed: int) -> int:
    """The model: bytes the record under way lacks once ``consumed`` bytes of the
    stream of ``sizes`` records arrived (0 at a boundary)."""
    pos = 0
    for size in sizes:
        if consumed < pos + 5:
            return 0 if consumed == pos else pos + 5 - consumed
        if consumed < pos + 5 + size:
            return pos + 5 + size - consumed
        pos += 5 + size
    return 0


@given(st.lists(st.integers(min_value=0, max_value=70000), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=10), st.booleans())
def test_record_tracker_matches_the_model(sizes: list[int], cuts: list[int],
                                          as_view: bool) -> None:
    # lengths up to 65535 (the field's maximum) and chunks cut anywhere: in a header,
    # at its last byte, in a body, several records at once
    sizes = [size & 0xFFFF for size in sizes]
    stream = records(*sizes)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    tracker = RecordTracker()
    for start, end in itertools.pairwise(points):
        chunk = memoryview(stream)[start:end] if as_view else stream[start:end]
        tracker.feed(chunk)
        assert tracker.missing == missing_after(sizes, end), (start, end)
        assert tracker.at_boundary == (missing_after(sizes, end) == 0)


def test_subject_text() -> None:
    cert = {"subject": ((("countryName", "FR"),), (("organizationName", "Example"),),
                        (("commonName", "client"),))}
    assert subject_text(cert) == "CN=client,O=Example,C=FR"
    assert subject_text({}) is None and subject_text(None) is None
    assert subject_text({"subject": ()}) is None
