"""The ``recctl`` command line: parse options, take the lock, call one library function, render.

Exit codes (the only place they are decided): 0 ok · 1 internal error · 2 usage or config error ·
3 evaluation gate failed · 65 bad input data · 66 input file missing · 75 warehouse locked (retry) ·
130 interrupted (SIGINT) · 143 terminated (SIGTERM). docs/reliability.md has the table and the guarantees.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

try:  # newer typer vendors click; older typer uses the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[import-not-found,no-redef,unused-ignore]

from recctl import __version__, signals
from recctl.cli.state import State
from recctl.console import Output
from recctl.errors import ExitCode, RecctlError

app = typer.Typer(
    name="recctl",
    help="Personalized e-commerce recommendations from the command line: ingest shop events into a "
    "DuckDB warehouse, train, evaluate and serve. Data goes to stdout (--json), messages to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_verbose = 0


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
    json_: Annotated[bool, typer.Option("--json", help="print exactly one JSON document on stdout")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="no tables, progress or stage logs on stderr: errors and warnings only"
        ),
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="tracebacks on errors")] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    global _verbose
    _verbose = verbose
    ctx.obj = State(warehouse=warehouse, config_path=config, out=Output(json_, quiet, verbose))


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


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (``main`` exits with it)."""
    out = Output()
    with signals.handled():
        try:
            rv = app(args=argv, prog_name="recctl", standalone_mode=False)
        except BaseException as exc:
            return _failed(exc, out)
    if rv == ExitCode.INTERRUPTED:  # typer's answer to a KeyboardInterrupt (SIGINT) outside a query
        out.error(_INTERRUPTED.format("SIGINT"))
    return rv if isinstance(rv, int) else ExitCode.OK


_INTERRUPTED = "interrupted by {}: unfinished work was rolled back, nothing partial was kept"


def _failed(exc: BaseException, out: Output) -> int:
    """The one place an exception becomes a message and an exit code."""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else ExitCode.INTERNAL
    signum = signals.interrupted_by(exc)
    if signum is not None:  # SIGINT / SIGTERM, however deep it surfaced (inside DuckDB it is a RuntimeError)
        if _verbose:
            traceback.print_exception(exc)
        name = "SIGINT" if signum == 2 else "SIGTERM" if signum == 15 else f"signal {signum}"
        out.error(_INTERRUPTED.format(name))
        return 128 + signum
    if isinstance(exc, Exception) and not isinstance(exc, RecctlError):
        from recctl.warehouse.integrity import classify

        exc = classify(exc) or exc  # a damaged warehouse surfacing deep in a later query: exit 2
    if isinstance(exc, RecctlError):
        if _verbose:
            traceback.print_exception(exc)
        out.error(exc.message, exc.hint)
        return int(exc.exit_code)
    if isinstance(exc, ClickException):  # bad command line: click prints usage and the problem
        exc.show()
        return ExitCode.USAGE
    if isinstance(exc, typer.Abort):
        out.error("interrupted")
        return ExitCode.INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return ExitCode.OK
    if not isinstance(exc, Exception):
        raise exc
    if _verbose:
        traceback.print_exception(exc)
    out.error(f"internal error: {type(exc).__name__}: {exc}", "run again with -v for the traceback")
    return ExitCode.INTERNAL


def main() -> None:
    sys.exit(run())
