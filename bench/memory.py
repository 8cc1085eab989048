"""Where an idle connection's bytes go: the objects the reactor allocates per accepted
connection, from ``tracemalloc``.

The reactor serves :class:`bench.protocols.EchoProtocol` on loopback in this process;
after ``--warmup`` connections, two snapshots are taken around ``--connections`` more
(each accepted and idle), and the allocations between them are grouped by the line that
made them and divided by the connection count. Allocations of the client side (the test
sockets this process opens) are left out: only lines in the reactor package and in
``selectors`` count. Run::

    .venv/bin/python -m bench.memory                  # 3 000 connections
    .venv/bin/python -m bench.memory --connections 5000 --json out.json

The RSS figure of ``make bench`` (idle-c10000) is the one to compare with other loops;
this one says which object costs what. A dict's entry costs between 30 and 49 bytes
depending on where the count falls between two resizes.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from reactor import Reactor

from .protocols import EchoProtocol

__all__ = ["Line", "main", "measure"]


@dataclass(frozen=True)
class Line:
    """Bytes and objects per connection allocated at one source line."""

    where: str
    bytes_per_connection: float
    objects_per_connection: float


def _counted(filename: str) -> bool:
    return "/reactor/" in filename or filename.endswith("selectors.py")


def measure(connections: int = 3000, warmup: int = 200, timeout: float = 60.0) -> list[Line]:
    """The per-connection allocations of ``connections`` idle connections."""
    reactor = Reactor()
    clients: list[socket.socket] = []
    try:
        listener = reactor.listen_tcp("127.0.0.1", 0, EchoProtocol, backlog=4096)
        port = listener.port

        def connect(count: int) -> None:
            target = len(reactor.connections) + count
            for i in range(count):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
                if i % 100 == 99:
                    reactor.run_once(0)  # keep the backlog short
            reactor.run_until(lambda: len(reactor.connections) >= target, timeout=timeout)

        connect(warmup)
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        connect(connections)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        for sock in clients:
            sock.close()
        reactor.close()
    lines = []
    for stat in after.compare_to(before, "lineno"):
        frame = stat.traceback[0]
        if not _counted(frame.filename) or stat.size_diff <= 0:
            continue
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        lines.append(Line(where, stat.size_diff / connections, stat.count_diff / connections))
    return [line for line in lines if line.bytes_per_connection >= 1.0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the lines here too")
    args = parser.parse_args(argv)
    lines = measure(args.connections, args.warmup)
    for line in lines:
        print(f"{line.bytes_per_connection:7.1f} B  {line.objects_per_connection:5.2f} "
              f"objects  {line.where}")
    total = sum(line.bytes_per_connection for line in lines)
    print(f"{total:7.1f} B per connection in all ({args.connections} connections)")
    if args.json:
        args.json.write_text(json.dumps([vars(line) for line in lines], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
