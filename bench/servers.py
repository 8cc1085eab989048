"""The servers under test, and the entry point that runs one of them.

Every server runs in its own process, started and stopped by :mod:`bench.run`::

    python -m bench.servers NAME [--host 127.0.0.1] [--port 0] [--cpu 0]

It binds (port 0 picks a free port), prints ``PORT <n>`` on stdout, serves until
SIGTERM or SIGINT, and exits 0. Servers are configured alike: the listen backlog is
:data:`BACKLOG`, TCP_NODELAY is set on accepted connections, one read asks for at most
:data:`READ_SIZE` bytes (asyncio's own default), the open-file soft limit is raised to
the hard limit, and thread- or process-per-connection servers get no cap on workers
(the standard library's ForkingMixIn would otherwise block at 40 children).

Servers other parts of the project provide (``handlers.*``, ``reactor.socketserver``)
and external programs (``redis-server``) are looked up lazily: :func:`unavailable`
says why one cannot run, and the benchmark skips it with that message.

``c-epoll`` is the floor: ``bench/epoll_echo.c``, a minimal echo server in C (one
thread, level-triggered epoll), built next to the load generator in ``bench/bin/``.
This entry point replaces itself with it (``execv``, after the pinning and the
descriptor limit), so it is started, announced and stopped like the Python servers.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import resource
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BACKLOG",
    "C_ECHO",
    "C_ECHO_BUILD",
    "C_ECHO_SRC",
    "HTTP_FILE",
    "HTTP_FILE_SIZE",
    "READ_SIZE",
    "SERVERS",
    "ServerSpec",
    "asyncio_main",
    "main",
    "prime_allocator",
    "raise_fd_limit",
    "run_reactor",
    "unavailable",
]

BACKLOG = 1024
READ_SIZE = 256 * 1024
HTTP_FILE = "small.html"
HTTP_FILE_SIZE = 1024
# thread- and process-per-connection servers are measured up to this many connections
PER_CONNECTION_WORKER_LIMIT = 1000
# the C floor (c-epoll): its source, its binary and how `make bench` builds it
C_ECHO_SRC = Path(__file__).resolve().parent / "epoll_echo.c"
C_ECHO = C_ECHO_SRC.parent / "bin" / "epoll_echo"
C_ECHO_BUILD = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(C_ECHO), str(C_ECHO_SRC)]


@dataclass(frozen=True)
class ServerSpec:
    """One server of the benchmark.

    Attributes:
        name: the name used on the command line and in the results.
        service: ``echo``, ``kv`` or ``http``: which workloads it serves.
        ours: built on this project (True) or a peer to compare against.
        description: one line for the report.
        needs: modules that must import (lazily checked).
        program: an external executable that must be on PATH.
        max_connections: the most connections the benchmark gives it.
        named_only: run only when ``--servers`` names it (a prototype, not a row of
            ``make bench``).
    """

    name: str
    service: str
    ours: bool
    description: str
    needs: tuple[str, ...] = ()
    program: str | None = None
    max_connections: int | None = None
    named_only: bool = False


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("reactor-protocol", "echo", True,
                   "bench.protocols.EchoProtocol (asyncio.Protocol) on the reactor",
                   ("reactor",)),
        ServerSpec("reactor-deferred", "echo", True,
                   "reactor-protocol with defer_accept=1 (TCP_DEFER_ACCEPT, first read at "
                   "once)", ("reactor",)),
        ServerSpec("reactor-compiled", "echo", True,
                   "reactor-protocol with the hot path compiled by mypyc (bench/compiled.py; "
                   "build/compiled first on the path)", ("reactor",), named_only=True),
        ServerSpec("reactor-handler", "echo", True,
                   "handlers.services.echo.EchoHandler on the reactor",
                   ("reactor", "handlers.services.echo")),
        ServerSpec("asyncio", "echo", False,
                   "the same EchoProtocol on asyncio's default loop"),
        ServerSpec("uvloop", "echo", False, "the same EchoProtocol on uvloop", ("uvloop",)),
        ServerSpec("c-epoll", "echo", False,
                   "bench/epoll_echo.c: one thread, level-triggered epoll, in C (the floor)"),
        ServerSpec("asyncio-streams", "echo", False,
                   "asyncio.start_server, reader.read/writer.write/drain"),
        ServerSpec("stdlib-threading", "echo", False,
                   "socketserver.ThreadingTCPServer + StreamRequestHandler echo",
                   max_connections=PER_CONNECTION_WORKER_LIMIT),
        ServerSpec("stdlib-forking", "echo", False,
                   "socketserver.ForkingTCPServer + StreamRequestHandler echo",
                   max_connections=PER_CONNECTION_WORKER_LIMIT),
        ServerSpec("facade-threading", "echo", True,
                   "reactor.socketserver.ThreadingTCPServer + StreamRequestHandler echo",
                   ("reactor.socketserver",), max_connections=PER_CONNECTION_WORKER_LIMIT),
        ServerSpec("facade-forking", "echo", True,
                   "reactor.socketserver.ForkingTCPServer + StreamRequestHandler echo",
                   ("reactor.socketserver",), max_connections=PER_CONNECTION_WORKER_LIMIT),
        ServerSpec("facade-multiplexing", "echo", True,
                   "reactor.socketserver.MultiplexingTCPServer + EchoHandler",
                   ("reactor.socketserver", "handlers.services.echo")),
        ServerSpec("kv", "kv", True, "handlers.services.kv (RESP subset) on the reactor",
                   ("reactor", "handlers.services.kv")),
        ServerSpec("redis-server", "kv", False, "redis-server, persistence off",
                   program="redis-server"),
        ServerSpec("http-stdlib", "http", False,
                   "http.server.ThreadingHTTPServer + SimpleHTTPRequestHandler (HTTP/1.1)",
                   max_connections=PER_CONNECTION_WORKER_LIMIT),
        ServerSpec("http-facade", "http", True,
                   "the same handler on reactor.socketserver.ThreadingTCPServer",
                   ("reactor.socketserver",), max_connections=PER_CONNECTION_WORKER_LIMIT),
    )
}


def unavailable(name: str) -> str | None:
    """Why server ``name`` cannot run here, or None when it can."""
    spec = SERVERS.get(name)
    if spec is None:
        return f"unknown server {name!r}"
    if spec.program is not None and shutil.which(spec.program) is None:
        return f"{spec.program} is not installed (bench/setup.sh installs it as root)"
    for module in spec.needs:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} cannot be imported yet ({exc})"
    if name == "c-epoll":
        return _c_echo_unavailable()
    if name == "reactor-compiled":
        return _compiled_unavailable()
    if name == "kv":
        try:
            _kv_factory()
        except LookupError as exc:
            return str(exc)
    if name == "facade-multiplexing" and not hasattr(
            importlib.import_module("reactor.socketserver"), "MultiplexingTCPServer"):
        return "reactor.socketserver has no MultiplexingTCPServer yet"
    return None


def _c_echo_unavailable() -> str | None:
    rel = os.path.relpath(C_ECHO, Path.cwd())
    if not C_ECHO.exists():
        return f"{rel} is not built (make bench builds it with a C compiler)"
    if C_ECHO.stat().st_mtime < C_ECHO_SRC.stat().st_mtime:
        return f"{rel} is older than its source (make bench rebuilds it)"
    return None


def _compiled_unavailable() -> str | None:
    from bench.compiled import DEFAULT_OUT, MODULES, loaded_files

    if not (DEFAULT_OUT / "reactor").is_dir():
        return "build/compiled is not built (python -m bench.compiled builds it with mypyc)"
    if str(DEFAULT_OUT) in sys.path:  # the server's own process: what it imported
        files = {m: getattr(importlib.import_module(m), "__file__", "") or "" for m in MODULES}
    else:  # the benchmark's process: what the server will import
        files = loaded_files(DEFAULT_OUT)
    for module, path in files.items():
        if not path.endswith(".so"):
            return f"{module} is loaded from {path}, not from a compiled .so"
    return None


def _use_compiled() -> None:
    """Put the compiled copy first on ``sys.path``, before anything imports reactor."""
    from bench.compiled import DEFAULT_OUT

    if "reactor" in sys.modules:
        raise RuntimeError("reactor was imported before the compiled copy was put first")
    sys.path.insert(0, str(DEFAULT_OUT))


# -- helpers shared by the servers -------------------------------------------------------


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def prime_allocator() -> None:
    """Free one 1 MiB block so glibc's dynamic mmap threshold sits above READ_SIZE.

    A ``recv(READ_SIZE)`` allocates a READ_SIZE bytes object and shrinks it to the
    bytes received. While glibc's mmap threshold is at its initial 128 KiB, each such
    allocation is an mmap, mremap and munmap; once any block larger than the threshold
    has been freed, the threshold rises and the same reads come from the heap. Whether
    that happens depends on what a process imported, and it moved asyncio's echo rate
    by 3-5x on this machine, so every server process does it once, alike, before it
    binds. ``python -m bench.run --no-prime`` measures without it.
    """
    block = bytearray(1 << 20)
    del block


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _echo_handler_class(base: type[Any]) -> type[Any]:
    """The blocking echo handler, built on ``base`` (a StreamRequestHandler class)."""

    class EchoRequestHandler(base):  # type: ignore[misc]
        disable_nagle_algorithm = True

        def handle(self) -> None:
            read1 = self.rfile.read1
            write = self.wfile.write
            while True:
                try:
                    data = read1(READ_SIZE)
                except ConnectionError:
                    return
                if not data:
                    return
                try:
                    write(data)
                except ConnectionError:
                    return

    return EchoRequestHandler


def _configure_socketserver(cls: type[Any]) -> type[Any]:
    """Subclass a socketserver class with the benchmark's common settings."""

    class Configured(cls):  # type: ignore[misc]
        allow_reuse_address = True
        request_queue_size = BACKLOG
        daemon_threads = True
        block_on_close = False
        max_children = 1_000_000  # no cap: one child per connection, like one thread each

        def handle_error(self, request: Any, client_address: Any) -> None:
            exc = sys.exc_info()[1]
            if isinstance(exc, ConnectionError):
                return
            super().handle_error(request, client_address)

    Configured.__name__ = f"Bench{cls.__name__}"
    return Configured


