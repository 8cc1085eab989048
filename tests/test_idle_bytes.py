"""What an idle connection costs the reactor, by tracemalloc: the allocations behind the
README's idle-memory figure (273 B of RSS per connection at 10 000 connections in
``make bench``, target <= 300 B), measured the way ``python -m bench.memory`` does.

In this process the test's own client sockets take every other descriptor, so the two
lists indexed by descriptor (the epoll registrations' and the table's) cost about twice
what they cost a server whose clients are elsewhere: about 19 B each here, 8 to 10 in
``make bench``. The gate is on the sum as measured here.
"""

from __future__ import annotations

from bench.memory import measure

GATE = 310  # bytes per connection, as measured in this process (302 when written)


def test_an_idle_connection_costs_the_reactor_about_300_bytes() -> None:
    lines = measure(connections=600, warmup=100)
    per_connection = sum(line.bytes_per_connection for line in lines)
    assert per_connection <= GATE, lines
    # the largest object is the row itself: a 14-slot transport, a 144-byte block
    assert max(line.bytes_per_connection for line in lines) == 144, lines
