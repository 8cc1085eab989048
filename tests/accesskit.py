"""A client of another user, for the access-list tests (not a test module): a forked
child that drops to ``nobody`` (the tests run as root), talks to a Unix socket and
reports what it heard over a socket pair."""

from __future__ import annotations

import os
import socket

from netkit import WAIT
from sskit import exchange

NOBODY = 65534  # the uid and the gid of nobody/nogroup on Debian


def talk(path: str, data: bytes = b"ping\n", as_nobody: bool = True) -> tuple[int, socket.socket]:
    """Fork a child that (as ``nobody`` when asked) connects to ``path``, sends
    ``data`` and reads the answer up to a newline or the end. It writes to the returned
    socket the answer, ``refused`` when the server closed or reset the connection
    without one, or the error it met, then exits. The caller reads that socket to its
    end (blocking: :func:`outcome`; or watched by a reactor) and reaps ``pid``."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        report = b"error"
        try:
            ours.close()
            if as_nobody:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            report = exchange(path, data, socket.AF_UNIX, WAIT) or b"refused"
        except ConnectionError:  # a reset, or a broken pipe: closed unread
            report = b"refused"
        except BaseException as exc:  # reported to the parent
            report = repr(exc).encode()
        finally:
            theirs.sendall(report)
            os._exit(0)
    theirs.close()
    return pid, ours


def outcome(path: str, data: bytes = b"ping\n", as_nobody: bool = True) -> str:
    """:func:`talk`, waited for: the child's report as text."""
    pid, sock = talk(path, data, as_nobody)
    with sock:
        sock.settimeout(WAIT)
        report = b""
        while chunk := sock.recv(4096):
            report += chunk
    os.waitpid(pid, 0)
    return report.decode()
