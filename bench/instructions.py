"""User-space instructions per echo request under callgrind: the figure that does not
move with the machine's load.

Usage::

    python -m bench.instructions [SERVER] [--connections 100] [--size 1024]

The server (a name from :mod:`bench.servers`, ``reactor-protocol`` by default) runs under
``valgrind --tool=callgrind`` on CPU 0 while ``bench/bin/loadgen`` drives it from CPU 1,
once for a short load and once for a long one; the difference of the two instruction
totals over the difference of the two request counts is the marginal cost of one
request, without start-up and shutdown. ``PYTHONHASHSEED`` is fixed so two runs of the
same code execute the same instructions. Needs valgrind and the load generator
(``make bench/bin/loadgen``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "bin" / "loadgen"


def one_load(server: str, seconds: float, connections: int, size: int) -> tuple[int, int]:
    """Run ``server`` under callgrind for one load; return (instructions, requests)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        srv = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "bench.servers", server, "--cpu", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert srv.stdout is not None
        port = None
        while port is None:
            line = srv.stdout.readline()
            if not line:
                raise SystemExit(f"{server} exited before it printed its port")
            match = re.match(r"PORT (\d+)", line)
            if match:
                port = match.group(1)
        load = subprocess.run(
            [str(LOADGEN), "-p", port, "-c", str(connections), "-s", str(size), "-w", "0",
             "-d", str(seconds), "--cpu", "1", "-T", "30"],
            capture_output=True, text=True, timeout=seconds + 120, check=True)
        srv.send_signal(signal.SIGINT)
        srv.wait(120)
        total = None
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if total is None:
            raise SystemExit("callgrind wrote no total")
    return total, int(json.loads(load.stdout)["requests"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("server", nargs="?", default="reactor-protocol")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--short", type=float, default=3.0, help="seconds of the short load")
    parser.add_argument("--long", type=float, default=9.0, help="seconds of the long load")
    args = parser.parse_args(argv)
    short = one_load(args.server, args.short, args.connections, args.size)
    long = one_load(args.server, args.long, args.connections, args.size)
    per_request = (long[0] - short[0]) / (long[1] - short[1])
    print(json.dumps({"server": args.server, "connections": args.connections,
                      "size": args.size, "instructions": [short[0], long[0]],
                      "requests": [short[1], long[1]],
                      "instructions_per_request": round(per_request)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
