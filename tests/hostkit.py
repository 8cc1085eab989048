"""Several ``reactor serve`` hosts behind HAProxy, as ``examples/deploy/haproxy.cfg``
configures them (not a test module).

* :class:`Hosts` -- kv and echo served on 127.0.0.2, 127.0.0.3, ... (port 0: read
  back from the log for echo; for kv, sockets made here and inherited, so that each kv
  host can be given the others as ``--replicate-to`` peers), each with
  ``--proxy-protocol v2`` trusting 127.0.0.1 only, and
  HAProxy running the deploy configuration with those ports filled in, its frontends on
  sockets the test made (``fd@N``), its stats socket in a temporary directory and its
  log sent to a datagram socket the test reads (:meth:`Hosts.routed_to`).
* :class:`Resp` -- a minimal blocking Redis-protocol client: one command, one reply.
* :func:`direct` -- a connection straight to a host, past HAProxy: it sends a PROXY v2
  LOCAL header first, as HAProxy's health checks do, since the hosts want one.
"""

from __future__ import annotations

import contextlib
import csv
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from haproxy_tools import HAProxy, listening
from servekit import WAIT, ServerProcess, serve

__all__ = ["CONFIG", "REPLICATION_SECRET", "Hosts", "Resp", "direct"]

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "haproxy.cfg"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL_V2 = SIGNATURE + b"\x20\x00\x00\x00"  # version 2, LOCAL, no addresses
PORTS = {"kv": 6379, "echo": 8888}
REPLICATION_SECRET = "hosts-test-secret"  # what the kv hosts' links present


