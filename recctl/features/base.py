"""Shared pieces of the feature store: the feature record, the FeatureSet, constants and the DuckDB session.

Every feature is a SQL expression run by DuckDB over polars frames registered on a private in-memory
connection, so the same definitions serve the warehouse (``recctl features``) and in-memory training
splits (the ranker). Timestamps are naive UTC throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import polars as pl

from recctl import resources
from recctl.data import by_key, rows_of

Kind = Literal["count", "real", "flag"]
#: DuckDB type each kind of feature is cast to (polars Int32 / Float32 / Int8): half the memory of
#: 64-bit columns for a million ranked pairs, and what LightGBM reads anyway.
SQL_TYPES: dict[Kind, str] = {"count": "INTEGER", "real": "FLOAT", "flag": "TINYINT"}

#: Event-type groups counted per window: (feature label, SQL condition on event_type, description).
EVENT_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("event", "TRUE", "item events of any type"),
    ("view", "event_type = 'view'", "views"),
    ("cart", "event_type = 'add_to_cart'", "add-to-carts"),
    ("purchase", "event_type = 'purchase'", "purchases"),
)

#: Pages of the context features; any other page name is ``other``.
PAGES: tuple[str, ...] = ("home", "product", "category", "search", "cart", "checkout", "other")
#: The page a derived context gets from the user's last event type (when the event has no page).
PAGE_OF_EVENT: dict[str, str] = {
    "view": "product",
    "click": "product",
    "like": "product",
    "rating": "product",
    "add_to_cart": "cart",
    "remove_from_cart": "cart",
    "search": "search",
    "purchase": "checkout",
}

DEFAULT_WINDOWS: tuple[int, ...] = (1, 7, 30, 90)


@dataclass(frozen=True)
class Feature:
    """One feature column: its name, the SQL expression computing it, one line of documentation."""

    name: str
    sql: str
    doc: str
    kind: Kind = "real"

    def select(self) -> str:
        return f"CAST({self.sql} AS {SQL_TYPES[self.kind]}) AS {self.name}"


def select_list(features: list[Feature]) -> str:
    return ",\n  ".join(f.select() for f in features)


@dataclass
class FeatureSet:
    """Features as of one point in time (only events with ``ts < as_of`` are used).

    ``user`` (user_id + ``u_*``) and ``item`` (item_id + ``i_*``, every catalog item) hold the numeric
    features; the long tables hold what pair features are computed from:

    - ``user_item``: user_id, item_id, n_event, n_view, n_cart, n_purchase, first_ts, last_ts, and the
      repurchase cycle of the pair: n_baskets, last_buy_ts, cycle_days, cycle_sigma (null if never bought)
    - ``user_brand``: user_id, brand, weight, share, lift, n_purchase, last_ts
    - ``user_category``: user_id, category (every path prefix), depth, weight, share, lift, last_ts
    - ``item_attrs``: item_id, brand, category (normalized path), depth, prefixes, price, discount_pct,
      cycle_days, cycle_sigma (the item's repurchase cycle)
    - ``user_last``: user_id, ts, event_type, item_id, page (the user's last event: the derived context)
    """

    as_of: datetime
    user: pl.DataFrame
    item: pl.DataFrame
    user_item: pl.DataFrame
    user_brand: pl.DataFrame
    user_category: pl.DataFrame
    item_attrs: pl.DataFrame
    user_last: pl.DataFrame
    windows: tuple[int, ...] = field(default=DEFAULT_WINDOWS)

    def tables(self) -> dict[str, pl.DataFrame]:
        """Every frame by its store name (``features_<name>`` in the warehouse)."""
        return {
            "user": self.user,
            "item": self.item,
            "user_item": self.user_item,
            "user_brand": self.user_brand,
            "user_category": self.user_category,
            "item_attrs": self.item_attrs,
            "user_last": self.user_last,
        }

    def by_user(self) -> FeatureSet:
        """The same features with the user-side tables sorted by user_id (a table already in that order
        is only checked and flagged), so that :meth:`of_users` cuts a slice instead of scanning."""
        tables: dict[str, Any] = {name: by_key(getattr(self, name), "user_id") for name in USER_TABLES}
        return replace(self, **tables)

    def of_users(self, users: pl.Series) -> FeatureSet:
        """The same features with the user-side tables cut to the rows of ``users`` (the item tables as
        they are): what a chunk of pairs joins, at the chunk's cost when the tables are :meth:`by_user`."""
        tables: dict[str, Any] = {
            name: rows_of(getattr(self, name), "user_id", users) for name in USER_TABLES
        }
        return replace(self, **tables)


#: the FeatureSet tables with one or more rows per user (the others are per item)
USER_TABLES = ("user", "user_item", "user_brand", "user_category", "user_last")


def naive_utc(ts: datetime) -> datetime:
    """Aware datetimes → naive UTC (the warehouse's convention); naive ones are taken as UTC."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def ts_literal(ts: datetime) -> str:
    return f"TIMESTAMP '{naive_utc(ts).isoformat(sep=' ', timespec='microseconds')}'"


@contextmanager
def session(
    as_of: datetime, frames: dict[str, pl.DataFrame], con: duckdb.DuckDBPyConnection | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with ``frames`` registered by name and the temporary macro ``days_before(t)`` =
    days from ``t`` to ``as_of`` (fractional): a private in-memory one, or ``con`` (a cursor of the
    warehouse, whose temporary tables are its own), closed at the end either way."""
    own = con is None
    con = duckdb.connect() if con is None else con
    try:
        if own:
            resources.configure_private(con)
            con.execute("SET enable_progress_bar = false")
        con.execute(
            "CREATE OR REPLACE TEMP MACRO days_before(t) AS "
            f"(epoch_us({ts_literal(as_of)}) - epoch_us(t)) / 86400000000.0"
        )
        for name, frame in frames.items():
            con.register(name, frame)
        yield con
    finally:
        con.close()


def ensure_columns(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with each of ``columns`` present (missing ones as nulls) and cast to its type."""
    exprs = []
    for name, dtype in columns.items():
        if name in frame.columns:
            exprs.append(_cast(pl.col(name), frame.schema[name], dtype).alias(name))
        else:
            exprs.append(pl.lit(None, dtype).alias(name))
    return frame.select(exprs)


def _cast(expr: pl.Expr, current: pl.DataType, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime) and isinstance(current, pl.Datetime) and current.time_zone:
        return expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(dtype)
    if dtype == pl.String and current != pl.String:
        return expr.cast(pl.String)
    return expr.cast(dtype, strict=False)
