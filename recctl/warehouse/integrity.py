"""What a DuckDB error says about the warehouse file, and a block-level check before writing.

``classify`` is the one place that recognises a damaged warehouse in DuckDB's exceptions: a block whose
checksum does not match (``Corrupt database file``), unreadable metadata, a write-ahead log that cannot
be replayed, a file that is not a DuckDB database, a connection DuckDB invalidated after a fatal error.
DuckDB raises these as several classes (``IOException``, ``SerializationException``,
``InternalException``, ``FatalException``, and the plain ``duckdb.Error`` its Python binding uses for
``DataCorruptionException``) and at any time: on open, or deep inside a later query that first reads the
damaged block. The connection context managers and the CLI call ``classify`` on any exception.

``verify`` reads every block of every table: DuckDB checks a block's checksum whenever it loads it from
disk, so a scan that touches every column segment surfaces every damaged data block. Writers run it when
they open (``reopen_writer``), so that a write never lands in a damaged file. What it does not read:
free blocks (nothing lives there) and the blocks of the primary-key indexes of ``items`` and ``users``
(DuckDB loads index nodes lazily; a damaged one surfaces as a checksum error when an insert or a
checkpoint touches it, which ``classify`` reports the same way).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from recctl.errors import WarehouseError

#: Which data can be rebuilt, and how: what a user needs when the file is damaged.
CORRUPT_HINT = (
    "restore the warehouse file from a backup; or move it (with any .wal next to it) away and re-ingest "
    "the raw files: events, items and users come only from them, while the feature tables, `recs`, "
    "segments and evaluation rows are derived (run train, recommend --all and segments apply again)"
)
WAL_HINT = (
    "the write-ahead log holds the transactions committed since the last checkpoint; to open the "
    "warehouse without them, move {wal} away (keep it for diagnosis): the file then holds everything up "
    "to its last checkpoint, and re-running the last ingest restores the rest"
)

# DuckDB's wording (2.0): checksums of blocks and WAL entries, the metadata readers, invalid pointers.
_CORRUPT = re.compile(
    r"corrupt database file|does not match stored checksum|no more data remaining in metadatareader|"
    r"data ?corruption|database file is corrupt|failed to deserialize",
    re.IGNORECASE,
)
_WAL = re.compile(
    r"replaying wal|corrupt wal|wal does not match|wal checkpoint iteration|checkpoint wal", re.IGNORECASE
)
_NOT_DUCKDB = re.compile(r"not a valid duckdb database file", re.IGNORECASE)


def _reason(exc: BaseException) -> str:
    """DuckDB's message without its class prefix (``IO Error: ``) and its advice about its own CLI."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^(?:[A-Za-z]+ )*(?:Error|Exception): ", "", text)
    return text.split(" See also https://", 1)[0]


def wal_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def classify(exc: BaseException, path: Path | None = None) -> WarehouseError | None:
    """The WarehouseError (exit 2) a DuckDB exception stands for, or None when it is not about the file.

    ``path`` (the warehouse) goes into the message and the hint when given.
    """
    if isinstance(exc, WarehouseError):
        return exc
    if not isinstance(exc, duckdb.Error):
        return None
    reason = _reason(exc)
    where = f" ({path})" if path is not None else ""
    if _WAL.search(reason):
        wal = wal_path_for(path) if path is not None else "the .wal file next to it"
        return WarehouseError(
            f"the warehouse's write-ahead log cannot be replayed{where}: {reason}",
            hint=WAL_HINT.format(wal=wal),
        )
    if _CORRUPT.search(reason):
        return WarehouseError(f"warehouse is corrupt{where}: {reason}", hint=CORRUPT_HINT)
    if _NOT_DUCKDB.search(reason):
        return WarehouseError(
            f"not a DuckDB warehouse{where}: {reason}",
            hint="pass --warehouse FILE.duckdb (a DuckDB file, or a new path); data files are ingested with "
            "`recctl ingest`",
        )
    if isinstance(exc, duckdb.FatalException) or "invalidated because of a previous fatal error" in reason:
        return WarehouseError(
            f"DuckDB stopped using the warehouse after a fatal error{where}: {reason}",
            hint="nothing after the last commit was kept; run `recctl status` to check the file, and see "
            "the first error above for the cause (a full disk, a damaged block)",
        )
    return None


def user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The base tables of the warehouse (not temporary ones, not attached databases)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT temporary ORDER BY table_name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def verify(con: duckdb.DuckDBPyConnection, path: Path | None = None, tables: list[str] | None = None) -> int:
    """Read every column segment of ``tables`` (default: all), so that DuckDB checks every data block's
    checksum; raise WarehouseError (exit 2, "warehouse is corrupt") on the first damaged one.

    One aggregate per table: a hash of every column (a count could be answered from the statistics
    without reading the blocks). About 0.1 s per million events on two cores. Returns the rows read.
    """
    rows = 0
    try:
        for table in user_tables(con) if tables is None else tables:
            cols = [
                str(r[0])
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                    "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                    [table],
                ).fetchall()
            ]
            hashes = ", ".join(f"bit_xor(hash({_quote(c)}))" for c in cols)
            got = con.execute(f"SELECT count(*), {hashes} FROM {_quote(table)}").fetchall()
            rows += int(got[0][0])
    except duckdb.Error as exc:
        err = classify(exc, path)
        if err is None:
            raise
        raise err from exc
    return rows
