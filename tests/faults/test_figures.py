"""The script that prints the README's fault figures (:mod:`figures`) groups a figures
file by the table's rows and says when a row has no figure or a figure no row."""

from __future__ import annotations

import json
from pathlib import Path

import figures


def write(path: Path, *items: tuple[str, float, str]) -> str:
    path.write_text("".join(json.dumps({"name": n, "value": v, "unit": u}) + "\n"
                            for n, v, u in items))
    return str(path)


def every_row() -> list[tuple[str, float, str]]:
    """One figure for each row of the table, named as the tests name them."""
    return [
        ("emfile (reactor serve echo): server CPU", 0.5, "%"),
        ("max_connections: server CPU", 0.0, "%"),
        ("slowloris (kv): 20 dribblers closed after", 2.004, "s"),
        ("reset: RSS over the idle server after three rounds", 0.01, "MiB"),
        ("slow reader: RSS growth", 0.87, "MiB"),
        ("write timeout (1.5 s): 5 stalled connections closed after", 1.507, "s"),
        ("bad input: RSS growth", 0.0, "MiB"),
        ("chunking (kv): one-byte segments", 387, "bytes"),
        ("after five kinds of exceptions: server CPU", 0.0, "%"),
        ("SIGTERM: drained and exited in", 0.33, "s"),
        ("SIGINT twice: exited after the second in", 0.03, "s"),
        ("signal storm: SIGALRM handled per second", 984, "/s"),
        ("fork: longest-lived zombie", 58, "ms"),
        ("facade tcp: shutdown() from another thread returned in", 0.39, "ms"),
        ("soak (10000 echo connections): RSS after - before", 0.0, "MiB"),
        ("connect storm (echo, 5000 clients): slowest", 17.5, "ms"),
        ("bind failures (in use): descriptors leaked", 0, ""),
        ("UDP (::1): datagrams reported", 2, "of 2"),
        ("proxy header flood: server CPU", 0.0, "%"),
        ("tls: stalled handshakes closed after (--tls-handshake-timeout 1)", 1.003, "s"),
    ]


def test_every_row_has_its_figures_and_repeats_show_a_range(tmp_path: Path) -> None:
    items = [*every_row(), ("slowloris (kv): 20 dribblers closed after", 2.011, "s")]
    lines, complete = figures.report(figures.load(write(tmp_path / "f.jsonl", *items)))
    assert complete
    assert "    slowloris (kv): 20 dribblers closed after: 2.004 to 2.011 s (2 values)" in lines
    assert "    (no figure recorded)" in lines  # only the row outside the table


def test_a_row_without_a_figure_or_a_figure_without_a_row_fails(tmp_path: Path) -> None:
    without_fork = [item for item in every_row() if not item[0].startswith("fork")]
    path = write(tmp_path / "f.jsonl", *without_fork)
    lines, complete = figures.report(figures.load(path))
    assert not complete
    assert lines[lines.index("ForkingTCPServer, max_children=10:") + 1] == \
        "    (no figure recorded)"
    assert figures.main([path]) == 1
    path = write(tmp_path / "g.jsonl", *every_row(), ("something new", 1.0, "s"))
    assert figures.main([path]) == 1
    assert figures.main([write(tmp_path / "h.jsonl", *every_row())]) == 0
