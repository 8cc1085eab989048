"""Exceptions raised by the reactor.

Three kinds of failure, three kinds of exception:

* the caller misused the API: :class:`LocalProtocolError` (and :class:`ClosedError`),
  raised to the caller;
* the peer misbehaved: :class:`RemoteProtocolError`, which closes that connection and
  is logged at debug or info level;
* a bug in a handler: whatever it raised, logged with the connection's address and
  state; the reactor keeps serving.

Socket-free: imports nothing but the standard library's ``builtins``.
"""

from __future__ import annotations

__all__ = [
    "DEADLINE_KINDS",
    "ClosedError",
    "DeadlineExceeded",
    "IllegalTransition",
    "LocalProtocolError",
    "ProtocolError",
    "ReactorError",
    "RemoteProtocolError",
]


class ReactorError(Exception):
    """Base class of every exception this package raises on purpose."""


class ProtocolError(ReactorError):
    """Someone broke the rules of a protocol or of the API."""


class LocalProtocolError(ProtocolError):
    """The caller used the API in a way it does not allow."""


class IllegalTransition(LocalProtocolError):
    """A state machine was asked for a transition its table does not have."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class ClosedError(LocalProtocolError):
    """An operation was attempted on a closed reactor, listener or connection."""


#: every per-connection deadline: the reason a :class:`DeadlineExceeded` carries (what
#: the connection's log line says) -> its kind (what the access log and the episode
#: summaries name it by)
DEADLINE_KINDS: dict[str, str] = {
    "idle timeout": "idle",
    "no data received": "first-byte",
    "request deadline": "request",
    "write stalled": "write",
}


class DeadlineExceeded(ReactorError, TimeoutError):
    """A per-connection deadline passed; the connection was closed with this reason."""

    @property
    def kind(self) -> str | None:
        """The deadline's kind (:data:`DEADLINE_KINDS`), None for another reason."""
        return DEADLINE_KINDS.get(str(self))
