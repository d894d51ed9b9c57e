"""Loading one file: read → stage → rejects → dedupe or upsert → manifest, in one transaction.

A process killed mid-file leaves nothing of that file (DuckDB rolls the open transaction back), and the
manifest has no 'ok' row for it, so the next run loads it completely.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from recctl import schema
from recctl.errors import DataError, RecctlError
from recctl.ingest.mapping import Mapping
from recctl.ingest.sources import (
    REJECTS_SCAN,
    REJECTS_TABLE,
    Source,
    detect_format,
    ident,
    open_source,
    sql_str,
)
from recctl.ingest.stage import Rules, absent_columns, stage_sql

STAGE = "_recctl_stage"


@dataclass
class FileResult:
    path: str
    target: str
    status: str  # loaded | unchanged | failed
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    seconds: float = 0.0
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> int:
    return int(con.execute(sql, params or []).fetchall()[0][0] or 0)


def previous_load(con: duckdb.DuckDBPyConnection, sha: str, target: str) -> tuple[str, datetime] | None:
    rows = con.execute(
        "SELECT path, finished_at FROM ingest_files WHERE sha256 = ? AND target = ? AND status = 'ok' "
        "ORDER BY finished_at DESC LIMIT 1",
        [sha, target],
    ).fetchall()
    return (str(rows[0][0]), rows[0][1]) if rows else None


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return _scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]) > 0


def _insert_parse_rejects(con: duckdb.DuckDBPyConnection, src: Source, target: str, now: datetime) -> int:
    """Rows DuckDB's CSV reader could not parse (quoting, column count, encoding), one per line."""
    if not src.parse_rejects or not _table_exists(con, REJECTS_TABLE):
        return 0
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_perr AS SELECT line, any_value(csv_line) AS raw, "
        f"min(error_type || ': ' || error_message) AS reason "
        f"FROM {REJECTS_TABLE} GROUP BY line"
    )
    con.execute(
        "INSERT INTO ingest_rejects SELECT ?, ?, line, raw, reason, ? FROM _recctl_perr",
        [str(src.path), target, now],
    )
    return _scalar(con, "SELECT count(*) FROM _recctl_perr")


def _insert_stage_rejects(con: duckdb.DuckDBPyConnection, src: Source, target: str, now: datetime) -> int:
    """Rows that parsed but failed validation, with their record numbers."""
    n = _scalar(con, f"SELECT count(*) FROM {STAGE} WHERE _reason IS NOT NULL")
    if n == 0:
        return 0
    if src.line_mode == "column":
        line = "_lineno"
    elif src.line_mode == "ordinal":
        line = "_ord + 1"
    elif src.parse_rejects and _table_exists(con, "_recctl_perr"):
        # the k-th parsed record is record k + header + (parse-rejected records before it)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _recctl_pshift AS "
            "SELECT line - ? - row_number() OVER (ORDER BY line) AS shifted FROM _recctl_perr",
            [src.header_lines],
        )
        line = f"_ord + 1 + {src.header_lines} + (SELECT count(*) FROM _recctl_pshift p WHERE p.shifted <= r._ord)"
    else:
        line = f"_ord + 1 + {src.header_lines}"
    con.execute(
        f"INSERT INTO ingest_rejects SELECT ?, ?, {line}, _raw, _reason, ? FROM "
        f"(SELECT *, rowid - (SELECT min(rowid) FROM {STAGE}) AS _ord FROM {STAGE}) r WHERE _reason IS NOT NULL",
        [str(src.path), target, now],
    )
    return n


def _load_events(con: duckdb.DuckDBPyConnection, cols: list[str], path: str, now: datetime) -> int:
    # within the file, the first occurrence of a key wins; the keys seen more than once are usually none
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_dups AS SELECT _key, min(rowid) AS keep FROM {STAGE} "
        "WHERE _reason IS NULL GROUP BY _key HAVING count(*) > 1"
    )
    drop = ""
    if _scalar(con, "SELECT count(*) FROM _recctl_dups"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _recctl_drop AS SELECT st.rowid AS rid FROM {STAGE} st "
            "JOIN _recctl_dups d ON d._key = st._key WHERE st.rowid <> d.keep"
        )
        drop = "ANTI JOIN _recctl_drop x ON x.rid = st.rowid"
    names = ", ".join(ident(c) for c in cols)
    select = ", ".join(f"st.{ident(c)}" for c in cols)
    before = _scalar(con, "SELECT count(*) FROM events")
    con.execute(
        f"INSERT INTO events (event_key, {names}, source_file, ingested_at) "
        f"SELECT st._key, {select}, ?, ? FROM {STAGE} st ANTI JOIN events e ON e.event_key = st._key {drop} "
        "WHERE st._reason IS NULL",
        [path, now],
    )
    return _scalar(con, "SELECT count(*) FROM events") - before


