"""The argument types of ``reactor serve``'s flags: each turns the text of a flag into
its value, or raises :class:`argparse.ArgumentTypeError` with a message that names the
value and what to write instead (argparse adds the flag's name)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..sansio.control import LOG_LEVELS
from ..sansio.workerlife import WorkerDeadlines
from .addresses import parse_bind

__all__ = ["LOG_LEVELS", "bind", "grace_seconds", "log_level", "positive_int",
           "positive_seconds", "seconds", "unix_mode", "whole", "worker_start_timeout",
           "worker_timeout"]

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def whole(minimum: int) -> Callable[[str], int]:
    """The type of a flag that takes a whole number of at least ``minimum``, written in
    digits (no sign, no exponent)."""
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number of at least {minimum}")
        return int(text)
    return parse


def seconds(text: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        limit = "zero or more" if allow_zero else "more than zero"
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be {limit}")
    return value


def positive_seconds(text: str) -> float:
    return seconds(text)


def grace_seconds(text: str) -> float:
    return seconds(text, allow_zero=True)


def worker_start_timeout(text: str) -> float:
    """``--worker-start-timeout``: more than 0, at most a day."""
    return _deadline(text, "start", seconds(text))


def worker_timeout(text: str) -> float:
    """``--worker-timeout``: 0 (off) or 1 to 86400."""
    return _deadline(text, "silence", grace_seconds(text))


def _deadline(text: str, field: str, value: float) -> float:
    try:
        WorkerDeadlines(**{field: value})  # one place holds the ranges
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return value


def bind(text: str) -> str:
    try:
        parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def unix_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an octal mode, e.g. 600 or 660") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r}: the mode must be from 000 to 777")
    return value


def log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level; choose from {', '.join(LOG_LEVELS).lower()}")
    return level
