"""``reactor serve``'s options from the environment (``REACTOR_*``) and a TOML file
(``--config FILE``): the precedence (command line, file, environment, default), each
kind of value, the errors, and the names derived from the parser's own actions.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from servekit import ROOT, WAIT, ServerProcess

from reactor.cli import main
from reactor.cli.config import apply_configuration, env_name, environment_help, subcommand
from reactor.cli.errors import UsageError
from reactor.cli.main import build_parser

needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11),
                                   reason="--config reads TOML with tomllib (Python 3.11+)")


def resolve(argv: list[str], env: dict[str, str] | None = None,
            build: Callable[[], argparse.ArgumentParser] = build_parser) -> argparse.Namespace:
    """What ``reactor serve`` would run with, given ``argv`` and the environment."""
    args = build().parse_args(argv)
    return apply_configuration(args, argv, build, env or {})


def toml(tmp_path: Path, text: str, name: str = "reactor.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- precedence -----------------------------------------------------------------------------


@needs_tomllib
def test_command_line_wins_over_the_file_which_wins_over_the_environment(
        tmp_path: Path) -> None:
    config = toml(tmp_path, "max-connections = 7\nidle-timeout = 3\n")
    env = {"REACTOR_MAX_CONNECTIONS": "5", "REACTOR_IDLE_TIMEOUT": "9",
           "REACTOR_BACKLOG": "50"}
    args = resolve(["serve", "echo", "--config", config, "--max-connections", "9"], env)
    assert args.max_connections == 9  # command line
    assert args.idle_timeout == 3.0  # file over environment
    assert args.backlog == 50  # environment over the default
    assert args.write_timeout is None  # nobody set it: the default
    assert resolve(["serve", "echo", "--config", config], env).max_connections == 7
    assert resolve(["serve", "echo"], env).max_connections == 5
    assert resolve(["serve", "echo"]).max_connections is None


def test_a_command_line_value_equal_to_the_default_still_wins() -> None:
    default = build_parser().parse_args(["serve", "echo"]).backlog
    args = resolve(["serve", "echo", "--backlog", str(default)], {"REACTOR_BACKLOG": "5"})
    assert args.backlog == default


@needs_tomllib
def test_a_repeatable_option_is_replaced_not_extended(tmp_path: Path) -> None:
    config = toml(tmp_path, 'bind = ["127.0.0.1:1", "unix:/run/a.sock"]\n')
    env = {"REACTOR_BIND": "127.0.0.1:2"}
    assert resolve(["serve", "echo", "-b", "127.0.0.1:3", "--config", config], env).bind \
        == ["127.0.0.1:3"]
    assert resolve(["serve", "echo", "--config", config], env).bind \
        == ["127.0.0.1:1", "unix:/run/a.sock"]
    assert resolve(["serve", "echo"], env).bind == ["127.0.0.1:2"]


@needs_tomllib
def test_reactor_config_names_the_file_and_config_overrides_it(tmp_path: Path) -> None:
    first = toml(tmp_path, "backlog = 11\n", "first.toml")
    second = toml(tmp_path, "backlog = 22\n", "second.toml")
    assert resolve(["serve", "echo"], {"REACTOR_CONFIG": first}).backlog == 11
    assert resolve(["serve", "echo", "--config", second],
                   {"REACTOR_CONFIG": first}).backlog == 22


def test_an_empty_variable_counts_as_unset() -> None:
    assert resolve(["serve", "echo"], {"REACTOR_MAX_CONNECTIONS": "",
                                       "REACTOR_BIND": "  "}).max_connections is None


# -- each kind of value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "dest", "value"),
    [
        ("REACTOR_BIND", "127.0.0.1:1, [::1]:2 unix:/run/a.sock",
         "bind", ["127.0.0.1:1", "[::1]:2", "unix:/run/a.sock"]),
        ("REACTOR_MAX_CONNECTIONS", "100", "max_connections", 100),
        ("REACTOR_GRACEFUL_TIMEOUT", "2.5", "graceful_timeout", 2.5),
        ("REACTOR_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("REACTOR_UNIX_MODE", "660", "unix_mode", 0o660),
        ("REACTOR_LOG_CONFIG", "/etc/log.json", "log_config", "/etc/log.json"),
    ],
)
def test_values_from_the_environment(variable: str, text: str, dest: str,
                                     value: object) -> None:
    assert getattr(resolve(["serve", "echo"], {variable: text}), dest) == value


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "on"])
def test_a_switch_from_the_environment_turned_on(word: str) -> None:
    assert resolve(["serve", "echo"], {"REACTOR_REUSE_PORT": word}).reuse_port is True


@pytest.mark.parametrize("word", ["0", "false", "no", "Off"])
def test_a_switch_from_the_environment_turned_off(word: str) -> None:
    assert resolve(["serve", "echo"], {"REACTOR_REUSE_PORT": word}).reuse_port is False


@needs_tomllib
def test_values_from_the_file(tmp_path: Path) -> None:
    config = toml(tmp_path, "\n".join([
        'bind = "127.0.0.1:0"',  # one string for a list
        "max_connections = 100",  # _ for -
        "graceful-timeout = 2.5",
        "idle-timeout = 3",  # an integer for seconds
        'log-level = "warning"',
        "unix-mode = 600",  # a number for an octal mode: its digits
        "reuse-port = true",
        'app-dir = "/srv/app"',
    ]) + "\n")
    args = resolve(["serve", "echo", "--config", config])
    assert args.bind == ["127.0.0.1:0"]
    assert args.max_connections == 100
    assert args.graceful_timeout == 2.5 and args.idle_timeout == 3.0
    assert args.log_level == "WARNING"
    assert args.unix_mode == 0o600
    assert args.reuse_port is True
    assert args.app_dir == "/srv/app"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REACTOR_MAX_CONNECTIONS": "many"},
         "REACTOR_MAX_CONNECTIONS (for --max-connections): 'many' is not a whole number"),
        ({"REACTOR_REUSE_PORT": "maybe"},
         "REACTOR_REUSE_PORT (for --reuse-port): expected 1 or 0, true or false, yes or no, "
         "not maybe"),
        ({"REACTOR_BIND": "127.0.0.1:1,tcp:80"},
         "REACTOR_BIND (for --bind): tcp:80: no tcp: prefix is needed"),
        ({"REACTOR_LOG_LEVEL": "loud"}, "REACTOR_LOG_LEVEL (for --log-level): 'loud' is not "
                                        "a log level"),
    ],
)
def test_a_bad_environment_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve(["serve", "echo"], env)
    assert message in str(info.value)


@needs_tomllib
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max-conections = 5\n", "max-conections: unknown key; did you mean max-connections?"),
        ("colour = 5\n", "colour: unknown key; the keys are the long options of reactor "
                         "serve: bind, unix-mode, "),
        ("[serve]\nbind = 1\n", "serve: unknown key"),
        ("max-connections = true\n",
         "max-connections (for --max-connections): expected a number or a string, not true"),
        ('reuse-port = "yes"\n', 'reuse-port (for --reuse-port): expected true or false, '
                                 'not "yes"'),
        ("backlog = [1, 2]\n", "backlog (for --backlog): expected one value, not a list [1, 2]"),
        ("log-config = 5\n", "log-config (for --log-config): expected a string in quotes, "
                             "not 5"),
        ("max-connections = 0\n", "max-connections (for --max-connections): '0' must be at "
                                  "least 1"),
        ('bind = ["127.0.0.1:99999"]\n', "bind (for --bind): 127.0.0.1:99999: the port must "
                                         "be a number from 0 to 65535"),
        ('config = "other.toml"\n', "config: a configuration file cannot name another one"),
        ("max_connections = 1\nmax-connections = 2\n",
         "max-connections: given twice (also as max_connections)"),
        ("backlog = \n", "not valid TOML ("),  # tomllib's words follow, with the line
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str,
                                               message: str) -> None:
    config = toml(tmp_path, text)
    with pytest.raises(UsageError) as info:
        resolve(["serve", "echo", "--config", config])
    assert f"{config}: {message}" in str(info.value)


def test_a_missing_file_names_where_it_was_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match=f"^--config {missing}: no such file$"):
        resolve(["serve", "echo", "--config", missing])
    with pytest.raises(UsageError, match=f"^REACTOR_CONFIG {missing}: no such file$"):
        resolve(["serve", "echo"], {"REACTOR_CONFIG": missing})


# -- names derived from the parser ----------------------------------------------------------


def test_help_lists_a_variable_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    serve = subcommand(build_parser(), "serve")
    flags = [a for a in serve._actions if any(s.startswith("--") for s in a.option_strings)
             and a.dest != "help"]
    assert len(flags) >= 15
    for action in flags:
        assert env_name(action) in text, env_name(action)
    assert "REACTOR_MAX_CONNECTIONS" in text and "REACTOR_BIND" in text
    assert "the file over the environment" in text


def test_an_option_added_later_is_covered_without_a_list_to_keep() -> None:
    def build() -> argparse.ArgumentParser:
        parser = build_parser()
        serve = subcommand(parser, "serve")
        serve.add_argument("--colour", choices=["red", "blue"], default="red")
        serve.add_argument("--frobnicate", action="store_true")
        return parser

    args = resolve(["serve", "echo"], {"REACTOR_COLOUR": "blue",
                                       "REACTOR_FROBNICATE": "yes"}, build)
    assert args.colour == "blue" and args.frobnicate is True
    with pytest.raises(UsageError, match=r"REACTOR_COLOUR .*: green is not one of red, blue"):
        resolve(["serve", "echo"], {"REACTOR_COLOUR": "green"}, build)
    epilog = environment_help(subcommand(build(), "serve"))
    assert "REACTOR_COLOUR" in epilog and "REACTOR_FROBNICATE" in epilog


def test_the_logging_flags_come_from_the_environment_too() -> None:
    args = resolve(["serve", "echo"], {"REACTOR_LOG_FORMAT": "json",
                                       "REACTOR_ACCESS_LOG": "1"}, build_parser)
    assert args.log_format == "json" and args.access_log is True
    epilog = environment_help(subcommand(build_parser(), "serve"))
    for name in ("REACTOR_LOG_FORMAT", "REACTOR_ACCESS_LOG", "REACTOR_LOG_FILE", "REACTOR_PID"):
        assert name in epilog


# -- the real command -----------------------------------------------------------------------


@needs_tomllib
@pytest.mark.timeout(60)
def test_serve_takes_its_addresses_from_the_file_and_the_environment(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    config = toml(tmp_path, f'bind = ["unix:{sock}"]\ngraceful-timeout = 0\n')
    with ServerProcess("echo", env={"REACTOR_CONFIG": config, "REACTOR_BIND": "127.0.0.1:0",
                                    "REACTOR_GRACEFUL_TIMEOUT": "5"}) as srv:
        assert srv.addresses(1) == [f"unix:{sock}"]  # the file's, not the environment's
        srv.wait_for(r"serving echo")  # the signal handlers are in place
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert "graceful timeout 0 s" in srv.log
    with ServerProcess("echo", env={"REACTOR_BIND": "127.0.0.1:0"}) as srv:
        assert srv.addresses(1)[0].startswith("127.0.0.1:")
        srv.wait_for(r"serving echo")
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


@needs_tomllib
def test_serve_reports_a_bad_file_with_status_2(tmp_path: Path) -> None:
    config = toml(tmp_path, "max-conections = 5\n")
    result = subprocess.run([sys.executable, "-m", "reactor", "serve", "echo", "--config",
                             config], cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr == (f"reactor serve: error: {config}: max-conections: unknown key; "
                             "did you mean max-connections?\n")
