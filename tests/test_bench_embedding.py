"""bench/embedding.py's report: the kept section of bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

from bench import embedding
from bench.report import EMBEDDING_SECTION, MEMORY_SECTION, kept_section


def figures(rps: float, p99: float, cpu_us: float | None = None) -> dict[str, float | None]:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99 + 1,
            "iterations": 1000, "cpu_us": cpu_us}


def test_table_ratios_and_verdicts() -> None:
    runs = {"alone": [figures(1000, 5, 40.0)], "asyncio": [figures(800, 25, 50.0)],
            "trio": [figures(600, 10)]}
    lines = embedding.table(runs, {"tk": "no DISPLAY"}, 1, 1.0, 5.0)
    text = "\n".join(lines)
    assert lines[0] == EMBEDDING_SECTION[0] and lines[-1] == EMBEDDING_SECTION[1]
    assert "busy" in text
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "| 0.80 |" in rows["asyncio"] and "**no** | yes |" in rows["asyncio"]
    assert rows["asyncio"].endswith("| 50 µs | 1.25 |")  # CPU per request, vs alone
    assert "| 0.60 |" in rows["trio"] and "yes | **no** |" in rows["trio"]
    assert rows["trio"].endswith("| n/a | n/a |")  # no CPU figure: none shown
    assert "not measured: no DISPLAY" in rows["tk"]


def test_section_goes_after_memory_and_is_replaced_in_place(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# r\n\n{MEMORY_SECTION[0]}\nm\n{MEMORY_SECTION[1]}\n\n## Servers\n")
    first = [EMBEDDING_SECTION[0], "one", EMBEDDING_SECTION[1]]
    embedding.write_section(first, results)
    text = results.read_text()
    assert text.index(MEMORY_SECTION[1]) < text.index("one") < text.index("## Servers")
    embedding.write_section([EMBEDDING_SECTION[0], "two", EMBEDDING_SECTION[1]], results)
    text = results.read_text()
    assert "one" not in text and text.count(EMBEDDING_SECTION[0]) == 1
    assert kept_section(text, EMBEDDING_SECTION) == "\n".join(
        [EMBEDDING_SECTION[0], "two", EMBEDDING_SECTION[1]])
