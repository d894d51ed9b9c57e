"""Opening the warehouse as the writer (lock file + migrations) or as a read-only reader.

DuckDB itself allows one read-write process *or* several read-only ones per file. Writers serialize on
the lock file first, so they queue or exit 75 with a message naming the holder. A reader never takes
the lock file; if a writer has the database open, DuckDB refuses the read-only open, and the reader
retries for up to ``wait`` seconds and then exits 75 naming the writer. A writer that finds readers
holding the file (serving calls, each well under a second) retries its open for ``wait`` seconds, at least
``READER_GRACE``, then exits 75 too. ``writer_lock`` + ``reopen_writer`` let a long job hold the lock
file while it reads through a read-only connection, so that readers keep being served until it writes.

A damaged file never gets written to: before DuckDB opens it, ``preflight`` refuses a path that is not a
DuckDB file and a WAL DuckDB would skip; a writer then reads every data block (``integrity.verify``)
before its first write. Any DuckDB error inside the ``with`` body that says the file is damaged
(``integrity.classify``) leaves as a WarehouseError (exit 2) with the recovery hint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from recctl.config import RecctlConfig
from recctl.errors import LockHeldError, WarehouseError
from recctl.warehouse import preflight
from recctl.warehouse.integrity import classify, verify
from recctl.warehouse.lock import WarehouseLock, describe_holder, live_holder, lock_path_for
from recctl.warehouse.migrations import LATEST, current_version, migrate
from recctl.warehouse.settings import apply_settings


@dataclass
class Warehouse:
    con: duckdb.DuckDBPyConnection
    path: Path
    read_only: bool


def _duckdb_reason(exc: Exception) -> str:
    return str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)


@contextmanager
def _classified(path: Path) -> Iterator[None]:
    """DuckDB errors that say the file is damaged leave as WarehouseError (exit 2) with the hint."""
    try:
        yield
    except duckdb.Error as exc:
        err = classify(exc, path)
        if err is None:
            raise
        raise err from exc


READER_GRACE = 5.0  # seconds a writer retries while read-only readers have the file open

#: Where DuckDB spills what does not fit in its memory limit (sorts, hash joins and aggregates, temp tables
#: such as ingest's stage table) unless ``[resources] temp_dir`` says otherwise: a folder beside the
#: warehouse, on its disk, set on every connection; DuckDB removes the files when the connection closes.
TEMP_SUFFIX = ".tmp"


def temp_dir_for(path: Path) -> Path:
    return path.with_name(path.name + TEMP_SUFFIX)


def _spill_to(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, path: Path) -> None:
    con.execute("SET temp_directory = ?", [str(cfg.resources.temp_dir or temp_dir_for(path))])


@contextmanager
def open_writer(cfg: RecctlConfig, command: str, *, wait: float | None = None) -> Iterator[Warehouse]:
    """Take the writer lock, open read-write, apply pending migrations."""
    with writer_lock(cfg, command, wait=wait), reopen_writer(cfg, wait=wait) as wh:
        yield wh


@contextmanager
def writer_lock(cfg: RecctlConfig, command: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold the writer lock file (no connection): other writers queue or exit 75."""
    # no lock file next to a CSV; a file still empty may be a warehouse another writer is creating under
    # the lock (reopen_writer checks it strictly once this one holds the lock)
    preflight.check_location(cfg.warehouse.path, create=True, being_created=True)
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
    preflight.check_location(path, create=True)
    preflight.check_wal(path)  # before DuckDB opens it: a writer would truncate a skipped WAL
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
        with _classified(path):
            apply_settings(con, cfg)
            _spill_to(con, cfg, path)
            verify(con, path)  # every data block, before the first write
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
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            err = classify(exc, path)
            if err is not None:
                raise err from exc
            if not isinstance(exc, duckdb.IOException) or not _LOCK_CONFLICT.search(str(exc)):
                raise WarehouseError(f"cannot open warehouse {path}: {_duckdb_reason(exc)}") from exc
            if time.monotonic() >= deadline:
                raise refused(exc) from None
            time.sleep(0.1)
            continue
        try:  # DuckDB opens some existing non-DuckDB files as an in-memory database: never write there
            (db_path,) = con.execute(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
            ).fetchone() or (None,)
        except duckdb.Error:
            db_path = None
        if db_path is None:
            con.close()
            raise WarehouseError(
                f"not a DuckDB warehouse: {path} (DuckDB opened it as an in-memory database)"
            )
        return con


_LOCK_CONFLICT = re.compile(r"could not set lock|conflicting lock", re.IGNORECASE)


def _conflict(exc: Exception) -> str:
    """DuckDB's lock message without its advice about the CLI."""
    text = str(exc).split(". However,", 1)[0].split(". See also", 1)[0]
    return text.removeprefix("IO Error: ")


@contextmanager
def open_reader(cfg: RecctlConfig, *, wait: float = 0.0) -> Iterator[Warehouse]:
    """Open read-only. Never takes the writer lock."""
    path = cfg.warehouse.path
    preflight.check_location(path, create=False)
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}", hint="run `recctl init` or `recctl ingest` first")
    con = _connect(path, read_only=True, wait=wait, refused=lambda exc: _being_written(path, exc))
    try:
        with _classified(path):
            _reader_setup(con, cfg, path)
            yield Warehouse(con, path, read_only=True)
    finally:
        con.close()


def _being_written(path: Path, exc: Exception) -> LockHeldError:
    """Who has the file open read-write: the lock file's holder while it is alive, else DuckDB's word."""
    holder = live_holder(lock_path_for(path))
    if holder:
        who = describe_holder(holder)
    else:  # no live recctl writer (a killed one leaves its record): whoever DuckDB names
        m = re.search(r"held in (.+?) \(PID (\d+)\)", str(exc))
        who = f"pid {m.group(2)} ({m.group(1)}, without the recctl lock)" if m else "another process"
    return LockHeldError(
        f"the warehouse is being written by {who}; read-only opens wait for it to finish",
        hint="retry later, or pass --wait SECONDS",
    )


def _reader_setup(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, path: Path) -> None:
    # DuckDB has replayed the WAL (in memory) and holds its lock: no writer can be changing the WAL now
    preflight.check_wal(path)
    apply_settings(con, cfg)
    _spill_to(con, cfg, path)
    version = current_version(con)
    if version > LATEST:
        raise WarehouseError(f"the warehouse has schema version {version}; this recctl knows {LATEST}")
    if version < LATEST:
        raise WarehouseError(
            f"the warehouse has schema version {version}; this recctl needs {LATEST}",
            hint="run `recctl init` to migrate it",
        )
