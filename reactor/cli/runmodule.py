"""``reactor run-module MODULE [ARGS...]``: run a program on the socketserver facades.

Runs ``MODULE`` as ``python -m MODULE ARGS...`` would, after :func:`install` has bound
the name ``socketserver`` to :mod:`reactor.socketserver`, so a program that imports
``socketserver`` -- directly or through ``http.server``, ``xmlrpc.server`` and the like
-- serves on the reactor without being edited::

    python -m reactor run-module http.server 8000 --bind 127.0.0.1
    python -m reactor.cli.runmodule --log-level info mypackage.server --port 0

The module sees ``sys.argv == [its file, *ARGS]`` and runs as ``__main__``; a
``SystemExit`` it raises ends the command with that status.

Forbidden imports: none beyond the standard library and :mod:`reactor.socketserver`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from ..socketserver import install

__all__ = ["main"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactor run-module",
        description="Run MODULE (as 'python -m MODULE ARGS...' would) with 'socketserver' "
                    "bound to reactor.socketserver.",
    )
    parser.add_argument("--log-level", metavar="LEVEL", default=None,
                        help="log to stderr at LEVEL (debug, info, warning, error); by "
                             "default logging is left to the module")
    parser.add_argument("module", metavar="MODULE", nargs="?",
                        help="the module to run as __main__ (a module name, as for "
                             "python -m, not a file name)")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="arguments for the module")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``MODULE`` with ``ARGS`` on the facades.

    Args:
        argv: ``[--log-level LEVEL] MODULE [ARGS...]`` (default: ``sys.argv[1:]``).

    Returns:
        0 when the module ran to its end; 2 for a usage error or a module that cannot
        be found. A ``SystemExit`` raised by the module propagates unchanged.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help or a usage error
        return exc.code if isinstance(exc.code, int) else 2
    if args.module is None:
        parser.print_usage(sys.stderr)
        return _error("name the MODULE to run, e.g. 'reactor run-module http.server 8000'")
    if args.log_level is not None:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            parser.print_usage(sys.stderr)
            return _error(f"--log-level {args.log_level} is not a log level; choose from "
                          "debug, info, warning, error or critical")
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    # as python -m does: the current directory first, so a module beside us is found
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    install()
    problem = _unrunnable(args.module)
    if problem is not None:
        return _error(problem)
    saved_argv = sys.argv
    sys.argv = [args.module, *args.args]
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved_argv
    return 0


def _error(message: str) -> int:
    sys.stderr.write(f"reactor run-module: error: {message}\n")
    return 2


def _unrunnable(module: str) -> str | None:
    """Why ``module`` cannot be run, with what to write instead; None if it can."""
    path = Path(module)
    if module.endswith(".py") or "/" in module or os.sep in module:
        name = path.stem if path.suffix == ".py" else path.name
        where = str(path.parent)
        if where in ("", "."):
            place = "from the directory it is in"
        else:
            place = f"from {where}, or with PYTHONPATH={where}"
        kind = "a file" if path.is_file() else "a file name"
        return (f"{module} is {kind}; run-module takes a module name, as python -m does: "
                f"write 'reactor run-module {name}' ({place})")
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, an empty name
        found = False
    if found:
        return None
    return (f"no module named {module} (looked in the current directory and on sys.path; "
            "set PYTHONPATH to add a directory)")


if __name__ == "__main__":
    sys.exit(main())
