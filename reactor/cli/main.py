"""The command line: ``reactor serve``, ``reactor ctl`` and ``reactor run-module``.

Installed as the ``reactor`` console script and runnable as ``python -m reactor``::

    reactor serve echo                              # 127.0.0.1:8888
    reactor serve kv --bind 127.0.0.1:6380          # a Redis-protocol store
    reactor serve mymodule:MyProtocol -b [::]:9000 -b unix:/run/my.sock
    reactor serve rpc mymodule:Inventory --portmapper  # Sun RPC over TCP and UDP
    reactor run-module http.server 8000            # socketserver programs, unchanged
    reactor serve echo --control unix:/run/echo.ctl # and then:
    reactor ctl /run/echo.ctl conns --sort idle     # look inside it (reactor.cli.ctl)

``serve`` runs a ready service (``echo``, ``chat``, ``kv``, loaded lazily from the
``handlers`` package), a Sun RPC program (``rpc MODULE:PROGRAM``, see
:mod:`reactor.cli.rpcserve`) or a user's protocol factory (``MODULE:FACTORY``, a class or a
callable making one protocol per connection; ``FACTORY`` may be a dotted attribute
path). It logs ``listening on ADDRESS`` for every bound address with its real port,
so port 0 is fine. Signals: see :mod:`reactor.cli.graceful` (SIGTERM/SIGINT graceful,
a second SIGINT at once, SIGUSR1 statistics, SIGHUP reopens the log file). Default
address: 127.0.0.1:8888, and 127.0.0.1:6379 for ``kv`` (where Redis clients look
first). Logging flags: :mod:`reactor.cli.logs` and :mod:`reactor.cli.access`.

Every option of ``serve`` may also come from the environment (``REACTOR_BIND``, ...) or
a TOML file (``--config FILE``): see :mod:`reactor.cli.config`; the command line wins.

``run-module`` hands everything after it to :func:`reactor.cli.runmodule.main` (imported
only then), which runs the module with ``socketserver`` bound to the facades.

Exit status: 0 after a graceful stop; 130 when a second SIGINT cut the stop short (or
Ctrl-C came before serving began); 2 for a usage error (a bad flag or value, an unknown
service, a factory that cannot be imported, an unreadable log configuration); 1 when
the server cannot start (an address cannot be bound).

This is the one ``reactor`` module besides ``socketserver`` that may load ``handlers``,
and it does so only by name, when a service is asked for.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .. import __version__
from ..io.listeners import DEFAULT_BACKLOG
from ..io.loop import Reactor
from ..io.transports import TransportOptions
from . import (
    accessflags,
    argtypes,
    controlflags,
    ctl,
    logs,
    observeflags,
    proxyflags,
    replflags,
    workerflags,
)
from .addresses import BadBindAddress, BindError
from .config import apply_configuration, environment_help
from .errors import UsageError
from .factories import import_for, load_user_factory
from .graceful import DEFAULT_GRACEFUL_TIMEOUT, EXIT_FORCED, Server
from .logconfig import apply_log_config
from .tlsflags import add_tls_arguments, server_context

__all__ = [
    "DEFAULT_BIND",
    "SERVICES",
    "Service",
    "UsageError",
    "build_parser",
    "configure_logging",
    "load_factory",
    "main",
]

logger = logging.getLogger("reactor.cli")  # the name it had before the layers became folders

EXIT_USAGE: Final = 2
EXIT_FAILURE: Final = 1
DEFAULT_BIND: Final = "127.0.0.1:8888"
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"



def _echo_factory(module: Any, reactor: Reactor, **settings: Any) -> Callable[[], Any]:
    return module.EchoHandler  # type: ignore[no-any-return]


def _chat_factory(module: Any, reactor: Reactor, **settings: Any) -> Callable[[], Any]:
    # rooms shared by members
    return module.ChatServer(**settings)  # type: ignore[no-any-return]


def _kv_factory(module: Any, reactor: Reactor, **settings: Any) -> Callable[[], Any]:
    # expiry on our timers
    try:
        return module.KVServer(reactor, **settings)  # type: ignore[no-any-return]
    except ValueError as exc:  # replication settings that do not fit together
        raise UsageError(f"kv: {exc}") from None


@dataclass(frozen=True)
class Service:
    """A ready service ``reactor serve`` knows by name.

    Attributes:
        module: the module it lives in, imported only when the service is asked for.
        make_factory: given the module, the reactor and the service's settings (as
            keywords, e.g. ``request_timeout``), returns the protocol factory.
        default_bind: where it listens when no ``--bind`` is given.
        about: a few words for ``--help``.
        settings: the keyword settings the service accepts.
        cap_reply: what a client refused at ``--max-connections`` with
            ``--on-max-connections refuse`` is sent before the close.
    """

    module: str
    make_factory: Callable[..., Callable[[], Any]]
    default_bind: str
    about: str
    settings: tuple[str, ...] = ()
    cap_reply: bytes = b""


SERVICES: Final[dict[str, Service]] = {
    "echo": Service("handlers.services.echo", _echo_factory, DEFAULT_BIND, "send every byte back"),
    "chat": Service("handlers.services.chat", _chat_factory, DEFAULT_BIND,
                    "line-based chat rooms (/join, /nick, /who, /quit)",
                    ("request_timeout",), b"* the server is full; try again later\r\n"),
    "kv": Service("handlers.services.kv", _kv_factory, "127.0.0.1:6379",
                  "a Redis-protocol key-value store",
                  ("request_timeout", "requirepass", *replflags.SETTINGS),
                  b"-ERR max number of clients reached\r\n"),  # Redis's maxclients reply
}


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``reactor`` argument parser, with its ``serve`` and ``run-module`` commands."""
    parser = argparse.ArgumentParser(
        prog="reactor",
        description="Serve stream protocols on socketreactor, a selectors-based reactor "
                    "with an explicit connection table.",
        epilog="Run 'reactor COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    services = "; ".join(f"{name}: {svc.about}" for name, svc in SERVICES.items())
    serve = commands.add_parser(
        "serve", help="serve a ready service or your own protocol",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve a ready service or your own protocol on one or more addresses.\n\n"
            "SIGTERM or SIGINT stops gracefully: the listeners close, every request\n"
            "already received is answered and flushed, connections close (each within\n"
            "--graceful-timeout, then what is left is aborted), exit status 0. A second\n"
            "SIGINT aborts every connection and exits at once with status 130.\n"
            "The control socket's drain command (--control) stops it the same way.\n"
            "SIGUSR1 logs the reactor's statistics and the connections by state.\n"
            "SIGHUP reopens the --log-file (after log rotation moved it); it never stops\n"
            "the server.\n\n"
            "Exit status: 0 stopped, 1 could not start (bind failed), 2 usage error,\n"
            "130 forced exit."
        ),
    )
    serve.add_argument(
        "service", metavar="SERVICE",
        help=f"a ready service ({services}), rpc (then MODULE:PROGRAM), or "
             "MODULE:FACTORY, a class or callable that returns one asyncio.Protocol per "
             "connection (FACTORY may be dotted)",
    )
    serve.add_argument(
        "program", nargs="?", metavar="MODULE:PROGRAM",
        help="after rpc: a Sun RPC program (a Program, or a class whose program() "
             "gives one), served over TCP and UDP on every HOST:PORT",
    )
    serve.add_argument(
        "-b", "--bind", action="append", type=argtypes.bind, metavar="ADDRESS",
        help="listen on ADDRESS: HOST:PORT, [IPV6]:PORT ([::] serves IPv4 too), "
             "unix:PATH (unix:@NAME: abstract namespace) or fd://N (an inherited "
             "listening socket). Repeatable. :PORT (no host), *:PORT or 0.0.0.0:PORT "
             "listen on all interfaces, reachable from other hosts; 127.0.0.1:PORT only "
             "from this one. Port 0 picks a free port; the real one is logged. "
             f"Default: {DEFAULT_BIND} (kv: {SERVICES['kv'].default_bind})",
    )
    serve.add_argument(
        "--unix-mode", type=argtypes.unix_mode, metavar="MODE",
        help="permissions of the unix:PATH sockets, in octal (e.g. 600: only this user "
             "may connect; 660: this user and group), set through the umask as the "
             "socket is bound, never by a chmod after it (default: from the umask)",
    )
    serve.add_argument(
        "--max-connections", type=argtypes.positive_int, metavar="N",
        help="per address, stop accepting while N connections are open; "
             "further clients wait in the backlog (default: no limit)",
    )
    serve.add_argument(
        "--on-max-connections", choices=("wait", "refuse"), default="wait",
        help="at --max-connections: 'wait' (clients wait in the backlog; the default) or "
             "'refuse' (each is accepted and closed at once, after the service's "
             "'server full' reply where it has one: kv sends Redis's 'max number of "
             "clients reached')",
    )
    serve.add_argument(
        "--idle-timeout", type=argtypes.positive_seconds, metavar="S",
        help="close a connection after S seconds with no bytes in either direction",
    )
    serve.add_argument(
        "--first-byte-timeout", type=argtypes.positive_seconds, metavar="S",
        help="close a connection that sent nothing within S seconds of connecting",
    )
    serve.add_argument(
        "--write-timeout", type=argtypes.positive_seconds, metavar="S",
        help="abort a connection whose queued output made no progress for S seconds",
    )
    serve.add_argument(
        "--request-timeout", type=argtypes.positive_seconds, metavar="S",
        help="close a connection whose request (a line for chat, a command for kv) is "
             "not complete S seconds after its first byte arrived, however steadily it "
             "trickles in (against slowloris clients; an idle timer cannot catch them). "
             "Only for services with requests: chat and kv",
    )
    serve.add_argument(
        "--requirepass", metavar="PASSWORD",
        help="kv only: clients must authenticate (AUTH PASSWORD, redis-cli -a, "
             "redis-py's password=) before any other command. Give it through "
             "REACTOR_REQUIREPASS or the --config file rather than here: a command "
             "line is visible to every user of the host (ps)",
    )
    serve.add_argument(
        "--portmapper", action="store_true",
        help="rpc only: serve the portmapper (rpcbind versions 2-4) on the same "
             "addresses and register the program with it",
    )
    serve.add_argument(
        "--register", action="store_true",
        help="rpc only: register the program with the system's rpcbind (through "
             "/run/rpcbind.sock) and unregister it at exit",
    )
    serve.add_argument(
        "--backlog", type=argtypes.positive_int, default=DEFAULT_BACKLOG, metavar="N",
        help="the kernel's queue of connections not yet accepted (default: %(default)s)",
    )
    serve.add_argument(
        "--reuse-port", action="store_true",
        help="set SO_REUSEPORT so several processes can share a TCP port",
    )
    serve.add_argument(
        "--graceful-timeout", type=argtypes.grace_seconds, default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="S",
        help="on SIGTERM/SIGINT, wait up to S seconds for connections to finish, then "
             "abort the rest; 0 aborts them at once (default: %(default)g)",
    )
    serve.add_argument(
        "--stats-interval", type=argtypes.positive_seconds, metavar="S",
        help="log statistics every S seconds (default: only on SIGUSR1)",
    )
    add_tls_arguments(serve, argtypes.positive_seconds)
    log = serve.add_argument_group("logging")
    log.add_argument(
        "--log-level", type=argtypes.log_level, metavar="LEVEL",
        help="debug, info, warning, error or critical (default: info)",
    )
    log.add_argument(
        "--log-config", metavar="FILE",
        help="configure logging from FILE: a JSON logging.config.dictConfig "
             "dictionary (*.json) or a logging.config.fileConfig INI file; existing "
             "loggers stay enabled unless the file says otherwise; --log-level, if "
             "given, still sets the root level",
    )
    log.add_argument(
        "--log-format", choices=logs.LOG_FORMATS, default="text",
        help="text: 'TIME LEVEL LOGGER: MESSAGE' lines; json: one JSON object per line "
             "(timestamp with time zone, level, logger, message, and the connection's "
             "fields) (default: %(default)s; not with --log-config)",
    )
    log.add_argument(
        "--log-file", metavar="PATH",
        help="append the log to PATH instead of stderr; SIGHUP reopens it "
             "(not with --log-config)",
    )
    log.add_argument(
        "--access-log", action="store_true",
        help="log one line per connection as it closes, to the logger reactor.access: "
             "peer, local address, duration, bytes in and out, requests (kv), and the "
             "reason (client-eof, reset, idle-timeout, first-byte-timeout, "
             "request-timeout, write-timeout, shutdown, server-close, error)",
    )
    log.add_argument(
        "--pid", metavar="PATH",
        help="write the process id to PATH at start, remove it at exit",
    )
    proxyflags.add_arguments(serve)
    controlflags.add_arguments(serve)
    accessflags.add_arguments(serve)
    workerflags.add_arguments(serve)
    observeflags.add_arguments(serve)
    replflags.add_arguments(serve)
    serve.add_argument(
        "--app-dir", default=".", metavar="DIR",
        help="look for MODULE in DIR first (default: the current directory)",
    )
    serve.add_argument(
        "--config", metavar="FILE",
        help="read options from FILE, a TOML file of long option names and values "
             "(see configuration below)",
    )
    serve.set_defaults(run=_cmd_serve)

    run_module = commands.add_parser(
        "run-module", add_help=False,
        help="run a program that uses socketserver (python -m MODULE ARGS...) with "
             "socketserver bound to reactor.socketserver; see 'reactor run-module --help'",
    )
    run_module.add_argument("argv", nargs=argparse.REMAINDER, metavar="[--log-level LEVEL] "
                            "MODULE [ARGS...]")
    run_module.set_defaults(run=_cmd_run_module)
    ctl.add_parser(commands)
    # last, so that it lists every option added above
    serve.epilog = environment_help(serve)
    return parser


