"""Start a program the way systemd starts a socket-activated service (not a test module).

    python sd_launch.py FD[=NAME] [FD[=NAME] ...] -- PROGRAM [ARGS...]

The descriptors (inherited from the caller through ``pass_fds``) are moved to 3, 4, ...
in the order given, ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (this process's
id, which the program keeps across ``exec``) are set, and PROGRAM replaces this process,
as systemd does between its fork and the service's exec.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    split = argv.index("--")
    given, program = argv[:split], argv[split + 1:]
    fds = [int(item.partition("=")[0]) for item in given]
    names = [item.partition("=")[2] for item in given]
    moved = [os.dup(fd) for fd in fds]  # first out of the way of 3, 4, ...
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(moved):
        if fd == 3 + i:
            os.set_inheritable(fd, True)
        else:
            os.dup2(fd, 3 + i, inheritable=True)
            os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_FDNAMES"] = ":".join(names)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