def _upsert(con: duckdb.DuckDBPyConnection, table: str, cols: list[str], path: str, now: datetime) -> int:
    """Latest ``updated_at`` wins (ties and missing times: the later row / later ingest wins).

    A newer row fills in only what it has: its NULLs keep the earlier value, within a file and against
    the stored row alike.
    """
    key = schema.KEYS[table]  # type: ignore[index]
    content = [c for c in cols if c != key]
    # collapse the file's rows per key: each column from the latest row that has it
    order = "struct_pack(u := coalesce(updated_at, TIMESTAMP '0001-01-01'), r := rowid)"
    latest = ", ".join(
        f"arg_max({ident(c)}, {order}) FILTER (WHERE {ident(c)} IS NOT NULL) AS {ident(c)}" for c in content
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_win AS SELECT {key}, {latest} FROM {STAGE} "
        f"WHERE _reason IS NULL GROUP BY {key}"
    )
    merged = ", ".join(f"coalesce(n.{ident(c)}, o.{ident(c)}) AS {ident(c)}" for c in content)
    changed = " OR ".join(
        f"coalesce(n.{ident(c)}, o.{ident(c)}) IS DISTINCT FROM o.{ident(c)}" for c in content
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_upd AS SELECT n.{key}, {merged} FROM _recctl_win n "
        f"LEFT JOIN {table} o ON o.{key} = n.{key} WHERE o.{key} IS NULL OR "
        f"((n.updated_at IS NULL OR o.updated_at IS NULL OR n.updated_at >= o.updated_at) AND ({changed}))"
    )
    names = ", ".join(ident(c) for c in cols)
    con.execute(
        f"INSERT OR REPLACE INTO {table} ({names}, source_file, ingested_at) "
        f"SELECT {names}, ?, ? FROM _recctl_upd",
        [path, now],
    )
    return _scalar(con, "SELECT count(*) FROM _recctl_upd")


def _record(con: duckdb.DuckDBPyConnection, r: FileResult, sha: str, mapping: str, started: datetime) -> None:
    con.execute(
        "INSERT INTO ingest_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [r.path, sha, r.target, mapping, r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_duplicate,
         started, datetime.now(UTC).replace(tzinfo=None), "ok" if r.status != "failed" else "failed",
         r.message or None],
    )  # fmt: skip


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    mapping: Mapping,
    rules: Rules,
    *,
    fmt: str | None = None,
    force: bool = False,
) -> FileResult:
    target = mapping.target
    t0 = time.perf_counter()
    started = datetime.now(UTC).replace(tzinfo=None)
    result = FileResult(str(path), target, "loaded")
    sha = file_sha256(path)
    if not force and (prev := previous_load(con, sha, target)) is not None:
        result.status = "unchanged"
        result.message = f"same content already loaded from {prev[0]} at {prev[1]:%Y-%m-%d %H:%M:%S}"
        return result
    con.execute("BEGIN TRANSACTION")
    try:
        # the rejects of an earlier read of this file are superseded by this read's
        con.execute("DELETE FROM ingest_rejects WHERE source_file = ? AND target = ?", [str(path), target])
        con.execute(f"SET TimeZone = {sql_str(mapping.timestamp.timezone)}")
        src = open_source(con, path, detect_format(path, fmt or mapping.read.format), mapping.read)
        if src.empty:
            result.message = "empty file: no records"
        else:
            sql, cols = stage_sql(con, src, mapping, rules)
            absent = absent_columns(src, mapping)
            if absent:
                result.message = f"mapped columns not in the file, left empty: {', '.join(absent)}"
            if src.format != "sequences":
                con.execute(f"DROP TABLE IF EXISTS {REJECTS_TABLE}")
                con.execute(f"DROP TABLE IF EXISTS {REJECTS_SCAN}")
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {sql}")
            except duckdb.Error as exc:
                raise DataError(f"{path}: {str(exc).strip().splitlines()[0]}") from exc
            con.execute("SET TimeZone = 'UTC'")
            parse_rejected = _insert_parse_rejects(con, src, target, started)
            stage_rows = _scalar(con, f"SELECT count(*) FROM {STAGE}")
            rejected = _insert_stage_rejects(con, src, target, started) + parse_rejected
            if target == "events":
                loaded = _load_events(con, cols, str(path), started)
            else:
                loaded = _upsert(con, target, cols, str(path), started)
            result.rows_read = stage_rows + parse_rejected
            result.rows_rejected = rejected
            result.rows_loaded = loaded
            result.rows_duplicate = result.rows_read - rejected - loaded
            if result.rows_read == 0:
                result.message = "no records (header only?)"
        result.seconds = round(time.perf_counter() - t0, 3)
        _record(con, result, sha, mapping.source, started)
        con.execute("COMMIT")
    except (RecctlError, duckdb.Error) as exc:
        con.execute("ROLLBACK")
        con.execute("SET TimeZone = 'UTC'")
        result = FileResult(str(path), target, "failed", message=getattr(exc, "message", None) or str(exc))
        result.seconds = round(time.perf_counter() - t0, 3)
        _record(con, result, sha, mapping.source, started)
        return result
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for t in (
            STAGE,
            "_recctl_perr",
            "_recctl_pshift",
            "_recctl_dups",
            "_recctl_drop",
            "_recctl_win",
            "_recctl_upd",
        ):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return result
