"""What a reactor reports to Prometheus: its families, read when a scrape arrives.

:func:`reactor_families` reads a reactor (its statistics, its listeners, the totals of
:mod:`.tallies`, its :mod:`.health` when enabled) into :class:`~reactor.sansio.promtext.
Family` objects. Everything is read at scrape time; nothing is counted for it on the
per-request path (see :mod:`.tallies` for where the rare events are counted).

Metric names (all prefixed ``reactor_``; counters end in ``_total``, units are in the
name):

* ``connections{state}`` -- rows in the table by lifecycle state (every state, zeros
  included); ``listener_connections{listener}`` -- open per listener.
* ``listener_accepted_total``, ``listener_refused_total{reason}`` (``cap``,
  ``allow-list``), ``listener_paused_total{reason}`` (an errno name: ``EMFILE`` ...).
* ``connections_opened_total``, ``connections_closed_total``, and
  ``connection_closes_total{reason}``: stream connections closed, by the access log's
  reasons (:mod:`reactor.sansio.closes`: ``client-eof``, ``server-close``,
  ``shutdown``, ``reset``, ``error``, ``idle-timeout`` ..., ``cap``), counted by the
  transports as each connection leaves the table (:mod:`.closes`); only reasons seen.
* ``received_bytes_total``, ``sent_bytes_total``, ``write_buffered_bytes``,
  ``discarded_bytes_total``.
* ``loop_iterations_total``, ``timers_pending``, ``ready_callbacks``,
  ``errors_total{kind}`` (``callback``: a callback raised; ``protocol``: a
  connection's protocol raised, and the connection was closed; ``accept``: accept
  failed for another reason than a resource limit).
* with loop health: ``loop_lag_seconds``, ``loop_lag_max_seconds``,
  ``slow_callbacks_total``, ``slow_callback_threshold_seconds``.

Must not import the facades or the command line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..sansio.connection import ConnState
from ..sansio.promtext import Family
from ..sansio.snapshot import format_address
from . import tallies

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["reactor_families"]

_ERROR_KINDS = ("accept", "callback", "protocol")


def _listener_families(reactor: Reactor) -> list[Family]:
    active = Family("reactor_listener_connections", "gauge",
                    "Connections open now, per listener.")
    accepted = Family("reactor_listener_accepted_total", "counter",
                      "Connections accepted, per listener.")
    refused = Family("reactor_listener_refused_total", "counter",
                     "Clients refused, per listener and reason (cap, allow-list).")
    paused = Family("reactor_listener_paused_total", "counter",
                    "Times accepting paused for lack of resources, per listener and errno.")
    for listener in reactor.listeners:
        where = format_address(listener.address)
        active.add(listener.active, listener=where)
        accepted.add(listener.accepted, listener=where)
        refused.add(listener.refused, listener=where, reason="cap")
        refused.add(tallies.read(listener, "refused").get("allow-list", 0),
                    listener=where, reason="allow-list")
        for reason, n in sorted(tallies.read(listener, "paused").items()):
            paused.add(n, listener=where, reason=reason)
    return [active, accepted, refused, paused]


def reactor_families(
    reactor: Reactor, *, uptime: float | None = None,
) -> Iterable[Family]:
    """The families of ``reactor`` (see the module docstring).

    Args:
        uptime: seconds since the observed server started, if known.
    """
    stats = reactor.statistics()
    families: list[Family] = []
    if uptime is not None:
        families.append(Family("reactor_uptime_seconds", "gauge",
                               "Seconds since the server started.").add(round(uptime, 3)))
    by_state = Family("reactor_connections", "gauge",
                      "Connections in the table now, by lifecycle state.")
    for state in ConnState:
        by_state.add(stats.by_state.get(state.name, 0), state=state.value)
    families.append(by_state)
    families += _listener_families(reactor)
    families.append(Family("reactor_connections_opened_total", "counter",
                           "Connections ever added to the table.").add(stats.opened_total))
    families.append(Family("reactor_connections_closed_total", "counter",
                           "Connections ever removed from the table.").add(stats.closed_total))
    closes = Family("reactor_connection_closes_total", "counter",
                    "Connections closed, by reason.")
    for reason, n in stats.closes.items():  # sorted by the table
        closes.add(n, reason=reason)
    families.append(closes)
    families += [
        Family("reactor_received_bytes_total", "counter", "Bytes received.").add(
            stats.bytes_in),
        Family("reactor_sent_bytes_total", "counter", "Bytes sent.").add(stats.bytes_out),
        Family("reactor_write_buffered_bytes", "gauge",
               "Bytes queued for writing now.").add(stats.write_buffered),
        Family("reactor_discarded_bytes_total", "counter",
               "Bytes aborted connections dropped unsent.").add(stats.discarded),
        Family("reactor_loop_iterations_total", "counter",
               "Loop iterations (one poll each).").add(stats.iterations),
        Family("reactor_timers_pending", "gauge",
               "Scheduled, uncancelled timers.").add(stats.pending_timers),
        Family("reactor_ready_callbacks", "gauge",
               "Callbacks waiting for the next iteration.").add(stats.ready_callbacks),
    ]
    errors = Family("reactor_errors_total", "counter",
                    "Errors by kind (callback: a callback raised; protocol: a connection's "
                    "protocol raised; accept: accept failed).")
    counted = tallies.read(reactor, "errors")
    for kind in sorted(set(_ERROR_KINDS) | set(counted)):
        errors.add(counted.get(kind, 0), kind=kind)
    families.append(errors)
    health = reactor.health
    if health is not None:
        families.append(Family("reactor_loop_lag_seconds", "gauge",
                               "How late the lag probe's timer ran, last reading.").add(
                                   health.lag))
        families.append(Family("reactor_loop_lag_max_seconds", "gauge",
                               "The largest lag of the last minute's readings.").add(
                                   health.lag_max))
        if health.slow_callback_duration is not None:
            families.append(Family(
                "reactor_slow_callback_threshold_seconds", "gauge",
                "How long a callback may hold the loop before it counts as slow.").add(
                    health.slow_callback_duration))
            families.append(Family("reactor_slow_callbacks_total", "counter",
                                   "Callbacks that held the loop past the threshold.").add(
                                       health.slow_callbacks))
    return families
