"""``handlers.chat``: the path the command line and users load the chat service by.

Role: a name only: ``reactor serve chat`` imports this module, and so did every program
before the service moved to :mod:`handlers.services.chat`, where it lives. Must not
import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

from handlers.services.chat import (
    ChatHandler,
    ChatServer,
    ChatStatistics,
    default_server,
)

__all__ = [
    "ChatHandler",
    "ChatServer",
    "ChatStatistics",
    "default_server",
]