def _version() -> str:
    selector = selectors.DefaultSelector.__name__
    python = ".".join(str(n) for n in sys.version_info[:3])
    return f"reactor (socketreactor) {__version__} (Python {python}, {selector})"


# -- logging ------------------------------------------------------------------------------


def configure_logging(level: str | None, config_file: str | None, log_format: str = "text",
                      log_file: str | None = None) -> None:
    """Set up logging for the command: a config file, or one handler (stderr or
    ``log_file``, text or json lines: see :mod:`reactor.cli.logs`).

    Raises:
        UsageError: the configuration file cannot be read or is invalid.
    """
    if config_file is not None:
        apply_log_config(config_file)
    else:
        root = logging.getLogger()
        if not root.handlers:
            try:
                root.addHandler(logs.make_handler(log_format, log_file, LOG_FORMAT))
            except OSError as exc:
                raise UsageError(f"cannot open the log file {log_file} (--log-file): "
                                 f"{exc.strerror or exc}") from exc
        root.setLevel(level or "INFO")
    if level is not None:
        logging.getLogger().setLevel(level)


# -- loading the protocol factory ---------------------------------------------------------


def load_factory(
    spec: str, reactor: Reactor, app_dir: str | None = None, **settings: Any
) -> tuple[str, Callable[[], Any]]:
    """Find the protocol factory ``spec`` names.

    Args:
        spec: ``echo``, ``chat``, ``kv`` or ``MODULE:FACTORY``.
        reactor: the reactor the service will run on (a ready service may keep
            timers on it).
        app_dir: a directory put first on ``sys.path`` (for ``MODULE``).
        settings: service settings given on the command line (``request_timeout``);
            None values are left out.

    Returns:
        ``(name, factory)``; the factory makes one protocol per call.

    Raises:
        UsageError: the service is unknown, its module cannot be imported, the
            named object is not callable, or a setting does not apply to it.
    """
    given = {name: value for name, value in settings.items() if value is not None}
    service = SERVICES.get(spec)
    if service is not None:
        for name in given:
            if name not in service.settings:
                flag = "--" + name.replace("_", "-")
                users = [n for n, svc in SERVICES.items() if name in svc.settings]
                raise UsageError(f"{flag} does not apply to the {spec} service "
                                 f"(only to {', '.join(users)})")
        module = import_for(service.module, f"the {spec} service",
                            " (is the handlers package installed?)")
        try:
            return spec, service.make_factory(module, reactor, **given)
        except AttributeError as exc:
            raise UsageError(f"the {spec} service: {exc}") from exc
    if given:  # a user's factory takes no settings from the command line
        name = next(iter(given))
        able = ", ".join(n for n, svc in SERVICES.items() if name in svc.settings)
        raise UsageError(f"--{name.replace('_', '-')} only applies to the ready services "
                         f"that support it ({able}); configure your own protocol class "
                         "instead")
    if ":" not in spec:
        raise UsageError(
            f"unknown service {spec}: choose {', '.join(SERVICES)} or MODULE:FACTORY")
    return spec, load_user_factory(spec, app_dir)


