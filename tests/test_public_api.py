"""The public API: ``__all__`` lists real names, and the installed package is typed."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_MODULES = [
    "reactor", "handlers", "reactor.embed", "reactor.testing", "reactor.socketserver",
    "reactor.cli.graceful", "handlers.classic", "handlers.framers.resp",
    "handlers.services.kv",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing


@pytest.mark.timeout(180)
def test_wheel_ships_both_packages_and_py_typed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=170,
    )
    # setuptools and wheel come with the test extra (the build needs no network)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("socketreactor-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "reactor/py.typed" in names and "handlers/py.typed" in names
    assert "reactor/io/loop.py" in names and "reactor/sansio/connection.py" in names
    assert "handlers/base.py" in names and "handlers/services/kv/__init__.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "reactor = reactor.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # the licence the metadata names is in the wheel, with the authors
    archive = zipfile.ZipFile(wheel)
    licence = next(n for n in names if n.endswith(".dist-info/LICENSE")
                   or "/licenses/LICENSE" in n)
    assert archive.read(licence).decode().startswith("MIT License")
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    text = metadata.decode()
    assert "License: MIT" in text and "Author: The socketreactor developers" in text
