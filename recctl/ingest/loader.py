"""Loading one file: read → stage → rejects → dedupe or upsert → manifest, in one transaction.

A process killed mid-file leaves nothing of that file (DuckDB rolls the open transaction back), and the
manifest has no 'ok' row for it, so the next run loads it completely.

The four counts are measured separately: read is what the reader produced (records plus the lines it
could not parse), loaded what the insert wrote, rejected the rows written to ingest_rejects, duplicate
the rows found already present or superseded. read = loaded + rejected + duplicate is then a real check;
a file for which it fails is rolled back and reported failed, never recorded as loaded.

A file that cannot be read or loaded is a 'failed' manifest row with the reason and the batch goes on;
an interrupt (Ctrl-C, SIGTERM, DuckDB's InterruptException) rolls the file back and propagates.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from recctl import schema
from recctl.errors import DataError, RecctlError, WarehouseError
from recctl.ingest.inputs import Input, check_regular, file_sha256, prepared
from recctl.ingest.mapping import Mapping
from recctl.ingest.sources import (
    LINES_TABLE,
    REJECTS_SCAN,
    REJECTS_TABLE,
    Source,
    detect_format,
    ident,
    open_source,
    sql_str,
)
from recctl.ingest.stage import Rules, stage_sql

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
    #: what a person should know about a loaded file (also printed on stderr by the CLI)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


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


_FOREIGN = {  # per line ending of the file: SQL true for a text (``t``) holding another style
    "\n": "contains(t, chr(13))",
    "\r": "contains(t, chr(10))",
    "\r\n": "contains(replace(t, chr(13) || chr(10), ''), chr(13)) OR contains(replace(t, chr(13) || chr(10), ''), chr(10))",
}
_NAMES = {"\n": "LF", "\r": "CR", "\r\n": "CRLF"}


def _check_line_endings(con: duckdb.DuckDBPyConnection, src: Source) -> None:
    """DuckDB reads one line ending per file (the first line's): a line ending of another style outside
    the quoted values of a record it could not parse means records were run together. Refuse the file
    rather than count them as one."""
    if src.newline is None or not _table_exists(con, "_recctl_perr"):
        return
    t = "raw"
    if src.quote:
        q = re.escape(src.quote)
        t = f"regexp_replace(raw, {sql_str(f'{q}([^{q}]|{q}{q})*{q}')}, '', 'g')"
    if src.newline == "\r\n":  # DuckDB's raw line of a CRLF file can start with the LF of the line before
        t = f"regexp_replace({t}, '^\\n|\\r$', '', 'g')"
    rows = con.execute(
        f"SELECT min(line) FROM (SELECT line, {t} AS t FROM _recctl_perr) WHERE {_FOREIGN[src.newline]}"
    ).fetchall()
    if rows and rows[0][0] is not None:
        raise DataError(
            f"{src.path}: mixed line endings: the file's lines end in {_NAMES[src.newline]} but line "
            f"{rows[0][0]} holds another line break outside a quoted value, so records run together "
            "(convert the file to one line ending, e.g. with dos2unix)",
        )


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


def _load_events(
    con: duckdb.DuckDBPyConnection, cols: list[str], path: str, now: datetime
) -> tuple[int, int]:
    """Insert the file's new events: (rows inserted, duplicates). Duplicates are counted on their own:
    later copies of a key within the file, plus the file's keys the table already holds."""
    # within the file, the first occurrence of a key wins; the keys seen more than once are usually none
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_dups AS SELECT _key, min(rowid) AS keep FROM {STAGE} "
        "WHERE _reason IS NULL GROUP BY _key HAVING count(*) > 1"
    )
    drop, within = "", 0
    if _scalar(con, "SELECT count(*) FROM _recctl_dups"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _recctl_drop AS SELECT st.rowid AS rid FROM {STAGE} st "
            "JOIN _recctl_dups d ON d._key = st._key WHERE st.rowid <> d.keep AND st._reason IS NULL"
        )
        drop = "ANTI JOIN _recctl_drop x ON x.rid = st.rowid"
        within = _scalar(con, "SELECT count(*) FROM _recctl_drop")
    present = _scalar(
        con,
        f"SELECT count(DISTINCT st._key) FROM {STAGE} st SEMI JOIN events e ON e.event_key = st._key "
        "WHERE st._reason IS NULL",
    )
    names = ", ".join(ident(c) for c in cols)
    select = ", ".join(f"st.{ident(c)}" for c in cols)
    before = _scalar(con, "SELECT count(*) FROM events")
    con.execute(
        f"INSERT INTO events (event_key, {names}, source_file, ingested_at) "
        f"SELECT st._key, {select}, ?, ? FROM {STAGE} st ANTI JOIN events e ON e.event_key = st._key {drop} "
        "WHERE st._reason IS NULL",
        [path, now],
    )
    return _scalar(con, "SELECT count(*) FROM events") - before, within + present


