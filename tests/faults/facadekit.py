"""A ``reactor.socketserver`` facade server as the fault suite's child process (not a
test module)::

    python tests/faults/facadekit.py KIND [--max-children N] [--max-threads N]
                                          [--max-packet-size N] [--queue N] [--dual-stack]

KIND: ``tcp``, ``threading``, ``forking``, ``udp``, ``threading-udp``. It logs
``listening on HOST:PORT`` like ``reactor serve`` (so :class:`servekit.ServerProcess`
parses it), serves until SIGTERM, then shuts down from another thread and logs how long
``shutdown()`` and ``server_close()`` took and what was left (threads, children).

The stream handler echoes everything it receives until EOF, except lines starting with
a command word: ``sleep S`` (sleeps S seconds, answers ``slept`` and ends the request),
``pid`` (the
handling process's pid), ``crash`` (raises), ``shutdown`` (calls ``server.shutdown()``
from inside the handler, then answers ``shutting down``). The datagram handler answers
each datagram with ``len N``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout

from reactor import socketserver

logger = logging.getLogger("facadekit")
COMMANDS = (b"sleep ", b"pid", b"crash", b"shutdown")


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # a client may leave with an RST
                return
            if not data:
                return
            if data.startswith(COMMANDS):
                if self.command(data.strip()):
                    return
            else:
                sock.sendall(data)

    def command(self, line: bytes) -> bool:
        """Run a command; True ends the request (the server closes the connection)."""
        sock = self.request
        if line.startswith(b"sleep "):
            logger.info("handler sleeping %s s", line[6:].decode())
            time.sleep(float(line[6:]))
            sock.sendall(b"slept\n")
            return True
        elif line == b"pid":
            sock.sendall(b"%d\n" % os.getpid())
        elif line == b"crash":
            raise RuntimeError("facadekit: the handler crashed")
        elif line == b"shutdown":
            self.server.shutdown()
            sock.sendall(b"shutting down\n")
        return False


class Length(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(b"len %d" % len(data), self.client_address)


def build(args: argparse.Namespace) -> Any:
    family = socket.AF_INET6 if args.dual_stack else socket.AF_INET
    host = "::" if args.dual_stack else "127.0.0.1"
    kinds: dict[str, tuple[type, type]] = {
        "tcp": (socketserver.TCPServer, Echo),
        "threading": (socketserver.ThreadingTCPServer, Echo),
        "forking": (socketserver.ForkingTCPServer, Echo),
        "udp": (socketserver.UDPServer, Length),
        "threading-udp": (socketserver.ThreadingUDPServer, Length),
    }
    base, handler = kinds[args.kind]
    attrs: dict[str, Any] = {"address_family": family, "allow_reuse_address": True,
                             "request_queue_size": args.queue}
    if args.max_children is not None:
        attrs["max_children"] = args.max_children
    if args.max_packet_size is not None:
        attrs["max_packet_size"] = args.max_packet_size
    if args.max_threads is not None:
        attrs["max_threads"] = args.max_threads
    if args.dual_stack:
        def server_bind(self: Any) -> None:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            base.server_bind(self)
        attrs["server_bind"] = server_bind
    cls = type(f"Fault{base.__name__}", (base,), attrs)
    return cls((host, 0), handler)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--max-children", type=int)
    parser.add_argument("--max-packet-size", type=int)
    parser.add_argument("--max-threads", type=int)
    parser.add_argument("--queue", type=int, default=128)
    parser.add_argument("--dual-stack", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = build(args)
    host, port = server.server_address[:2]

    # announced from the loop's first iteration, so that a test's baseline of the
    # process's descriptors and threads is the serving one
    server.reactor.call_soon(
        logger.info, "listening on %s", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    stopped = threading.Event()
    signalled = threading.Event()

    def stop() -> None:
        signalled.set()
        started = time.monotonic()
        server.shutdown()
        logger.info("shutdown() returned in %.6f s", time.monotonic() - started)
        stopped.set()

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
    def report(*_: Any) -> None:
        rows = list(server.connections)
        logger.info("statistics: %s; rows: %s", server.statistics(),
                    "; ".join(row.describe() for row in rows[:20]) or "none")

    signal.signal(signal.SIGUSR1, report)
    server.serve_forever()
    logger.info("serve_forever() returned")
    if signalled.is_set():
        stopped.wait(10)  # for the shutdown() timing line
    started = time.monotonic()
    server.server_close()
    logger.info("server_close() returned in %.6f s; threads=%d children=%d",
                time.monotonic() - started, threading.active_count(),
                len(server.active_children or ()) if hasattr(server, "active_children")
                else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
