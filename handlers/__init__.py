"""What users subclass to write a service on the reactor.

Socket-free except for the classic blocking handlers, which wrap a socket by nature.
"""

from __future__ import annotations

__all__: list[str] = []
