"""``handlers.kv``: the path the command line and users load the key-value service by.

Role: a name only: ``reactor serve kv`` imports this module, and so did every program
before the service moved to :mod:`handlers.services.kv`, where it lives. Must not
import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from handlers.services.kv import (
    COMMANDS,
    FLUSH_SIZE,
    Command,
    CommandError,
    KVProtocol,
    KVServer,
    KVStatistics,
    KVStore,
    Scheduler,
    compile_glob,
    glob_match,
)

__all__ = [
    "COMMANDS",
    "FLUSH_SIZE",
    "Command",
    "CommandError",
    "KVProtocol",
    "KVServer",
    "KVStatistics",
    "KVStore",
    "Scheduler",
    "compile_glob",
    "glob_match",
]