class Resp:
    """A Redis-protocol client on one socket: :meth:`call` sends a command and returns
    the reply (``str`` for +simple and -errors, ``bytes`` or None for bulk strings)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def call(self, *args: str | bytes) -> Any:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"connection closed before the reply ({line!r})")
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"-", b":"):
            return (kind + rest).decode()
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("connection closed inside a reply")
            return data[:-2]
        raise AssertionError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def direct(address: tuple[str, int]) -> socket.socket:
    """A connection to one host, not through HAProxy (a LOCAL PROXY header sent)."""
    sock = socket.create_connection(address, timeout=WAIT)
    sock.sendall(LOCAL_V2)
    return sock


class Hosts:
    """``count`` hosts serving kv and echo, HAProxy in front with the deploy config."""

    def __init__(self, count: int = 3) -> None:
        self.names = [f"host{n}" for n in range(2, 2 + count)]
        self.servers: dict[tuple[str, str], ServerProcess] = {}
        self.dir = tempfile.TemporaryDirectory(prefix="hosts-")
        try:
            # the kv hosts replicate to each other, so each must know the others'
            # ports before it starts: their listening sockets are made here (port 0)
            # and inherited (fd://N)
            self.kv_sockets = [listening(f"127.0.0.{n}") for n in range(2, 2 + count)]
            for sock in self.kv_sockets:
                sock.listen(128)
            kv_ports = [sock.getsockname()[1] for sock in self.kv_sockets]
            for n, name in enumerate(self.names, start=2):
                for service in PORTS:
                    flags: list[str] = []
                    fds: tuple[int, ...] = ()
                    env: dict[str, str] = {}
                    bind = f"127.0.0.{n}:0"
                    if service == "kv":
                        sock = self.kv_sockets[n - 2]
                        bind, fds = f"fd://{sock.fileno()}", (sock.fileno(),)
                        env["REACTOR_REPLICATION_SECRET"] = REPLICATION_SECRET
                        for m, port in enumerate(kv_ports, start=2):
                            if m != n:
                                flags += ["--replicate-to", f"127.0.0.{m}:{port}"]
                    self.servers[service, name] = serve(
                        service, "--bind", bind, "--proxy-protocol", "v2",
                        "--proxy-allow-from", "127.0.0.1", *flags, "--graceful-timeout",
                        "10", "--access-log", pass_fds=fds, env=env)
            for sock in self.kv_sockets:  # the hosts have them: a killed one's port
                sock.close()  # must refuse, not queue connections nobody accepts
            self.frontends = {service: listening() for service in PORTS}
            self.stats_path = str(Path(self.dir.name) / "stats.sock")
            self.log_lines: list[str] = []
            self.log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.log.bind(str(Path(self.dir.name) / "log.sock"))
            self.log.settimeout(0.2)
            self.reading = threading.Thread(target=self._read_log, daemon=True)
            self.reading.start()
            self.haproxy = HAProxy.from_config(self.config(),
                                               list(self.frontends.values()))
            self.wait_states({(s, name): "UP" for s in PORTS for name in self.names})
            for name in self.names:  # every kv host's links to its peers are up
                self.servers["kv", name].wait_for(r"kv replication: peer \S+ up",
                                                  count=count - 1)
        except BaseException:
            self.close()
            raise

    def address(self, service: str, name: str) -> tuple[str, int]:
        return self.servers[service, name].tcp_address()

    def frontend(self, service: str) -> tuple[str, int]:
        host, port = self.frontends[service].getsockname()[:2]
        return host, port

    def config(self) -> str:
        """The deploy configuration, its addresses replaced by this run's."""
        text = CONFIG.read_text()
        swaps = {"/run/haproxy/reactor.sock": self.stats_path,
                 "log /dev/log ": f"log {self.log.getsockname()} "}
        for service, port in PORTS.items():
            swaps[f"bind 127.0.0.1:{port}\n"] = \
                f"bind fd@{self.frontends[service].fileno()}\n"
            for n, name in enumerate(self.names, start=2):
                host, real = self.address(service, name)
                swaps[f"server {name} 127.0.0.{n}:{port}\n"] = \
                    f"server {name} {host}:{real}\n"
        for old, new in swaps.items():
            assert old in text, f"{CONFIG} no longer has {old!r}"
            text = text.replace(old, new)
        return text

    def stats(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(self.stats_path)
            sock.sendall(command.encode() + b"\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out.decode()

    def states(self) -> dict[tuple[str, str], str]:
        """Each server's status in HAProxy's eyes: ``UP``, ``DOWN``, ``UP 1/2`` ..."""
        text = self.stats("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        backends = {f"{s}_hosts": s for s in PORTS}
        return {(backends[r["pxname"]], r["svname"]): r["status"] for r in rows
                if r["pxname"] in backends and r["svname"] in self.names}

    def wait_states(self, wanted: dict[tuple[str, str], str],
                    timeout: float = WAIT) -> float:
        """Poll the stats socket until the servers in ``wanted`` have those states;
        returns when (monotonic time)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):  # the socket is not there yet
                states = self.states()
                if all(states.get(key) == state for key, state in wanted.items()):
                    return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {wanted}")
            time.sleep(0.02)

    def _read_log(self) -> None:
        while self.log.fileno() >= 0:
            try:
                self.log_lines.append(self.log.recv(65536).decode(errors="replace"))
            except TimeoutError:
                continue
            except OSError:
                return

    def routed_to(self, service: str, port: int, timeout: float = WAIT) -> str:
        """The host HAProxy's log says the client connection from ``port`` went to
        (the line is written when the connection ends)."""
        pattern = re.compile(rf"127\.0\.0\.1:{port} \[[^\]]*\] {service} "
                             rf"{service}_hosts/(\S+) ")
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.log_lines):
                if found := pattern.search(line):
                    return found.group(1)
            assert time.monotonic() < deadline, f"HAProxy never logged port {port}"
            time.sleep(0.02)

    def client_seen(self, service: str, name: str, address: tuple[str, int]) -> bool:
        """Whether the host's access log names this client address (PROXY header)."""
        host, port = address
        return re.search(rf"\b{re.escape(host)}:{port}\b",
                         self.servers[service, name].log) is not None

    def close(self) -> None:
        haproxy = getattr(self, "haproxy", None)
        if haproxy is not None:
            haproxy.close()
        else:
            for sock in getattr(self, "frontends", {}).values():
                sock.close()
        for srv in self.servers.values():
            srv.close()
        for sock in getattr(self, "kv_sockets", ()):
            sock.close()
        log = getattr(self, "log", None)
        if log is not None:
            log.close()
            self.reading.join(WAIT)
        self.dir.cleanup()

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
