"""socketreactor: a selectors-based reactor with an explicit connection table.

The public names of the reactor core. The classic servers live in
:mod:`reactor.socketserver`; handlers users subclass live in the ``handlers`` package.
"""

from __future__ import annotations

import logging

from .clock import Clock, FakeClock, MonotonicClock
from .connection import LIFECYCLE, Connection, ConnEvent, ConnState, Row
from .errors import (
    ClosedError,
    DeadlineExceeded,
    IllegalTransition,
    LocalProtocolError,
    ProtocolError,
    ReactorError,
    RemoteProtocolError,
)
from .listeners import Listener
from .loop import Reactor, ReactorStatistics
from .table import ConnectionTable, TableStatistics
from .timers import Handle, TimerHandle
from .transports import DatagramTransport, StreamTransport, TransportOptions

__all__ = [
    "LIFECYCLE",
    "Clock",
    "ClosedError",
    "ConnEvent",
    "ConnState",
    "Connection",
    "ConnectionTable",
    "DatagramTransport",
    "DeadlineExceeded",
    "FakeClock",
    "Handle",
    "IllegalTransition",
    "Listener",
    "LocalProtocolError",
    "MonotonicClock",
    "ProtocolError",
    "Reactor",
    "ReactorError",
    "ReactorStatistics",
    "RemoteProtocolError",
    "Row",
    "StreamTransport",
    "TableStatistics",
    "TimerHandle",
    "TransportOptions",
]

__version__ = "0.1.0"

logging.getLogger("reactor").addHandler(logging.NullHandler())
