"""``reactor serve``'s options from the environment and from a TOML file.

Every option of ``reactor serve`` can also be given as an environment variable,
``REACTOR_`` and the long option's name in capitals with ``_`` for ``-``
(``--max-connections`` -> ``REACTOR_MAX_CONNECTIONS``), or as a key of a TOML file named
by ``--config FILE`` (or ``REACTOR_CONFIG``), the long option's name with ``-`` or ``_``
(``max-connections = 100``). The command line wins over the file, the file over the
environment, the environment over the default. So a systemd unit or a container image
sets what it needs without a long command line.

The names are derived from the parser's own actions, never from a list kept here, so
an option added to ``build_parser`` later is covered (and listed in ``--help``, whose
epilog :func:`environment_help` writes) without touching this module. Values go through
the option's own ``type`` function and ``choices``, so they are checked exactly as on
the command line, and an error names the variable or the file and key:

- a repeatable option (``--bind``) takes a list: in the environment separated by
  commas or spaces, in the file a TOML array (or one string);
- a switch (``--reuse-port``) takes ``1/0``, ``true/false``, ``yes/no`` or ``on/off``
  in the environment, ``true``/``false`` in the file;
- any other option takes one value: a string, or in the file a number where the
  option takes one (``max-connections = 100``, ``unix-mode = "600"``).

An empty environment variable counts as unset. Unknown ``REACTOR_*`` variables are
left alone (other tools share the prefix); an unknown key in the file, or a value of
the wrong type, is a :class:`~reactor.cli.errors.UsageError`.

Which options the command line gave is found by parsing it again with every default
suppressed: what is left in the namespace was written there, whatever its value.

Part of the command line layer; imports only the standard library (``tomllib``, so
``--config`` needs Python 3.11 or later).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .errors import UsageError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "apply_configuration",
    "config_key",
    "configurable",
    "env_name",
    "environment_help",
    "subcommand",
]

ENV_PREFIX: Final = "REACTOR_"
CONFIG_DEST: Final = "config"
CONFIG_ENV: Final = ENV_PREFIX + "CONFIG"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_SEPARATORS: Final = re.compile(r"[,\s]+")


# -- the options, from the parser ---------------------------------------------------------


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` of ``parser``.

    Raises:
        KeyError: ``parser`` has no such subcommand.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def _long_flag(action: argparse.Action) -> str | None:
    return next((s for s in action.option_strings if s.startswith("--")), None)


def configurable(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` that the environment and the file may set: every
    option with a long flag that stores a value (not ``--help`` or ``--version``)."""
    return [
        action for action in parser._actions
        if _long_flag(action) is not None and action.dest != argparse.SUPPRESS
        and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
    ]


def env_name(action: argparse.Action) -> str:
    """``REACTOR_MAX_CONNECTIONS`` for ``--max-connections``."""
    flag = _long_flag(action) or action.dest
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def config_key(action: argparse.Action) -> str:
    """``max-connections`` for ``--max-connections`` (``max_connections`` is accepted too)."""
    flag = _long_flag(action) or action.dest
    return flag.lstrip("-")


def _is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0


def _is_list(action: argparse.Action) -> bool:
    return (isinstance(action, (argparse._AppendAction, argparse._ExtendAction))
            or action.nargs in ("*", "+"))


def _switch_value(action: argparse.Action, on: bool) -> Any:
    if isinstance(action, argparse.BooleanOptionalAction):
        return on
    if isinstance(action.const, bool):
        return action.const if on else not action.const
    return action.const if on else action.default


def environment_help(parser: argparse.ArgumentParser) -> str:
    """The ``--help`` epilog: how configuration works, and every variable by name."""
    rows = []
    for action in configurable(parser):
        note = " (a list)" if _is_list(action) else " (1/0)" if _is_switch(action) else ""
        rows.append(f"  {env_name(action):<28} {_long_flag(action)}{note}")
    return "\n".join([
        "configuration:",
        "  Every option can also be set in the environment, or in a TOML file named by",
        f"  --config FILE (or {CONFIG_ENV}) under the option's long name with - or _",
        "  (max-connections = 100, bind = [\"127.0.0.1:0\", \"unix:/run/app.sock\"]).",
        "  The command line wins over the file, the file over the environment. In the",
        "  environment a list is separated by commas or spaces, a switch takes 1/0,",
        "  true/false or yes/no, and an empty variable counts as unset.",
        "",
        "environment variables:",
        *rows,
    ])


# -- reading values -----------------------------------------------------------------------


def _convert(action: argparse.Action, text: str, where: str) -> Any:
    """One value, through the option's own type and choices."""
    convert: Callable[[str], Any] = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{where}: {exc}") from None
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {text} is not a valid value") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise UsageError(f"{where}: {text} is not one of {choices}")
    return value


