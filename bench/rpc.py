"""Sun RPC calls per server-CPU-second: our server against a C server made by rpcgen.

Usage::

    python -m bench.rpc                        # 3 interleaved repetitions, about 2 minutes
    python -m bench.rpc --reps 1 --duration 1 --results /tmp/R.md
    python -m bench.rpc serve reactor          # one server (the driver's way)

Both servers serve ``bench/rpcbench.x``: program 0x20000456 version 1, the NULL
procedure and ``BUMP``, which takes a small struct (``sample``: int, unsigned int,
hyper; 16 bytes) and returns it with its count one higher. ``reactor`` is
:class:`handlers.rpc.RPCServer` on the reactor (:meth:`RPCServer.listen`, TCP and UDP
on one port, as the tests serve it); ``rpcgen`` is the C server rpcgen makes from the
same file (``rpcgen -m``: the dispatch routine; ``bench/rpc_server.c``: the
procedures and a main that calls libtirpc's ``svc_run``), built on the spot into
``bench/bin/rpcgen/``.

The client is ``bench/bin/rpcload`` (``bench/rpcload.c``, C, epoll) on the other CPU,
sending copies of one call encoded here (``handlers.rpc.message.encode_call``,
AUTH_NONE), each with its own xid, so that no call is a retransmission to a
duplicate-request cache. Four workloads: NULL and BUMP over TCP (100 connections, 4
calls in flight on each, one record per call) and over UDP (100 client sockets, one
call in flight on each). The figure is calls per server-CPU-second (:mod:`bench.apart`).
The results go into the ``bench.rpc`` section of ``--results`` (default
``bench/RESULTS.md``) with INFO lines in its Targets block, the raw records into
``OUT/rpc.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.plan import BENCH

__all__ = ["RPCLOAD", "RPCLOAD_BUILD", "RPC_SERVER", "build_c_server", "calls", "main"]

SPEC = BENCH / "rpcbench.x"
RPCLOAD_SRC = BENCH / "rpcload.c"
RPCLOAD = BENCH / "bin" / "rpcload"
RPCLOAD_BUILD = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(RPCLOAD), str(RPCLOAD_SRC)]
RPC_SERVER_SRC = BENCH / "rpc_server.c"
RPC_SERVER = BENCH / "bin" / "rpcgen" / "rpc_server"
TIRPC_HEADER = Path("/usr/include/tirpc/rpc/rpc.h")
SERVERS = ("reactor", "rpcgen")


# -- the servers -------------------------------------------------------------------------


class Procedures:
    """RPCBENCH_PROG's procedures for :meth:`handlers.rpc.Program.from_spec` (NULL
    needs none)."""

    def bump(self, call: Any, sample: Any) -> Any:
        sample.count = (sample.count + 1) & 0xFFFFFFFF
        return sample


def build_c_server() -> str | None:
    """Build the rpcgen server if it is missing or older than its sources; None when it
    is there, else why not (rpcgen: Debian ``rpcsvc-proto``; libtirpc-dev)."""
    from bench.apart import build

    if not TIRPC_HEADER.exists():
        return f"{TIRPC_HEADER} is missing (libtirpc-dev: bench/setup.sh installs it)"
    work = RPC_SERVER.parent
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SPEC, work / SPEC.name)
    generated = (("-h", "rpcbench.h"), ("-c", "rpcbench_xdr.c"), ("-m", "rpcbench_svc.c"))
    for _flag, out in generated:  # rpcgen refuses to overwrite what an older build left
        (work / out).unlink(missing_ok=True)
    commands = [["rpcgen", flag, "-o", out, SPEC.name] for flag, out in generated]
    # the generated files warn under -Wall; rpc_server.c is kept clean of warnings
    commands.append(["cc", "-O2", "-w", "-I/usr/include/tirpc", "-I.", "-o", RPC_SERVER.name,
                     str(RPC_SERVER_SRC), "rpcbench_svc.c", "rpcbench_xdr.c", "-ltirpc"])
    return build(RPC_SERVER, commands, [SPEC, RPC_SERVER_SRC], cwd=work)


def serve(name: str, host: str) -> None:
    """Run server ``name`` until SIGTERM/SIGINT, announcing its port (TCP and UDP)."""
    if name == "rpcgen":
        from bench.servers import BACKLOG

        # the same process, so the driver's pid, pinning and limits carry over
        os.execv(RPC_SERVER, [str(RPC_SERVER), host, str(BACKLOG)])
    import signal

    from handlers.rpc import Program, RPCServer, load_xdr
    from reactor import Reactor

    program = Program.from_spec(load_xdr(str(SPEC)), Procedures())
    reactor = Reactor()
    endpoints = RPCServer([program]).listen(reactor, host, 0)
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    reactor.add_signal_handler(signal.SIGINT, reactor.stop)
    sys.stdout.write(f"PORT {endpoints.port}\n")
    sys.stdout.flush()
    try:
        reactor.run()
    finally:
        reactor.close()


def serve_main(argv: list[str]) -> int:
    from bench.apart import server_options, server_setup

    args = server_options("rpc", SERVERS).parse_args(argv)
    server_setup(args)
    serve(args.name, args.host)
    return 0


# -- the run -----------------------------------------------------------------------------


def calls() -> dict[str, bytes]:
    """The two calls, encoded once (xid 0: the client writes its own), by procedure."""
    from handlers.rpc import load_xdr
    from handlers.rpc.message import encode_call
    from handlers.rpc.xdr import encode

    spec = load_xdr(str(SPEC))
    prog, vers = spec.constants["RPCBENCH_PROG"], spec.constants["RPCBENCH_V1"]
    sample = spec.types["sample"]
    args = encode(sample, sample.cls(id=7, count=41, stamp=1_700_000_000_123))  # type: ignore[attr-defined]
    return {"null": encode_call(0, prog, vers, spec.constants["RPCBENCH_NULL"]),
            "bump": encode_call(0, prog, vers, spec.constants["BUMP"], args)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    from bench.apart import options, parse

    parser = options("rpc", __doc__)
    parser.add_argument("--connections", type=int, default=100,
                        help="TCP connections and UDP sockets (default 100)")
    parser.add_argument("--depth", type=int, default=4,
                        help="calls in flight per TCP connection (default 4)")
    parser.add_argument("--udp-depth", type=int, default=1,
                        help="calls in flight per UDP socket (default 1)")
    return parse(parser, argv, "connections", "depth", "udp_depth")


def workloads(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name, rpcload's arguments but the port) of each workload."""
    timing = ["-w", str(args.warmup), "-d", str(args.duration)]
    n = args.connections
    out = []
    for proc, call in calls().items():
        out.append((f"rpc-{proc}-tcp-c{n}", ["-m", "tcp", "-c", str(n), "-D", str(args.depth),
                                             "--call", call.hex(), *timing]))
        out.append((f"rpc-{proc}-udp-c{n}", ["-m", "udp", "-c", str(n),
                                             "-D", str(args.udp_depth), "--call", call.hex(),
                                             *timing]))
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every workload against both servers, interleaved; the records."""
    from bench.apart import CBENCH_H, Harness, build

    for reason in (build(RPCLOAD, [RPCLOAD_BUILD], [RPCLOAD_SRC, CBENCH_H]),
                   build_c_server()):
        if reason is not None:
            raise SystemExit(f"bench.rpc: {reason}")
    harness = Harness(args.out)
    args.conditions = harness.conditions()
    return harness.measure_all("bench.rpc", SERVERS, workloads(args), RPCLOAD,
                               reps=args.reps, jsonl=args.out / "rpc.jsonl",
                               timeout=120 + args.warmup + args.duration,
                               extra={"kind": "rpc"})


def section(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The ``bench.rpc`` section of the report."""
    from bench.apart import compose, preamble, ratio_line, table
    from bench.kept import RPC_SECTION
    from bench.report import Results

    res = Results(records)
    names = [name for name, _ in workloads(args)]
    lines = [ratio_line(res, f"Sun RPC {name.split('-')[1].upper()} over "
                             f"{name.split('-')[2].upper()}, reactor calls per "
                             "server-CPU-second vs the rpcgen C server", name, "reactor",
                        "rpcgen", None, "calls/CPU-s") for name in names]
    return compose(RPC_SECTION, "Sun RPC: calls per server-CPU-second", [
        preamble("bench.rpc", args, getattr(args, "conditions", "")),
        "`bench/rpcbench.x` served by `reactor` (`handlers.rpc.RPCServer.listen` on the "
        "reactor, TCP and UDP on one port, its duplicate-request cache on for UDP) and by "
        "`rpcgen` (the C server `rpcgen -m` makes from the same file, with "
        "`bench/rpc_server.c`'s procedures and main, libtirpc's `svc_run`; no "
        "duplicate-request cache, libtirpc's default). The client, `bench/bin/rpcload` "
        "(`bench/rpcload.c`), sends copies of one call encoded by "
        "`handlers.rpc.message.encode_call` (AUTH_NONE), each with its own xid (varied "
        "over TCP and UDP alike, so the cache never answers). NULL: no arguments; BUMP: a "
        f"16-byte struct in and out. TCP: {args.connections} connections, {args.depth} "
        f"calls in flight on each (pipelined, one record each); UDP: {args.connections} "
        f"client sockets, {args.udp_depth} call(s) in flight on each, a call unanswered "
        "for 0.2 s counted lost (timeouts column) and sent again.",
    ], lines, table(res, [(name, "calls") for name in names], "rpcgen", latency=False))


def main(argv: list[str] | None = None) -> int:
    from bench.apart import entry
    from bench.kept import RPC_SECTION

    return entry(argv, RPC_SECTION, serve=serve_main, parse=parse_args, run=run,
                 section=section)


if __name__ == "__main__":
    sys.exit(main())