def _serve_socketserver(server: Any) -> None:
    """Run ``serve_forever`` until SIGTERM/SIGINT (shutdown from a helper thread)."""

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _announce(server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()


def run_reactor(host: str, port: int, factory: Callable[[], Any], ssl: Any = None,
                **options: Any) -> None:
    """Serve ``factory``'s protocol on the reactor (over TLS with ``ssl``, a server
    ``SSLContext``; ``options``: more listen_tcp keywords) until SIGTERM/SIGINT."""
    from reactor import Reactor

    reactor = Reactor()
    listener = reactor.listen_tcp(host, port, factory, backlog=BACKLOG, read_size=READ_SIZE,
                                  nodelay=True, ssl=ssl, **options)
    reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
    reactor.add_signal_handler(signal.SIGINT, reactor.stop)
    _announce(listener.port)
    try:
        reactor.run()
    finally:
        reactor.close()


async def asyncio_main(host: str, port: int, streams: bool, ssl: Any = None) -> None:
    """Serve :class:`bench.protocols.EchoProtocol` (or with ``streams`` an echo on
    asyncio's streams) on the running loop, over TLS with ``ssl``, until SIGTERM/SIGINT."""
    import asyncio

    from bench.protocols import EchoProtocol

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server: asyncio.AbstractServer
    if streams:

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(READ_SIZE):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(echo, host, port, backlog=BACKLOG,
                                            limit=READ_SIZE, ssl=ssl)
    else:
        server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG, ssl=ssl)
    sockets = getattr(server, "sockets", None) or []
    _announce(sockets[0].getsockname()[1])
    await stop.wait()
    server.close()


