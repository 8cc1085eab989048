"""A connection's state changes only through its row's transition, and a server's phase
only through its engine's move (issue 11, section 3).

Every module under ``reactor/`` and ``handlers/`` is parsed with :mod:`ast`, and any
assignment to an attribute named ``state`` outside ``reactor/sansio/connection.py`` (where
the lifecycle table, ``Row._init_row`` and ``Row.advance`` live) is a failure: plain,
augmented and annotated assignments, tuple and list targets, ``for``/``with``/comprehension
targets, ``del``, and ``setattr(x, "state", ...)`` / ``object.__setattr__(x, "state", ...)``.
The same finder holds a server's ``phase`` to ``reactor/facades/pipeline.py``, where
``RequestPath.__init__`` sets it once and ``RequestPath.move`` applies
``SERVER_LIFECYCLE``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reactor", "handlers")
THE_TABLE = "reactor/sansio/connection.py"
THE_ENGINE = "reactor/facades/pipeline.py"


def _targets(node: ast.expr) -> list[ast.expr]:
    """``node`` and, for tuple/list/starred targets, everything nested in it."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return [t for elt in node.elts for t in _targets(elt)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return [node]


def _is_attr(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == name


def _setattr_name(call: ast.Call) -> str | None:
    """The attribute name a ``setattr(obj, "name", v)`` or ``X.__setattr__(obj, "name",
    v)`` call sets, when it is a literal."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "setattr":
        index = 1
    elif isinstance(func, ast.Attribute) and func.attr == "__setattr__":
        # obj.__setattr__("name", v) or type.__setattr__(obj, "name", v)
        index = 0 if len(call.args) == 2 else 1
    else:
        return None
    if len(call.args) > index:
        arg = call.args[index]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def state_assignments(source: str, filename: str = "<probe>", name: str = "state") -> list[int]:
    """The line numbers in ``source`` that assign (or delete) an attribute ``name``."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor,
                               ast.comprehension)):
            targets = [node.target]
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets = [node.optional_vars]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and _setattr_name(node) == name:
            lines.append(node.lineno)
            continue
        for target in targets:
            lines.extend(t.lineno for t in _targets(target) if _is_attr(t, name))
    return sorted(lines)


def library_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def sites_by_module(name: str = "state") -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in library_modules():
        rel = path.relative_to(ROOT).as_posix()
        lines = state_assignments(path.read_text(), rel, name)
        if lines:
            found[rel] = lines
    return found


def test_state_changes_only_through_the_lifecycle_table() -> None:
    found = sites_by_module()
    assert THE_TABLE in found, "the table itself must be found (is the finder blind?)"
    del found[THE_TABLE]
    assert not found, (
        "assignments to .state outside the lifecycle table (use Row.advance, or a named "
        f"transition beside LIFECYCLE in {THE_TABLE}): {found}"
    )


def test_a_server_phase_changes_only_through_the_engine_move() -> None:
    # (reactor/cli/graceful.py's per-connection drain phase is another thing)
    found = {rel: lines for rel, lines in sites_by_module("phase").items()
             if rel.startswith("reactor/facades/")}
    assert set(found) == {THE_ENGINE}, found
    source = (ROOT / THE_ENGINE).read_text()
    tree = ast.parse(source)
    owners = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if getattr(inner, "lineno", None) in found[THE_ENGINE]:
                    owners[inner.lineno] = node.name
    assert sorted(set(owners.values())) == ["__init__", "move"], owners


PROBES = [
    ("row.state = X", 1),
    ("a, (b, row.state) = 1, (2, X)", 1),
    ("[a, *row.state] = []", 1),
    ("row.state += 1", 1),
    ("row.state: ConnState = X", 1),
    ("for row.state in states: pass", 1),
    ("with manager() as row.state: pass", 1),
    ("[0 for row.state in states]", 1),
    ("del row.state", 1),
    ("setattr(row, 'state', X)", 1),
    ("object.__setattr__(row, 'state', X)", 1),
    ("row.__setattr__('state', X)", 1),
    ("row.state = other.state = X", 2),
    # not assignments to an attribute named state
    ("state = X", 0),
    ("row.states = X", 0),
    ("x = row.state", 0),
    ("setattr(row, 'stage', X)", 0),
    ("row.advance(EVENT)", 0),
]


@pytest.mark.parametrize(("source", "count"), PROBES)
def test_the_finder_sees_every_form_of_assignment(source: str, count: int) -> None:
    assert len(state_assignments(source)) == count


def test_a_probe_site_in_a_library_module_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = ROOT / "reactor" / "io" / "stream.py"
    original = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        text = original(self, *args, **kwargs)  # type: ignore[arg-type]
        if self == probe:
            text += "\n\ndef _probe(row):\n    row.state = None\n"
        return text

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(AssertionError, match=r"reactor/io/stream\.py"):
        test_state_changes_only_through_the_lifecycle_table()
    assert len(sites_by_module()["reactor/io/stream.py"]) == 1
