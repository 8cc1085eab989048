"""The command line: ``reactor serve`` (the argument parser in :mod:`.main`, the
graceful server in :mod:`.graceful`) and ``reactor run-module``.
"""

from .main import main

__all__ = ["main"]
