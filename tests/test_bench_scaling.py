"""``python -m bench.scaling``: its section of the report, figures and prediction, and a
run of the benchmark keeping it."""

from __future__ import annotations

from pathlib import Path

from bench import scaling
from bench.kept import APART_SECTIONS, SCALING_SECTION, kept_section, write_section


def rows() -> list[scaling.Row]:
    return [
        scaling.Row("echo", "1 process", 100_000, 2.0, 1.0, None),
        scaling.Row("echo", "2 workers, shared socket", 150_000, 2.0, 1.5, None),
        scaling.Row("echo", "2 workers behind HAProxy", 40_000, 2.0, 0.5, 0.4),
    ]


def test_the_section_has_the_figures_and_what_they_predict() -> None:
    text = scaling.section(rows(), ["kv, 1 process: redis-benchmark is missing"], 2.0)
    lines = text.splitlines()
    assert lines[0] == SCALING_SECTION[0] and lines[-1] == SCALING_SECTION[1]
    assert "| echo | 1 process | 50,000 | 0.50 | 100,000 |  |" in lines
    # HAProxy: 0.4 CPU-s for 40 000 requests, 10 us each, 100 000 per core-second
    assert "| echo | 2 workers behind HAProxy | 20,000 | 0.25 | 80,000 | 10.0 us |" in lines
    assert any("N x 100,000/s" in line and "M x N x 80,000/s" in line
               and "100,000 requests per second per core" in line for line in lines)
    assert "SKIP scaling: kv, 1 process: redis-benchmark is missing" in lines
    assert "Where that stops holding" in text and "ephemeral port range" in text


def test_the_section_is_kept_and_replaced(tmp_path: Path) -> None:
    assert SCALING_SECTION in APART_SECTIONS  # bench.run keeps it when it rewrites
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Not measured\n\nnothing\n")
    write_section(results, SCALING_SECTION, scaling.section(rows(), [], 2.0))
    write_section(results, SCALING_SECTION, scaling.section(rows()[:1], [], 2.0))
    text = results.read_text()
    assert text.count(SCALING_SECTION[0]) == 1 and "HAProxy CPU" in text
    section = kept_section(text, SCALING_SECTION)
    assert section is not None and "behind HAProxy |" not in section
    assert text.index(SCALING_SECTION[0]) < text.index("## Not measured")