def _upsert(
    con: duckdb.DuckDBPyConnection, table: str, cols: list[str], path: str, now: datetime
) -> tuple[int, int]:
    """Latest ``updated_at`` wins (ties and missing times: the later row / later ingest wins); returns
    (rows written, duplicates: rows superseded within the file plus keys that changed nothing).

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
    written = _scalar(
        con,
        f"INSERT OR REPLACE INTO {table} ({names}, source_file, ingested_at) "
        f"SELECT {names}, ?, ? FROM _recctl_upd",
        [path, now],
    )
    superseded = _scalar(
        con,
        f"SELECT (SELECT count(*) FROM {STAGE} WHERE _reason IS NULL) - (SELECT count(*) FROM _recctl_win)",
    )
    unchanged = _scalar(con, f"SELECT count(*) FROM _recctl_win w ANTI JOIN _recctl_upd u USING ({key})")
    return written, superseded + unchanged


def _record(
    con: duckdb.DuckDBPyConnection, r: FileResult, sha: str | None, mapping: str, started: datetime
) -> None:
    con.execute(
        "INSERT INTO ingest_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [r.path, sha, r.target, mapping, r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_duplicate,
         started, datetime.now(UTC).replace(tzinfo=None), "ok" if r.status != "failed" else "failed",
         r.message or None],
    )  # fmt: skip


def _quietly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Clean-up that must not hide the error being handled (a ROLLBACK after a failed COMMIT has no
    transaction left: "cannot rollback - no transaction is active" is not the news)."""
    with contextlib.suppress(duckdb.Error):
        con.execute(sql)


def _reason(exc: BaseException, inp: Input | None, path: Path) -> str:
    if isinstance(exc, RecctlError):
        text = exc.message
    elif isinstance(exc, UnicodeDecodeError):  # the DuckDB error message itself quoted invalid bytes
        text = f"{path}: DuckDB's reader stopped at bytes that are not valid UTF-8"
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        text = first if str(path) in first else f"{path}: {first}"
    if inp is not None and inp.data_path != path:
        text = text.replace(str(inp.data_path), str(path))
    return text


def _empty_columns(con: duckdb.DuckDBPyConnection, mapping: Mapping, cols: list[str], good: int) -> list[str]:
    """Mapped (not constant) columns with no value in any good row: worth saying, it is often a typo."""
    given = [c for c in cols if c not in mapping.constants]
    if not good or not given:
        return []
    counts = con.execute(
        "SELECT " + ", ".join(f"count({ident(c)})" for c in given) + f" FROM {STAGE} WHERE _reason IS NULL"
    ).fetchall()[0]
    return [
        f"{c} (from {mapping.columns.get(c, c)!r}) is empty in every loaded row"
        for c, n in zip(given, counts, strict=True)
        if not n
    ]