# -- the key-value service ---------------------------------------------------------------

_KV_CANDIDATES = ("KVHandler", "KvHandler", "KVProtocol", "KeyValueHandler", "RespHandler",
                  "RESPHandler")


def _kv_factory() -> Callable[[], Any]:
    """A protocol factory for handlers.services.kv, whatever shape that module settles on.

    Tries, in order: ``handlers.services.kv.KVServer()`` (an unbound protocol factory that binds
    its store to the loop of its first connection), ``handlers.services.kv.protocol_factory()``
    (returns a factory), a class
    named in ``_KV_CANDIDATES`` that takes no argument, or one that takes a shared store
    (``Store``/``KVStore``/``Database``/``Keyspace`` from the same module).

    Raises:
        LookupError: nothing usable was found.
    """
    module = importlib.import_module("handlers.services.kv")
    server_cls = getattr(module, "KVServer", None)
    if server_cls is not None:
        kv_server: Callable[[], Any] = server_cls()
        return kv_server
    make = getattr(module, "protocol_factory", None)
    if callable(make):
        factory: Callable[[], Any] = make()
        return factory
    for name in _KV_CANDIDATES:
        cls = getattr(module, name, None)
        if cls is None:
            continue
        for store_name in ("Store", "KVStore", "Database", "Keyspace"):
            store_cls = getattr(module, store_name, None)
            if store_cls is not None:
                return functools.partial(cls, store_cls())
        return cls  # type: ignore[no-any-return]
    raise LookupError("handlers.services.kv has no protocol_factory() or handler class "
                      f"named one of {', '.join(_KV_CANDIDATES)}")


