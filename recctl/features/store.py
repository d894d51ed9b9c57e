"""The warehouse side of the feature store: offline snapshots, the online snapshot, lookups.

Offline: every FeatureSet frame goes to ``features_<name>`` (features_user, features_item,
features_user_item, features_user_brand, features_user_category, features_item_attrs, features_user_last)
with an ``as_of`` column; a rebuild for the same as_of replaces that snapshot (idempotent), other
snapshots stay. ``features_meta`` has one row per snapshot. Online: ``online_user_features`` and
``online_item_features`` hold only the newest snapshot (a backfill of an older as_of leaves them alone),
indexed on their key for one-row lookups. Tables are created when first written (no migration).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from recctl import progress
from recctl.config import RecctlConfig
from recctl.data import load_interactions, load_items
from recctl.errors import ConfigError, DataError, WarehouseError
from recctl.features.base import FeatureSet, naive_utc, ts_literal
from recctl.features.build import build
from recctl.warehouse import Warehouse

ONLINE = {"user": "online_user_features", "item": "online_item_features"}
_FRAME = "__features_frame"
_META = """CREATE TABLE IF NOT EXISTS features_meta (as_of TIMESTAMP, built_at TIMESTAMP, events BIGINT,
  users BIGINT, items BIGINT, user_items BIGINT, features INTEGER, windows VARCHAR, seconds DOUBLE)"""


def parse_as_of(text: str) -> datetime:
    """'2024-06-01' or '2024-06-01T12:30' (UTC unless an offset is given) → naive UTC datetime."""
    try:
        return naive_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ConfigError(
            f"--as-of takes an ISO date or time, not {text!r}", hint="e.g. 2024-06-01 or 2024-06-01T12:30"
        ) from None


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = con.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?", params=[table]
    ).fetchall()
    return bool(rows[0][0])


def _write_snapshot(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, as_of: datetime) -> None:
    """Replace ``table``'s rows of ``as_of`` with ``frame`` (new columns are added to the table)."""
    src = f"SELECT {ts_literal(as_of)} AS as_of, * FROM {_FRAME}"
    con.register(_FRAME, frame)
    try:
        if not _exists(con, table):
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS {src} LIMIT 0")
        else:
            have = {r[0] for r in con.sql(f"SELECT * FROM {table} LIMIT 0").description or []}
            for name, sql_type, *_ in con.sql(f"DESCRIBE {src}").fetchall():
                if name not in have:
                    con.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')
        con.execute(f"DELETE FROM {table} WHERE as_of = {ts_literal(as_of)}")
        con.execute(f"INSERT INTO {table} BY NAME {src}")
    finally:
        con.unregister(_FRAME)


def _write_online(con: duckdb.DuckDBPyConnection, fs: FeatureSet) -> bool:
    """Replace the online tables with ``fs`` unless they hold a newer snapshot; True when replaced."""
    if _exists(con, ONLINE["user"]):
        current = con.sql(f"SELECT max(as_of) FROM {ONLINE['user']}").fetchall()[0][0]
        if current is not None and current > fs.as_of:
            return False
    for name, key in (("user", "user_id"), ("item", "item_id")):
        con.register(_FRAME, fs.tables()[name])
        try:
            con.execute(
                f"CREATE OR REPLACE TABLE {ONLINE[name]} AS "
                f"SELECT {ts_literal(fs.as_of)} AS as_of, * FROM {_FRAME} ORDER BY {key}"
            )
        finally:
            con.unregister(_FRAME)
        con.execute(f"CREATE INDEX {ONLINE[name]}_key ON {ONLINE[name]} ({key})")
    return True


def write_feature_set(con: duckdb.DuckDBPyConnection, fs: FeatureSet, meta: dict[str, Any]) -> bool:
    """The offline snapshot, the meta row and (when it is the newest) the online snapshot, in one
    transaction. Returns whether the online snapshot was replaced."""
    con.execute("BEGIN TRANSACTION")
    try:
        for name, frame in fs.tables().items():
            _write_snapshot(con, f"features_{name}", frame, fs.as_of)
        con.execute(_META)
        con.execute(f"DELETE FROM features_meta WHERE as_of = {ts_literal(fs.as_of)}")
        con.execute(
            "INSERT INTO features_meta VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [fs.as_of, meta["built_at"], meta["events"], meta["users"], meta["items"], meta["user_items"],
             meta["features"], json.dumps(list(fs.windows)), meta["seconds"]],
        )  # fmt: skip
        online = _write_online(con, fs)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return online


