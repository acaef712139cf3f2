"""Command-line entry point: ``mmbot [global options] COMMAND [options]``.

Global options (``--config`` and one ``--section.key`` flag per non-secret setting) are
accepted both before and after the subcommand. Settings are loaded and logging configured
once, before any subcommand runs; subcommands receive ``(args, settings)``, and
``args.config_sources`` maps each dotted key to where its value came from.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from mmbot.buildinfo import version_line
from mmbot.cli.run import kill_switch_problem, recording_problem, shadow_records
from mmbot.clients import build_signer
from mmbot.config import (
    ConfigError,
    ConfigKey,
    ConfigProblem,
    Settings,
    config_keys,
    load_settings_with_sources,
    redacted_dump,
)
from mmbot.journal import SCHEMA_VERSION, JournalError
from mmbot.journal.files import check_path
from mmbot.journal.schema import check_version
from mmbot.logs import close_output, configure_logging, get_logger, register_pem, register_secret

__all__ = ["Handler", "build_parser", "format_config", "main"]

Handler = Callable[[argparse.Namespace, Settings], Any]

# Modules that add subcommands through ``register(subparsers, parents=[...])``. A module
# that is not installed is skipped, so a slimmed-down install still gets a working CLI.
PLUGIN_MODULES = (
    "mmbot.cli.ops",
    "mmbot.cli.journal",
    "mmbot.mock.cli",
    "mmbot.cli.run",
    "mmbot.cli.health",
    "mmbot.cli.bench",
    "mmbot.cli.report",
    "mmbot.cli.compare",
    "mmbot.cli.replay",
    "mmbot.cli.synthesize",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# 128 + SIGPIPE: what a shell reports for a tool whose output pipe was closed, as for `yes`
# in `yes | head -1`.
EXIT_BROKEN_PIPE = 141

_log = get_logger(__name__)


def _metavar(spec: ConfigKey) -> str:
    name = spec.key.rsplit(".", 1)[-1]
    if spec.value_type is int:
        return "N"
    if spec.value_type is float:
        return "SECONDS" if name.endswith("_seconds") else "X"
    if spec.value_type is Path:
        return "PATH"
    if name.endswith("_url"):
        return "URL"
    return name.upper()


def _flag_help(spec: ConfigKey) -> str:
    default = "unset" if spec.default is None else spec.default
    text = f"{spec.description}; expected {spec.expected} (default: {default})"
    return text.replace("%", "%%")


def _common_parser() -> argparse.ArgumentParser:
    # SUPPRESS keeps options that were not given out of the namespace entirely: otherwise the
    # subparser's defaults would overwrite values given before the subcommand, and absent
    # flags could not be told apart from flags that override a setting.
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = common.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: $MMBOT_CONFIG)",
    )
    for spec in config_keys():
        # Secrets are never flags: command lines are visible to every user via the process list.
        # Lists and tables (strategy routes) belong in the file, not on a command line.
        if spec.secret or not spec.scalar:
            continue
        group.add_argument(
            f"--{spec.key}",
            dest=spec.key,
            metavar=_metavar(spec),
            default=argparse.SUPPRESS,
            help=_flag_help(spec),
        )
    return common


class _VersionAction(argparse.Action):
    """``--version``: one unwrapped line, ``mmbot 0.1.0 (commit ...)``, resolved when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # argparse's own version action wraps the text to the terminal's width.
        print(version_line(parser.prog))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with built-in and plugin subcommands."""
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="mmbot",
        description="Market maker for Kalshi's RFQ rail.",
        parents=[common],
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and commit, and exit"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = subparsers.add_parser(
        "check-config",
        parents=[common],
        allow_abbrev=False,
        help="validate and print the effective configuration (secrets redacted)",
        description="Validate the configuration and print it with secrets redacted.",
    )
    check.add_argument(
        "config_file",
        nargs="?",
        metavar="FILE",
        help="the TOML file to check (the same as --config FILE)",
    )
    check.add_argument("--json", action="store_true", help="print the configuration as JSON")
    check.set_defaults(func=_check_config)

    for module_name in PLUGIN_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(subparsers, parents=[common])
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    return {spec.key: given[spec.key] for spec in config_keys() if spec.key in given}


def _print_problems(lines: Sequence[str]) -> None:
    print("error: invalid configuration", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


def _register_secrets(settings: Settings) -> None:
    # Registered before anything can log, so that the key id and key text are scrubbed even
    # where they turn up unexpectedly (exception messages, third-party debug output).
    kalshi = settings.kalshi
    if kalshi.key_id is not None:
        register_secret(kalshi.key_id.get_secret_value())
    try:
        pem = kalshi.private_key_pem()
    except ConfigError:
        # Reported by check-config, or by whichever command needs the key.
        return
    if pem is not None:
        register_pem(pem)


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so the interpreter's last flush succeeds."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass  # no descriptor (stdout replaced in-process): nothing the interpreter flushes
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mmbot command line and return the process exit status."""
    try:
        code = _main(argv)
        # Flushed here rather than at interpreter exit, where a reader that has gone away
        # would be reported as "Exception ignored ... BrokenPipeError".
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader of our output left (`mmbot quotes list | head -1`): stop quietly, like
        # any Unix tool. Nothing is printed: stderr may be that same pipe.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        # Queued output gets a bounded time to go out; a consumer that never reads must
        # not keep the process from exiting.
        close_output()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help, --version and usage errors; report the status instead.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    config = getattr(args, "config", None)
    named = getattr(args, "config_file", None)
    if named is not None and config is not None and named != config:
        print(f"error: two configuration files given: {config} and {named}", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings, sources = load_settings_with_sources(named or config, _overrides(args))
    except ConfigError as exc:
        _print_problems([str(problem) for problem in exc.problems])
        return EXIT_ERROR
    args.config_sources = sources
    _register_secrets(settings)
    configure_logging(settings.log.level, settings.log.resolved_format(sys.stderr), sys.stderr)

    try:
        result = args.func(args, settings)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except ConfigError as exc:
        _print_problems([str(problem) for problem in exc.problems])
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # a closed stdout, not a failure of the command: main() handles it
    except Exception:
        # Logged rather than printed so the traceback goes through redaction.
        _log.exception("command failed", command=args.command)
        return EXIT_ERROR
    return EXIT_OK if result is None else int(result)


def _extra_checks(settings: Settings, sources: Mapping[str, str] | None = None) -> list[str]:
    """Return problems that need more than validation: strategies, files and the signing key."""
    # Imported here: building strategies imports plug-ins, which only this check needs.
    from mmbot.cli.run import build_router

    problems: list[str] = []
    try:
        # The same routes `mmbot run` builds: unknown strategies and bad parameters show here.
        build_router(settings)
    except ConfigError as exc:
        problems.extend(str(problem) for problem in exc.problems)
    known = sources or {}
    problems.extend(
        str(problem)
        for problem in (
            _journal_problem(settings, known),
            kill_switch_problem(settings, known),
            recording_problem(shadow_records(settings, known), known),
        )
        if problem is not None
    )
    kalshi = settings.kalshi
    has_key = kalshi.private_key is not None or kalshi.private_key_path is not None
    if kalshi.key_id is None and not has_key:
        # No credentials at all is a valid setup: dry-run against the mock exchange needs none.
        return problems
    try:
        # The same path the live commands take, so a key that passes here will sign there.
        build_signer(kalshi)
    except ConfigError as exc:
        problems.extend(str(problem) for problem in exc.problems)
    return problems


def _journal_problem(settings: Settings, sources: Mapping[str, str]) -> ConfigProblem | None:
    """What `mmbot run` would refuse about the journal file, found without changing it."""
    path = settings.journal.path
    try:
        # create=False and a read-only open: a check must not create, lock or migrate.
        check_path(path, create=False)
        if path.is_file():
            check_version(path)
    except JournalError as exc:
        return ConfigProblem(
            keys=("journal.path",),
            expected=f"a writable journal file, at schema version {SCHEMA_VERSION} or older",
            note=str(exc),
            sources=(sources.get("journal.path"),),
        )
    return None


def _config_warnings(settings: Settings) -> list[str]:
    """Return what is allowed but will stop some command: no signing key at all."""
    kalshi = settings.kalshi
    if any(v is not None for v in (kalshi.key_id, kalshi.private_key, kalshi.private_key_path)):
        # Half a key is an error, found by _extra_checks.
        return []
    # Valid (a dry-run needs no key), so not an error; a live `mmbot run` would refuse.
    problem = ConfigProblem(
        keys=("kalshi.key_id", "kalshi.private_key_path"),
        expected="a key id and a private key (kalshi.private_key_path or kalshi.private_key)"
        " for `mmbot run` without --dry-run",
        got="neither",
        note="set MMBOT_KALSHI__KEY_ID and MMBOT_KALSHI__PRIVATE_KEY_PATH",
    )
    return [str(problem)]


def _print_warnings(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def _render_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return json.dumps(str(value))


def format_config(dump: dict[str, Any], sources: dict[str, str]) -> str:
    """Render a redacted dump as TOML-like sections, each key annotated with its source."""
    out: list[str] = []
    for section, values in dump.items():
        if out:
            out.append("")
        out.append(f"[{section}]")
        rows = [
            (f"{key} = {_render_value(value)}", sources.get(f"{section}.{key}", "default"))
            for key, value in values.items()
        ]
        width = max(len(text) for text, _ in rows)
        out.extend(f"{text.ljust(width)}  # {source}" for text, source in rows)
    return "\n".join(out)


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the configuration further and print it with secrets redacted."""
    problems = _extra_checks(settings, getattr(args, "config_sources", None))
    if problems:
        _print_problems(problems)
    # After the errors, so that "error: invalid configuration" stays the first line.
    _print_warnings(_config_warnings(settings))
    if problems:
        return EXIT_ERROR
    dump = redacted_dump(settings)
    if args.json:
        print(orjson.dumps(dump, option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_config(dump, getattr(args, "config_sources", {})))
    return EXIT_OK
