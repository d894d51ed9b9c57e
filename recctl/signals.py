"""SIGINT and SIGTERM, in one place: unwind cleanly, then exit 130 / 143.

Both signals become an exception in the main thread, so every ``with`` block and ``except BaseException``
clean-up runs on the way out: an open ingest transaction is rolled back, a training's ``runs/.tmp-*``
staging folder is removed, the writer lock is released and the DuckDB connection closed. The command
line (``recctl.cli.run``) alone turns what happened into the exit code, 128 + the signal number.

SIGINT keeps Python's own handler (``KeyboardInterrupt``): DuckDB's Python client polls for exactly that
handler inside a running query and aborts the query at once (a custom SIGINT handler is only seen when the
query returns, measured at 36 s against 2 s); typer turns it into exit 130 (``recctl.cli.run`` adds the
message). SIGTERM gets a handler that records the signal and raises
``Terminated``; inside a query DuckDB turns either into ``RuntimeError('Query interrupted')`` or
``duckdb.InterruptException``, which :func:`interrupted_by` recognises. A second SIGTERM while the first
is being handled exits at once (143): the warehouse is safe on a hard exit, as after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

#: Signal numbers received since ``handled()`` was entered, in order.
_received: list[int] = []


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM. Not an ``Exception``, so no ``except Exception`` swallows it,
    and not a ``KeyboardInterrupt``, which typer turns into a silent exit 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _on_term(signum: int, frame: FrameType | None) -> None:
    if signum in _received:  # the second one: the first is already unwinding; stop now
        sys.stderr.write("recctl: terminated again, exiting now\n")
        os._exit(128 + signum)
    _received.append(signum)
    raise Terminated(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration of one command (restored afterwards: tests run commands
    in-process). A SIGINT that was ignored when recctl started (``nohup``, a background job) stays ignored.
    Only the main thread can install handlers; elsewhere this does nothing."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _on_term)
    if previous[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupted_by(exc: BaseException) -> int | None:
    """The signal number behind ``exc`` when it is the unwinding of SIGINT / SIGTERM, else None."""
    if isinstance(exc, Terminated):
        return exc.signum
    if _received:
        return _received[0]
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    import duckdb  # already imported by whatever ran the query

    if isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, RuntimeError) and str(exc).strip() == "Query interrupted"
    ):
        return int(signal.SIGINT)
    return None
