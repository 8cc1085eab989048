"""Print the figures of the README's "Under faults" table from a figures file (not a
test module).

The fault suite appends one JSON line per measured figure to the file named by
``$REACTOR_FAULT_FIGURES`` (see :func:`faultlib.figure`). This groups them by the
table's rows, in its order, and gives each figure's value (or its range, when the same
figure was recorded several times: by several runs, or by a test that records it once
per case)::

    REACTOR_FAULT_FIGURES=/tmp/f.jsonl make test-faults
    .venv/bin/python -m tests.faults.figures /tmp/f.jsonl

The exit status is 1 when a row has no figure in the file (a test that did not run,
or a long variant left out) or the file has a figure no row claims.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence

# the README table's rows, in its order: (the row's fault, what its figures are named)
ROWS: list[tuple[str, list[str]]] = [
    ("accept() fails with EMFILE", [r"^emfile "]),
    ("--max-connections 10, 40 clients", [r"^max_connections: "]),
    ("slowloris", [r"^slowloris "]),
    ("client resets in the middle of ten 8 MiB replies", [r"^reset: ", r"^after 10 resets"]),
    ("clients that never read", [r"^slow reader: ",
                                 r"^(echo|kv): RSS growth, a client sending without"]),
    ("the same with --write-timeout 1.5", [r"^write timeout "]),
    ("bad input", [r"^bad input: ", r"^after an oversized record"]),
    ("any chunking of valid input", [r"^chunking "]),
    ("exceptions in handlers, connection_lost, timers", [r"^after five kinds of exceptions"]),
    ("SIGTERM with requests in flight", [r"^SIGTERM: "]),
    ("a second SIGINT during a graceful stop", [r"^SIGINT twice"]),
    ("SIGALRM storm while serving kv", [r"^signal storm: "]),
    ("ForkingTCPServer, max_children=10", [r"^fork: "]),
    ("shutdown() of the facades", [r"^facade \w+: (shutdown|server_close)\(\)"]),
    ("soak", [r"^soak \("]),
    ("connect storm larger than the backlog", [r"^connect storm \("]),
    ("bind failures", [r"^bind failures "]),
    ("IPv6 and dual stack; UDP datagrams over the limit", [r"^dual stack ", r"^UDP \("]),
    ("PROXY header spoofing or malformation", [r"^proxy "]),
    ("TLS: bad handshakes, stalled handshakes, clients that never read", [r"^tls: "]),
    # measured by the suite, not rows of the table
    ("(not in the table) half-close, close and abort", [r"^half-close: ",
                                                          r"^while \d+ closes wait"]),
]


def load(path: str) -> dict[str, tuple[list[float], str]]:
    """Figure name -> (every value recorded, unit), in the order first recorded."""
    figures: dict[str, tuple[list[float], str]] = {}
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                name, value, unit = str(item["name"]), float(item["value"]), str(item["unit"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{number}: not a figure line: {exc}") from None
            figures.setdefault(name, ([], unit))[0].append(value)
    return figures


def shown(values: list[float], unit: str) -> str:
    def one(value: float) -> str:
        if value == int(value) or abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}".rstrip("0")

    low, high = min(values), max(values)
    text = one(low) if low == high else f"{one(low)} to {one(high)}"
    runs = f" ({len(values)} values)" if len(values) > 1 else ""
    return f"{text} {unit}".rstrip() + runs


def report(figures: dict[str, tuple[list[float], str]]) -> tuple[list[str], bool]:
    """The lines to print, and whether every row has a figure and every figure a row."""
    out: list[str] = []
    claimed: set[str] = set()
    complete = True
    for row, patterns in ROWS:
        names = [name for name in figures if any(re.search(p, name) for p in patterns)]
        claimed.update(names)
        out.append(f"{row}:")
        if not names:
            out.append("    (no figure recorded)")
            complete = complete and row.startswith("(")
        for name in names:
            values, unit = figures[name]
            out.append(f"    {name}: {shown(values, unit)}")
    orphans = [name for name in figures if name not in claimed]
    if orphans:
        complete = False
        out.append("figures no row claims:")
        out.extend(f"    {name}: {shown(*figures[name])}" for name in orphans)
    return out, complete


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.faults.figures FIGURES.jsonl", file=sys.stderr)
        return 2
    lines, complete = report(load(argv[0]))
    print("\n".join(lines))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
