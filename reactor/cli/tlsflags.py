"""``reactor serve``'s TLS options and the server context built from them.

The options form one argument group, "TLS" (:func:`add_tls_arguments`)::

    --tls-cert FILE          the certificate chain (PEM), the server's first
    --tls-key FILE           its private key (PEM; default: inside --tls-cert)
    --tls-client-ca FILE     require a client certificate signed by a CA in FILE
    --tls-min-version V      1.2 (default) or 1.3
    --tls-handshake-timeout S

Like every ``serve`` option they may also come from the environment or the TOML file
(:mod:`reactor.cli.config` derives the names from the parser). :func:`server_context`
turns them into an :class:`ssl.SSLContext` (or None without ``--tls-cert``) and refuses
at start-up, as a :class:`~reactor.cli.errors.UsageError` naming the option, what could
only fail later: a key or CA without a certificate, a file that cannot be read, a key
that does not match its certificate.

Part of the command line layer; imports only the standard library and the I/O layer.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Callable
from typing import Final

from ..io.tls import DEFAULT_HANDSHAKE_TIMEOUT, refuse_renegotiation
from .errors import UsageError

__all__ = ["TLS_VERSIONS", "add_tls_arguments", "server_context"]

#: ``--tls-min-version`` values
TLS_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def add_tls_arguments(parser: argparse.ArgumentParser,
                      seconds: Callable[[str], float]) -> None:
    """Add the "TLS" argument group to ``serve``'s parser; ``seconds`` parses the
    handshake timeout (the command's own type for a positive number of seconds)."""
    group = parser.add_argument_group(
        "TLS", "serve every address over TLS (every service: echo, chat, kv, your own)")
    group.add_argument(
        "--tls-cert", metavar="FILE",
        help="serve TLS with the certificate chain in FILE (PEM, the server's "
             "certificate first)",
    )
    group.add_argument(
        "--tls-key", metavar="FILE",
        help="the private key of --tls-cert (PEM; default: read from --tls-cert)",
    )
    group.add_argument(
        "--tls-client-ca", metavar="FILE",
        help="mutual TLS: require a client certificate issued by a CA in FILE (PEM); "
             "its subject is in the connection's row",
    )
    group.add_argument(
        "--tls-min-version", choices=sorted(TLS_VERSIONS), default="1.2",
        help="the oldest TLS version accepted (default: %(default)s)",
    )
    group.add_argument(
        "--tls-handshake-timeout", type=seconds,
        default=DEFAULT_HANDSHAKE_TIMEOUT, metavar="S",
        help="close a connection whose TLS handshake is not done within S seconds "
             "(default: %(default)g)",
    )


def server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server context the TLS options describe; None without ``--tls-cert``.

    Raises:
        UsageError: ``--tls-key`` or ``--tls-client-ca`` without ``--tls-cert``, a
            file that cannot be read, or a certificate and key that do not match.
    """
    cert, key, client_ca = args.tls_cert, args.tls_key, args.tls_client_ca
    if cert is None:
        for flag, value in (("--tls-key", key), ("--tls-client-ca", client_ca)):
            if value is not None:
                raise UsageError(f"{flag} needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[args.tls_min_version]
    refuse_renegotiation(context)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise UsageError(f"--tls-cert/--tls-key: no such file: {exc.filename or cert}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--tls-cert {cert}{f' --tls-key {key}' if key else ''}: cannot "
                         f"load the certificate and key: {exc}") from exc
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-client-ca {client_ca}: cannot load the CA "
                             f"certificates: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context
