"""A host program that owns a plain ``select`` loop and drives a reactor inside it.

The host watches its own descriptor (here: a pipe it writes ticks to) and the reactor's
descriptor in one ``select`` call, sleeps at most ``reactor.next_timeout()``, and gives
the reactor a non-blocking turn with ``run_once(0)``. The reactor serves an echo
protocol meanwhile.

Run it: ``python examples/select_host.py --port 0 --seconds 3``; it prints the port and,
at the end, how many ticks the host handled and how many echo requests the reactor
served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import time

from reactor import Reactor


class Echo(asyncio.Protocol):
    served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        Echo.served += 1
        self.transport.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    reactor = Reactor()
    listener = reactor.listen_tcp("127.0.0.1", args.port, Echo)
    print(f"port {listener.port}", flush=True)
    tick_r, tick_w = os.pipe()
    ticks = 0
    next_tick = time.monotonic()
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_tick:  # the host's own periodic work
            os.write(tick_w, b".")
            next_tick = now + 0.05
        waits = [next_tick - now, end - now]
        reactor_wait = reactor.next_timeout()
        if reactor_wait is not None:
            waits.append(reactor_wait)
        readable, _, _ = select.select([reactor.fileno(), tick_r], [], [], max(0.0, min(waits)))
        if tick_r in readable:
            ticks += len(os.read(tick_r, 4096))
        reactor.run_once(0)
    listener.close()
    reactor.close()
    os.close(tick_r)
    os.close(tick_w)
    print(f"host ticks {ticks} echo requests {Echo.served}", flush=True)


if __name__ == "__main__":
    main()
