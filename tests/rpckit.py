"""Helpers for the RPC tests (not a test module).

* :func:`serving` -- an :class:`RPCServer` listening on 127.0.0.1 (TCP and UDP, one
  port number picked by the kernel) on a reactor run in a background thread.
* :func:`read_replies` -- read ``count`` record-marked replies from a blocking socket.
* :class:`Inventory` -- the procedures of tests/data/inventory.x.
* :func:`rpcinfo` -- the system's rpcinfo, installed when possible, else a skip.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis_tools import install_package

from handlers.framers.rpcrecord import RecordMarkingFramer
from handlers.rpc.dispatch import Call
from handlers.rpc.message import AuthSys, Reply, decode_reply
from handlers.rpc.server import RPCEndpoints, RPCServer
from handlers.rpc.xdrlang import Specification
from reactor import Reactor

DEADLINE = 20.0  # generous: other helpers load the machine too


@contextmanager
def serving(server: RPCServer) -> Iterator[RPCEndpoints]:
    """Serve ``server`` until the block ends; the reactor is stopped and closed."""
    reactor = Reactor()
    endpoints = server.listen(reactor, "127.0.0.1", 0)
    thread = threading.Thread(target=reactor.run, name="rpc-reactor", daemon=True)
    thread.start()
    try:
        yield endpoints
    finally:
        reactor.call_soon_threadsafe(reactor.stop)
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the reactor did not stop"
        reactor.close()


def read_replies(sock: socket.socket, count: int) -> list[Reply]:
    """Read ``count`` replies (record marking) from ``sock``; fail if it closes first."""
    framer = RecordMarkingFramer()
    replies: list[Reply] = []
    while len(replies) < count:
        data = sock.recv(65536)
        assert data, f"closed after {len(replies)} of {count} replies"
        framer.feed(data)
        while (record := framer.next_record()) is not None:
            replies.append(decode_reply(record))
    return replies


def rpcinfo() -> str:
    """The path of rpcinfo, installing the rpcbind package when possible, else skip."""
    search = "/usr/sbin:/usr/bin:/sbin:/bin"
    path = shutil.which("rpcinfo") or shutil.which("rpcinfo", path=search)
    if path is None:
        reason = install_package("rpcbind")
        path = shutil.which("rpcinfo", path=search)
        if path is None:
            pytest.skip(reason or "rpcinfo is missing after installing rpcbind")
    return path


class Inventory:
    """INVENTORY_PROG (tests/data/inventory.x), versions 1 and 2.

    The methods' names take each form :meth:`Program.from_spec` looks for: the .x
    file's name, lower case, with or without the version.
    """

    def __init__(self, spec: Specification) -> None:
        self.spec = spec
        self.items: dict[str, Any] = {}
        self.callers: list[AuthSys | None] = []

    def ADD_ITEM(self, call: Call, item: Any) -> int:
        self.callers.append(call.auth_sys)
        if len(self.items) >= 2:
            return self.spec.constants["FULL"]
        self.items[item.name] = item
        return self.spec.constants["OK"]

    def find_item(self, call: Call, name: str) -> tuple[int, Any]:
        if not name:  # FULL has no case of its own: the default arm, a string
            return self.spec.constants["FULL"], "empty name"
        item = self.items.get(name)
        if item is None:
            return self.spec.constants["NOT_FOUND"], None
        return self.spec.constants["OK"], item

    def list_items_1(self, call: Call, args: None) -> list[Any]:
        return list(self.items.values())

    def REPORT_2(self, call: Call, kind: int) -> Any:
        chosen = [i for i in self.items.values() if i.kind == kind]
        return self.spec.types["stock_report"].cls(
            total=2**64 - 1, average_weight=sum(i.weight for i in chosen) / len(chosen),
            items=chosen, levels=[1, 2, 3], range={"low": -1, "high": 1})

    def chain(self, call: Call, count: int) -> Any:
        node = None
        for item in list(self.items.values())[:count]:
            node = {"entry": item, "next": node}
        return node

    def count_kind(self, call: Call, args: Any) -> int:
        return sum(1 for i in self.items.values()
                   if i.kind == args.arg1 and i.fragile == args.arg2)
