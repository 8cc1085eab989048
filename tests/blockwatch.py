"""Whether a thread of this process is blocked in a polling system call (not a test
module).

Tests that must act only once an event loop really waits (to show that a wake-up
reaches a *blocked* loop, or that an idle loop blocks with no timeout) read
``/proc/self/task/TID/syscall`` (Linux): the number and arguments of the system call
the thread is blocked in, or ``running``. :func:`wait_until_blocked` polls it with a
deadline instead of sleeping and hoping the loop got there.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

# system call number -> (name, index of the timeout argument, the value meaning "no
# timeout": -1 for a millisecond count, 0 for a NULL timeval/timespec pointer)
_INT = 0xFFFFFFFF  # -1 in the low 32 bits of the register
_POLLING = {
    "x86_64": {7: ("poll", 2, _INT), 23: ("select", 4, 0), 232: ("epoll_wait", 3, _INT),
               270: ("pselect6", 4, 0), 271: ("ppoll", 2, 0), 281: ("epoll_pwait", 3, _INT),
               441: ("epoll_pwait2", 3, 0)},
    "aarch64": {22: ("epoll_pwait", 3, _INT), 72: ("pselect6", 4, 0), 73: ("ppoll", 2, 0),
                441: ("epoll_pwait2", 3, 0)},
}


@dataclass(frozen=True)
class Blocked:
    """A thread blocked in a polling system call."""

    syscall: str
    forever: bool  # no timeout: it wakes only for an event


def available() -> bool:
    """Whether this platform lets :func:`blocked_in` read a thread's system call."""
    return (platform.machine() in _POLLING
            and Path("/proc/self/task").is_dir()
            and Path("/proc/self/syscall").exists())


def blocked_in(native_id: int) -> Blocked | None:
    """The polling call thread ``native_id`` of this process is blocked in, or None
    (running, or blocked in anything else: a lock, a read ...)."""
    fields = Path(f"/proc/self/task/{native_id}/syscall").read_text().split()
    if not fields or not fields[0].lstrip("-").isdigit():
        return None  # "running"
    known = _POLLING.get(platform.machine(), {}).get(int(fields[0]))
    if known is None:
        return None
    name, index, forever = known
    arg = int(fields[1 + index], 16)
    if forever == _INT:
        arg &= _INT
    return Blocked(name, arg == forever)


def wait_until_blocked(native_id: int, timeout: float = 5.0) -> Blocked:
    """Poll until thread ``native_id`` is blocked in a polling system call.

    Raises:
        AssertionError: it was not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while (blocked := blocked_in(native_id)) is None:
        assert time.monotonic() < deadline, f"thread {native_id} never blocked in a poll"
        time.sleep(0.001)  # polling a condition, with a deadline
    return blocked
