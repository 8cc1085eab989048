"""An optional compiled copy of the reactor's hot path, made with mypyc: a prototype
to measure, never what is installed. Measured and not adopted: the figures and the
reasons are in ``bench/RESULTS.md`` (the section kept between ``<!-- compiled -->``
markers).

Usage::

    python -m bench.compiled [--out build/compiled] [--check]

Copies ``reactor/`` and ``handlers/`` into ``--out``, then compiles the modules of
:data:`MODULES` there with mypyc (from the same typed source the pure package runs):
each becomes a ``.so`` beside its ``.py``, and the import system takes the extension
first. Everything else in the copy stays interpreted; the package in the tree is not
touched. ``--check`` only imports the copy in a child process and says, module by
module, which file was loaded.

The benchmark's ``reactor-compiled`` server (:mod:`bench.servers`) runs the same echo
server as ``reactor-protocol`` with this copy first on ``sys.path``; it refuses to run
when a module of :data:`MODULES` was not loaded from its ``.so``, and runs only when
named (``python -m bench.instructions reactor-compiled``, ``python -m bench.run
--servers reactor-compiled,...``).

Needs mypyc (it comes with mypy, the lint extra) and a C compiler with the Python
headers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

__all__ = ["DEFAULT_OUT", "MODULES", "build", "loaded_files", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "compiled"

#: The modules compiled: the loop, the dispatch step, the transports, the listener and
#: the socket-free pieces every request or connection goes through.
MODULES: tuple[str, ...] = (
    "reactor.io.loop",
    "reactor.io.dispatch",
    "reactor.sansio.table",
    "reactor.sansio.timers",
)

_CONFIG = """\
[mypy]
python_version = {major}.{minor}
strict = True
"""


def build(out: Path = DEFAULT_OUT, modules: tuple[str, ...] = MODULES) -> None:
    """Make the compiled copy in ``out`` (removed first)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise SystemExit("bench.compiled: no C compiler (cc) on PATH")
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise SystemExit("bench.compiled: mypyc is not installed (pip install mypy)") \
            from None
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    for package in ("reactor", "handlers"):
        shutil.copytree(ROOT / package, out / package, ignore=ignore)
    config = out / "mypyc.ini"
    config.write_text(_CONFIG.format(major=sys.version_info[0], minor=sys.version_info[1]))
    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in modules]
    subprocess.run([sys.executable, "-m", "mypyc", "--config-file", str(config), *paths],
                   cwd=out, check=True, stdout=subprocess.DEVNULL)


def loaded_files(out: Path = DEFAULT_OUT, modules: tuple[str, ...] = MODULES) -> dict[str, str]:
    """Import ``modules`` from ``out`` in a child process; the file each came from."""
    code = textwrap.dedent(f"""
        import importlib, json, sys
        sys.path.insert(0, {str(out)!r})
        print(json.dumps({{m: importlib.import_module(m).__file__ for m in {list(modules)!r}}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=out)
    files: dict[str, str] = json.loads(done.stdout)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compiled", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="only say what is loaded")
    args = parser.parse_args(argv)
    if not args.check:
        build(args.out)
    bad = 0
    for module, path in loaded_files(args.out).items():
        native = path.endswith(".so")
        bad += not native
        print(f"{module:28} {'compiled' if native else 'INTERPRETED'}  {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