def run_features(wh: Warehouse, cfg: RecctlConfig, as_of: str | datetime | None = None) -> dict[str, Any]:
    """``recctl features``: build every feature as of ``as_of`` (default: the newest event + 1 µs) from the
    warehouse and store the offline snapshot, its meta row and, when it is the newest, the online one."""
    from recctl.features import feature_list

    t0 = time.perf_counter()
    when = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    if when is None:
        last = wh.con.sql("SELECT max(ts) FROM events WHERE item_id IS NOT NULL").fetchall()[0][0]
        if last is None:
            raise DataError("the warehouse has no item events to build features from",
                            hint="run `recctl ingest events` first")  # fmt: skip
        when = last + timedelta(microseconds=1)
    when = naive_utc(when)
    with progress.stage("load events and items"):
        events = load_interactions(wh.con, before=when)
        items = load_items(wh.con)
    with progress.stage("build features"):
        fs = build(events, items, when, windows=tuple(cfg.features.windows))
    meta: dict[str, Any] = {
        "as_of": fs.as_of,
        "built_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        "events": events.height,
        "users": fs.user.height,
        "items": fs.item.height,
        "user_items": fs.user_item.height,
        "features": len(feature_list(fs.windows)),
        "windows": list(fs.windows),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    with progress.stage("write the snapshot"):
        meta["online"] = write_feature_set(wh.con, fs, meta)
    meta["tables"] = {f"features_{k}": v.height for k, v in fs.tables().items()}
    meta["seconds"] = round(time.perf_counter() - t0, 3)
    return meta


def _row(con: duckdb.DuckDBPyConnection, table: str, key: str, value: str) -> dict[str, Any] | None:
    try:
        rel = con.sql(f"SELECT * FROM {table} WHERE {key} = ?", params=[value])
        rows = rel.fetchall()
    except duckdb.CatalogException:
        raise WarehouseError(f"the warehouse has no online features ({table})",
                             hint="run `recctl features` first") from None  # fmt: skip
    if not rows:
        return None
    return dict(zip(rel.columns, rows[0], strict=True))


def online_user(con: duckdb.DuckDBPyConnection, user_id: str) -> dict[str, Any] | None:
    """One user's online features (as_of, user_id, u_*) or None for a user without events."""
    return _row(con, ONLINE["user"], "user_id", user_id)


def online_item(con: duckdb.DuckDBPyConnection, item_id: str) -> dict[str, Any] | None:
    """One item's online features (as_of, item_id, i_*) or None for an unknown item."""
    return _row(con, ONLINE["item"], "item_id", item_id)


def load_feature_set(con: duckdb.DuckDBPyConnection, as_of: datetime | None = None) -> FeatureSet:
    """A stored offline snapshot as a FeatureSet (the newest when ``as_of`` is None), e.g. to compute
    pair features at serving time without rebuilding."""
    if not _exists(con, "features_meta"):
        raise WarehouseError("the warehouse has no feature snapshots", hint="run `recctl features` first")
    where = "" if as_of is None else f"WHERE as_of = {ts_literal(as_of)}"
    rows = con.sql(f"SELECT as_of, windows FROM features_meta {where} ORDER BY as_of DESC LIMIT 1").fetchall()
    if not rows:
        raise WarehouseError(f"no feature snapshot as of {as_of}", hint="run `recctl features --as-of ...`")
    when, windows = rows[0]
    frames = {
        name: con.sql(f"SELECT * EXCLUDE (as_of) FROM features_{name} WHERE as_of = {ts_literal(when)}").pl()
        for name in ("user", "item", "user_item", "user_brand", "user_category", "item_attrs", "user_last")
    }
    return FeatureSet(as_of=when, windows=tuple(json.loads(windows)), **frames)
