"""The tables of :mod:`bench.syscalls`: the counts of one traced run, and how they are
rendered into ``bench/RESULTS.md``.

Split from :mod:`bench.syscalls` (which re-exports what its callers use). Must not import
:mod:`bench.run`, ``reactor`` or ``handlers``.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.plan import ROOT
from bench.report import SYSCALLS_SECTION, kept_section, md_table

__all__ = ["INTRO", "OTHER_SHOWN_AT", "PREFERRED", "SHOWN_AT", "TABLES_BEGIN", "TABLES_END",
           "Count", "Traced", "render_table", "render_tables", "write_results"]

TABLES_BEGIN = "<!-- bench.syscalls: tables -->"
TABLES_END = "<!-- /bench.syscalls: tables -->"
# the columns, in this order when present; any other call made often enough follows
# them, and the rest is summed as "other" (and named in the notes under the table)
PREFERRED = ("recvfrom", "recv", "read", "recvmsg", "sendto", "send", "write", "sendmsg",
             "writev", "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "select",
             "accept4", "accept", "ioctl", "fcntl", "setsockopt", "getsockopt",
             "getsockname", "getpeername", "shutdown", "close", "io_uring_enter", "futex",
             "clone", "clone3", "wait4")
SHOWN_AT = 0.01  # a column for a call above made this often per unit by some server
OTHER_SHOWN_AT = 2.0  # and for any other call made this often


@dataclass(frozen=True)
class Count:
    """One system call's count.

    Attributes:
        calls: calls made.
        errors: calls that returned -1 (counted in ``calls`` too).
        details: (what, n) pairs, most frequent first: for a failed call its errno
            (``ECONNRESET``), for a call in :data:`DETAIL` the argument that says what
            it did (``EPOLL_CTL_DEL``, ``FIONBIO``, ``TCP_NODELAY``, accept4's flags).
    """

    calls: int
    errors: int = 0
    details: tuple[tuple[str, int], ...] = ()


@dataclass
class Traced:
    """One server under one workload, traced.

    Attributes:
        workload, server: what ran.
        unit: ``request`` or ``connection``.
        units: requests (churn: connections) the load generator completed in its window.
        seconds: the load generator's window.
        counts: the calls made in the window, by system call.
        failed: why there is no figure (then ``counts`` is empty).
    """

    workload: str
    server: str
    unit: str
    units: int = 0
    seconds: float = 0.0
    counts: dict[str, Count] = field(default_factory=dict)
    failed: str | None = None

    def per_unit(self, name: str) -> float:
        count = self.counts.get(name)
        return count.calls / self.units if count is not None and self.units else 0.0

    def errors_per_unit(self, name: str) -> float:
        count = self.counts.get(name)
        return count.errors / self.units if count is not None and self.units else 0.0

    @property
    def total_per_unit(self) -> float:
        return sum(c.calls for c in self.counts.values()) / self.units if self.units else 0.0


# -- the tables --------------------------------------------------------------------------


def _columns(rows: Sequence[Traced]) -> list[str]:
    seen: dict[str, float] = {}
    for t in rows:
        for name in t.counts:
            seen[name] = max(seen.get(name, 0.0), t.per_unit(name))
    shown = [n for n in seen
             if seen[n] >= (SHOWN_AT if n in PREFERRED else OTHER_SHOWN_AT)]
    rank = {n: i for i, n in enumerate(PREFERRED)}
    return sorted(shown, key=lambda n: (rank.get(n, len(rank)), -seen[n], n))


def _fmt(x: float) -> str:
    if abs(x) < 0.005:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def render_table(rows: Sequence[Traced]) -> list[str]:
    """Markdown lines: one workload, server x system call, per request or connection."""
    ok = [t for t in rows if t.failed is None]
    lines: list[str] = []
    if ok:
        cols = _columns(ok)
        header = ["server", *cols, "other", "total", f"{ok[0].unit}s counted",
                  "traced rate /s"]
        body = []
        for t in ok:
            other = t.total_per_unit - sum(t.per_unit(n) for n in cols)
            body.append([t.server, *(_fmt(t.per_unit(n)) for n in cols), _fmt(other),
                         _fmt(t.total_per_unit), f"{t.units:,}",
                         f"{t.units / t.seconds:,.0f}" if t.seconds else "?"])
        lines += md_table(header, body)
        notes = [note for t in ok if (note := _details(t, cols))]
        if notes:
            lines += ["", f"What the calls did, and how they failed, per {ok[0].unit} "
                      "(failures are counted above too):", "", *notes]
    for t in rows:
        if t.failed is not None:
            lines += ["", f"{t.server}: no figure: {t.failed}"]
    return lines


def _details(t: Traced, cols: Sequence[str]) -> str:
    """One list item: the details of ``t``'s shown calls (epoll_ctl by operation, the
    errnos of failed calls...)."""
    parts = []
    for name in cols:
        count = t.counts.get(name)
        if count is None or not t.units:
            continue
        what = [f"{w} {n / t.units:.2f}" for w, n in count.details
                if n / t.units >= SHOWN_AT]
        if what:
            parts.append(f"{name} {', '.join(what)}")
    rest = sorted(((n, t.per_unit(n)) for n in t.counts if n not in cols),
                  key=lambda kv: -kv[1])
    if any(x >= SHOWN_AT for _, x in rest):
        parts.append("other: " + ", ".join(f"{n} {x:.2f}" for n, x in rest if x >= SHOWN_AT))
    return f"- {t.server}: " + "; ".join(parts) if parts else ""


def render_tables(traced: Sequence[Traced], command: str) -> list[str]:
    """Every workload's table, with the command and the date, between the markers."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=False).stdout.strip()
    lines = [TABLES_BEGIN, "",
             f"Command: `{command}` ({_dt.datetime.now().isoformat(timespec='minutes')}, "
             f"git {git or '?'}, {_strace_version()}).", ""]
    order: list[str] = []
    for t in traced:
        if t.workload not in order:
            order.append(t.workload)
    for name in order:
        rows = [t for t in traced if t.workload == name]
        lines += [f"### {name}: system calls per {rows[0].unit}", "", *render_table(rows),
                  ""]
    lines.append(TABLES_END)
    return lines