def _load(
    con: duckdb.DuckDBPyConnection, inp: Input, mapping: Mapping, rules: Rules, fmt: str | None,
    result: FileResult, started: datetime,
) -> None:  # fmt: skip
    """Everything of one file inside the open transaction; fills ``result``."""
    path, target = inp.path, mapping.target
    # the rejects of an earlier read of this file are superseded by this read's
    con.execute("DELETE FROM ingest_rejects WHERE source_file = ? AND target = ?", [str(path), target])
    con.execute(f"SET TimeZone = {sql_str(mapping.timestamp.timezone)}")
    src = open_source(con, path, detect_format(path, fmt or mapping.read.format), mapping.read, inp.data_path)
    if src.empty:
        result.message = "empty file: no records"
        result.warnings.append(result.message)
        return
    sql, cols, warnings = stage_sql(con, src, mapping, rules)
    result.warnings += warnings
    if src.format != "sequences":
        con.execute(f"DROP TABLE IF EXISTS {REJECTS_TABLE}")
        con.execute(f"DROP TABLE IF EXISTS {REJECTS_SCAN}")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {sql}")
    except duckdb.InterruptException:
        raise
    except (duckdb.Error, UnicodeDecodeError) as exc:
        why = _reason(exc, inp, path)
        if "state machine reached an invalid state" in why:
            why += " (the file mixes line endings LF, CRLF and CR, or has a CR inside an unquoted value)"
        raise DataError(why) from exc
    con.execute("SET TimeZone = 'UTC'")
    parse_rejected = _insert_parse_rejects(con, src, target, started)
    _check_line_endings(con, src)
    stage_rows = _scalar(con, f"SELECT count(*) FROM {STAGE}")
    _insert_stage_rejects(con, src, target, started)
    good = _scalar(con, f"SELECT count(*) FROM {STAGE} WHERE _reason IS NULL")
    if target == "events":
        loaded, duplicate = _load_events(con, cols, str(path), started)
    else:
        loaded, duplicate = _upsert(con, target, cols, str(path), started)
    rejected = _scalar(
        con, "SELECT count(*) FROM ingest_rejects WHERE source_file = ? AND target = ?", [str(path), target]
    )
    read = stage_rows + parse_rejected
    if read != loaded + rejected + duplicate:
        raise DataError(
            f"{path}: the counts do not reconcile (read {read} ≠ loaded {loaded} + rejected {rejected} + "
            f"duplicate {duplicate}); nothing of it was loaded",
            hint="this is a recctl bug: please report it with the file",
        )
    result.rows_read, result.rows_loaded = read, loaded
    result.rows_rejected, result.rows_duplicate = rejected, duplicate
    if read == 0:
        result.message = "no records (header only?)"
        result.warnings.append(result.message)
    result.warnings += _empty_columns(con, mapping, cols, good)


_TEMP_TABLES = (STAGE, "_recctl_perr", "_recctl_pshift", "_recctl_dups", "_recctl_drop", "_recctl_win",
                "_recctl_upd", REJECTS_TABLE, REJECTS_SCAN, LINES_TABLE)  # fmt: skip


def _fail(
    con: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping, message: str, sha: str | None,
    started: datetime, t0: float,
) -> FileResult:  # fmt: skip
    """The manifest row of a file that could not be loaded; when even that cannot be written (disk full,
    a broken warehouse) the batch stops: nothing further could be recorded either."""
    result = FileResult(str(path), mapping.target, "failed", message=message)
    result.seconds = round(time.perf_counter() - t0, 3)
    try:
        _record(con, result, sha, mapping.source, started)
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        second = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WarehouseError(
            f"{message} (and the failure could not be recorded in the warehouse: {second})"
        ) from exc
    return result


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
    sha: str | None = None
    try:
        check_regular(path)
        try:
            sha = file_sha256(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except DataError as exc:
        return _fail(con, path, mapping, exc.message, sha, started, t0)
    if not force and (prev := previous_load(con, sha, target)) is not None:
        result.status = "unchanged"
        result.message = f"same content already loaded from {prev[0]} at {prev[1]:%Y-%m-%d %H:%M:%S}"
        return result
    inp: Input | None = None
    try:
        with prepared(path) as inp:
            if inp.sha256 != sha:
                raise DataError(f"{path} changed while it was being read; run the ingest again")
            con.execute("BEGIN TRANSACTION")
            try:
                _load(con, inp, mapping, rules, fmt, result, started)
                result.seconds = round(time.perf_counter() - t0, 3)
                _record(con, result, sha, mapping.source, started)
                con.execute("COMMIT")
            except BaseException:
                _quietly(con, "ROLLBACK")
                raise
            finally:
                _quietly(con, "SET TimeZone = 'UTC'")
                for t in _TEMP_TABLES:
                    _quietly(con, f"DROP TABLE IF EXISTS {t}")
    except duckdb.InterruptException:
        raise
    except (RecctlError, duckdb.Error, UnicodeDecodeError) as exc:
        return _fail(con, path, mapping, _reason(exc, inp, path), sha, started, t0)
    return result
