"""The mypyc prototype's tooling: bench/compiled.py, the ``reactor-compiled`` server row
and the report's kept section about it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from bench import compiled, servers
from bench.plan import Plan
from bench.report import COMPILED_SECTION, Results, write_report


def test_the_report_keeps_the_compiled_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    section = "\n".join([COMPILED_SECTION[0], "### mypyc", "figures", COMPILED_SECTION[1]])
    results.write_text(f"# old\n\n{section}\n\n## Servers\n")
    env = {"command": "python -m bench.run", "date": "today", "git": "abc", "repeat": 1,
           "warmup_s": 0.5, "duration_s": 1.5, "allocator_primed": True,
           "pinning": {"server_cpu": 0, "client_cpu": 1}}
    write_report(results, Results([]), env, [], [], Plan(), 60.0)
    text = results.read_text()
    assert "# old" not in text and section in text


def test_the_compiled_server_is_refused_without_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_OUT", tmp_path / "none")
    reason = servers.unavailable("reactor-compiled")
    assert reason is not None and "not built" in reason


def test_the_compiled_server_is_refused_when_a_module_is_interpreted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a copy with the sources only: the hot path would run interpreted, unnoticed
    for package in ("reactor", "handlers"):
        shutil.copytree(compiled.ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    monkeypatch.setattr(compiled, "DEFAULT_OUT", tmp_path)
    reason = servers.unavailable("reactor-compiled")
    assert reason is not None and "not from a compiled .so" in reason


@pytest.mark.timeout(240)
def test_a_compiled_copy_is_loaded_from_its_extension(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypyc") is None:
        pytest.skip("mypyc is not installed (it comes with mypy, the lint extra)")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    module = "reactor.sansio.timers"  # one small module: a build of seconds
    compiled.build(tmp_path, (module,))
    files = compiled.loaded_files(tmp_path, (module, "reactor.sansio.table"))
    assert files[module].endswith(".so")
    assert files[module].startswith(str(tmp_path))
    assert files["reactor.sansio.table"] == str(tmp_path / "reactor/sansio/table.py")


def test_the_compiled_server_runs_only_when_named() -> None:
    from bench.plan import all_workloads, default_servers_for

    echo = [w for w in all_workloads() if w.service == "echo"]
    assert echo
    for quick in (False, True):
        assert all("reactor-compiled" not in default_servers_for(w, quick) for w in echo)
    assert "reactor-protocol" in default_servers_for(echo[0], False)
