"""A signal storm in the server child (not a test module): importing this module arms
:mod:`servestorm`'s interval timer (SIGALRM every millisecond, counted by a Python
handler) and gives ``reactor serve stormkit:kv`` the kv service to run under it.

SIGUSR2 makes the child write ``stormkit: alarms=N at=T`` to its stderr: the SIGALRMs
handled so far and its monotonic clock, so that a test measures the storm's rate
instead of assuming it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for servestorm

import servestorm  # arms the storm

from handlers.services.kv import KVServer

kv = KVServer()  # binds to the reactor at its first connection (timers for expiry)
Storm = servestorm.Storm


def _report(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"stormkit: alarms=%d at=%.6f\n" % (servestorm.ALARMS, time.monotonic()))


signal.signal(signal.SIGUSR2, _report)
