"""Opening the warehouse as the writer (lock file + migrations) or as a read-only reader.

DuckDB itself allows one read-write process *or* several read-only ones per file. Writers serialize on
the lock file first, so they queue or exit 75 with a message naming the holder. A reader never takes
the lock file; if a writer has the database open, DuckDB refuses the read-only open, and the reader
retries for up to ``wait`` seconds and then exits 75 naming the writer. A writer that finds readers
holding the file (serving calls, each well under a second) retries its open for ``wait`` seconds, at least
``READER_GRACE``, then exits 75 too. ``writer_lock`` + ``reopen_writer`` let a long job hold the lock
file while it reads through a read-only connection, so that readers keep being served until it writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from recctl.config import RecctlConfig
from recctl.errors import LockHeldError, WarehouseError
from recctl.warehouse.lock import WarehouseLock, describe_holder, lock_path_for, read_holder
from recctl.warehouse.migrations import LATEST, current_version, migrate


@dataclass
class Warehouse:
    con: duckdb.DuckDBPyConnection
    path: Path
    read_only: bool


def _configure(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig) -> None:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # DuckDB's own bar would write to stdout
    if cfg.warehouse.threads:
        con.execute(f"SET threads = {int(cfg.warehouse.threads)}")
    if cfg.warehouse.memory_limit:
        con.execute("SET memory_limit = ?", [cfg.warehouse.memory_limit])


READER_GRACE = 5.0  # seconds a writer retries while read-only readers have the file open


@contextmanager
def open_writer(cfg: RecctlConfig, command: str, *, wait: float | None = None) -> Iterator[Warehouse]:
    """Take the writer lock, open read-write, apply pending migrations."""
    with writer_lock(cfg, command, wait=wait), reopen_writer(cfg, wait=wait) as wh:
        yield wh


@contextmanager
def writer_lock(cfg: RecctlConfig, command: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold the writer lock file (no connection): other writers queue or exit 75."""
    with WarehouseLock(cfg.warehouse.path, command) as lock:
        lock.acquire(cfg.warehouse.lock_wait if wait is None else wait)
        yield


@contextmanager
def reopen_writer(
    cfg: RecctlConfig, *, wait: float | None = None, grace: float = READER_GRACE
) -> Iterator[Warehouse]:
    """Open read-write and apply pending migrations; the caller holds ``writer_lock``.

    While readers have the file open, DuckDB refuses: retry for ``wait`` seconds (at least ``grace``),
    then exit 75.
    """
    path = cfg.warehouse.path
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(
        path,
        read_only=False,
        wait=max(cfg.warehouse.lock_wait if wait is None else wait, grace),
        refused=lambda exc: LockHeldError(
            f"the warehouse is open in other processes (readers): {_conflict(exc)}",
            hint="retry later, or pass --wait SECONDS",
        ),
    )
    try:
        _configure(con, cfg)
        migrate(con)
        yield Warehouse(con, path, read_only=False)
    finally:
        con.close()


def _connect(
    path: Path, *, read_only: bool, wait: float, refused: Callable[[Exception], LockHeldError]
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, retrying for ``wait`` seconds while another process's DuckDB lock refuses it; then
    raise ``refused(the last refusal)``."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise refused(exc) from None
            time.sleep(0.1)


def _conflict(exc: Exception) -> str:
    """DuckDB's lock message without its advice about the CLI."""
    return str(exc).split(". However,", 1)[0].removeprefix("IO Error: ")


@contextmanager
def open_reader(cfg: RecctlConfig, *, wait: float = 0.0) -> Iterator[Warehouse]:
    """Open read-only. Never takes the writer lock."""
    path = cfg.warehouse.path
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}", hint="run `recctl init` or `recctl ingest` first")
    con = _connect(
        path,
        read_only=True,
        wait=wait,
        refused=lambda _: LockHeldError(
            f"the warehouse is being written by {describe_holder(read_holder(lock_path_for(path)))}; "
            "read-only opens wait for it to finish",
            hint="retry later, or pass --wait SECONDS",
        ),
    )
    try:
        _configure(con, cfg)
        version = current_version(con)
        if version > LATEST:
            raise WarehouseError(f"the warehouse has schema version {version}; this recctl knows {LATEST}")
        if version < LATEST:
            raise WarehouseError(
                f"the warehouse has schema version {version}; this recctl needs {LATEST}",
                hint="run `recctl init` to migrate it",
            )
        yield Warehouse(con, path, read_only=True)
    finally:
        con.close()
