"""``reactor serve --workers N``: the flags, and the command's side of the supervisor.

* :func:`add_arguments` -- ``--workers``, ``--max-requests``, ``--max-requests-jitter``,
  ``--worker-start-timeout``, ``--worker-timeout``.
* :func:`binds_or_activation` -- the addresses to serve: ``--bind``, else the sockets
  systemd passed (``LISTEN_FDS``, see :mod:`reactor.cli.activation`), else the default.
* :func:`supervise` -- run a :class:`~reactor.cli.supervisor.Supervisor` whose workers
  each build the command's server on a fresh reactor.
* :func:`notify_single` -- without ``--workers``, READY=1 to systemd once listening.

Part of the command line layer; never imports ``handlers`` (the command's loader does).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..io.loop import Reactor
from ..sansio.workerlife import DEFAULT_START_TIMEOUT, DEFAULT_WORKER_TIMEOUT
from . import argtypes, logs
from .activation import Notifier, systemd_binds
from .addresses import BindAddress, BindError
from .errors import UsageError
from .graceful import Server
from .supervisor import Supervisor

__all__ = ["add_arguments", "binds_or_activation", "check", "notify_single", "supervise"]

logger = logging.getLogger("reactor.cli")


_count = argtypes.whole(0)
_at_least_one = argtypes.whole(1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the group of worker flags to ``parser``."""
    group = parser.add_argument_group(
        "workers (a supervisor process and N serving processes)")
    group.add_argument(
        "--workers", type=_at_least_one, metavar="N",
        help="run N worker processes under a supervisor that binds the addresses and "
             "never serves; each worker accepts on the shared sockets (or, with "
             "--reuse-port, on its own socket at the same port). The supervisor restarts "
             "a worker that dies; SIGHUP starts new workers and drains the old ones (a "
             "reload with no connection refused), SIGTTIN/SIGTTOU add/remove a worker, "
             "SIGUSR1 logs every worker's figures and their sum (default: one process, "
             "no supervisor)",
    )
    group.add_argument(
        "--max-requests", type=_at_least_one, metavar="N",
        help="with --workers: replace a worker after it accepted N connections (a new one "
             "is started first, the old one drains)",
    )
    group.add_argument(
        "--max-requests-jitter", type=_count, default=0, metavar="J",
        help="add a random 0..J to --max-requests per worker, so they do not all "
             "restart together (default: %(default)s)",
    )
    group.add_argument(
        "--worker-start-timeout", type=argtypes.worker_start_timeout, metavar="S",
        help="with --workers: a new worker not ready within S seconds (its service "
             "blocked on a lock, a DNS lookup, a database) is killed and counts as a "
             "start-up failure (restarted with a backoff); a reload whose new workers "
             "are not all ready in S seconds is abandoned, the old workers serving on. "
             f"More than 0, at most 86400 (default: {DEFAULT_START_TIMEOUT:g})",
    )
    group.add_argument(
        "--worker-timeout", type=argtypes.worker_timeout, metavar="S",
        help="with --workers: each ready worker's loop sends a heartbeat every S/4 "
             "seconds; one silent for S seconds (its loop blocked) is killed and "
             "replaced. 0 turns the heartbeat off; else 1 to 86400 "
             f"(default: {DEFAULT_WORKER_TIMEOUT:g})",
    )


def binds_or_activation(given: Sequence[str] | None, default: str) -> list[Any]:
    """``--bind``'s addresses; without any, systemd's sockets, else ``default``.

    The ``LISTEN_*`` variables are removed from the environment in every case.
    """
    activated = systemd_binds()
    return list(given) if given else activated or [default]


def check(args: argparse.Namespace) -> None:
    """Check the worker flags together.

    Raises:
        UsageError: they do not combine.
    """
    if args.workers is None and (args.max_requests is not None or args.max_requests_jitter):
        raise UsageError("--max-requests and --max-requests-jitter need --workers")
    if args.workers is None and (args.worker_start_timeout is not None
                                 or args.worker_timeout is not None):
        raise UsageError("--worker-start-timeout and --worker-timeout need --workers")
    if args.workers is not None and args.service == "rpc":
        raise UsageError("--workers does not apply to the rpc service")
    if args.workers is not None and any(getattr(args, name, None) is not None
                                        for name in ("control", "metrics", "status")):
        raise UsageError("--control, --metrics and --status do not combine with --workers "
                         "yet (each worker has its own table); run one server per socket")


def supervise(args: argparse.Namespace, binds: Sequence[str | BindAddress],
              build: Callable[[list[BindAddress], Reactor, Callable[[], Any]], Server],
              load: Callable[..., tuple[str, Callable[[], Any]]],
              pid_file: logs.PidFile | None) -> int:
    """Run ``--workers`` workers. Each, on a fresh reactor, loads the service with
    ``load(service, reactor, app_dir, **settings)`` and serves ``build(binds, reactor,
    factory)``.

    Returns:
        The exit status (1 when an address cannot be bound).
    """
    def make_server(where: list[BindAddress]) -> Server:
        reactor = Reactor()
        _, factory = load(args.service, reactor, args.app_dir,
                          request_timeout=args.request_timeout, requirepass=args.requirepass)
        return build(where, reactor, factory)

    supervisor = Supervisor(
        make_server, binds, workers=args.workers,
        reuse_port=args.reuse_port, backlog=args.backlog, unix_mode=args.unix_mode,
        max_requests=args.max_requests, max_requests_jitter=args.max_requests_jitter,
        graceful_timeout=args.graceful_timeout, notifier=Notifier(),
        on_hangup=logs.reopen_files,
        worker_start_timeout=_or(args.worker_start_timeout, DEFAULT_START_TIMEOUT),
        worker_timeout=_or(args.worker_timeout, DEFAULT_WORKER_TIMEOUT),
    )
    try:
        if pid_file is not None:
            pid_file.write()
        supervisor.start()
    except (BindError, ValueError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        if pid_file is not None:
            pid_file.remove()
        return 1
    try:
        return supervisor.serve()
    finally:
        if pid_file is not None:
            pid_file.remove()


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def notify_single(addresses: Sequence[str]) -> Notifier:
    """Without ``--workers``: READY=1 to systemd (if ``NOTIFY_SOCKET`` is set)."""
    notifier = Notifier()
    notifier.ready(f"serving on {', '.join(addresses)}")
    return notifier
