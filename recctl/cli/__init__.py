"""The ``recctl`` command line: parse options, take the lock, call one library function, render.

Exit codes (the only place they are decided): 0 ok · 1 internal error · 2 usage or config error ·
3 evaluation gate failed · 65 bad input data · 66 input file missing · 75 warehouse locked (retry) ·
130 interrupted (SIGINT) · 143 terminated (SIGTERM). docs/reliability.md has the table and the guarantees.
Under ``--json`` a failure is also one JSON document on stdout: ``{"error", "hint", "exit_code"}``.

The global options (--json, --quiet/-q, --verbose/-v, --warehouse, --config) are accepted anywhere on the
command line: ``run`` moves those given after the subcommand in front of it (``hoist_globals``).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # newer typer vendors click; older typer uses the click package
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import (  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]
        ClickException,
        UsageError,
    )

from recctl import __version__, signals
from recctl.cli.state import State
from recctl.console import Output
from recctl.errors import ExitCode, RecctlError

app = typer.Typer(
    name="recctl",
    help="Personalized e-commerce recommendations from the command line: ingest shop events into a "
    "DuckDB warehouse, train, evaluate and serve. Data goes to stdout (plain text or TSV, or one JSON "
    "document with --json), messages to stderr. The options below work before or after the command "
    "(recctl status --json).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: rich markup would eat "[prepare]" and keep the docstrings' line breaks
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_verbose = 0
_out: Output | None = None  # this command's output channel, made by the global options


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"recctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    warehouse: Annotated[
        Path | None,
        typer.Option(
            "--warehouse", help="DuckDB warehouse file (env RECCTL_WAREHOUSE; default ./recctl.duckdb)"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="config TOML (env RECCTL_CONFIG; default configs/recctl.toml if present)"
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="print exactly one JSON document on stdout (errors too)")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="no tables, colours, progress bars or stage logs: errors, warnings and the data (plain "
            "text on stdout)",
        ),
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="tracebacks on errors")] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    global _verbose, _out
    _verbose = verbose
    _out = Output(json_, quiet, verbose)
    ctx.obj = State(warehouse=warehouse, config_path=config, out=_out)


def _register() -> None:
    """Every module of this package with a ``register(app)`` adds its commands (in name order)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "state":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(app)


_register()


_GLOBAL_VALUED = ("--warehouse", "--config")  # the global options that take a value
_GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--verbose", "-v")


def _own_options(command: Any) -> dict[str, Any]:
    """A click command's options by each of their names (duck-typed: typer's vendored click differs)."""
    return {
        name: p
        for p in command.params
        if p.param_type_name == "option"
        for name in (*p.opts, *p.secondary_opts)
    }


