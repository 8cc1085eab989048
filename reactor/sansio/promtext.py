"""Prometheus's text exposition format (version 0.0.4), written from plain numbers.

A :class:`Family` is one metric: its name, type, help and samples (label values and a
number). :func:`render` writes families in the order given, each with its ``# HELP``
and ``# TYPE`` lines, label values escaped as the format asks (backslash, double quote,
newline) and numbers as Prometheus reads them (``+Inf``, ``NaN``).

Names follow Prometheus's conventions: base units in the name (``_seconds``,
``_bytes``), ``_total`` on counters. :func:`check_name` refuses the others.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["CONTENT_TYPE", "Family", "check_name", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES: Final = ("counter", "gauge")


def check_name(name: str, kind: str) -> str:
    """``name`` if it is a valid metric name for a ``kind`` (counter or gauge).

    Raises:
        ValueError: not a valid name, a counter without ``_total``, or a gauge with it.
    """
    if not _NAME.match(name) or kind not in _TYPES:
        raise ValueError(f"bad metric {name!r} of type {kind!r}")
    if (kind == "counter") != name.endswith("_total"):
        raise ValueError(f"{name!r}: counters, and only counters, end in _total")
    return name


@dataclass
class Family:
    """One metric and its samples.

    Attributes:
        name: the metric's name (checked by :func:`check_name`).
        kind: ``counter`` or ``gauge``.
        help: one line saying what it counts.
        samples: ``(labels, value)`` pairs.
    """

    name: str
    kind: str
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_name(self.name, self.kind)

    def add(self, value: float, **labels: str) -> Family:
        """Add a sample; returns the family, so adds chain."""
        for label in labels:
            if label not in _GOOD_LABELS:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise ValueError(f"bad label name {label!r}")
                _GOOD_LABELS.add(label)
        self.samples.append((labels, value))
        return self


_GOOD_LABELS: Final[set[str]] = set()  # label names checked once (a scrape is frequent)


def _escape(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> bytes:
    """The families as one exposition (UTF-8), ending with a newline."""
    out: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {family.name} {help_text}")
        out.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                out.append(f"{family.name}{{{inner}}} {_number(value)}")
            else:
                out.append(f"{family.name} {_number(value)}")
    return ("\n".join(out) + "\n").encode("utf-8")
