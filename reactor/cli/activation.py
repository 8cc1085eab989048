"""systemd's side of ``reactor serve``: socket activation and readiness notification.

Socket activation (:func:`systemd_binds`). A service started by a ``.socket`` unit
inherits its listening sockets from descriptor 3 on; ``LISTEN_FDS`` says how many,
``LISTEN_PID`` which process they are meant for (a child that inherited the variables
must not take them), and ``LISTEN_FDNAMES`` their ``FileDescriptorName=`` names,
colon-separated. They are used only when ``LISTEN_PID`` is this process; the three
variables are removed from the environment either way, so no worker or program started
later takes them again. ``reactor serve`` uses them when no ``--bind`` is given: the
sockets arrive in the ``.socket`` unit's order, each becomes an ``fd://N`` address
(which ``--bind fd://N`` could also name one by one).

Readiness (:class:`Notifier`). With ``NOTIFY_SOCKET`` set (``Type=notify``), state
changes are datagrams of ``KEY=VALUE`` lines sent to that Unix socket: ``READY=1`` with
``STATUS=`` naming the addresses once every worker listens; ``RELOADING=1`` (with
``MONOTONIC_USEC=``, which ``Type=notify-reload`` asks for) when a reload begins and
``READY=1`` when it is done; ``STOPPING=1`` when a stop begins; ``STATUS=`` lines on the
way. An address starting with ``@`` is in the abstract namespace (a leading NUL). A
failing send is logged once and never stops the server: the service manager is an
observer. The variable is removed from the environment, so workers never notify.

Written with the standard library only (no libsystemd). Part of the command line layer;
never imports ``handlers``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping
from typing import Final

from .addresses import BindAddress

__all__ = ["SD_LISTEN_FDS_START", "Notifier", "systemd_binds"]

logger = logging.getLogger("reactor.serve")

SD_LISTEN_FDS_START: Final = 3
_LISTEN_VARIABLES: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def systemd_binds(environ: MutableMapping[str, str] | None = None,
                  pid: int | None = None) -> list[BindAddress]:
    """The listening sockets systemd passed to this process, as ``fd://N`` addresses.

    Args:
        environ: the environment to read and clean (default: :data:`os.environ`).
        pid: this process's id (default: :func:`os.getpid`).

    Returns:
        One address per descriptor, in the ``.socket`` unit's order; empty when
        ``LISTEN_PID`` is missing or names another process. The variables are removed
        from ``environ`` in every case.
    """
    env = os.environ if environ is None else environ
    values = {name: env.pop(name, None) for name in _LISTEN_VARIABLES}
    listen_pid, count = values["LISTEN_PID"], values["LISTEN_FDS"]
    if listen_pid is None or count is None:
        return []
    own = os.getpid() if pid is None else pid
    if not listen_pid.isdigit() or int(listen_pid) != own:
        logger.debug("LISTEN_PID=%s is not this process (%d): not taking its sockets",
                     listen_pid, own)
        return []
    if not count.isdigit():
        logger.warning("LISTEN_FDS=%r is not a number: no inherited sockets taken", count)
        return []
    names = (values["LISTEN_FDNAMES"] or "").split(":")
    binds = [BindAddress("fd", fd=SD_LISTEN_FDS_START + i) for i in range(int(count))]
    for i, bind in enumerate(binds):
        name = names[i] if i < len(names) and names[i] else "unnamed"
        logger.info("socket activation: %s (%s)", bind, name)
    return binds


def _notify_address(text: str) -> str | bytes:
    return b"\0" + os.fsencode(text[1:]) if text.startswith("@") else text


class Notifier:
    """``sd_notify``: tell the service manager about state changes.

    Args:
        environ: the environment holding ``NOTIFY_SOCKET`` (default: :data:`os.environ`);
            the variable is removed from it.

    A notifier made without ``NOTIFY_SOCKET`` does nothing (:attr:`enabled` is False).
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None)
        self.address: str | bytes | None = (
            _notify_address(address) if address and address[0] in "/@" else None)
        if address and self.address is None:
            logger.warning("NOTIFY_SOCKET=%r is not a Unix socket path or @name: "
                           "not notifying", address)
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to notify."""
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines (``notify(READY=1, STATUS="...")``).

        Returns:
            Whether it was sent (False without ``NOTIFY_SOCKET`` or when sending failed).
        """
        if self.address is None:
            return False
        message = "".join(f"{key}={value}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify the service manager at NOTIFY_SOCKET: %s", exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` with ``STATUS=``."""
        return self.notify(READY=1, STATUS=status)

    def reloading(self, status: str) -> bool:
        """``RELOADING=1`` with the monotonic clock's microseconds and ``STATUS=``."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000,
                           STATUS=status)

    def stopping(self, status: str) -> bool:
        """``STOPPING=1`` with ``STATUS=``."""
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        """A ``STATUS=`` line alone."""
        return self.notify(STATUS=status)
