"""``handlers.echo``: the path the command line and users load the echo service by.

Role: a name only: ``reactor serve echo`` imports this module, and so did every program
before the service moved to :mod:`handlers.services.echo`, where it lives. Must not
import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from handlers.services.echo import (
    EchoHandler,
)

__all__ = [
    "EchoHandler",
]
