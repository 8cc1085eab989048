"""The layering rules of DESIGN.md, checked on the source.

* Socket-free modules import none of socket, selectors, threading, os (directly or
  through another project module): the socket-free ``reactor`` modules, and every
  module in the folders of ``handlers`` (framers, services) and beside them but
  ``classic``.
* ``reactor`` never imports ``handlers`` except in ``reactor/socketserver.py`` (and the
  command line, which loads the ready services by name when asked to serve them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"socket", "_socket", "selectors", "threading", "_thread", "os", "select"}

# modules that must stay socket-free (the sans-I/O core and the framers)
SOCKET_FREE_REACTOR = [
    "errors", "machine", "clock", "timers", "connection", "table", "request_buffer",
]
HANDLER_IO_MODULES = {"classic"}  # the blocking handlers wrap a socket by nature
REACTOR_MAY_IMPORT_HANDLERS = {"socketserver", "cli", "runmodule"}


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Top-level module names imported by ``path`` (relative imports resolved against
    ``package``, the dotted package the file is in; by default its folder's name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = (package or path.parent.name).split(".")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                names.add(module)
                if not node.module:
                    names.update(f"{base}.{a.name}" for a in node.names)
            elif node.module:
                names.add(node.module)
    return names


def module_path(name: str) -> Path | None:
    """The file of the project module ``name`` (a package's ``__init__.py``), if any."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def project_closure(module: str) -> set[str]:
    """Every module reachable from ``module`` through project-internal imports."""
    seen: set[str] = set()
    todo = [module]
    external: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        pkg = name.partition(".")[0]
        path = module_path(name)
        if path is None:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in imports_of(path, package):
            top = imported.split(".")[0]
            if top in ("reactor", "handlers") and imported != pkg:
                if imported.count(".") >= 1:
                    todo.append(imported)
            else:
                external.add(top)
    return external


def socket_free_modules() -> list[str]:
    mods = [f"reactor.{m}" for m in SOCKET_FREE_REACTOR]
    # every module of every handlers/ folder (framers/, services/, services/kv/ ...),
    # the folders' __init__ included; not the package's own, which re-exports classic
    for path in sorted((ROOT / "handlers").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1 and ".".join(parts[1:]) not in HANDLER_IO_MODULES:
            mods.append(".".join(parts))
    return mods


@pytest.mark.parametrize("module", socket_free_modules())
def test_socket_free_modules_import_no_io(module: str) -> None:
    bad = project_closure(module) & FORBIDDEN
    assert not bad, f"{module} reaches {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "reactor").glob("*.py")), ids=lambda p: p.name)
def test_reactor_does_not_import_handlers(path: Path) -> None:
    if path.stem in REACTOR_MAY_IMPORT_HANDLERS:
        return
    assert not {n for n in imports_of(path) if n.split(".")[0] == "handlers"}


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nfrom os import path\nfrom . import timers\n")
    names = imports_of(bad)
    assert {"socket", "os"} <= names
