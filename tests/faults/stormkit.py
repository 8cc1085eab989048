"""A signal storm in the server child (not a test module): importing this module arms
:mod:`servestorm`'s interval timer (SIGALRM every millisecond, counted by a Python
handler) and gives ``reactor serve stormkit:kv`` the kv service to run under it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for servestorm

import servestorm  # arms the storm

from handlers.kv import KVServer

kv = KVServer()  # binds to the reactor at its first connection (timers for expiry)
Storm = servestorm.Storm
