"""Versioned schema migrations. Append new steps; never edit a released one."""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from recctl import schema
from recctl.errors import WarehouseError

Migration = tuple[int, str, Callable[[], list[str]]]


#: ingest_files as released in v1 (later columns are added by their own migration)
_V1_INGEST_FILES = tuple(c for c in schema.INGEST_FILES_COLUMNS if c.name != "mapping_sha256")


def _v1() -> list[str]:
    return [
        schema.create_table_sql("events", schema.EVENT_COLUMNS),
        schema.create_table_sql("items", schema.ITEM_COLUMNS, primary_key="item_id"),
        schema.create_table_sql("users", schema.USER_COLUMNS, primary_key="user_id"),
        schema.create_table_sql("ingest_files", _V1_INGEST_FILES),
        schema.create_table_sql("ingest_rejects", schema.INGEST_REJECTS_COLUMNS),
    ]


def _v2() -> list[str]:
    return ["CREATE TABLE IF NOT EXISTS recctl_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"]


def _v3() -> list[str]:
    return [schema.create_table_sql("eval_runs", schema.EVAL_RUNS_COLUMNS)]


def _v4() -> list[str]:
    return [
        schema.create_table_sql("recs", schema.RECS_COLUMNS[:8]),  # state, strategy: added by v5
        schema.create_table_sql("segment_members", schema.SEGMENT_MEMBERS_COLUMNS),
    ]


def _v5() -> list[str]:
    # NULL for loads recorded before: such a file is re-read once (idempotent) and then carries the hash
    return ["ALTER TABLE ingest_files ADD COLUMN IF NOT EXISTS mapping_sha256 VARCHAR"]


def _v6() -> list[str]:
    return [
        "ALTER TABLE recs ADD COLUMN IF NOT EXISTS state VARCHAR",
        "ALTER TABLE recs ADD COLUMN IF NOT EXISTS strategy VARCHAR",
    ]


MIGRATIONS: list[Migration] = [
    (1, "events, items, users, ingest manifest and rejects", _v1),
    (2, "recctl_meta (event key probe)", _v2),
    (3, "eval_runs (every evaluation result row)", _v3),
    (4, "recs (the online store) and segment_members", _v4),
    (5, "ingest_files.mapping_sha256 (the mapping's content is part of a load's identity)", _v5),
    (6, "recs.state and recs.strategy (a stored answer says what a live one says)", _v6),
]
LATEST = MIGRATIONS[-1][0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.sql(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    row = con.sql("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(row or 0)


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
    )
    have = current_version(con)
    if have > LATEST:
        raise WarehouseError(
            f"the warehouse has schema version {have}, newer than this recctl knows ({LATEST})",
            hint="upgrade recctl",
        )
    applied = []
    for version, description, statements in MIGRATIONS:
        if version <= have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements():
                con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, description])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    check_key_probe(con)
    return applied


#: A fixed event whose key tells whether DuckDB's ``hash`` is still the one the stored keys were made with.
_PROBE = (
    "SELECT {key} FROM (SELECT NULL::VARCHAR AS event_id, TIMESTAMP '2001-02-03 04:05:06' AS ts, "
    "'u' AS user_id, 's' AS session_id, 'i' AS item_id, 'view' AS event_type, 1.5::DOUBLE AS value, "
    "2::DOUBLE AS quantity, 3.25::DOUBLE AS price, 0::DOUBLE AS discount, 'o' AS order_id, "
    "'q' AS query, 'p' AS page)"
)


def check_key_probe(con: duckdb.DuckDBPyConnection) -> bool:
    """Store the key probe, or re-key every event if DuckDB's hash changed since. True if re-keyed."""
    probe = str(con.sql(_PROBE.format(key=schema.event_key_sql())).fetchall()[0][0])
    rows = con.sql("SELECT value FROM recctl_meta WHERE key = 'event_key_probe'").fetchall()
    if rows and rows[0][0] == probe:
        return False
    con.execute("BEGIN TRANSACTION")
    try:
        if rows:
            con.execute(f"UPDATE events SET event_key = {schema.event_key_sql()}")
        con.execute("INSERT OR REPLACE INTO recctl_meta VALUES ('event_key_probe', ?)", [probe])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return bool(rows)
