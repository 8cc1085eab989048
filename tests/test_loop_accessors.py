"""The documented accessors modules outside the loop use instead of Reactor's private
attributes: ``running_thread_id`` (debug mode's thread checks) and ``selector``."""

from __future__ import annotations

import threading

import pytest

from reactor import Reactor


@pytest.mark.timeout(10)
def test_running_thread_id_names_the_thread_inside_run_and_only_while_it_runs() -> None:
    with Reactor() as reactor:
        assert reactor.running_thread_id is None
        seen: list[int | None] = []

        def look() -> None:
            seen.append(reactor.running_thread_id)
            reactor.stop()

        reactor.call_soon(look)
        worker = threading.Thread(target=reactor.run)
        worker.start()
        worker.join(5)
        assert not worker.is_alive()
        assert seen == [worker.ident]
        assert reactor.running_thread_id is None


def test_the_selector_property_is_what_the_loop_polls() -> None:
    with Reactor() as reactor:
        listener = reactor.listen_tcp("127.0.0.1", 0, lambda: None)
        assert reactor.selector.get_key(listener.sock).data is listener
