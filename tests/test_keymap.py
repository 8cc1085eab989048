"""The epoll fast path's key map (``BatchKeyMap``): values in a list indexed by
descriptor, the dict holding only what the ``selectors`` API registered, and the
selector's view of both unchanged."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from reactor.io.dispatch import BatchKeyMap, EpollPath, epoll_path

pytestmark = pytest.mark.skipif(not hasattr(selectors, "EpollSelector"), reason="epoll only")


class Target:
    """A transport's stand-in: its own key."""

    def __init__(self, sock: socket.socket, mask: int) -> None:
        self._sock = sock
        self._mask = mask
        self.calls: list[str] = []

    def _read_ready(self) -> None:
        self.calls.append("read")

    def _write_ready(self) -> None:
        self.calls.append("write")


@pytest.fixture
def selector() -> Iterator[selectors.BaseSelector]:
    sel = selectors.EpollSelector()
    yield sel
    sel.close()


@pytest.fixture
def path(selector: selectors.BaseSelector) -> EpollPath:
    made = epoll_path(selector)
    assert made is not None
    return made


@pytest.fixture
def pairs() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    for _ in range(3):
        socks.extend(socket.socketpair())
    yield socks
    for sock in socks:
        sock.close()


def test_a_transport_costs_no_dict_entry(
    selector: selectors.BaseSelector, path: EpollPath, pairs: list[socket.socket]
) -> None:
    keys = path.keys
    listener, transport_sock = pairs[0], pairs[2]
    selector.register(listener, selectors.EVENT_READ, "listener")
    target = Target(transport_sock, selectors.EVENT_READ)
    keys.put(transport_sock.fileno(), target)
    assert dict.__len__(keys) == 1  # the listener's SelectorKey only
    assert len(keys) == keys.size == 2
    assert keys.slots[transport_sock.fileno()] is target
    # the selector's view: both, the transport as the SelectorKey it would store
    mapping = selector.get_map()
    assert sorted(mapping) == sorted([listener.fileno(), transport_sock.fileno()])
    key = selector.get_key(transport_sock)
    assert (key.fileobj, key.fd, key.events, key.data) == (
        transport_sock, transport_sock.fileno(), selectors.EVENT_READ, target)
    assert selector.get_key(listener).data == "listener"
    assert transport_sock.fileno() in keys and -1 not in keys and "x" not in keys
    assert keys.get(10**6) is None and keys.raw_get(-1) is None
    assert {k.data for k in keys.values()} == {"listener", target}
    assert dict(keys.items()).keys() == set(keys.keys())
    keys.drop(transport_sock.fileno())
    keys.drop(transport_sock.fileno())  # no error
    assert len(keys) == 1 and transport_sock.fileno() not in keys
    with pytest.raises(KeyError):
        selector.get_key(transport_sock)


def test_register_modify_unregister_through_the_selector(
    selector: selectors.BaseSelector, path: EpollPath, pairs: list[socket.socket]
) -> None:
    sock = pairs[0]
    selector.register(sock, selectors.EVENT_READ, 1)
    with pytest.raises(KeyError):
        selector.register(sock, selectors.EVENT_READ, 2)  # already registered
    selector.modify(sock, selectors.EVENT_WRITE, 3)
    assert selector.get_key(sock).data == 3 and len(path.keys) == 1
    assert selector.unregister(sock).data == 3
    assert len(path.keys) == 0 and not path.keys
    assert path.keys.pop(sock.fileno(), "gone") == "gone"
    with pytest.raises(KeyError):
        path.keys.pop(sock.fileno())


def test_keys_made_before_the_path_are_kept(
    selector: selectors.BaseSelector, pairs: list[socket.socket]
) -> None:
    selector.register(pairs[0], selectors.EVENT_READ, "early")
    path = epoll_path(selector)
    assert path is not None
    assert isinstance(path.keys, BatchKeyMap)
    assert selector.get_key(pairs[0]).data == "early"
    assert path.keys.slots[pairs[0].fileno()] is selector.get_key(pairs[0])


def test_dispatch_reads_the_list(
    selector: selectors.BaseSelector, path: EpollPath, pairs: list[socket.socket]
) -> None:
    a, b = Target(pairs[0], selectors.EVENT_READ), Target(pairs[2], 0)
    path.keys.put(pairs[0].fileno(), a)
    path.keys.put(pairs[2].fileno(), b)
    events: list[tuple[int, int]] = [(pairs[0].fileno(), 1), (pairs[2].fileno(), 1)]
    path.dispatch(events)
    assert a.calls == ["read"] and b.calls == []  # b's mask is 0: nothing wanted


def test_a_close_in_a_batch_leaves_the_rest_of_it_without_a_key(
    selector: selectors.BaseSelector, path: EpollPath, pairs: list[socket.socket]
) -> None:
    keys = path.keys
    later = Target(pairs[2], selectors.EVENT_READ)

    class Closer(Target):
        def _read_ready(self) -> None:
            super()._read_ready()
            keys.clear()  # the selector closed from inside a callback

    first = Closer(pairs[0], selectors.EVENT_READ)
    keys.put(pairs[0].fileno(), first)
    keys.put(pairs[2].fileno(), later)
    path.dispatch([(pairs[0].fileno(), 1), (pairs[2].fileno(), 1)])
    assert first.calls == ["read"] and later.calls == []
    assert len(keys) == 0 and list(keys) == []


def test_the_list_grows_past_a_high_descriptor(path: EpollPath) -> None:
    keys = path.keys
    target: Any = Target(socket.socket(), 1)
    try:
        keys.put(5000, target)
        assert len(keys.slots) > 5000 and keys.raw_get(5000) is target
        assert list(keys) == [5000]
    finally:
        target._sock.close()
