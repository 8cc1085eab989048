"""The care a Unix socket path needs: before bind, at bind, and when its socket closes.

* Before bind (:func:`prepare`): a path longer than the platform allows is refused with
  the limit in the message; a stale socket file (nobody listens on it) is removed; a
  live one, or any file that is not a socket, is never touched.
* At bind (:func:`created_with_mode`): a requested ``mode`` is set through the
  process's umask around ``bind``, so the socket never exists with wider permissions
  (a ``chmod`` after ``bind`` would leave a window in which anyone may connect).
* On close (:class:`OwnedPath`): the path is unlinked only by the process that bound it
  (a forked child closing its copy must not remove its parent's path) and only while
  it is still that socket (same inode: another server may have bound it since).

Abstract-namespace names (a leading NUL) have no file: none of this applies to them.

Part of the I/O layer; used by the listeners and the datagram endpoints. Must not
import the loop, the transports, the facades or the command line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterator
from typing import Final

__all__ = ["UNIX_PATH_MAX", "OwnedPath", "check_mode", "created_with_mode", "prepare"]

UNIX_PATH_MAX: Final = 107


class OwnedPath:
    """A socket file this process bound at ``path`` (see :meth:`of`).

    Attributes:
        path: the file system path.
        ino: the socket file's inode when it was bound.
        pid: the process that bound it.
    """

    __slots__ = ("ino", "path", "pid")

    def __init__(self, path: str) -> None:
        self.path = path
        self.ino = os.stat(path).st_ino
        self.pid = os.getpid()

    @classmethod
    def of(cls, path: str | None) -> OwnedPath | None:
        """The path just bound, or None for no path or an abstract-namespace name."""
        if path is None or path.startswith("\0"):
            return None
        return cls(path)

    def remove(self) -> None:
        """Unlink the path if this is the process that bound it and it is still the
        same socket; errors are ignored (it is gone, or not ours to remove)."""
        if self.pid != os.getpid():
            return
        try:
            st = os.stat(self.path)
            if st.st_ino == self.ino and stat.S_ISSOCK(st.st_mode):
                os.unlink(self.path)
        except OSError:
            pass


def check_mode(path: str | None, mode: int | None) -> None:
    """Raise ValueError unless ``mode`` is None or permission bits for a path."""
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits from 0 to 0o777, not {mode!r}")
    if path is None or path.startswith("\0"):
        raise ValueError("mode applies to a Unix socket bound to a path in the file "
                         "system (not to an unbound or abstract-namespace socket)")


@contextlib.contextmanager
def created_with_mode(mode: int | None) -> Iterator[None]:
    """Files created inside get exactly ``mode``'s permission bits: the umask is set to
    their complement and restored after, also on an error. None: the umask as it is.

    The umask is process-wide: a file another thread creates during that ``bind`` gets
    the same umask. That window is one system call long, and a process binds its
    sockets at start-up, so this is accepted as the price of having no window at all
    on the socket.
    """
    if mode is None:
        yield
        return
    old = os.umask(0o777 & ~mode)
    try:
        yield
    finally:
        os.umask(old)


def prepare(path: str) -> None:
    """Make ``path`` ready to bind: check its length, remove a stale socket there.

    Raises:
        ValueError: the path is longer than :data:`UNIX_PATH_MAX` bytes.
        FileExistsError: something that is not a socket exists at ``path``.
        OSError: a running server listens at ``path`` (EADDRINUSE).
    """
    if path.startswith("\0"):
        return
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(
            f"Unix socket path is {len(os.fsencode(path))} bytes; the limit is {UNIX_PATH_MAX}"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, f"{path} exists and is not a socket; refusing to remove it"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live server with a full backlog must not block us
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # a stale socket: nobody listens on it
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        # EAGAIN: alive, its backlog full; EPROTOTYPE: a live socket of the other
        # type (a datagram server): in use either way, never to be removed
        if exc.errno not in (errno.EAGAIN, errno.EPROTOTYPE):
            raise
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running server")
