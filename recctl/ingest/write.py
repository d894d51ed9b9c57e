"""Writing one file's stage table, each count measured on its own: DuckDB's parse rejects and the
validation rejects into ingest_rejects (with a check for records run together by mixed line endings),
then the new events (duplicates counted separately) or the items / users upsert."""

from __future__ import annotations

import re
from datetime import datetime

import duckdb

from recctl import schema
from recctl.errors import DataError
from recctl.ingest.sources import REJECTS_TABLE, Source, ident, sql_str

STAGE = "_recctl_stage"


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> int:
    return int(con.execute(sql, params or []).fetchall()[0][0] or 0)


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]) > 0


def insert_parse_rejects(con: duckdb.DuckDBPyConnection, src: Source, target: str, now: datetime) -> int:
    """Rows DuckDB's CSV reader could not parse (quoting, column count, encoding), one per line."""
    if not src.parse_rejects or not table_exists(con, REJECTS_TABLE):
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
    return scalar(con, "SELECT count(*) FROM _recctl_perr")


_FOREIGN = {  # per line ending of the file: SQL true for a text (``t``) holding another style
    "\n": "contains(t, chr(13))",
    "\r": "contains(t, chr(10))",
    "\r\n": "contains(replace(t, chr(13) || chr(10), ''), chr(13)) OR contains(replace(t, chr(13) || chr(10), ''), chr(10))",
}
_NAMES = {"\n": "LF", "\r": "CR", "\r\n": "CRLF"}


def check_line_endings(con: duckdb.DuckDBPyConnection, src: Source) -> None:
    """DuckDB reads one line ending per file (the first line's): a line ending of another style outside
    the quoted values of a record it could not parse means records were run together. Refuse the file
    rather than count them as one."""
    if src.newline is None or not table_exists(con, "_recctl_perr"):
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


def insert_stage_rejects(con: duckdb.DuckDBPyConnection, src: Source, target: str, now: datetime) -> int:
    """Rows that parsed but failed validation, with their record numbers."""
    n = scalar(con, f"SELECT count(*) FROM {STAGE} WHERE _reason IS NOT NULL")
    if n == 0:
        return 0
    if src.line_mode == "column":
        line = "_lineno"
    elif src.line_mode == "ordinal":
        line = "_ord + 1"
    elif src.parse_rejects and table_exists(con, "_recctl_perr"):
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


def load_events(con: duckdb.DuckDBPyConnection, cols: list[str], path: str, now: datetime) -> tuple[int, int]:
    """Insert the file's new events: (rows inserted, duplicates). Duplicates are counted on their own:
    later copies of a key within the file, plus the file's keys the table already holds."""
    # within the file, the first occurrence of a key wins. The keys seen more than once are usually none:
    # they are found by a bare count per key (min(rowid) per key as well cost twice as much over 10M rows),
    # then the first copy of those keys only
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _recctl_dups AS SELECT _key FROM {STAGE} "
        "WHERE _reason IS NULL GROUP BY _key HAVING count(*) > 1"
    )
    drop, within = "", 0
    if scalar(con, "SELECT count(*) FROM _recctl_dups"):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _recctl_drop AS SELECT rid FROM (SELECT st.rowid AS rid, "
            f"min(st.rowid) OVER (PARTITION BY st._key) AS keep FROM {STAGE} st "
            "SEMI JOIN _recctl_dups d ON d._key = st._key WHERE st._reason IS NULL) WHERE rid <> keep"
        )
        within = scalar(con, "SELECT count(*) FROM _recctl_drop")
        drop = "ANTI JOIN _recctl_drop x ON x.rid = st.rowid"  # (an UPDATE of the stage slowed its scans)
    before = scalar(con, "SELECT count(*) FROM events")
    present, against = 0, ""
    if before:  # a first load has nothing to be joined against
        present = scalar(
            con,
            f"SELECT count(DISTINCT st._key) FROM {STAGE} st SEMI JOIN events e ON e.event_key = st._key "
            "WHERE st._reason IS NULL",
        )
        against = "ANTI JOIN events e ON e.event_key = st._key"
    names = ", ".join(ident(c) for c in cols)
    select = ", ".join(f"st.{ident(c)}" for c in cols)
    con.execute(
        f"INSERT INTO events (event_key, {names}, source_file, ingested_at) "
        f"SELECT st._key, {select}, ?, ? FROM {STAGE} st {against} {drop} WHERE st._reason IS NULL",
        [path, now],
    )
    return scalar(con, "SELECT count(*) FROM events") - before, within + present


def upsert(
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
    written = scalar(
        con,
        f"INSERT OR REPLACE INTO {table} ({names}, source_file, ingested_at) "
        f"SELECT {names}, ?, ? FROM _recctl_upd",
        [path, now],
    )
    superseded = scalar(
        con,
        f"SELECT (SELECT count(*) FROM {STAGE} WHERE _reason IS NULL) - (SELECT count(*) FROM _recctl_win)",
    )
    unchanged = scalar(con, f"SELECT count(*) FROM _recctl_win w ANTI JOIN _recctl_upd u USING ({key})")
    return written, superseded + unchanged
