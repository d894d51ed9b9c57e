"""Where output goes: data on stdout, people on stderr.

A command's result (``Output.emit``) is, in this order of precedence:

- with ``--json``: exactly one JSON document on stdout, written when the command ends; when the command
  then fails, the error is that document too (``{"error", "hint", "exit_code"}``, merged into the result
  when one was already made, e.g. an ingest report or a failed ``--gate`` evaluation);
- on a terminal (stdout and stderr both) without ``--quiet``: rich tables on stderr, for people;
- otherwise (a pipe, a file, a cron log, or ``--quiet``): the same data as plain text on stdout, TSV with a
  header line for tables and ``key<TAB>value`` lines for one record (recctl/plain.py). ``--quiet`` drops the
  decoration (tables, colours, progress bars, stage logs), never the data.

Progress is ``recctl.progress``: a live display on a terminal, timestamped stage lines on stderr
otherwise, none with ``--quiet``. Info lines appear only when stderr is a terminal and neither ``--quiet``
nor ``--json`` is given. ``TTY_COMPATIBLE=1`` makes both streams count as terminals (rich tables in a log
you read yourself), ``TTY_COMPATIBLE=0`` as not. Errors and warnings always go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when something is shown: `recommend --json` never pays for it
    from rich.console import Console


def _default(o: object) -> object:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (``TTY_COMPATIBLE=1`` / ``0`` overrides it, as rich does for stderr)."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stdout
        return False


def _stderr_console() -> Console:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console.width = 160  # logs and pipes: no terminal to wrap tables into 80 columns
    return console


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    verbose: int = 0
    _err: Console | None = field(default=None, repr=False)
    #: the --json document(s) of this command, written by flush() (or, merged with the error, by fail())
    _pending: list[Any] = field(default_factory=list, repr=False)

    @property
    def err(self) -> Console:
        """The stderr console, made on first use."""
        if self._err is None:
            self._err = _stderr_console()
        return self._err

    @property
    def people(self) -> bool:
        """Whether human-facing tables and progress go to stderr."""
        return not self.quiet and not self.json_mode and self.err.is_terminal

    def emit(
        self,
        data: Any,
        render: Callable[[Console], None] | None = None,
        *,
        rows: Sequence[Mapping[str, Any]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        """One result: the JSON document with --json; rich tables on stderr for a person at a terminal;
        else plain text on stdout: ``rows`` (default: ``data`` when it is a list of records) as TSV with
        ``columns`` (default: the rows' keys) as the header, or ``data`` as ``key<TAB>value`` lines."""
        if self.json_mode:
            self._pending.append(data)
            return
        if render is not None and self.people and stdout_is_terminal():
            render(self.err)
            return
        from recctl.plain import render as plain

        sys.stdout.write(plain(data, rows, columns))
        sys.stdout.flush()

    def flush(self) -> None:
        """Write the --json document(s) of a command that succeeded."""
        pending, self._pending = self._pending, []
        for doc in pending:
            sys.stdout.write(to_json(doc) + "\n")
        sys.stdout.flush()

    def fail(self, message: str, hint: str | None, exit_code: int, *, stderr: bool = True) -> None:
        """A failure: the stderr line (unless the caller printed it), and with --json the error as the one
        document on stdout (merged into the command's result when it made one before failing)."""
        if stderr:
            self.error(message, hint)
        if not self.json_mode:
            return
        error = {"error": message, "hint": hint, "exit_code": int(exit_code)}
        result = self._pending[-1] if self._pending else None
        self._pending = []
        if isinstance(result, Mapping):
            doc: Any = {**result, **error}
        elif result is not None:
            doc = {**error, "result": result}
        else:
            doc = error
        try:
            sys.stdout.write(to_json(doc) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # nobody reads stdout any more: the stderr line stays
            pass

    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode and self.err.is_terminal:
            self.err.print(message)

    def warn(self, message: str) -> None:
        if not self.quiet:
            from rich.markup import escape

            # one line in a log, however long (a terminal wraps it itself)
            self.err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def error(self, message: str, hint: str | None = None) -> None:
        from rich.markup import escape

        # messages name config sections ("[[candidates]]", "[ranker]"): never read them as markup
        self.err.print(f"[bold red]recctl: error:[/] {escape(message)}", soft_wrap=True)
        if hint:
            self.err.print(f"  [dim]hint:[/] {escape(hint)}", soft_wrap=True)