def hoist_globals(argv: list[str], root: Any = None) -> list[str]:
    """``argv`` with the global options given after the subcommand moved in front of it.

    Values are kept with their option (``--config PATH``, ``--config=PATH``); the values of the
    subcommand's own options are never taken for options (``--user --json`` keeps ``--json`` as the user
    id); ``--`` ends the search. An option the subcommand defines itself stays the subcommand's
    (``status --config`` prints the configuration), except that a flag given a value is the global
    option of that name (``status --config=FILE``, and ``status --config FILE`` as status takes no
    arguments).
    """
    root = root if root is not None else typer.main.get_command(app)  # run() passes the one it runs
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":  # the root's own options
        i += 2 if argv[i] in _GLOBAL_VALUED else 1
    head, command = argv[:i], root
    path: list[str] = []
    moved: list[str] = []
    kept: list[str] = []
    rest = argv[i:]
    j = 0
    while j < len(rest):
        tok = rest[j]
        j += 1
        if tok == "--":
            kept += [tok, *rest[j:]]
            break
        if not tok.startswith("-") or tok == "-":
            sub = getattr(command, "commands", {}).get(tok) if not kept else None
            if sub is not None:
                command = sub
                path.append(tok)
            else:
                kept.append(tok)
            continue
        name, eq, _ = tok.partition("=")
        own = _own_options(command).get(name)
        has_value = j < len(rest) and not rest[j].startswith("-")
        if own is not None and not (
            own.is_flag
            and name in _GLOBAL_VALUED
            and (eq or (has_value and not any(p.param_type_name == "argument" for p in command.params)))
        ):
            kept.append(tok)
            if not own.is_flag and not own.count and not eq and j < len(rest):
                kept.append(rest[j])  # its value, whatever it looks like
                j += 1
            continue
        if name in _GLOBAL_VALUED and command is not root:
            if not eq:
                if j >= len(rest):
                    raise UsageError(f"Option '{name}' requires an argument.")
                moved += [tok, rest[j]]
                j += 1
            else:
                moved.append(tok)
        elif command is not root and (
            tok in _GLOBAL_FLAGS or (len(tok) > 2 and set(tok[1:]) <= {"q", "v"} and not tok.startswith("--"))
        ):
            moved.append(tok)
        else:
            kept.append(tok)
    return [*head, *moved, *path, *kept]


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (``main`` exits with it)."""
    global _out
    _out = None
    args = list(sys.argv[1:] if argv is None else argv)
    with signals.handled():
        try:
            command = typer.main.get_command(app)  # the click tree, built once
            args = hoist_globals(args, command)
            rv = command.main(args=args, prog_name="recctl", standalone_mode=False)
            out = _output(args)
            if rv == ExitCode.INTERRUPTED:  # typer's answer to a KeyboardInterrupt (SIGINT) outside a query
                out.fail(_INTERRUPTED.format("SIGINT"), None, ExitCode.INTERRUPTED)
                return ExitCode.INTERRUPTED
            out.flush()
        except BaseException as exc:
            return _failed(exc, _output(args))
    return rv if isinstance(rv, int) else ExitCode.OK


def _output(args: list[str]) -> Output:
    """The command's output channel; before the global options were parsed, one that knows --json."""
    if _out is not None:
        return _out
    i, json_mode = 0, False
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        json_mode = json_mode or args[i] == "--json"
        i += 2 if args[i] in _GLOBAL_VALUED else 1
    return Output(json_mode=json_mode)


_INTERRUPTED = "interrupted by {}: unfinished work was rolled back, nothing partial was kept"


def _failed(exc: BaseException, out: Output) -> int:
    """The one place an exception becomes a message and an exit code."""
    if isinstance(exc, typer.Exit | SystemExit):
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        code = int(code) if isinstance(code, int) else ExitCode.INTERNAL
        if code:
            out.fail(f"exited with code {code}", None, code, stderr=False)
        return code
    signum = signals.interrupted_by(exc)
    if signum is not None:  # SIGINT / SIGTERM, however deep it surfaced (inside DuckDB it is a RuntimeError)
        if _verbose:
            traceback.print_exception(exc)
        name = "SIGINT" if signum == 2 else "SIGTERM" if signum == 15 else f"signal {signum}"
        out.fail(_INTERRUPTED.format(name), None, 128 + signum)
        return 128 + signum
    if isinstance(exc, Exception) and not isinstance(exc, RecctlError):
        from recctl.warehouse.integrity import classify

        exc = classify(exc) or exc  # a damaged warehouse surfacing deep in a later query: exit 2
    if isinstance(exc, RecctlError):
        if _verbose:
            traceback.print_exception(exc)
        out.fail(exc.message, exc.hint, exc.exit_code)
        return int(exc.exit_code)
    if isinstance(exc, ClickException):  # bad command line: click prints usage and the problem
        exc.show()
        ctx = getattr(exc, "ctx", None)
        hint = f"{ctx.command_path} --help" if ctx is not None else "recctl --help"
        # a group called without its subcommand "fails" with its help text as the message
        message = "missing command" if type(exc).__name__ == "NoArgsIsHelpError" else exc.format_message()
        out.fail(message, hint, ExitCode.USAGE, stderr=False)
        return ExitCode.USAGE
    if isinstance(exc, typer.Abort):
        out.fail("interrupted", None, ExitCode.INTERRUPTED)
        return ExitCode.INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return ExitCode.OK
    if not isinstance(exc, Exception):
        raise exc
    if _verbose:
        traceback.print_exception(exc)
    out.fail(
        f"internal error: {type(exc).__name__}: {exc}",
        "run again with -v for the traceback",
        ExitCode.INTERNAL,
    )
    return ExitCode.INTERNAL


def main() -> None:
    sys.exit(run())