def _strace_version() -> str:
    out = subprocess.run(["strace", "-V"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else "strace"
    return first.replace(" -- version", "")


INTRO = [
    "## System calls per request and per connection (strace)",
    "",
    "Counted with `python -m bench.syscalls` (`strace -f -ttt` attached to the "
    "server's process tree during the load generator's warm-up, the calls begun in its "
    "measured window counted, each count divided by the "
    "requests the load generator completed in that window, and on churn a connection "
    "makes one request). strace stops the server at every call, so it runs several "
    "times slower while counted: the rates in the last column only say how slow, and "
    "`epoll_wait` (events per wait) and the `accept` loop (connections per wake-up) "
    "batch more than they do untraced, so those two are lower bounds. The CPU figures "
    "of the same servers are in the echo and churn tables above.",
    "",
]


def write_results(path: Path, table_lines: list[str]) -> None:
    """Put the tables into ``path`` between the markers, inside the kept section (made,
    before the key-value section or at the end, when there is none)."""
    text = path.read_text() if path.exists() else ""
    begin, end = SYSCALLS_SECTION
    block = "\n".join(table_lines)
    section = kept_section(text)
    if section is not None and TABLES_BEGIN in section and TABLES_END in section:
        head, rest = section.split(TABLES_BEGIN, 1)
        new_section = head + block + rest.split(TABLES_END, 1)[1]
        text = text.replace(section, new_section)
    else:
        new_section = "\n".join([begin, *INTRO, block, "", end]) + "\n"
        if section is not None:
            text = text.replace(section, new_section.rstrip("\n"))
        else:
            at = text.find("\n## Key-value")
            text = (text + "\n" + new_section if at < 0
                    else text[:at + 1] + new_section + "\n" + text[at + 1:])
    path.write_text(text)
