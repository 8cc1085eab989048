"""User-space instructions per TLS echo request under callgrind: the steady figure of
the TLS data path, ours against asyncio's.

Usage::

    python -m bench.tls_instructions [SERVER ...] [--connections 100] [--size 1024]
                                     [--seeds N] [--short 3] [--long 9]

Each server (``reactor``, ``asyncio``: the servers of :mod:`bench.tls`, both built by
:func:`bench.tls.server_context` from one certificate made at the start) runs under
``valgrind --tool=callgrind`` on CPU 0 while ``bench/bin/tlsload`` drives TLS echo from
CPU 1, once for a short load and once for a long one. Every connection's handshake
happens before the load starts and the same number of them in both runs, so the
difference of the two instruction totals over the difference of the two request counts
is the marginal cost of one echoed message: decrypt, the protocol's callback, encrypt
and the two system calls, without handshakes, start-up or shutdown. ``PYTHONHASHSEED``
is fixed per run (``--seeds N``: 0 to N-1, then the median and the range), as in
:mod:`bench.instructions`: read a difference smaller than the range as none.
Needs valgrind, openssl and a C compiler with libssl-dev (``bench/setup.sh``).

The figures go into ``--results`` (default ``bench/RESULTS.md``) as a block of the
``bench.tls`` section, between the markers of :data:`BLOCK`; ``python -m bench.tls``
keeps the block when it rewrites its section (``--results ''``: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.kept import TLS_SECTION, kept_section, write_section
from bench.tls import TLSLOAD, TLSLOAD_BUILD, TLSLOAD_SRC, make_certificate

__all__ = ["BLOCK", "insert_block", "main", "one_load"]

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("reactor", "asyncio")
#: the markers of the block this writes inside the ``bench.tls`` section
BLOCK = ("<!-- bench.tls_instructions -->", "<!-- /bench.tls_instructions -->")


def one_load(server: str, cert: Path, key: Path, seconds: float, connections: int,
             size: int, seed: int) -> tuple[int, int]:
    """Run TLS echo server ``server`` under callgrind for one load with
    ``PYTHONHASHSEED=seed``; return (instructions, requests)."""
    with tempfile.TemporaryDirectory(prefix="bench-tls-ir-") as tmp:
        log = Path(tmp) / "valgrind.log"
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        srv = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
             f"--log-file={log}", sys.executable, "-m", "bench.tls", "serve", server,
             "--cpu", "0", "--cert", str(cert), "--key", str(key)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = _port(srv, server)
            load = subprocess.run(
                [str(TLSLOAD), "-m", "echo", "-p", port, "-c", str(connections), "-s",
                 str(size), "-w", "0", "-d", str(seconds), "--cpu", "1", "-T", "60"],
                capture_output=True, text=True, timeout=seconds + 180, check=True)
        finally:
            srv.send_signal(signal.SIGINT)
            srv.wait(120)
        # callgrind's closing words: "==PID== Collected : N" (instructions)
        collected = re.search(r"Collected\s*:\s*(\d+)", log.read_text())
        if collected is None:
            raise SystemExit(f"{server}: valgrind's log has no instruction total")
        total = int(collected.group(1))
    record = json.loads(load.stdout)
    if record["established"] != connections or record["errors"]:
        raise SystemExit(f"{server}: a bad load: {load.stdout.strip()}")
    return total, int(record["requests"])


def _port(srv: subprocess.Popen[str], server: str) -> str:
    assert srv.stdout is not None
    while True:
        line = srv.stdout.readline()
        if not line:
            raise SystemExit(f"{server} exited before it printed its port")
        match = re.match(r"PORT (\d+)", line)
        if match:
            return match.group(1)


def per_request(server: str, cert: Path, key: Path, args: argparse.Namespace,
                seed: int) -> dict[str, Any]:
    """The marginal instructions per echoed message under one hash seed (two loads)."""
    short = one_load(server, cert, key, args.short, args.connections, args.size, seed)
    long = one_load(server, cert, key, args.long, args.connections, args.size, seed)
    return {"seed": seed, "instructions": [short[0], long[0]],
            "requests": [short[1], long[1]],
            "instructions_per_request": round((long[0] - short[0]) / (long[1] - short[1]))}


def block_text(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The block for the report: the command, each server's median and range, and
    the ratio."""
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=10, check=False)
    command = " ".join(["python -m bench.tls_instructions", *args.argv])
    lines = [BLOCK[0], "",
             f"The steady figure, user-space instructions per echoed 1 KiB message under "
             f"callgrind (`{command}`, git {git.stdout.strip() or '?'}, "
             f"{args.connections} connections, a {args.short:g} s and a {args.long:g} s "
             "load, the difference over the difference of requests, so the handshakes "
             "and start-up cancel out; it does not move with the machine's load):", "",
             "| server | instructions per request | range over seeds |",
             "|---|---:|---:|"]
    for server, result in results.items():
        figures = result["per_seed"]
        lines.append(f"| {server} | {result['instructions_per_request']:,} | "
                     f"{min(figures):,}-{max(figures):,} ({len(figures)} seeds) |")
    if "reactor" in results and "asyncio" in results:
        ratio = (results["asyncio"]["instructions_per_request"]
                 / results["reactor"]["instructions_per_request"])
        lines += ["", f"asyncio's instructions over the reactor's: {ratio:.2f}x "
                  "(above 1: the reactor does less per request)."]
    return "\n".join([*lines, "", BLOCK[1]])


