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
import runpy
import sys
from collections.abc import Sequence

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
    parser.add_argument("module", metavar="MODULE", help="the module to run as __main__")
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
    if args.log_level is not None:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            parser.print_usage(sys.stderr)
            sys.stderr.write(f"reactor run-module: unknown log level {args.log_level!r}\n")
            return 2
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    install()
    try:
        found = importlib.util.find_spec(args.module) is not None
    except (ImportError, ValueError):  # a missing parent package, an empty name
        found = False
    if not found:
        sys.stderr.write(f"reactor run-module: no module named {args.module!r}\n")
        return 2
    saved_argv = sys.argv
    sys.argv = [args.module, *args.args]
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
