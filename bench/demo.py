"""A short demonstration: a reactor echo server and clients over real sockets.

Starts an echo service on the reactor (an ordinary ``asyncio.Protocol``), connects
clients to it from the same reactor, exchanges messages, and prints the connection
table and ``statistics()`` while the clients are connected and after they leave.

Run: ``python -m bench.demo [--clients N] [--messages M]``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from reactor import Reactor


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Client(asyncio.Protocol):
    def __init__(self, messages: int, size: int, done: list[int]) -> None:
        self.remaining = messages
        self.payload = b"x" * size
        self.pending = 0
        self.done = done

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.pending = len(self.payload)
        self.transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending == 0:
            self.remaining -= 1
            if self.remaining:
                self._send()
            else:
                self.done.append(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    reactor = Reactor()
    listener = reactor.listen_tcp("127.0.0.1", 0, Echo)
    print(f"echo server on 127.0.0.1:{listener.port} ({type(reactor.selector).__name__})")
    done: list[int] = []
    futures = [
        reactor.connect_tcp("127.0.0.1", listener.port,
                            lambda: Client(args.messages, args.size, done), timeout=5)
        for _ in range(args.clients)
    ]
    start = reactor.time()
    reactor.run_until(lambda: len(done) == args.clients, timeout=60)
    elapsed = reactor.time() - start
    print(f"\n{args.clients} clients x {args.messages} messages of {args.size} B "
          f"in {elapsed:.2f} s\n")
    print("connection table (first rows):")
    print(reactor.connections.format(limit=6))
    print(f"\nstatistics(): {reactor.statistics()}\n")
    for future in futures:
        transport, _protocol = future.result()
        transport.close()
    reactor.run_until(lambda: len(reactor.connections) == 0, timeout=10)
    stats = reactor.statistics()
    print(f"after the clients left: open={stats.open} opened_total={stats.opened_total} "
          f"closed_total={stats.closed_total} bytes_in={stats.bytes_in} "
          f"bytes_out={stats.bytes_out} iterations={stats.iterations}")
    listener.close()
    reactor.close()


if __name__ == "__main__":
    main()
