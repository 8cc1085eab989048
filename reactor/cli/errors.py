"""The command line's usage error, shared by its modules.

A :class:`UsageError` is a problem with what the user asked for -- a flag, a value, a
file, a name -- and ``reactor`` reports its message on one line with exit status 2.
Its message names the flag, variable, key or value at fault and says what to write
instead; it never carries a Python repr or a traceback.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A problem with what the user asked for; reported with exit status 2."""
