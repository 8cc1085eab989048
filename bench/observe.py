"""What observing a reactor costs: callgrind instructions per echo request with the
control socket, metrics, the status page and loop health on, against none of them.

Usage::

    python -m bench.observe [--seeds 3] [--configs none,all,serve-all,health]
    python -m bench.observe CONFIG --cpu 0      # one server (what the runs start)

Each configuration is ``bench.servers``' ``reactor-protocol`` (the echo protocol on a
reactor) with more on its reactor:

* ``none`` -- nothing: the figure to compare with ``python -m bench.instructions``
  on the code before observability;
* ``all`` -- a control socket, ``/metrics`` and the status page on their own ports,
  the lag probe (as ``--metrics`` enables it), and a scraper polling ``/metrics``
  every second while the load runs;
* ``serve-all`` -- ``all`` plus what ``reactor serve --metrics`` adds: the access
  log's wrapper around each protocol, counting close reasons;
* ``health`` -- ``all`` with every callback timed (``--loop-health``).

Each figure is :mod:`bench.instructions`' marginal cost of one request (a short and a
long load; the median over ``--seeds`` hash seeds); the ratios are against ``none``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench import instructions

CONFIGS = ("none", "all", "serve-all", "health")


def serve(config: str) -> None:
    """Run the echo server with ``config``'s observability until SIGINT/SIGTERM; print
    ``METRICS N`` (when served) and then ``PORT N``."""
    from bench.protocols import EchoProtocol
    from bench.servers import BACKLOG, READ_SIZE
    from reactor import Reactor, serve_control, serve_observe

    reactor = Reactor()
    factory: Any = EchoProtocol
    if config == "serve-all":
        from reactor.cli.access import wrap_factory

        class Stopping:
            stopping = False

        factory = wrap_factory(EchoProtocol, Stopping(), access=False)
    listener = reactor.listen_tcp("127.0.0.1", 0, factory, backlog=BACKLOG,
                                  read_size=READ_SIZE, nodelay=True)
    with tempfile.TemporaryDirectory() as tmp:
        if config != "none":
            reactor.enable_health(0.1 if config == "health" else None)
            serve_control(reactor, os.path.join(tmp, "ctl"))
            metrics = serve_observe(reactor, "127.0.0.1", 0)
            serve_observe(reactor, "127.0.0.1", 0, metrics=False, status=True)
            sys.stdout.write(f"METRICS {metrics.port}\n")
        reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
        reactor.add_signal_handler(signal.SIGINT, reactor.stop)
        sys.stdout.write(f"PORT {listener.port}\n")
        sys.stdout.flush()
        try:
            reactor.run()
        finally:
            reactor.close()


@contextlib.contextmanager
def scraper(announced: dict[str, str]) -> Iterator[list[int]]:
    """GET ``/metrics`` every second while the load runs (nothing without METRICS)."""
    scrapes: list[int] = []
    port = announced.get("METRICS")
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(1.0):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                        timeout=30) as reply:
                scrapes.append(len(reply.read()))

    thread = threading.Thread(target=poll, daemon=True)
    if port is not None:
        thread.start()
    try:
        yield scrapes
    finally:
        stop.set()
        if port is not None:
            thread.join(35)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CONFIGS:  # one server, as the runs start it
        server = argparse.ArgumentParser(prog="python -m bench.observe CONFIG")
        server.add_argument("config", choices=CONFIGS)
        server.add_argument("--cpu", type=int, default=None)
        args = server.parse_args(argv)
        if args.cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {args.cpu})
        from bench.servers import prime_allocator, raise_fd_limit

        prime_allocator()
        raise_fd_limit()
        serve(args.config)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.observe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--short", type=float, default=3.0)
    parser.add_argument("--long", type=float, default=9.0)
    args = parser.parse_args(argv)
    args.mode = "echo"
    results: dict[str, Any] = {}
    for config in args.configs.split(","):
        figures = []
        for seed in range(args.seeds):
            run = instructions.per_request(config, args, seed, module="bench.observe",
                                           during=scraper)
            figures.append(run["instructions_per_request"])
            print(f"{config} seed {seed}: {figures[-1]} instructions per request",
                  flush=True)
        results[config] = {"per_seed": figures, "median": statistics.median(figures)}
    base = results.get("none", {}).get("median")
    for config, result in results.items():
        if base:
            result["ratio"] = round(result["median"] / base, 4)
        print(f"{config}: median {result['median']:.0f}"
              + (f", {result['ratio'] - 1:+.2%} against none" if base else ""), flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
