"""Where output goes: data on stdout (``--json``), people on stderr (rich tables; progress is
``recctl.progress``).

Tables appear only when stderr is a terminal and ``--quiet`` is not given. Set ``TTY_COMPATIBLE=1`` to
force them (e.g. for a log you read yourself). Errors and warnings always go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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

    def emit(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """One result: the JSON document on stdout with --json, else the rendering for people."""
        if self.json_mode:
            sys.stdout.write(to_json(data) + "\n")
            sys.stdout.flush()
        elif render is not None and self.people:
            render(self.err)

    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode and self.err.is_terminal:
            self.err.print(message)

    def warn(self, message: str) -> None:
        if not self.quiet:
            from rich.markup import escape

            self.err.print(f"[yellow]warning:[/] {escape(message)}")

    def error(self, message: str, hint: str | None = None) -> None:
        from rich.markup import escape

        # messages name config sections ("[[candidates]]", "[ranker]"): never read them as markup
        self.err.print(f"[bold red]recctl: error:[/] {escape(message)}", soft_wrap=True)
        if hint:
            self.err.print(f"  [dim]hint:[/] {escape(hint)}", soft_wrap=True)