# -- commands -----------------------------------------------------------------------------


def _usage_error(prog: str, message: str) -> int:
    sys.stderr.write(f"{prog}: error: {message}\n")
    return EXIT_USAGE


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        if args.log_config is not None and (args.log_file or args.log_format != "text"):
            raise UsageError("--log-file and --log-format do not combine with --log-config "
                             "(configure the handlers in the file instead)")
        configure_logging(args.log_level, args.log_config, args.log_format, args.log_file)
        proxy = proxyflags.listener_options(args)
        workerflags.check(args)
        replflags.check(args)
        if args.access_log and logging.getLogger("reactor.access").level == logging.NOTSET:
            logging.getLogger("reactor.access").setLevel(logging.INFO)  # whatever the level
    except (UsageError, ValueError) as exc:
        return _usage_error("reactor serve", str(exc))
    reactor = Reactor()
    try:
        tls = server_context(args)
        name, factory, rpc = _load_service(args, reactor, tls)
    except UsageError as exc:
        reactor.close()
        return _usage_error("reactor serve", str(exc))
    service = SERVICES.get(args.service)
    default = service.default_bind if service is not None else DEFAULT_BIND
    binds = workerflags.binds_or_activation(args.bind, default)
    if args.unix_mode is not None and not any(str(b).startswith("unix:") for b in binds):
        reactor.close()
        return _usage_error("reactor serve", "--unix-mode applies to unix:PATH addresses, "
                                             "and no --bind gives one")
    try:
        by_kind = accessflags.listener_options(args, binds)
    except ValueError as exc:
        reactor.close()
        return _usage_error("reactor serve", str(exc))
    pid_file = logs.PidFile(args.pid) if args.pid is not None else None
    options = TransportOptions(
        idle_timeout=args.idle_timeout,
        first_byte_timeout=args.first_byte_timeout,
        write_timeout=args.write_timeout,
    )

    def build(where: list[Any], loop: Reactor, protocols: Callable[[], Any]) -> Server:
        return Server(
            protocols, where, reactor=loop, backlog=args.backlog,
            max_connections=args.max_connections, reuse_port=args.reuse_port,
            at_cap=args.on_max_connections,
            cap_reply=(service.cap_reply if service is not None
                       and args.on_max_connections == "refuse" else b""),
            options=options, graceful_timeout=args.graceful_timeout,
            stats_interval=args.stats_interval, name=name, unix_mode=args.unix_mode,
            access_log=args.access_log, on_hangup=logs.reopen_files, **proxy,
            ssl=tls, ssl_handshake_timeout=args.tls_handshake_timeout if tls else None,
            listener_options=by_kind,
        )
    if args.workers is not None:  # each worker loads the service on its own reactor
        reactor.close()
        return workerflags.supervise(args, binds, build, load_factory, pid_file)
    try:
        if pid_file is not None:
            pid_file.write()  # first: nothing is bound if it cannot be written
        server = build(binds, reactor, factory)
        server.start()
        controlflags.start(args, server)  # closed with the reactor, its path removed
        observeflags.start(args, server)
        workerflags.notify_single(server.addresses)
    except (BindError, BadBindAddress) as exc:
        origin = "--bind" if args.bind else f"the default for {name}; choose another with --bind"
        logger.error("cannot listen on %s (%s): %s", exc.address, origin, exc.reason)
        reactor.close()
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:
        logger.error("cannot start: %s", exc)
        reactor.close()
        if pid_file is not None:
            pid_file.remove()
        return EXIT_FAILURE
    try:
        return server.serve() if rpc is None else int(rpc.serve(server))
    finally:
        reactor.close()
        if pid_file is not None:
            pid_file.remove()


