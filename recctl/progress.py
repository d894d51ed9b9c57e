"""Progress of long steps: library code names its stages, the command that runs it decides how they show.

Library code says what it is doing, and nothing more::

    from recctl import progress

    with progress.stage("fit generator ials"):
        gen.fit(...)
    with progress.stage("rank users", total=users.len(), unit="users"):
        for chunk in chunks:
            ...
            progress.advance(chunk.len())  # per chunk of users, never per row

A command sets the reporter for its duration (``with progress.reporting(out, "train"):``, in the CLI):

- stderr a terminal (and neither ``--quiet`` nor ``--json``): a rich display, one spinner or bar per open
  stage (nested stages indented, ``n/N`` when the total is known), the elapsed time, and one line per
  finished top-level stage with its seconds;
- otherwise (cron, a pipe, ``--json``): timestamped one-line stage logs on stderr, a line when a stage
  starts and one when it ends, so a log shows where the time went::

      2026-12-03T06:40:12Z recctl train: fit generator ials …
      2026-12-03T06:40:24Z recctl train: fit generator ials … done in 12.3 s

  a stage with a count logs it (``… done in 4.2 s, 2000/2000 users``), and at most every
  ``LOG_EVERY_S`` seconds in between;
- ``--quiet``: nothing.

Without a reporter (tests, library users) ``stage`` and ``advance`` do nothing and print nothing; the
cost of a stage is then one context-variable lookup.

The reporter lives in a context variable; threads of a pool do not inherit it, so stages and
``advance`` are called from the thread that runs the command (``recommend --all`` advances as the
chunks' results arrive).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from recctl.console import Output

#: seconds between two progress lines of one stage in the stage logs (its start and end always log)
LOG_EVERY_S = 30.0
#: the separator of nested stage names in the stage logs ("ranker / LightGBM fit")
SEP = " / "


@dataclass
class Stage:
    """One open stage: its name, its count so far and its total (None: unknown)."""

    name: str
    path: str  # the names of the open stages down to this one, joined by SEP
    depth: int
    total: int | None = None
    unit: str = ""
    done: int = 0
    note: str = ""  # what the stage found, shown on its end line ("loaded 9 of 12 rows")
    counted: bool = False  # advance() was called: the count is worth showing
    t0: float = field(default_factory=time.perf_counter)
    handle: Any = None  # the reporter's own (a rich task id)

    def count(self) -> str:
        """``"40/120 users"``, ``"12 files"`` or ``""`` (nothing counted)."""
        if not self.counted and self.total is None:
            return ""
        n = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        return f"{n} {self.unit}".rstrip()


class Reporter:
    """What a command shows of the stages; the base shows nothing."""

    def __init__(self) -> None:
        self.stack: list[Stage] = []

    def started(self, st: Stage) -> None: ...

    def advanced(self, st: Stage) -> None: ...

    def finished(self, st: Stage, seconds: float, error: BaseException | None) -> None: ...

    def close(self) -> None: ...


def _outcome(seconds: float, error: BaseException | None) -> str:
    if error is None:
        return f"done in {seconds:.1f} s"
    from recctl.signals import interrupted_by

    if interrupted_by(error) is not None:
        return f"interrupted after {seconds:.1f} s"
    return f"failed after {seconds:.1f} s ({type(error).__name__})"


def _tail(st: Stage) -> str:
    """``", 2000/2000 users: <note>"`` for an end line (what is known of it)."""
    count = st.count()
    return (f", {count}" if count else "") + (f": {st.note}" if st.note else "")


class LogReporter(Reporter):
    """Timestamped one-line stage logs (UTC) on ``stream`` (default: stderr at the time of writing)."""

    def __init__(
        self, command: str, stream: TextIO | None = None, *, clock: Any = None, every_s: float = LOG_EVERY_S
    ) -> None:
        super().__init__()
        self.command = command
        self.stream = stream
        self.clock = clock or (lambda: datetime.now(UTC))
        self.every_s = every_s
        self._last: dict[int, float] = {}

    def _line(self, st: Stage, tail: str) -> None:
        stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        stream = self.stream or sys.stderr
        stream.write(f"{stamp} recctl {self.command}: {st.path} …{tail}\n")
        stream.flush()

    def started(self, st: Stage) -> None:
        self._last[id(st)] = time.perf_counter()
        self._line(st, f" {st.count()}" if st.total is not None else "")

    def advanced(self, st: Stage) -> None:
        now = time.perf_counter()
        if now - self._last.get(id(st), st.t0) >= self.every_s:
            self._last[id(st)] = now
            share = f" ({st.done / st.total:.0%})" if st.total else ""
            self._line(st, f" {st.count()}{share} after {now - st.t0:.1f} s")

    def finished(self, st: Stage, seconds: float, error: BaseException | None) -> None:
        self._last.pop(id(st), None)
        self._line(st, f" {_outcome(seconds, error)}{_tail(st)}")


class RichReporter(Reporter):
    """A rich live display on the terminal ``console`` (transient: it is gone when the command ends)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self._bar: Any = None

    def _progress(self) -> Any:
        if self._bar is None:
            from rich.progress import BarColumn, Progress, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
            from rich.text import Text

            class Bar(BarColumn):  # a bar only where the total is known (no pulsing "0/?")
                def render(self, task: Task) -> Any:
                    return super().render(task) if task.total is not None else Text("")

            self._bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), Bar(), TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(), console=self.console, transient=True,
            )  # fmt: skip
            self._bar.start()
        return self._bar

    def started(self, st: Stage) -> None:
        from rich.markup import escape

        bar = self._progress()
        st.handle = bar.add_task(
            "  " * st.depth + escape(st.name), total=st.total, completed=st.done, count=st.count()
        )

    def advanced(self, st: Stage) -> None:
        self._progress().update(st.handle, total=st.total, completed=st.done, count=st.count())

    def finished(self, st: Stage, seconds: float, error: BaseException | None) -> None:
        from rich.markup import escape

        bar = self._progress()
        bar.remove_task(st.handle)
        if st.depth == 0 or error is not None:
            style = "dim" if error is None else "red"
            text = escape(f"{_outcome(seconds, error)}{_tail(st)}")
            bar.console.print(f"  {escape(st.path)}  [{style}]{text}[/]", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


_current: ContextVar[Reporter | None] = ContextVar("recctl_progress", default=None)


def current() -> Reporter | None:
    """The reporter a command set, or None (then stages are silent)."""
    return _current.get()


@contextmanager
def stage(name: str, *, total: int | None = None, unit: str = "") -> Iterator[Stage | None]:
    """A named step of the current command (nested in the open one); silent without a reporter."""
    rep = _current.get()
    if rep is None:
        yield None
        return
    parent = rep.stack[-1] if rep.stack else None
    st = Stage(name, name if parent is None else parent.path + SEP + name, len(rep.stack), total, unit)
    rep.stack.append(st)
    rep.started(st)
    try:
        yield st
    except BaseException as exc:
        rep.stack.remove(st)
        rep.finished(st, time.perf_counter() - st.t0, exc)
        raise
    rep.stack.remove(st)
    rep.finished(st, time.perf_counter() - st.t0, None)


def advance(n: int = 1, total: int | None = None) -> None:
    """Count ``n`` more done in the innermost open stage (and set its total when given)."""
    rep = _current.get()
    if rep is None or not rep.stack:
        return
    st = rep.stack[-1]
    st.done += n
    st.counted = True
    if total is not None:
        st.total = total
    rep.advanced(st)


def note(text: str) -> None:
    """What the innermost open stage found, for its end line (e.g. an ingested file's row counts)."""
    rep = _current.get()
    if rep is not None and rep.stack:
        rep.stack[-1].note = " ".join(text.split())  # one line, whatever the text holds


@contextmanager
def use(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Make ``reporter`` the current one for the block (None: silence), closing it at the end."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)
        if reporter is not None:
            reporter.close()


def for_output(out: Output, command: str) -> Reporter | None:
    """The reporter for a command's output: None with --quiet, bars on a terminal, stage logs otherwise."""
    if out.quiet:
        return None
    if out.people:
        return RichReporter(out.err)
    return LogReporter(command)


@contextmanager
def reporting(out: Output, command: str) -> Iterator[Reporter | None]:
    """``with progress.reporting(state.out, "train"):`` around the library call of a command."""
    with use(for_output(out, command)) as rep:
        yield rep
