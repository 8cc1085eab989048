"""Reading ``--log-config FILE``: a JSON ``dictConfig`` dictionary or a ``fileConfig``
INI file, with errors that say what is wrong with the file.

:mod:`logging.config` reports a malformed file as whatever its parser hit first: an INI
file without a ``[formatters]`` section raises ``KeyError: 'formatters'``, a handler
class that cannot be imported raises ``ValueError: Unable to configure handler 'h'``
with the real reason hidden in ``__cause__``. :func:`apply_log_config` checks what it
can before handing the file over, and turns what logging raises into a
:class:`~reactor.cli.errors.UsageError` naming the file and the missing piece.

Part of the command line layer; imports only the standard library.
"""

from __future__ import annotations

import configparser
import json
import logging.config
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["apply_log_config"]

_INI_SECTIONS = ("loggers", "handlers", "formatters")
_INI_HELP = ("a logging.config.fileConfig INI file needs [loggers], [handlers] and "
             "[formatters] sections, each with keys=..., and a [logger_root] section; "
             "or give a JSON dictConfig file (*.json)")


def apply_log_config(config_file: str) -> None:
    """Configure logging from ``config_file`` (JSON if it ends in ``.json``, else INI).

    Existing loggers stay enabled unless the file says otherwise.

    Raises:
        UsageError: the file cannot be read or does not configure logging; the
            message names the file and what is wrong.
    """
    path = Path(config_file)
    where = f"--log-config {config_file}"
    if not path.is_file():
        raise UsageError(f"{where}: no such file")
    try:
        if path.suffix.lower() == ".json":
            logging.config.dictConfig(_json_config(path, where))
        else:
            _check_ini(path, where)
            try:
                logging.config.fileConfig(path, disable_existing_loggers=False)
            except KeyError as exc:  # fileConfig looks sections and options up by name
                raise UsageError(f"{where}: {_missing(str(exc.args[0]))}; {_INI_HELP}") from exc
    except (OSError, ValueError, TypeError, AttributeError, ImportError,
            configparser.Error) as exc:
        raise UsageError(f"{where}: {_explain(exc)}") from exc


def _json_config(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg})") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{where}: the file must hold one JSON object, a "
                         'logging.config.dictConfig dictionary such as {"version": 1, '
                         '"handlers": {...}, "root": {...}}')
    if config.get("version") != 1:
        raise UsageError(f'{where}: the dictionary needs "version": 1 (the only '
                         "version of logging.config.dictConfig's schema)")
    # the reactor's loggers exist already: keep them unless told otherwise
    config.setdefault("disable_existing_loggers", False)
    return config


def _check_ini(path: Path, where: str) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise UsageError(f"{where}: not an INI file ({_first_line(exc)})") from exc
    for section in _INI_SECTIONS:
        if not parser.has_section(section):
            raise UsageError(f"{where}: no [{section}] section; {_INI_HELP}")
        if not parser.has_option(section, "keys"):
            raise UsageError(f"{where}: [{section}] has no keys= line; {_INI_HELP}")


def _missing(key: str) -> str:
    if key in _INI_SECTIONS or key.startswith(("logger_", "handler_", "formatter_")):
        return f"no [{key}] section"
    return f"a section has no {key}= line"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _explain(exc: BaseException) -> str:
    """The error and the causes under it, e.g. "Unable to configure handler 'h': No
    module named 'no'"."""
    parts = [_first_line(exc)]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(parts) < 4:
        text = _first_line(cause)
        if text not in parts:
            parts.append(text)
        cause = cause.__cause__ or cause.__context__
    return ": ".join(parts)
