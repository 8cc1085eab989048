"""socketreactor: a selectors-based reactor with an explicit connection table.

The public names of the reactor core. The classic servers live in
:mod:`reactor.socketserver`; handlers users subclass live in the ``handlers`` package.
"""

from __future__ import annotations

import logging

from .io.control import ControlServer, serve_control
from .io.datagram import DatagramTransport
from .io.health import LoopHealth
from .io.listeners import Listener
from .io.loop import Reactor, ReactorStatistics
from .io.observe import ObserveServer, serve_observe
from .io.stream import StreamTransport
from .io.tls import TLSLayer
from .io.transports import TransportOptions
from .sansio.clock import Clock, FakeClock, MonotonicClock
from .sansio.connection import LIFECYCLE, Connection, ConnEvent, ConnState, Row
from .sansio.errors import (
    ClosedError,
    DeadlineExceeded,
    IllegalTransition,
    LocalProtocolError,
    ProtocolError,
    ReactorError,
    RemoteProtocolError,
)
from .sansio.table import ConnectionTable, TableStatistics
from .sansio.timers import Handle, TimerHandle
from .sansio.tls import TLSSession, TLSState

__all__ = [
    "LIFECYCLE",
    "Clock",
    "ClosedError",
    "ConnEvent",
    "ConnState",
    "Connection",
    "ConnectionTable",
    "ControlServer",
    "DatagramTransport",
    "DeadlineExceeded",
    "FakeClock",
    "Handle",
    "IllegalTransition",
    "Listener",
    "LocalProtocolError",
    "LoopHealth",
    "MonotonicClock",
    "ObserveServer",
    "ProtocolError",
    "Reactor",
    "ReactorError",
    "ReactorStatistics",
    "RemoteProtocolError",
    "Row",
    "StreamTransport",
    "TLSLayer",
    "TLSSession",
    "TLSState",
    "TableStatistics",
    "TimerHandle",
    "TransportOptions",
    "serve_control",
    "serve_observe",
]

__version__ = "0.1.0"

logging.getLogger("reactor").addHandler(logging.NullHandler())
