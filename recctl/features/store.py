"""The warehouse side of the feature store: offline snapshots, the online snapshot, lookups.

``run_features`` streams: the shop-wide tables are SQL over the warehouse's events (a view; DuckDB spills
beyond its share of ``[resources] memory``), then each bucket of users (``build.user_buckets``) is staged,
built and appended to the snapshot before the next, all in one transaction. Only the purchases (for the
cycles), the catalog and one bucket are ever in memory; the frames equal ``build``'s (tested).

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
from recctl.features.base import FeatureSet, ensure_columns, naive_utc, session, ts_literal
from recctl.features.build import (
    BUCKET_EVENTS,
    ITEM_SCHEMA,
    bucket_tables,
    checked_windows,
    cycles,
    item_tables,
    prepare_events,
    shop_tables,
    user_buckets,
)
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


def _write_snapshot(
    con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, as_of: datetime, *, replace: bool = True
) -> None:
    """Replace ``table``'s rows of ``as_of`` with ``frame``, or add ``frame`` to them when not ``replace``
    (new columns are added to the table)."""
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
        if replace:
            con.execute(f"DELETE FROM {table} WHERE as_of = {ts_literal(as_of)}")
        con.execute(f"INSERT INTO {table} BY NAME {src}")
    finally:
        con.unregister(_FRAME)


def _write_online(con: duckdb.DuckDBPyConnection, as_of: datetime, columns: dict[str, list[str]]) -> bool:
    """Replace the online tables with the snapshot of ``as_of`` (its ``columns`` per table) unless they
    hold a newer one; True when replaced."""
    if _exists(con, ONLINE["user"]):
        current = con.sql(f"SELECT max(as_of) FROM {ONLINE['user']}").fetchall()[0][0]
        if current is not None and current > as_of:
            return False
    for name, key in (("user", "user_id"), ("item", "item_id")):
        cols = ", ".join(f'"{c}"' for c in columns[name])
        con.execute(
            f"CREATE OR REPLACE TABLE {ONLINE[name]} AS SELECT as_of, {cols} FROM features_{name} "
            f"WHERE as_of = {ts_literal(as_of)} ORDER BY {key}"
        )
        con.execute(f"CREATE INDEX {ONLINE[name]}_key ON {ONLINE[name]} ({key})")
    return True


def _write_meta(
    con: duckdb.DuckDBPyConnection, as_of: datetime, windows: tuple[int, ...], meta: dict[str, Any]
) -> None:
    con.execute(_META)
    con.execute(f"DELETE FROM features_meta WHERE as_of = {ts_literal(as_of)}")
    con.execute(
        "INSERT INTO features_meta VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [as_of, meta["built_at"], meta["events"], meta["users"], meta["items"], meta["user_items"],
         meta["features"], json.dumps(list(windows)), meta["seconds"]],
    )  # fmt: skip


#: The warehouse's item events as ``build.prepare_events`` gives them: ``__r`` is the event key, which
#: orders a user's events of the same time as ``load_interactions`` does (all ``__r`` is used for).
_EV_IN = """CREATE TEMP VIEW ev_in AS SELECT * FROM (
  SELECT event_key AS __r, coalesce(user_id, 'session:' || session_id) AS user_id, item_id, event_type, ts,
    session_id, order_id, price, discount, CAST(NULL AS VARCHAR) AS page
  FROM events WHERE item_id IS NOT NULL AND ts < {as_of}) WHERE user_id IS NOT NULL"""
_TABLES = ("user", "item", "user_item", "user_brand", "user_category", "item_attrs", "user_last")


def stream_features(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    windows: tuple[int, ...],
    bucket_events: int = BUCKET_EVENTS,
) -> dict[str, Any]:
    """Build every feature as of ``as_of`` from the warehouse and write the offline snapshot, its meta row
    and (when it is the newest) the online one in one transaction, one bucket of users at a time. Returns
    the meta (events, users, items, user_items, online, tables)."""
    from recctl.features import feature_list

    t0 = time.perf_counter()
    windows = checked_windows(windows)
    with progress.stage("load items and purchases"):
        items = ensure_columns(load_items(con), ITEM_SCHEMA)
        purchases = prepare_events(load_interactions(con, before=as_of, types=["purchase"]), as_of)
        cyc_ui, cyc_item = cycles(purchases, items)
        del purchases
    n_events = con.sql(
        "SELECT count(*) FROM events WHERE item_id IS NOT NULL AND ts < ?", params=[as_of]
    ).fetchall()[0][0]
    rows = dict.fromkeys(_TABLES, 0)
    columns: dict[str, list[str]] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        with session(as_of, {"it_in": items}, con.cursor()) as cur:
            cur.execute(_EV_IN.format(as_of=ts_literal(as_of)))
            n_in = cur.sql("SELECT count(*) FROM ev_in").fetchall()[0][0]
            buckets = user_buckets(cur, n_in, bucket_events)
            with progress.stage("item features"):
                item, attrs = item_tables(*shop_tables(cur, windows, as_of, stage_all=False), cyc_item)
            for name, frame in (("item", item), ("item_attrs", attrs)):
                _write_snapshot(con, f"features_{name}", frame, as_of)
                rows[name], columns[name] = frame.height, frame.columns
            del item, attrs
            with progress.stage("user features", total=len(buckets), unit="buckets"):
                for k, bucket in enumerate(buckets):
                    for name, frame in bucket_tables(cur, windows, bucket, cyc_ui, only=False).items():
                        _write_snapshot(con, f"features_{name}", frame, as_of, replace=k == 0)
                        rows[name] += frame.height
                        columns.setdefault(name, frame.columns)
                    progress.advance()
        meta: dict[str, Any] = {
            "as_of": as_of,
            "built_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            "events": n_events,
            "users": rows["user"],
            "items": rows["item"],
            "user_items": rows["user_item"],
            "features": len(feature_list(windows)),
            "windows": list(windows),
            "buckets": len(buckets),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        _write_meta(con, as_of, windows, meta)
        meta["online"] = _write_online(con, as_of, columns)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    meta["tables"] = {f"features_{k}": v for k, v in rows.items()}
    return meta


def run_features(wh: Warehouse, cfg: RecctlConfig, as_of: str | datetime | None = None) -> dict[str, Any]:
    """``recctl features``: build every feature as of ``as_of`` (default: the newest event + 1 µs) from the
    warehouse and store the offline snapshot, its meta row and, when it is the newest, the online one."""
    t0 = time.perf_counter()
    when = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    if when is None:
        last = wh.con.sql("SELECT max(ts) FROM events WHERE item_id IS NOT NULL").fetchall()[0][0]
        if last is None:
            raise DataError("the warehouse has no item events to build features from",
                            hint="run `recctl ingest events` first")  # fmt: skip
        when = last + timedelta(microseconds=1)
    meta = stream_features(wh.con, naive_utc(when), tuple(cfg.features.windows))
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
