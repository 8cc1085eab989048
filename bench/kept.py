"""The sections of ``bench/RESULTS.md`` that other commands than ``bench.run`` write,
and which a run of the benchmark keeps when it rewrites the file.

Each section sits between two HTML comments (its markers). A section may hold target
lines (``PASS ...``, ``FAIL ...``, ``INFO ...``, ``SKIP ...`` at the start of a line):
:func:`write_section` copies them into the report's Targets block, replacing the lines
the section's previous version put there, and :mod:`bench.report` does the same when
it rewrites the report. Standard library only; must not import the measuring modules.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "APART_SECTIONS",
    "COMPILED_SECTION",
    "EMBEDDING_SECTION",
    "KV_PIPELINE_SECTION",
    "MEMORY_SECTION",
    "PRECISION_SECTION",
    "RPC_SECTION",
    "SCALING_SECTION",
    "STATUSES",
    "SYSCALLS_SECTION",
    "TLS_SECTION",
    "kept_section",
    "kept_verdicts",
    "write_section",
]

# the system-call section, written by ``python -m bench.syscalls`` (strace needs minutes
# of its own): a run of the benchmark keeps it, after the echo and churn tables
SYSCALLS_SECTION = ("<!-- bench.syscalls -->", "<!-- /bench.syscalls -->")
# the pipelined kv figures of ``python -m bench.kv_pipeline``, kept after the kv table
KV_PIPELINE_SECTION = ("<!-- bench.kv_pipeline -->", "<!-- /bench.kv_pipeline -->")
# where an idle connection's bytes go (tracemalloc, written by hand), kept after the
# idle table
MEMORY_SECTION = ("<!-- memory -->", "<!-- /memory -->")
# the TLS and Sun RPC figures of ``python -m bench.tls`` and ``python -m bench.rpc``
# (``make bench`` runs them after ``bench.run``): kept after the idle tables, their
# target lines repeated in the Targets block
TLS_SECTION = ("<!-- bench.tls -->", "<!-- /bench.tls -->")
RPC_SECTION = ("<!-- bench.rpc -->", "<!-- /bench.rpc -->")
# the embeddings' fairness figures of ``python -m bench.embedding``
EMBEDDING_SECTION = ("<!-- bench.embedding -->", "<!-- /bench.embedding -->")
# what the mypyc prototype of a compiled hot path measured (``bench/compiled.py``,
# written by hand)
COMPILED_SECTION = ("<!-- compiled -->", "<!-- /compiled -->")
# workers, --reuse-port and HAProxy in front: ``python -m bench.scaling``
SCALING_SECTION = ("<!-- bench.scaling -->", "<!-- /bench.scaling -->")
# what was tried for the benchmark's own precision (written by hand)
PRECISION_SECTION = ("<!-- precision -->", "<!-- /precision -->")
APART_SECTIONS = (TLS_SECTION, RPC_SECTION, EMBEDDING_SECTION, COMPILED_SECTION,
                  SCALING_SECTION, PRECISION_SECTION)

STATUSES = ("PASS", "FAIL", "SKIP", "INFO")
_TARGETS = "## Targets\n\n```\n"
# where a section not yet in the report goes: before the first of these headings
_BEFORE = ("## Not measured", "## Servers", "## Method")


def kept_section(text: str, markers: tuple[str, str] = SYSCALLS_SECTION) -> str | None:
    """A kept section of a report's text (the system calls' by default), markers
    included, or None."""
    begin, end = markers
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return text[start:stop + len(end)]


def kept_verdicts(section: str) -> list[tuple[str, str]]:
    """The target lines of a section, as (status, text) pairs."""
    out = []
    for line in section.splitlines():
        status, _, text = line.partition(" ")
        if status in STATUSES and text.strip():
            out.append((status, text.strip()))
    return out


def _retarget(text: str, old: list[tuple[str, str]], new: list[tuple[str, str]]) -> str:
    """The report with the ``old`` target lines taken out of its Targets block and the
    ``new`` ones added at its end (unchanged when it has no Targets block)."""
    start = text.find(_TARGETS)
    if start < 0:
        return text
    body_start = start + len(_TARGETS)
    body_end = text.find("```", body_start)
    if body_end < 0:
        return text
    gone = {f"{s} {t}" for s, t in old}
    lines = [ln for ln in text[body_start:body_end].splitlines()
             if ln and ln.strip() not in gone]
    lines += [f"{s} {t}" for s, t in new]
    return text[:body_start] + "".join(ln + "\n" for ln in lines) + text[body_end:]


def write_section(path: Path, markers: tuple[str, str], section: str) -> None:
    """Put ``section`` (markers included) into the report at ``path``: in place of its
    previous version, else before the report's closing sections, else at the end (a new
    file holds the section alone); its target lines replace the previous version's in
    the Targets block."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    old = kept_section(text, markers)
    text = _retarget(text, kept_verdicts(old or ""), kept_verdicts(section))
    if old is not None:
        text = text.replace(old, section, 1)
    else:
        spots = [i for heading in _BEFORE if (i := text.find("\n" + heading + "\n")) >= 0]
        if spots:
            at = min(spots) + 1
            text = text[:at] + section + "\n\n" + text[at:]
        else:
            text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
