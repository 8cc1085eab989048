"""python -m bench.tls_instructions: instructions per TLS echo request under callgrind.

The measuring itself (valgrind, minutes) is the benchmark's business; these check the
arithmetic (the difference of two loads over the difference of their requests), the
block it writes into the ``bench.tls`` section, and that ``python -m bench.tls`` keeps
that block when it rewrites the section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import tls, tls_instructions
from bench.kept import TLS_SECTION, kept_section, kept_verdicts

REPORT = """\
# results

## Targets

```
FAIL TLS echo 1 KiB x100 conns, reactor requests per server-CPU-second vs asyncio: 0.91x
```

{section}

## Servers
"""

SECTION = "\n".join([TLS_SECTION[0], "## TLS: echo and full handshakes", "", "```",
                     "FAIL TLS echo 1 KiB x100 conns, reactor requests per "
                     "server-CPU-second vs asyncio: 0.91x", "```", "", "| table |",
                     TLS_SECTION[1]])


def fake_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, int]]:
    calls: list[tuple[str, float, int]] = []
    per_request = {"reactor": 40_000, "asyncio": 80_000}

    def one_load(server: str, cert: Path, key: Path, seconds: float, connections: int,
                 size: int, seed: int) -> tuple[int, int]:
        calls.append((server, seconds, seed))
        requests = int(seconds * 1000) + seed
        return 10**9 + per_request[server] * requests + seed, requests

    monkeypatch.setattr(tls_instructions, "one_load", one_load)
    monkeypatch.setattr(tls_instructions, "make_certificate",
                        lambda directory, key_type: (directory / "c", directory / "k"))
    monkeypatch.setattr("bench.apart.build", lambda *args: None)
    return calls


def test_the_block_goes_into_the_tls_section_and_replaces_its_old_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls = fake_loads(monkeypatch)
    results = tmp_path / "RESULTS.md"
    results.write_text(REPORT.format(section=SECTION))
    argv = ["--seeds", "2", "--short", "1", "--long", "2", "--results", str(results)]
    assert tls_instructions.main(argv) == 0
    assert [c[0] for c in calls] == ["reactor"] * 4 + ["asyncio"] * 4
    assert "asyncio / reactor: 2.00" in capsys.readouterr().out
    section = kept_section(results.read_text(), TLS_SECTION)
    assert section is not None and "| table |" in section  # the rest of it stays
    block = kept_section(section, tls_instructions.BLOCK)
    assert block is not None
    assert "| reactor | 40,000 |" in block and "| asyncio | 80,000 |" in block
    assert "`python -m bench.tls_instructions --seeds 2 --short 1 --long 2`" in block
    assert "2.00x" in block
    assert kept_verdicts(block) == []  # no target line of its own
    before = REPORT.format(section=SECTION)
    targets = before[:before.index(TLS_SECTION[0])]
    assert results.read_text().startswith(targets)  # the Targets block as it was
    # a second run replaces the block
    assert tls_instructions.main([*argv[:-2], "--results", str(results)]) == 0
    assert results.read_text().count(tls_instructions.BLOCK[0]) == 1


def test_a_report_without_the_tls_section_gets_one(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake_loads(monkeypatch)
    results = tmp_path / "RESULTS.md"
    assert tls_instructions.main(["reactor", "--results", str(results)]) == 0
    section = kept_section(results.read_text(), TLS_SECTION)
    assert section is not None and "| reactor | 40,000 |" in section
    assert "asyncio" not in section


def test_bench_tls_keeps_the_block_when_it_rewrites_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    block = "\n".join([tls_instructions.BLOCK[0], "kept figures", tls_instructions.BLOCK[1]])
    old = SECTION.replace(TLS_SECTION[1], f"{block}\n{TLS_SECTION[1]}")
    results.write_text(REPORT.format(section=old))
    new: Any = "\n".join([TLS_SECTION[0], "## TLS: a new run", TLS_SECTION[1]])
    kept = tls._keep_instructions(new, results)
    assert kept.startswith(TLS_SECTION[0]) and kept.endswith(TLS_SECTION[1])
    assert "## TLS: a new run" in kept and "kept figures" in kept
    assert tls._keep_instructions(new, tmp_path / "none.md") == new
