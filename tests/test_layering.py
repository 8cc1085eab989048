"""The layering rules of DESIGN.md, checked on the source, folder by folder.

The folders of ``reactor/`` are its layers (see the README's Development section):

* ``reactor/sansio/``: socket-free. No module in it imports any of socket, select,
  selectors, threading or os, directly or through another project module.
* imports point down only: ``sansio`` <- ``io`` <- ``facades`` <- ``cli``; a layer never
  imports one above it.
* ``reactor`` never imports ``handlers``, except ``reactor/socketserver.py`` (which
  assembles the standard library's namespace) and ``reactor/cli/`` (which loads the
  ready services by name when asked to serve them).
* the socket-free framers of ``handlers`` import no I/O either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REACTOR = ROOT / "reactor"
FORBIDDEN = {"socket", "_socket", "selectors", "threading", "_thread", "os", "select"}

# the layers, bottom up: a module may import its own layer and those below it
LAYERS = ["sansio", "io", "facades", "cli"]
HANDLER_IO_MODULES = {"classic"}  # the blocking handlers wrap a socket by nature
MAY_IMPORT_HANDLERS = {"reactor.socketserver", "reactor.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Modules imported by ``path``, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
                names.add(module)
                # "from .. import loop" and "from ..io import loop" may name modules
                names.update(f"{module}.{a.name}" for a in node.names)
            elif node.module:
                names.add(node.module)
    return names


def source_of(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def external_closure(module: str) -> set[str]:
    """Every non-project top-level module reachable from ``module``."""
    seen: set[str] = set()
    todo = [module]
    external: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = source_of(name)
        if path is None:
            continue
        for imported in imports_of(path):
            if imported.split(".")[0] in ("reactor", "handlers"):
                todo.append(imported)
            else:
                external.add(imported.split(".")[0])
    return external


def modules_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "reactor" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def socket_free_modules() -> list[str]:
    mods = [module_name(p) for p in modules_in(REACTOR / "sansio")]
    for path in modules_in(ROOT / "handlers"):
        if path.stem not in HANDLER_IO_MODULES and path.stem != "__init__":
            mods.append(module_name(path))
    return mods


def test_every_reactor_module_is_in_a_layer_or_the_public_face() -> None:
    face = {"reactor", "reactor.__main__", "reactor.embed", "reactor.socketserver",
            "reactor.testing"}
    loose = [m for m in map(module_name, modules_in(REACTOR))
             if m not in face and not m.startswith("reactor.embed.")
             and layer_of(m) is None]
    assert not loose, f"modules outside the layer folders: {loose}"


@pytest.mark.parametrize("module", socket_free_modules())
def test_socket_free_modules_import_no_io(module: str) -> None:
    bad = external_closure(module) & FORBIDDEN
    assert not bad, f"{module} reaches {sorted(bad)}"


@pytest.mark.parametrize("path", modules_in(REACTOR), ids=lambda p: module_name(p))
def test_layers_import_downwards_only(path: Path) -> None:
    here = layer_of(module_name(path))
    if here is None:
        return
    above = set(LAYERS[LAYERS.index(here) + 1:])
    bad = {n for n in imports_of(path) if layer_of(n) in above}
    assert not bad, f"{module_name(path)} ({here}) imports a layer above it: {sorted(bad)}"


@pytest.mark.parametrize("path", modules_in(REACTOR), ids=lambda p: module_name(p))
def test_reactor_does_not_import_handlers(path: Path) -> None:
    name = module_name(path)
    if any(name == m or name.startswith(m + ".") for m in MAY_IMPORT_HANDLERS):
        return
    assert not {n for n in imports_of(path) if n.split(".")[0] == "handlers"}


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    folder = REACTOR / "sansio"
    bad = folder / "_layering_probe.py"
    bad.write_text("import socket\nfrom os import path\nfrom ..io import loop\n")
    try:
        names = imports_of(bad)
        assert {"socket", "os", "reactor.io.loop"} <= names
        assert external_closure("reactor.sansio._layering_probe") & FORBIDDEN
        assert layer_of("reactor.io.loop") == "io"
    finally:
        bad.unlink()
