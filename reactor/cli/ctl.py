"""``reactor ctl PATH COMMAND...``: talk to a control socket (``reactor serve --control``).

::

    reactor ctl /run/app.ctl info
    reactor ctl /run/app.ctl conns open --sort idle --limit 20
    reactor ctl --json /run/app.ctl conns          # one JSON object per reply
    reactor ctl /run/app.ctl close 17
    reactor ctl /run/app.ctl top                   # refreshes like top; Ctrl-C ends it
    reactor ctl /run/app.ctl top -n 3 --interval 0.5

The command is sent as one line and the reply (lines up to the empty line that ends
every reply, see :mod:`reactor.sansio.control`) is printed as it came, without that
empty line. ``top`` asks for ``info`` and ``conns`` each ``--interval`` seconds on one
connection and redraws the screen (ANSI: clear and home) when the output is a
terminal; arguments after ``top`` that it does not know go to ``conns``.

Exit status: 0 done; 1 the server answered with an error, or could not be reached;
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Final, TextIO

from ..sansio.control import render_info
from ..sansio.snapshot import render_table

__all__ = ["ControlClient", "ControlError", "add_parser", "main"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_TIMEOUT: Final = 10.0
MAX_REPLY: Final = 256 * 2**20  # a reply this big is not one from a control socket
_CLEAR: Final = "\x1b[H\x1b[2J"


class ControlError(Exception):
    """The control socket could not be reached, or closed before replying."""


class ControlClient:
    """A connection to a control socket: :meth:`request` sends a line, returns the
    reply's body (the text before the empty line)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._buffer = b""
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from exc

    def request(self, line: str) -> str:
        """Send one command, return its reply without the ending empty line.

        Raises:
            ControlError: the server closed the connection or did not answer in time.
        """
        try:
            self._sock.sendall(line.encode() + b"\n")
            while (end := self._buffer.find(b"\n\n")) < 0:
                if len(self._buffer) > MAX_REPLY:
                    raise ControlError("the reply is too big; is this a control socket?")
                data = self._sock.recv(256 * 1024)
                if not data:
                    raise ControlError(self._closed_reason())
                self._buffer += data
        except OSError as exc:
            raise ControlError(f"{self.path}: {exc.strerror or exc}") from exc
        reply, self._buffer = self._buffer[:end], self._buffer[end + 2:]
        return reply.decode("utf-8", "replace")

    def _closed_reason(self) -> str:
        last = self._buffer.decode("utf-8", "replace").strip()
        return last or "the control socket closed the connection without a reply"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_error(reply: str, as_json: bool) -> bool:
    if not as_json:
        return reply.startswith("error:")
    try:
        value = json.loads(reply)
    except ValueError:
        return True
    return isinstance(value, dict) and "error" in value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return value


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``ctl`` command to ``commands`` (a sub-parsers action)."""
    ctl: argparse.ArgumentParser = commands.add_parser(
        "ctl", help="talk to a control socket (reactor serve --control unix:PATH)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Send COMMAND to the control socket at PATH and print the reply.\n\n"
            "Commands: info; conns [STATE] [--peer CIDR] [--sort age|idle|bytes_in|\n"
            "bytes_out|queued] [--limit N] [--all]; close ID; abort ID; drain;\n"
            "loglevel [LEVEL]; help; top [-n N] [--once] [--interval S] [conns options]\n"
            "(refreshes info and conns like top).\n\n"
            "Exit status: 0 done, 1 an error reply or no answer, 2 usage error."
        ),
    )
    ctl.add_argument("--json", action="store_true",
                     help="ask for JSON replies and print them (one object per reply)")
    ctl.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT, metavar="S",
                     help="seconds to wait for a reply (default: %(default)g)")
    ctl.add_argument("path", metavar="PATH", help="the control socket's path")
    ctl.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                     help="the command and its arguments")
    ctl.set_defaults(run=_cmd_ctl)
    return ctl


def _cmd_ctl(args: argparse.Namespace) -> int:
    return main(args.path, args.words, as_json=args.json, timeout=args.timeout)


def main(path: str, words: Sequence[str], *, as_json: bool = False,
         timeout: float = DEFAULT_TIMEOUT, out: TextIO | None = None) -> int:
    """Run ``reactor ctl PATH WORDS...``; returns the exit status."""
    out = out if out is not None else sys.stdout
    words = list(words)
    if not words:
        sys.stderr.write("reactor ctl: error: a command is required; try help\n")
        return EXIT_USAGE
    if "--json" in words:
        as_json = True
        words.remove("--json")
    try:
        with ControlClient(path, timeout) as client:
            if words[0] == "top":
                return _top(client, words[1:], out)
            line = " ".join(words) + (" --json" if as_json else "")
            reply = client.request(line)
    except ControlError as exc:
        sys.stderr.write(f"reactor ctl: {exc}\n")
        return EXIT_ERROR
    out.write(reply + "\n")
    out.flush()
    return EXIT_ERROR if _is_error(reply, as_json) else EXIT_OK


# -- top ---------------------------------------------------------------------------------


def _top_arguments(words: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="reactor ctl PATH top", add_help=False,
                                     exit_on_error=False)
    parser.add_argument("-n", "--iterations", type=int, default=0)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--interval", type=_positive, default=1.0)
    return parser.parse_known_args(words)


def _rate(now: dict[str, Any], before: dict[str, Any] | None, key: str) -> str:
    if before is None:
        return "-"
    elapsed = now["uptime"] - before["uptime"]
    if elapsed <= 0:
        return "-"
    return f"{(now['loop'][key] - before['loop'][key]) / elapsed:.0f} B/s"


def _top_screen(info: dict[str, Any], conns: dict[str, Any],
                before: dict[str, Any] | None) -> list[str]:
    head: dict[str, Any] = {key: info[key] for key in ("pid", "uptime", "backend", "connections",
                                       "by_state", "control_clients") if key in info}
    lines = [f"reactor {info.get('version', '?')}  {time.strftime('%H:%M:%S')}  "
             f"in {_rate(info, before, 'bytes_in')}  out {_rate(info, before, 'bytes_out')}"]
    lines += render_info(head)
    lines += render_info({"listeners": info.get("listeners", [])})
    lines.append("")
    rows = conns.get("connections", [])
    lines += render_table(rows)
    if conns.get("total", 0) > len(rows):
        lines.append(f"... {conns['total'] - len(rows)} more")
    return lines


def _top(client: ControlClient, words: list[str], out: TextIO) -> int:
    try:
        options, conns_args = _top_arguments(words)
    except argparse.ArgumentError as exc:
        sys.stderr.write(f"reactor ctl top: error: {exc}\n")
        return EXIT_USAGE
    iterations = 1 if options.once else options.iterations
    if "--limit" not in conns_args and out.isatty():
        import shutil

        conns_args += ["--limit", str(max(1, shutil.get_terminal_size().lines - 12))]
    conns_line = " ".join(["conns", *conns_args, "--json"])
    before: dict[str, Any] | None = None
    count = 0
    try:
        while True:
            info_reply = client.request("info --json")
            conns_reply = client.request(conns_line)
            if _is_error(info_reply, True) or _is_error(conns_reply, True):
                sys.stderr.write(f"reactor ctl top: {conns_reply}\n")
                return EXIT_ERROR
            info = json.loads(info_reply)
            screen = _top_screen(info, json.loads(conns_reply), before)
            before = info
            out.write((_CLEAR if out.isatty() else "") + "\n".join(screen) + "\n")
            out.flush()
            count += 1
            if iterations and count >= iterations:
                return EXIT_OK
            time.sleep(options.interval)  # the refresh period a person watches
    except KeyboardInterrupt:
        return EXIT_OK
