"""TLS echo and full handshakes: the reactor against asyncio with the same context.

Usage::

    python -m bench.tls                       # 3 interleaved repetitions, about 2 minutes
    python -m bench.tls --reps 1 --duration 1 --results /tmp/R.md
    python -m bench.tls serve reactor --cert C --key K   # one server (the driver's way)

Two workloads, each against every server in its own process pinned to one CPU, driven
by ``bench/bin/tlsload`` (``bench/tlsload.c``: C, OpenSSL, epoll) on the other:

* ``tls-echo-1KiB-c100``: 100 connections, each with one full handshake first, then one
  1 KiB message in flight at a time; a request is a message echoed.
* ``tls-handshake-c50``: 50 concurrent slots, each: connect, a full handshake (the
  client keeps no session and asks for no ticket, so nothing is resumed), one 64 B
  message echoed, close with RST; a request is a whole connection.

The servers: ``reactor`` (:class:`bench.protocols.EchoProtocol` on
``Reactor.listen_tcp(..., ssl=context)``) and ``asyncio`` (the same protocol class on
``loop.create_server(..., ssl=context)``); ``uvloop`` too when asked for. Each builds
its context with :func:`server_context` from one certificate made at the start of the
run by ``openssl req`` (ECDSA P-256 by default, ``--key-type rsa`` for RSA 2048).
The figure is requests per server-CPU-second (:mod:`bench.apart`); the target is the
reactor's TLS echo at least asyncio's. The results go into the ``bench.tls`` section of
``--results`` (default ``bench/RESULTS.md``), with the target line in its Targets
block, and the raw records into ``OUT/tls.jsonl``.
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.plan import BENCH

__all__ = ["TLSLOAD", "TLSLOAD_BUILD", "main", "make_certificate", "names", "server_context",
           "workloads"]

TLSLOAD_SRC = BENCH / "tlsload.c"
TLSLOAD = BENCH / "bin" / "tlsload"
TLSLOAD_BUILD = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(TLSLOAD), str(TLSLOAD_SRC),
                 "-lssl", "-lcrypto"]
SERVERS = ("reactor", "asyncio", "uvloop")
ECHO_GOAL_VS_ASYNCIO = 1.0  # issue 14: the reactor's TLS echo at least asyncio's


# -- the servers -------------------------------------------------------------------------


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server context every server of this benchmark uses: the standard library's
    defaults for serving (TLS 1.2 and up, session tickets on) and the certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def make_certificate(directory: Path, key_type: str = "ec") -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 made by ``openssl req``;
    (certificate, key) files in ``directory``.

    Raises:
        RuntimeError: openssl is missing or failed.
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    new_key = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
               if key_type == "ec" else ["-newkey", "rsa:2048"])
    try:
        done = subprocess.run(
            ["openssl", "req", "-x509", *new_key, "-nodes", "-days", "2", "-subj",
             "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise RuntimeError("openssl is not installed (bench/setup.sh installs it)") from None
    if done.returncode != 0:
        raise RuntimeError(f"openssl req failed: {done.stderr.strip()[-300:]}")
    return cert, key


def serve(name: str, host: str, port: int, cert: str, key: str) -> None:
    """Run TLS echo server ``name`` until SIGTERM/SIGINT, announcing its port."""
    from bench.servers import asyncio_main, run_reactor

    context = server_context(cert, key)
    if name == "reactor":
        from bench.protocols import EchoProtocol

        run_reactor(host, port, EchoProtocol, ssl=context)
    elif name == "asyncio":
        import asyncio

        asyncio.run(asyncio_main(host, port, streams=False, ssl=context))
    else:
        import uvloop

        uvloop.run(asyncio_main(host, port, streams=False, ssl=context))


def serve_main(argv: list[str]) -> int:
    from bench.apart import server_options, server_setup

    parser = server_options("tls", SERVERS)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server_setup(args)
    serve(args.name, args.host, args.port, args.cert, args.key)
    return 0


# -- the run -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    from bench.apart import options, parse

    parser = options("tls", __doc__)
    parser.add_argument("--connections", type=int, default=100,
                        help="echo connections (default 100)")
    parser.add_argument("--slots", type=int, default=50,
                        help="concurrent handshake slots (default 50)")
    parser.add_argument("--servers", default="reactor,asyncio",
                        help=f"comma-separated, of {', '.join(SERVERS)} "
                             "(default reactor,asyncio)")
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                        help="the certificate's key: ECDSA P-256 (default) or RSA 2048")
    args = parse(parser, argv, "connections", "slots")
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - set(SERVERS)
    if unknown or "asyncio" not in args.server_list or "reactor" not in args.server_list:
        parser.error(f"--servers: reactor and asyncio at least, of {', '.join(SERVERS)}")
    return args


def names(args: argparse.Namespace) -> tuple[str, str]:
    """The names of the echo and the handshake workloads."""
    return f"tls-echo-1KiB-c{args.connections}", f"tls-handshake-c{args.slots}"


def workloads(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name, tlsload's arguments but the address) of each workload."""
    timing = ["-w", str(args.warmup), "-d", str(args.duration)]
    echo, handshake = names(args)
    return [
        (echo, ["-m", "echo", "-c", str(args.connections), "-s", "1024", *timing]),
        (handshake, ["-m", "handshake", "-c", str(args.slots), "-s", "64", *timing]),
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every workload against every server, interleaved; the records."""
    from bench.apart import CBENCH_H, Harness, build

    reason = build(TLSLOAD, [TLSLOAD_BUILD], [TLSLOAD_SRC, CBENCH_H])
    if reason is not None:
        raise SystemExit(f"bench.tls: {reason} (libssl-dev: bench/setup.sh installs it)")
    harness = Harness(args.out)
    args.conditions = harness.conditions()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        try:
            cert, key = make_certificate(Path(tmp), args.key_type)
        except RuntimeError as exc:
            raise SystemExit(f"bench.tls: {exc}") from None
        return harness.measure_all(
            "bench.tls", args.server_list, workloads(args), TLSLOAD, reps=args.reps,
            jsonl=args.out / "tls.jsonl", timeout=120 + args.warmup + args.duration,
            server_args=["--cert", str(cert), "--key", str(key)],
            extra={"kind": "tls", "key_type": args.key_type})


def section(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The ``bench.tls`` section of the report."""
    from bench.apart import compose, preamble, ratio_line, table
    from bench.kept import TLS_SECTION
    from bench.report import Results

    res = Results(records)
    echo, handshake = names(args)
    lines = [
        ratio_line(res, f"TLS echo 1 KiB x{args.connections} conns, reactor requests per "
                   "server-CPU-second vs asyncio (same SSLContext)", echo, "reactor",
                   "asyncio", ECHO_GOAL_VS_ASYNCIO, "req/CPU-s"),
        ratio_line(res, f"TLS full handshakes x{args.slots} concurrent, reactor connections "
                   "per server-CPU-second vs asyncio", handshake, "reactor", "asyncio", None,
                   "conn/CPU-s"),
    ]
    library = next((r["tls_library"] for r in records if r.get("tls_library")), "OpenSSL")
    key = "ECDSA P-256" if args.key_type == "ec" else "RSA 2048"
    text = compose(TLS_SECTION, "TLS: echo and full handshakes", [
        preamble("bench.tls", args, getattr(args, "conditions", "")),
        "The client is `bench/bin/tlsload` (`bench/tlsload.c`, C and epoll, "
        f"{library}, no certificate check). Both servers serve "
        "`bench.protocols.EchoProtocol` with a context made by one function "
        "(`bench.tls.server_context`: `ssl.create_default_context(Purpose.CLIENT_AUTH)` "
        f"and a certificate with an {key} key made by `openssl req` at the start of the "
        "run): the reactor through `listen_tcp(..., ssl=context)`, asyncio through "
        "`loop.create_server(..., ssl=context)`. Echo: one 1 KiB message in flight per "
        "connection, the handshakes done before the warm-up. Handshakes: connect, a full "
        "handshake (the client keeps no session and asks for no ticket), one 64 B "
        "message echoed, close with RST; per server-CPU-second is then connections.",
    ], lines, table(res, [(echo, "req"), (handshake, "conn")], "asyncio"))
    return _keep_instructions(text, args.results)


def _keep_instructions(section: str, results: Path) -> str:
    """``section`` with the instruction counts' block of the report's previous
    version (:mod:`bench.tls_instructions` writes it; it is measured apart)."""
    from bench.kept import TLS_SECTION, kept_section
    from bench.tls_instructions import BLOCK

    try:
        old = kept_section(results.read_text(), TLS_SECTION)
    except FileNotFoundError:
        return section
    block = kept_section(old or "", BLOCK)
    if block is None:
        return section
    end = TLS_SECTION[1]
    return section[:-len(end)].rstrip("\n") + f"\n\n{block}\n{end}"


def main(argv: list[str] | None = None) -> int:
    from bench.apart import entry
    from bench.kept import TLS_SECTION

    return entry(argv, TLS_SECTION, serve=serve_main, parse=parse_args, run=run,
                 section=section)


if __name__ == "__main__":
    sys.exit(main())
