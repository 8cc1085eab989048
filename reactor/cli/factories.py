"""Finding the user's protocol factory for ``reactor serve MODULE:FACTORY``, and
refusing at start-up what could only fail later, once per connection.

``serve`` calls the factory with no arguments for every connection and runs the
:class:`asyncio.Protocol` it returns. What cannot work is refused before anything is
bound, with a message that says what to write instead:

- ``MODULE`` written as a file (``./mymod.py:Proto``): the module name to use, and
  ``--app-dir`` for the directory;
- a blocking ``socketserver`` request handler (``http.server:SimpleHTTPRequestHandler``):
  such handlers take a request, an address and a server and block in ``handle()``;
  ``reactor run-module`` runs the program that serves them, unchanged;
- a class that is not a protocol (no ``data_received``, nor ``get_buffer`` and
  ``buffer_updated``);
- a callable that needs arguments.

A plain function is not called ahead of time (it may have side effects): what it
returns is only seen at the first connection.

Part of the command line layer; imports only the standard library.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from .errors import UsageError

__all__ = ["check_factory", "import_for", "load_user_factory", "named_object"]

logger = logging.getLogger("reactor.cli")


def import_for(module_name: str, what: str, hint: str) -> Any:
    """Import ``module_name`` for ``what``; a failure becomes a :class:`UsageError`
    (``hint`` is added when the module itself cannot be found)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise UsageError(f"{what}: no module named {module_name}{hint}") from exc
        raise UsageError(f"importing {module_name} for {what} failed: {exc}") from exc
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise UsageError(f"importing {module_name} for {what} failed: "
                         f"{type(exc).__name__}: {exc}") from exc


def _file_advice(spec: str, module_name: str, attribute: str) -> str | None:
    """What to write when ``MODULE`` is a file path or a relative name, else None."""
    if module_name.startswith(".") and "/" not in module_name and "\\" not in module_name:
        return (f"{spec}: MODULE is an absolute module name; write "
                f"{module_name.lstrip('.')}:{attribute}")
    if not (module_name.endswith(".py") or "/" in module_name or os.sep in module_name):
        return None
    path = PurePath(module_name)
    name = path.stem if path.suffix == ".py" else path.name
    directory = str(path.parent)
    app_dir = "" if directory in ("", ".") else f" --app-dir {directory}"
    return (f"{spec}: MODULE is a module name, not a file: write {name}:{attribute}"
            f"{app_dir} (--app-dir names the directory it is in; default: the current "
            "directory)")


def named_object(spec: str) -> Any:
    """The object ``MODULE:NAME`` names (``NAME`` may be dotted), imported.

    Raises:
        UsageError: the module cannot be imported, or has no such name.
    """
    module_name, _, attribute = spec.partition(":")
    obj: Any = import_for(module_name, spec, " (is it on the path? see --app-dir)")
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{spec}: module {module_name} has no {attribute}") from None
    return obj


def load_user_factory(spec: str, app_dir: str | None) -> Callable[[], Any]:
    """The callable ``MODULE:FACTORY`` names (``FACTORY`` may be dotted), checked by
    :func:`check_factory`.

    Raises:
        UsageError: the spec is malformed, the module cannot be imported, the name
            is missing, or the object cannot serve (see :func:`check_factory`).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{spec}: expected MODULE:FACTORY, e.g. mypkg.proto:Echo")
    advice = _file_advice(spec, module_name, attribute)
    if advice is not None:
        raise UsageError(advice)
    if app_dir is not None:
        directory = os.path.abspath(app_dir)
        if directory not in sys.path:
            sys.path.insert(0, directory)
    obj = named_object(spec)
    check_factory(spec, obj)
    return obj  # type: ignore[no-any-return]


# where the blocking request handlers' base class lives: the standard library's and
# this project's drop-in (by name: importing handlers here only to compare is a waste)
_HANDLER_BASES = {("socketserver", "BaseRequestHandler"),
                  ("handlers.classic", "BaseRequestHandler")}


def _is_blocking_handler(cls: type) -> bool:
    return any((base.__module__, base.__name__) in _HANDLER_BASES for base in cls.__mro__)


def check_factory(spec: str, obj: object) -> None:
    """Refuse ``obj`` as a protocol factory when it clearly cannot be one.

    Raises:
        UsageError: ``obj`` is not callable, is a blocking socketserver handler class,
            is a class without the protocol methods, or needs arguments.
    """
    module_name, _, attribute = spec.partition(":")
    must = ("FACTORY is called with no arguments once per connection and must return "
            "an asyncio.Protocol")
    if not callable(obj):
        raise UsageError(f"{spec}: {attribute} is not a class or callable; {must}")
    if isinstance(obj, type):
        if _is_blocking_handler(obj):
            raise UsageError(
                f"{spec} is a blocking socketserver request handler, not an asyncio."
                "Protocol, so 'reactor serve' cannot run it; run the program that serves "
                "it with 'reactor run-module MODULE [ARGS...]' (e.g. 'reactor run-module "
                f"{module_name} 8000'), which puts socketserver on the reactor unchanged")
        if not (hasattr(obj, "data_received")
                or (hasattr(obj, "get_buffer") and hasattr(obj, "buffer_updated"))):
            raise UsageError(
                f"{spec}: the class {attribute} is not a stream protocol (it has no "
                "data_received method); subclass asyncio.Protocol, or name a function "
                "that returns one")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: let it be
        return
    try:
        signature.bind()
    except TypeError:
        needed = [name for name, param in signature.parameters.items()
                  if param.default is param.empty
                  and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)]
        raise UsageError(
            f"{spec}: {attribute} needs arguments ({', '.join(needed)}); {must}: wrap it "
            f"in a function of no arguments that calls {attribute}(...) with them") from None
