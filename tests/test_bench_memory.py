"""bench.memory: what the reactor allocates per idle connection, by source line."""

from __future__ import annotations

import pytest

from bench.memory import measure


@pytest.mark.timeout(120)
def test_an_idle_connection_allocates_no_selector_key() -> None:
    lines = measure(connections=600, warmup=100)
    total = sum(line.bytes_per_connection for line in lines)
    # the transport (one object, 17 slots) is the largest single allocation
    biggest = max(lines, key=lambda line: line.bytes_per_connection)
    assert biggest.where.startswith("listeners.py") and biggest.objects_per_connection == 1
    # a registration costs the descriptor's int and nothing else: the transport is its
    # own key in epoll's map (a SelectorKey would add 80 bytes here)
    registration = sum(line.bytes_per_connection for line in lines
                       if line.where.startswith("transports.py"))
    assert 0 < registration <= 40, lines
    assert 250 < total < 700, lines