def _from_environment(action: argparse.Action, text: str) -> Any:
    where = f"{env_name(action)} (for {_long_flag(action)})"
    if _is_switch(action):
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"{where}: expected 1 or 0, true or false, yes or no, "
                             f"not {text}")
        return _switch_value(action, word in _TRUE)
    if _is_list(action):
        return [_convert(action, item, where) for item in _SEPARATORS.split(text) if item]
    return _convert(action, text, where)


def _toml_text(value: object) -> str:
    """A TOML value as it was written (near enough), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _scalar(action: argparse.Action, value: object, where: str) -> Any:
    if isinstance(value, str):
        return _convert(action, value, where)
    takes_text = not callable(action.type) or action.type is str
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not takes_text:
        return _convert(action, str(value), where)
    wanted = "a string in quotes" if takes_text else "a number or a string"
    raise UsageError(f"{where}: expected {wanted}, not {_toml_text(value)}")


def _from_file(action: argparse.Action, value: object, where: str) -> Any:
    if _is_switch(action):
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, not {_toml_text(value)}")
        return _switch_value(action, value)
    if _is_list(action):
        items = value if isinstance(value, list) else [value]
        return [_scalar(action, item, where) for item in items]
    if isinstance(value, list):
        raise UsageError(f"{where}: expected one value, not a list {_toml_text(value)}")
    return _scalar(action, value, where)


def _load_toml(path: str, named_by: str) -> dict[str, Any]:
    if sys.version_info < (3, 11):
        raise UsageError(f"{named_by} {path}: reading TOML needs Python 3.11 or later "
                         "(the tomllib module); use the environment or flags instead")
    else:  # checked by mypy only when it targets 3.11 or later
        import tomllib

        try:
            with Path(path).open("rb") as file:
                return tomllib.load(file)
        except FileNotFoundError:
            raise UsageError(f"{named_by} {path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{named_by} {path}: cannot read it ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{named_by} {path}: not valid TOML ({exc})") from None


def _file_values(path: str, named_by: str,
                 actions: dict[str, argparse.Action]) -> dict[str, Any]:
    """The options the TOML file at ``path`` sets, by dest."""
    table = _load_toml(path, named_by)
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in table.items():
        action = actions.get(key.replace("_", "-"))
        where = f"{path}: {key}"
        if action is None or action.dest == CONFIG_DEST:
            if action is not None:
                raise UsageError(f"{where}: a configuration file cannot name another one")
            close = difflib.get_close_matches(key.replace("_", "-"), list(actions), n=1)
            hint = f"; did you mean {close[0]}?" if close else (
                f"; the keys are the long options of reactor serve: {', '.join(actions)}")
            raise UsageError(f"{where}: unknown key{hint}")
        if action.dest in seen:
            raise UsageError(f"{where}: given twice (also as {seen[action.dest]})")
        seen[action.dest] = key
        values[action.dest] = _from_file(action, value, f"{where} (for {_long_flag(action)})")
    return values


# -- putting it together ------------------------------------------------------------------


def _given_on_command_line(build: Callable[[], argparse.ArgumentParser],
                           argv: list[str], command: str) -> set[str]:
    """The dests the command line set, whatever their values: parsed again by a fresh
    parser whose defaults are all suppressed, only what was written is left."""
    parser = build()
    for action in subcommand(parser, command)._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def apply_configuration(
    args: argparse.Namespace,
    argv: list[str],
    build: Callable[[], argparse.ArgumentParser],
    environ: Mapping[str, str],
    command: str = "serve",
) -> argparse.Namespace:
    """Fill in ``args`` (parsed from ``argv``) from the file and the environment.

    Args:
        args: the namespace the command line gave, defaults included.
        argv: the command line it came from.
        build: makes the parser (a fresh one is parsed with defaults suppressed).
        environ: the environment (``os.environ``).
        command: the subcommand whose options are configurable.

    Returns:
        ``args``, each option taken from the command line if it was given there, else
        from the file, else from the environment, else left at its default.

    Raises:
        UsageError: a variable or key has a value the option refuses, the file cannot
            be read or is not TOML, or it has an unknown key.
    """
    actions = {config_key(a): a for a in configurable(subcommand(build(), command))}
    given = _given_on_command_line(build, argv, command)
    from_env: dict[str, Any] = {}
    for action in actions.values():
        text = environ.get(env_name(action), "")
        if text.strip():
            from_env[action.dest] = _from_environment(action, text)
    config = getattr(args, CONFIG_DEST, None)
    named_by = f"--{CONFIG_DEST}"
    if CONFIG_DEST not in given and CONFIG_DEST in from_env:
        config, named_by = from_env[CONFIG_DEST], CONFIG_ENV
    from_file = _file_values(config, named_by, actions) if config else {}
    for dest, value in (from_env | from_file).items():
        if dest not in given:
            setattr(args, dest, value)
    return args
