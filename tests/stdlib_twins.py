"""The standard library's server modules (``http.server``, ``xmlrpc.server``,
``wsgiref.simple_server``, ``logging.config``) loaded twice: once on the standard
library's ``socketserver`` and once on ``reactor.socketserver``, so that one test body
runs against both, side by side, in one process.

Each flavour is a fresh copy of those modules, imported while the name ``socketserver``
is bound to that flavour's module; ``sys.modules`` is restored afterwards, so nothing
else in the process sees the copies.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType, SimpleNamespace

import reactor.socketserver as ours

FLAVOURS = ("stdlib", "reactor")
_FAMILY = ("http.server", "xmlrpc.server", "wsgiref.simple_server", "logging.config")


def _stdlib_socketserver() -> ModuleType:
    current = sys.modules.get("socketserver")
    if current is not None and current is not ours:
        return current
    saved = sys.modules.pop("socketserver", None)
    try:
        return importlib.import_module("socketserver")
    finally:
        if saved is not None:
            sys.modules["socketserver"] = saved
        else:
            sys.modules.pop("socketserver", None)


@functools.cache
def modules(flavour: str) -> SimpleNamespace:
    """``socketserver``, ``http_server``, ``xmlrpc_server``, ``wsgiref_simple_server``
    and ``logging_config`` of one flavour ("stdlib" or "reactor")."""
    base = _stdlib_socketserver() if flavour == "stdlib" else ours
    names = ("socketserver", *_FAMILY)
    saved = {name: sys.modules.pop(name, None) for name in names}
    parents = {name: getattr(sys.modules.get(name.rpartition(".")[0]), name.rpartition(".")[2],
                             None) for name in _FAMILY}
    sys.modules["socketserver"] = base
    try:
        loaded = {name: importlib.import_module(name) for name in _FAMILY}
    finally:
        for name in names:
            sys.modules.pop(name, None)
            if saved[name] is not None:
                sys.modules[name] = saved[name]  # type: ignore[assignment]
        for name, old in parents.items():
            package, _, leaf = name.rpartition(".")
            if old is not None:
                setattr(sys.modules[package], leaf, old)
    # each copy is built on this flavour's socketserver, not on the other one
    assert issubclass(loaded["http.server"].HTTPServer, base.TCPServer)
    assert issubclass(loaded["xmlrpc.server"].SimpleXMLRPCServer, base.TCPServer)
    assert issubclass(loaded["wsgiref.simple_server"].WSGIServer, base.TCPServer)
    assert loaded["logging.config"].ThreadingTCPServer is base.ThreadingTCPServer
    return SimpleNamespace(
        socketserver=base,
        http_server=loaded["http.server"],
        xmlrpc_server=loaded["xmlrpc.server"],
        wsgiref_simple_server=loaded["wsgiref.simple_server"],
        logging_config=loaded["logging.config"],
    )