def insert_block(path: Path, block: str) -> None:
    """Put ``block`` into the ``bench.tls`` section of the report at ``path``: in place
    of its previous version, else at the section's end (a report without the section
    gets one holding the block alone)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    section = kept_section(text, TLS_SECTION)
    if section is None:
        write_section(path, TLS_SECTION, f"{TLS_SECTION[0]}\n{block}\n{TLS_SECTION[1]}")
        return
    old = kept_section(section, BLOCK)
    if old is not None:
        new = section.replace(old, block, 1)
    else:
        new = section[:-len(TLS_SECTION[1])].rstrip("\n") + f"\n\n{block}\n{TLS_SECTION[1]}"
    # in place: the block has no target line, so the Targets block stays as it is
    path.write_text(text.replace(section, new, 1))


def main(argv: list[str] | None = None) -> int:
    from bench.apart import CBENCH_H, build

    parser = argparse.ArgumentParser(prog="python -m bench.tls_instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("servers", nargs="*", default=list(SERVERS),
                        help=f"of {', '.join(SERVERS)} (default both)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--short", type=float, default=3.0, help="seconds of the short load")
    parser.add_argument("--long", type=float, default=9.0, help="seconds of the long load")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="measure under PYTHONHASHSEED 0..N-1 (default 1: seed 0)")
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"),
                        help="the report to put the block in ('' for none)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = [a for i, a in enumerate(argv)
                 if not a.startswith("--results") and argv[i - 1:i] != ["--results"]]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    reason = build(TLSLOAD, [TLSLOAD_BUILD], [TLSLOAD_SRC, CBENCH_H])
    if reason is not None:
        raise SystemExit(f"bench.tls_instructions: {reason}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-ir-") as tmp:
        try:
            cert, key = make_certificate(Path(tmp), args.key_type)
        except RuntimeError as exc:
            raise SystemExit(f"bench.tls_instructions: {exc}") from None
        for server in args.servers:
            runs = [per_request(server, cert, key, args, seed) for seed in range(args.seeds)]
            figures = [run["instructions_per_request"] for run in runs]
            median = statistics.median(figures)
            print(f"{server}: median {median:.0f} instructions per request, range "
                  f"{min(figures)}-{max(figures)} over {len(figures)} seed(s)", flush=True)
            results[server] = {"per_seed": figures, "instructions_per_request": round(median),
                               "runs": runs}
    if "reactor" in results and "asyncio" in results:
        ratio = (results["asyncio"]["instructions_per_request"]
                 / results["reactor"]["instructions_per_request"])
        print(f"asyncio / reactor: {ratio:.2f} (above 1: the reactor does less per request)")
    print(json.dumps({"connections": args.connections, "size": args.size, **results}))
    if args.results:
        insert_block(Path(args.results), block_text(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