def _load_service(args: argparse.Namespace, reactor: Reactor,
                  tls: object) -> tuple[str, Callable[[], Any], Any]:
    """The served name, the protocol factory and, for rpc, its runner (else None).

    Raises:
        UsageError: the service cannot be loaded, or the flags do not apply to it.
    """
    if args.service == "rpc":
        rpc = _rpc_runner(args, reactor, tls)
        return rpc.name, rpc.factory, rpc
    if args.program is not None or args.portmapper or args.register:
        raise UsageError("MODULE:PROGRAM, --portmapper and --register only apply to the "
                         "rpc service")
    name, factory = load_factory(args.service, reactor, args.app_dir,
                                 request_timeout=args.request_timeout,
                                 requirepass=args.requirepass, **replflags.settings(args))
    return name, factory, None


def _rpc_runner(args: argparse.Namespace, reactor: Reactor, tls: object) -> Any:
    """The rpc service (:mod:`reactor.cli.rpcserve`, imported only when asked for)."""
    from . import rpcserve

    if args.app_dir is not None:
        directory = os.path.abspath(args.app_dir)
        if directory not in sys.path:
            sys.path.insert(0, directory)
    return rpcserve.RPCRunner(args, reactor, tls)


def _cmd_run_module(args: argparse.Namespace) -> int:
    return _run_module(list(args.argv))


def _run_module(argv: list[str]) -> int:
    """Hand the arguments after ``run-module`` to :func:`reactor.cli.runmodule.main`
    (imported only then: it loads the ``socketserver`` drop-in)."""
    from . import runmodule

    return int(runmodule.main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reactor`` command.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run-module"]:
        # everything after it is reactor.cli.runmodule's own command line (--help included)
        return _run_module(arguments[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        return _usage_error("reactor", "a command is required (serve, ctl, run-module)")
    if args.command == "serve":
        try:
            args = apply_configuration(args, arguments, build_parser, os.environ)
        except UsageError as exc:
            return _usage_error("reactor serve", str(exc))
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_FORCED
    return status
