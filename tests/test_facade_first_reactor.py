"""A facade's reactor is made once, whichever thread asks for it first.

``serve_forever`` on one thread and another thread reading ``server.connections`` (as a
test or a monitor does right after starting the server) can both be the first to ask.
Without the lock both made a reactor and one of them watched an empty table forever.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from reactor import socketserver
from reactor.facades import pipeline
from reactor.io.loop import Reactor

TIMEOUT = 10.0


def test_two_threads_asking_first_get_one_reactor(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Reactor] = []
    first_inside = threading.Event()
    second_inside = threading.Event()
    release = threading.Event()

    def slow_reactor() -> Reactor:
        # the first maker stays inside until the other thread had its chance to enter
        if not made:
            made.append(Reactor())
            first_inside.set()
            release.wait(TIMEOUT)
            return made[0]
        second_inside.set()
        made.append(Reactor())
        return made[-1]

    monkeypatch.setattr(pipeline, "Reactor", slow_reactor)
    server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    got: dict[str, Any] = {}
    try:
        first = threading.Thread(target=lambda: got.setdefault("first", server.reactor))
        first.start()
        assert first_inside.wait(TIMEOUT)
        second = threading.Thread(target=lambda: got.setdefault("second", server.reactor))
        second.start()
        # without the lock the second thread makes its own reactor at once; with it, it
        # waits for the first (bounded: nothing to see is the expected outcome)
        second_inside.wait(0.5)
        release.set()
        first.join(TIMEOUT)
        second.join(TIMEOUT)
        assert not first.is_alive() and not second.is_alive()
        assert len(made) == 1
        assert got["first"] is got["second"] is made[0]
    finally:
        release.set()
        server.server_close()
        for reactor in made:
            reactor.close()
