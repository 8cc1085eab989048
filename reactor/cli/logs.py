"""Where ``reactor serve`` logs, and in what shape: ``--log-format``, ``--log-file``,
``--pid``, and the reopening that SIGHUP asks for.

* :func:`make_handler` -- the one handler of a command without ``--log-config``: text
  lines (``TIME LEVEL LOGGER: MESSAGE``) or JSON lines (:class:`JsonFormatter`), on
  stderr or appended to a file (:class:`ReopeningFileHandler`).
* :class:`JsonFormatter` -- one JSON object per line: ``timestamp`` (ISO 8601 with the
  time zone's offset), ``level``, ``logger``, ``message``, then every field the call
  passed with ``extra=`` (the access log's ``peer``, ``local``, ``duration``,
  ``bytes_in``, ``bytes_out``, ``requests``, ``reason``), and ``exception`` with a
  traceback when there is one.
* :func:`reopen_files` -- SIGHUP: every file handler of every logger closes its file
  and opens the path again, so after logrotate has moved the file away the new lines
  go to a new file at the old path (a ``--log-config`` file handler included). Lines
  logged meanwhile wait on the handler's lock, none is lost.
* :class:`PidFile` -- ``--pid PATH``: written (atomically, through a temporary file
  renamed into place) before serving, removed at exit if it still holds our process id.

Imports nothing from the reactor: usable by any command.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Final, TextIO

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "PidFile",
    "ReopeningFileHandler",
    "make_handler",
    "reopen_files",
]

logger = logging.getLogger("reactor.serve")

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# the attributes every LogRecord has: anything else on a record came through extra=
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created).astimezone()
        doc: dict[str, Any] = {
            "timestamp": stamp.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class ReopeningFileHandler(logging.FileHandler):
    """A file handler, appending, that :meth:`reopen` points at its path again."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def reopen(self) -> None:
        """Close the file and open the path again (a new file if it was moved away)."""
        _reopen(self)


def _reopen(handler: logging.FileHandler) -> None:
    handler.acquire()  # a line being written finishes first; the next waits
    try:
        stream = handler.stream
        handler.stream = handler._open()
        if stream is not None:
            try:
                stream.flush()
            finally:
                stream.close()
    finally:
        handler.release()


def make_handler(log_format: str = "text", log_file: str | None = None,
                 text_format: str = TEXT_FORMAT) -> logging.Handler:
    """The handler of a command without a logging configuration file.

    Args:
        log_format: ``text`` or ``json``.
        log_file: append to this file (None: stderr).
        text_format: the format of a text line.

    Raises:
        OSError: the file cannot be opened for appending.
        ValueError: an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be text or json, not {log_format!r}")
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopeningFileHandler(log_file)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(text_format))
    return handler


def _file_handlers() -> list[logging.FileHandler]:
    loggers: list[Any] = [logging.getLogger(),
                          *logging.Logger.manager.loggerDict.values()]
    found: list[logging.FileHandler] = []
    for each in loggers:
        for handler in getattr(each, "handlers", ()):
            if isinstance(handler, logging.FileHandler) and handler not in found:
                found.append(handler)
    return found


def reopen_files() -> list[str]:
    """Reopen every log file (after log rotation moved it away); log what was done.

    Returns:
        The paths reopened (a file that cannot be reopened is logged and skipped: its
        handler keeps writing to the old file).
    """
    done: list[str] = []
    for handler in _file_handlers():
        if handler.mode not in ("a", "at"):
            continue  # reopening a truncating handler would wipe what it wrote
        try:
            _reopen(handler)
        except OSError as exc:
            logger.error("SIGHUP: cannot reopen the log file %s: %s; still writing to the "
                         "old file", handler.baseFilename, exc.strerror or exc)
        else:
            done.append(handler.baseFilename)
    if done:
        logger.info("SIGHUP: reopened the log file%s %s", "s" if len(done) > 1 else "",
                    ", ".join(done))
    else:
        logger.info("SIGHUP: no log file to reopen (logging to stderr); still serving")
    return done


class PidFile:
    """``--pid PATH``: the process id, written at start and removed at exit.

    Raises:
        OSError: from :meth:`write`, when the file cannot be written (its message names
            the path).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._written = False

    def write(self) -> None:
        """Write the process id (to a temporary file renamed over PATH)."""
        pid = os.getpid()
        temporary = self.path.with_name(f".{self.path.name}.{pid}.tmp")
        try:
            with open(temporary, "w", encoding="ascii") as out:
                _write_line(out, str(pid))
            os.replace(temporary, self.path)
        except OSError as exc:
            try:
                temporary.unlink()
            except OSError:
                pass
            raise OSError(exc.errno, f"cannot write the pid file {self.path} (--pid): "
                                     f"{exc.strerror or exc}") from exc
        self._written = True

    def remove(self) -> None:
        """Remove the file, if it still holds this process's id."""
        if not self._written:
            return
        self._written = False
        try:
            if self.path.read_text(encoding="ascii").strip() == str(os.getpid()):
                self.path.unlink()
        except (OSError, ValueError) as exc:
            logger.warning("cannot remove the pid file %s: %s", self.path, exc)


def _write_line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()
    os.fsync(out.fileno())
