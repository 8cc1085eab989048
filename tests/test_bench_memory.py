"""bench.memory: what the reactor allocates per idle connection, by source line."""

from __future__ import annotations

import pytest

from bench.memory import measure


@pytest.mark.timeout(120)
def test_an_idle_connection_allocates_no_selector_key() -> None:
    lines = measure(connections=600, warmup=100)
    total = sum(line.bytes_per_connection for line in lines)
    # the transport (one object, 14 slots: 144 bytes) is the largest single allocation
    biggest = max(lines, key=lambda line: line.bytes_per_connection)
    assert biggest.where.startswith("listeners.py") and biggest.objects_per_connection == 1
    assert biggest.bytes_per_connection <= 144, lines
    # a registration costs a slot of the key map's list and nothing else: no
    # SelectorKey (80 bytes), no dict entry, no int for the descriptor
    assert not [line for line in lines if line.where.startswith("transports.py")], lines
    registration = sum(line.bytes_per_connection for line in lines
                       if line.where.startswith("dispatch.py"))
    assert registration <= 40, lines  # 8 a slot, and the list's growth
    # the peer address: one int (an IPv4 address and port), no tuple
    peer = [line for line in lines if line.where.startswith("compactrow.py")]
    assert [line.bytes_per_connection for line in peer] == [32.0], lines
    assert 250 < total < 400, lines