# -- the servers -------------------------------------------------------------------------


def serve(name: str, host: str, port: int) -> None:
    """Run server ``name`` in this process until SIGTERM/SIGINT."""
    if name in ("reactor-protocol", "reactor-compiled"):
        from bench.protocols import EchoProtocol

        run_reactor(host, port, EchoProtocol)
    elif name == "reactor-deferred":
        from bench.protocols import EchoProtocol

        run_reactor(host, port, EchoProtocol, defer_accept=1)
    elif name == "reactor-handler":
        from handlers.services.echo import EchoHandler

        run_reactor(host, port, EchoHandler)
    elif name == "kv":
        run_reactor(host, port, _kv_factory())
    elif name in ("asyncio", "asyncio-streams"):
        import asyncio

        asyncio.run(asyncio_main(host, port, streams=name == "asyncio-streams"))
    elif name == "uvloop":
        import uvloop

        run = getattr(uvloop, "run", None)
        if run is not None:
            run(asyncio_main(host, port, streams=False))
        else:  # uvloop before 0.18
            import asyncio

            uvloop.install()
            asyncio.run(asyncio_main(host, port, streams=False))
    elif name in ("stdlib-threading", "stdlib-forking"):
        base = (socketserver.ThreadingTCPServer if name == "stdlib-threading"
                else socketserver.ForkingTCPServer)
        handler = _echo_handler_class(socketserver.StreamRequestHandler)
        _serve_socketserver(_configure_socketserver(base)((host, port), handler))
    elif name in ("facade-threading", "facade-forking"):
        facade: Any = importlib.import_module("reactor.socketserver")
        base = (facade.ThreadingTCPServer if name == "facade-threading"
                else facade.ForkingTCPServer)
        handler_base = getattr(facade, "StreamRequestHandler", socketserver.StreamRequestHandler)
        handler = _echo_handler_class(handler_base)
        _serve_socketserver(_configure_socketserver(base)((host, port), handler))
    elif name == "facade-multiplexing":
        facade = importlib.import_module("reactor.socketserver")
        from handlers.services.echo import EchoHandler

        server_cls = _configure_socketserver(facade.MultiplexingTCPServer)
        _serve_socketserver(server_cls((host, port), EchoHandler))
    elif name in ("http-stdlib", "http-facade"):
        _serve_http(name, host, port)
    elif name == "c-epoll":
        # the same process, so the benchmark's pid, pinning and limits carry over
        os.execv(C_ECHO, [str(C_ECHO), str(port), host])
    else:
        raise SystemExit(f"bench.servers: {name!r} is not a Python server here")


def _serve_http(name: str, host: str, port: int) -> None:
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with tempfile.TemporaryDirectory(prefix="bench-http-") as root:
        with open(os.path.join(root, HTTP_FILE), "wb") as f:
            f.write(b"<!doctype html>\n" + b"x" * (HTTP_FILE_SIZE - 17) + b"\n")
        handler = functools.partial(Handler, directory=root)
        if name == "http-stdlib":
            server_cls = _configure_socketserver(http.server.ThreadingHTTPServer)
        else:
            facade: Any = importlib.import_module("reactor.socketserver")

            class FacadeHTTPServer(facade.ThreadingTCPServer):  # type: ignore[misc]
                """http.server.HTTPServer's one addition, on the facade."""

                def server_bind(self) -> None:
                    super().server_bind()
                    host_, port_ = self.server_address[:2]
                    self.server_name = socket.getfqdn(host_)
                    self.server_port = port_

            server_cls = _configure_socketserver(FacadeHTTPServer)
        _serve_socketserver(server_cls((host, port), handler))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers",
                                     description="Run one benchmark server.")
    parser.add_argument("name", choices=sorted(n for n, s in SERVERS.items() if not s.program))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--no-prime", action="store_true",
                        help="do not raise glibc's mmap threshold first (see prime_allocator)")
    args = parser.parse_args(argv)
    if not args.no_prime:
        prime_allocator()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    raise_fd_limit()
    if args.name == "reactor-compiled":
        _use_compiled()
    reason = unavailable(args.name)
    if reason is not None:
        print(f"bench.servers: {args.name}: {reason}", file=sys.stderr)
        return 3
    serve(args.name, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
