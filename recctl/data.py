"""Events out of the warehouse as polars frames: the one place models and evaluation read them from.

The interaction frame has one row per item event: ``user_id`` (the customer, or ``session:<id>`` for an
anonymous session), ``item_id``, ``event_type``, ``ts`` and the numeric context columns.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

INTERACTION_COLUMNS = (
    "user_id", "item_id", "event_type", "ts", "session_id", "order_id", "value", "quantity", "price", "discount",
)  # fmt: skip


def basket_key() -> pl.Expr:
    """The basket of an event (the one definition the next-basket split, the repurchase cycles and the
    ``repeat`` generator share): its order id, else its session id, else the calendar day of ``ts``."""
    day = pl.col("ts").dt.date().cast(pl.String)
    return pl.coalesce(
        pl.lit("o:") + pl.col("order_id").cast(pl.String),
        pl.lit("s:") + pl.col("session_id").cast(pl.String),
        pl.lit("d:") + day,
    ).alias("basket")


def by_key(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """``frame`` sorted by ``key`` and flagged as sorted (a sorted one is only flagged, not copied)."""
    if frame[key].is_sorted():
        return frame.set_sorted(key)
    return frame.sort(key, maintain_order=True)


def rows_of(frame: pl.DataFrame, key: str, values: pl.Series) -> pl.DataFrame:
    """The rows of ``frame`` whose ``key`` is in ``values``, in ``frame``'s order. On a frame flagged
    sorted by ``key`` (:func:`by_key`) only the slice between the smallest and the largest value is
    searched (binary search), so a chunk's lookup costs the chunk, not the frame."""
    wanted = values.drop_nulls().unique().cast(frame.schema[key]).to_frame(key)
    if wanted.height == 0:
        return frame.clear()
    col = frame[key]
    if col.flags["SORTED_ASC"] and not col.has_nulls():
        first, last = wanted[key].min(), wanted[key].max()
        lo = int(col.search_sorted(first, side="left"))  # type: ignore[call-overload]
        hi = int(col.search_sorted(last, side="right"))  # type: ignore[call-overload]
        frame = frame.slice(lo, hi - lo)
    return frame.join(wanted, on=key, how="semi", maintain_order="left")


#: the interaction frame's columns, in order (``user_id`` is the customer, or ``session:<id>`` for an
#: anonymous visit); what ``load_interactions`` returns and what the service's recent events carry
INTERACTION_COLUMNS = ("user_id", "item_id", "event_type", "ts", "session_id", "order_id", "value", "quantity",
                       "price", "discount")  # fmt: skip


def _interactions_sql(
    before: datetime | None, types: list[str] | None, users: list[str] | None = None
) -> tuple[str, list[object]]:
    where = ["item_id IS NOT NULL"]
    params: list[object] = []
    if users is not None:
        where.append("coalesce(user_id, 'session:' || session_id) IN (SELECT unnest(?::VARCHAR[]))")
        params.append(users)
    if before is not None:
        where.append("ts < ?")
        params.append(before)
    if types:
        where.append(f"event_type IN ({', '.join('?' for _ in types)})")
        params.extend(types)
    cols = ", ".join(INTERACTION_COLUMNS[1:])
    sql = (
        f"SELECT coalesce(user_id, 'session:' || session_id) AS user_id, {cols} FROM events "
        f"WHERE {' AND '.join(where)} ORDER BY user_id, ts, event_key"
    )
    return sql, params


def load_interactions(
    con: duckdb.DuckDBPyConnection, *, before: datetime | None = None, types: list[str] | None = None,
    users: list[str] | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Item events, oldest first (ties in a stable order), optionally only before a time / of some types /
    of some users (``session:<id>`` for an anonymous session)."""
    sql, params = _interactions_sql(before, types, users)
    frame: pl.DataFrame = con.sql(sql, params=params).pl()
    return frame


def export_interactions(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Every item event, in :func:`load_interactions`' order (so sorted by user), into the parquet file
    ``path`` in row groups of 100,000 events with min / max statistics: what :func:`read_users` reads one
    range of users at a time from, instead of holding the shop's events in memory (DuckDB sorts and
    writes them within its memory limit, spilling beyond it)."""
    sql, _ = _interactions_sql(None, None)
    target = str(path).replace("'", "''")
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE 100000)")


def read_users(path: Path, users: pl.Series) -> pl.DataFrame:
    """The rows of ``users`` in a parquet file sorted by user_id (an :func:`export_interactions` file, a
    saved FeatureSet's user tables), in its order: only the row groups whose user_id range meets the
    users' (smallest to largest) are read."""
    wanted = users.drop_nulls().cast(pl.String)
    scan = pl.scan_parquet(path)
    if wanted.len() == 0:
        return scan.head(0).collect()
    first, last = pl.lit(wanted.min(), pl.String), pl.lit(wanted.max(), pl.String)
    return rows_of(scan.filter(pl.col("user_id").is_between(first, last)).collect(), "user_id", wanted)


def load_items(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The catalog: every item in ``items`` plus items seen only in events (with empty attributes)."""
    frame: pl.DataFrame = con.sql(
        "SELECT i.item_id, i.title, i.description, i.brand, i.category, i.price, i.original_price, i.gender, "
        "CAST(i.attributes AS VARCHAR) AS attributes, i.in_stock, i.created_at, i.rating, i.review_count, i.likes "
        "FROM items i UNION ALL BY NAME "
        "SELECT DISTINCT e.item_id FROM events e WHERE e.item_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = e.item_id)"
    ).pl()
    return frame
