"""Transition tables for enum-based state machines.

A machine's transitions are data: a mapping ``{state: {event: next_state}}`` written in
one place. :meth:`TransitionTable.next` looks a pair up and raises
:class:`~reactor.sansio.errors.IllegalTransition` for any pair the table does not list, so an
impossible move is a loud bug, never a silent corruption of state.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Generic, TypeVar

from .errors import IllegalTransition

__all__ = ["TransitionTable"]

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


class TransitionTable(Generic[S, E]):
    """An immutable ``(state, event) -> state`` table.

    Args:
        name: what the machine describes, used in error messages.
        transitions: ``{state: {event: next_state}}``.
    """

    __slots__ = ("_name", "_table")

    def __init__(self, name: str, transitions: Mapping[S, Mapping[E, S]]) -> None:
        self._name = name
        self._table: dict[S, dict[E, S]] = {s: dict(m) for s, m in transitions.items()}

    def next(self, state: S, event: E) -> S:
        """Return the state that ``event`` leads to from ``state``.

        Raises:
            IllegalTransition: the table has no such transition.
        """
        try:
            return self._table[state][event]
        except KeyError:
            raise IllegalTransition(
                f"{self._name}: no transition for {event.name} in state {state.name}"
            ) from None

    def allows(self, state: S, event: E) -> bool:
        """Whether ``event`` is legal in ``state``."""
        return event in self._table.get(state, ())

    def events(self, state: S) -> frozenset[E]:
        """The events legal in ``state``."""
        return frozenset(self._table.get(state, ()))

    def edges(self) -> Iterator[tuple[S, E, S]]:
        """Every ``(state, event, next_state)``, e.g. to draw the diagram."""
        for state, moves in self._table.items():
            for event, target in moves.items():
                yield state, event, target
