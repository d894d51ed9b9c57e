"""``build``: every feature table as of a point in time, from an interaction frame and the catalog.

Only events with ``ts < as_of`` are used (filtered here, whatever the caller passed). Two staging tables
are made first in a private DuckDB session: ``it`` (the catalog plus items seen only in events, with a
normalized category path, its prefixes and a price / discount) and ``ev_all`` (the events with their age
in days before ``as_of``, the price seen, whether it was on sale, a weight by type, the item's brand and
category). The long tables and the user and item features (``user.py``, ``item.py``) are SQL over them.

Memory. The shop-wide parts (item features and attributes, the brands' and categories' shares of all the
weight that the lifts divide by, the shop's discount rate, the items' repurchase cycles) are computed once
over every event. The user-level tables (``user``, ``user_item``, ``user_brand``, ``user_category``,
``user_last``) are computed per bucket of users over ``ev``, that bucket's staged events: contiguous
ranges of user_id holding about ``bucket_events`` events each, so that the buckets' outputs concatenated are
already in user_id order and DuckDB never stages more than one bucket of events (``ev_all`` is then a view).
A user's rows depend only on that user's events and the shop-wide tables, so any bucket count gives the same
frames (tested).
"""

from __future__ import annotations

import itertools
from datetime import datetime

import duckdb
import polars as pl

from recctl.features.base import (
    DEFAULT_WINDOWS,
    PAGE_OF_EVENT,
    PAGES,
    FeatureSet,
    ensure_columns,
    naive_utc,
    session,
)
from recctl.features.item import item_query
from recctl.features.user import user_query
from recctl.ingest.sources import sql_str
from recctl.schema import EVENT_WEIGHTS

_S, _F, _TS = pl.String(), pl.Float64(), pl.Datetime("us")
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": _S, "item_id": _S, "event_type": _S, "ts": _TS, "session_id": _S, "order_id": _S,
    "price": _F, "discount": _F, "page": _S,
}  # fmt: skip
ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": _S, "brand": _S, "category": _S, "price": _F, "original_price": _F, "in_stock": pl.Boolean(),
    "created_at": _TS, "rating": _F, "review_count": pl.Int64(), "likes": pl.Int64(),
}  # fmt: skip


def _case(column: str, mapping: dict[str, object], default: str) -> str:
    whens = " ".join(f"WHEN '{k}' THEN {v!r}" for k, v in mapping.items())
    return f"CASE {column} {whens} ELSE {default} END"


def page_sql(page: str, event_type: str) -> str:
    """The normalized page of an event: its own page when known, else the page its type implies."""
    known = ", ".join(f"'{p}'" for p in PAGES)
    implied = _case(event_type, dict(PAGE_OF_EVENT), "'other'")
    return (
        f"CASE WHEN lower(trim({page})) IN ({known}) THEN lower(trim({page})) "
        f"WHEN nullif(trim({page}), '') IS NOT NULL THEN 'other' ELSE {implied} END"
    )


STAGE_ITEMS = """
CREATE TEMP TABLE it AS
WITH cat AS (
  SELECT item_id, nullif(trim(brand), '') AS brand,
    list_filter(list_transform(string_split(category, '>'), lambda x: trim(x)), lambda x: x <> '') AS parts,
    price, original_price, in_stock, created_at, rating, review_count, likes
  FROM (SELECT * FROM it_in WHERE item_id IS NOT NULL QUALIFY row_number() OVER (PARTITION BY item_id) = 1)
), every AS (
  SELECT * FROM cat UNION ALL BY NAME
  SELECT DISTINCT e.item_id FROM ev_in e ANTI JOIN cat c ON c.item_id = e.item_id WHERE e.item_id IS NOT NULL
), seen AS (
  SELECT item_id, median(price) AS paid,
    avg(discount / (price + discount)) FILTER (WHERE discount >= 0 AND price + discount > 0) AS ev_disc
  FROM ev_in WHERE item_id IS NOT NULL AND price >= 0 GROUP BY item_id
)
SELECT c.item_id, c.brand,
  CASE WHEN len(c.parts) > 0 THEN array_to_string(c.parts, ' > ') END AS category,
  CASE WHEN len(c.parts) > 0 THEN len(c.parts) END AS depth,
  CASE WHEN len(c.parts) > 0
    THEN list_transform(range(1, len(c.parts) + 1), lambda k: array_to_string(c.parts[1:k], ' > ')) END AS prefixes,
  coalesce(c.price, s.paid) AS price,
  CASE WHEN c.original_price > 0 AND c.price IS NOT NULL THEN greatest(0, least(1, 1 - c.price / c.original_price))
    WHEN s.ev_disc IS NOT NULL THEN greatest(0, least(1, s.ev_disc)) END AS discount_pct,
  c.original_price, c.in_stock, c.created_at, c.rating, c.review_count, c.likes
FROM every c LEFT JOIN seen s USING (item_id)
"""


#: Events per bucket of users in ``build`` (about: buckets are whole users); a constant, not a setting —
#: results do not depend on it, only the peak memory of the build does.
BUCKET_EVENTS = 2_000_000


def _stage_events(kind: str) -> str:
    weight = _case("e.event_type", dict(EVENT_WEIGHTS), "1.0")
    return f"""
CREATE TEMP {kind} ev_all AS
SELECT e.__r, e.user_id, e.item_id, e.event_type, e.ts, e.session_id, e.order_id,
  {page_sql("e.page", "e.event_type")} AS page,
  days_before(e.ts) AS age,
  CASE WHEN coalesce(e.price, it.price) >= 0 THEN coalesce(e.price, it.price) END AS price,
  CASE WHEN e.discount IS NOT NULL THEN e.discount > 0
    WHEN e.price IS NOT NULL AND it.original_price > 0 THEN e.price < 0.995 * it.original_price
    WHEN it.discount_pct IS NOT NULL THEN it.discount_pct > 0.005 END AS on_sale,
  CAST({weight} AS DOUBLE) AS w, it.brand, it.category
FROM ev_in e LEFT JOIN it USING (item_id)
"""


_PURCHASE = "event_type = 'purchase'"
#: The shop-wide shares the lifts divide by and the discount base rate, over every event (``ev_all``).
SHOP_TABLES = (
    """CREATE TEMP TABLE brand_g AS
SELECT brand, sum(w) / nullif(sum(sum(w)) OVER (), 0) AS g FROM ev_all WHERE brand IS NOT NULL GROUP BY brand""",
    """CREATE TEMP TABLE prefixes AS
SELECT item_id, unnest(prefixes) AS category, generate_subscripts(prefixes, 1) AS depth FROM it""",
    """CREATE TEMP TABLE category_g AS
SELECT p.category, sum(e.w) / nullif((SELECT sum(w) FROM ev_all WHERE category IS NOT NULL), 0) AS g
FROM ev_all e JOIN prefixes p USING (item_id) GROUP BY p.category""",
    f"""CREATE TEMP TABLE shop_base AS
SELECT coalesce(avg(CAST(on_sale AS DOUBLE)) FILTER (WHERE {_PURCHASE} AND on_sale IS NOT NULL), 0) AS base
FROM ev_all""",
)
LONG_TABLES: dict[str, str] = {
    "user_item": f"""
SELECT user_id, item_id, count(*) AS n_event, count(*) FILTER (WHERE event_type = 'view') AS n_view,
  count(*) FILTER (WHERE event_type = 'add_to_cart') AS n_cart, count(*) FILTER (WHERE {_PURCHASE}) AS n_purchase,
  min(ts) AS first_ts, max(ts) AS last_ts
FROM ev WHERE item_id IS NOT NULL GROUP BY user_id, item_id ORDER BY user_id, item_id""",
    "user_brand": f"""
WITH b AS (
  SELECT user_id, brand, sum(w) AS weight, count(*) FILTER (WHERE {_PURCHASE}) AS n_purchase, max(ts) AS last_ts
  FROM ev WHERE brand IS NOT NULL GROUP BY user_id, brand
)
SELECT user_id, brand, weight, weight / nullif(sum(weight) OVER (PARTITION BY user_id), 0) AS share,
  weight / nullif(sum(weight) OVER (PARTITION BY user_id), 0) / nullif(g.g, 0) AS lift, n_purchase, last_ts
FROM b JOIN brand_g g USING (brand) ORDER BY user_id, brand""",
    "user_category": f"""
WITH c AS (
  SELECT e.user_id, p.category, p.depth, sum(e.w) AS weight,
    count(*) FILTER (WHERE e.{_PURCHASE}) AS n_purchase, max(e.ts) AS last_ts
  FROM ev e JOIN prefixes p USING (item_id) GROUP BY e.user_id, p.category, p.depth
), t AS (SELECT user_id, sum(w) AS total FROM ev WHERE category IS NOT NULL GROUP BY user_id)
SELECT c.user_id, c.category, c.depth, c.weight, c.weight / nullif(t.total, 0) AS share,
  c.weight / nullif(t.total, 0) / nullif(g.g, 0) AS lift, c.n_purchase, c.last_ts
FROM c JOIN t USING (user_id) JOIN category_g g USING (category) ORDER BY user_id, depth, category""",
    "user_last": """
SELECT user_id, ts, event_type, item_id, page FROM ev
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, __r DESC) = 1 ORDER BY user_id""",
}
ITEM_ATTRS = "SELECT item_id, brand, category, depth, prefixes, price, discount_pct FROM it ORDER BY item_id"


Bucket = tuple[str | None, str | None]  # [lo, hi) of user_id; None: unbounded


def cycles(events: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The repurchase cycles (recctl.candidates._cycles, the model the ``repeat`` generator uses) as feature
    columns: per (user, item) ``n_baskets`` (purchase occasions), ``last_buy_ts``, ``cycle_days`` and
    ``cycle_sigma`` (the user's blended cycle); per item its own ``cycle_days`` / ``cycle_sigma`` (backed
    off to the category, then the shop). Only purchases count: ``events`` may hold only those."""
    from recctl.candidates._cycles import purchase_cycles

    cyc = purchase_cycles(events, items)
    ui = cyc.user_item.select(
        "user_id",
        "item_id",
        "n_baskets",
        last_buy_ts="last_ts",
        cycle_days="cycle_days",
        cycle_sigma="log_sigma",
    )
    return ui, cyc.item.select("item_id", cycle_days="cycle_days", cycle_sigma="log_sigma")


def prepare_events(events: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """The canonical event columns (missing optional ones as nulls), only ``ts < as_of``, with the row
    number ``__r`` (ties in time are broken by the frame's order)."""
    ev = ensure_columns(events, EVENT_SCHEMA).with_row_index("__r")
    return ev.filter(pl.col("ts") < naive_utc(as_of), pl.col("user_id").is_not_null())


def user_buckets(con: duckdb.DuckDBPyConnection, n_events: int, bucket_events: int) -> list[Bucket]:
    """Contiguous user_id ranges of ``ev_in`` of about ``bucket_events`` events each (whole users; one
    unbounded range when all fit), cut on the users' running event count: memory grows with the users,
    not the events."""
    if n_events <= bucket_events:
        return [(None, None)]
    cuts = con.sql(f"""
WITH u AS (SELECT user_id, count(*) AS n FROM ev_in GROUP BY user_id),
c AS (SELECT user_id, sum(n) OVER (ORDER BY user_id ROWS UNBOUNDED PRECEDING) AS cum FROM u)
SELECT min(user_id) AS lo FROM c GROUP BY (cum - 1) // {max(1, int(bucket_events))} ORDER BY lo""").fetchall()
    return list(itertools.pairwise([None, *(r[0] for r in cuts[1:]), None]))


def in_bucket_sql(bucket: Bucket) -> str:
    lo, hi = bucket
    parts = [
        f"user_id >= {sql_str(lo)}" if lo is not None else "",
        f"user_id < {sql_str(hi)}" if hi is not None else "",
    ]
    return " AND ".join(x for x in parts if x) or "TRUE"


def in_bucket(bucket: Bucket) -> pl.Expr:
    lo, hi = bucket
    expr = pl.lit(True)
    if lo is not None:
        expr = expr & (pl.col("user_id") >= lo)
    if hi is not None:
        expr = expr & (pl.col("user_id") < hi)
    return expr


def shop_tables(
    con: duckdb.DuckDBPyConnection, windows: tuple[int, ...], as_of: datetime, *, stage_all: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage ``it`` and ``ev_all`` (a table when ``stage_all``, else a view) from ``ev_in`` / ``it_in`` and
    the shop-wide tables; returns the item features and attributes (without cycles)."""
    con.execute(STAGE_ITEMS)
    con.execute(_stage_events("TABLE" if stage_all else "VIEW"))
    for sql in SHOP_TABLES:
        con.execute(sql)
    return con.sql(item_query(windows, as_of)).pl(), con.sql(ITEM_ATTRS).pl()


def bucket_tables(
    con: duckdb.DuckDBPyConnection,
    windows: tuple[int, ...],
    bucket: Bucket,
    cycles_ui: pl.DataFrame,
    *,
    only: bool,
) -> dict[str, pl.DataFrame]:
    """The user-level tables of one bucket (``only``: the bucket is every user; ``ev`` is then a view of
    the staged ``ev_all``), the user × item table with the pair's cycle and ``u_repeat_share``."""
    kind = "VIEW" if only else "TABLE"
    con.execute(f"CREATE OR REPLACE TEMP {kind} ev AS SELECT * FROM ev_all WHERE {in_bucket_sql(bucket)}")
    try:
        out = {name: con.sql(sql).pl() for name, sql in LONG_TABLES.items()}
        con.register("user_brand", out["user_brand"])
        try:
            out["user"] = con.sql(user_query(windows)).pl()
        finally:
            con.unregister("user_brand")
    finally:
        con.execute(f"DROP {kind} ev")
    ui = cycles_ui if only else cycles_ui.filter(in_bucket(bucket))
    out["user_item"] = out["user_item"].join(ui, on=["user_id", "item_id"], how="left", maintain_order="left")
    n = pl.col("n_baskets").fill_null(0)
    share = (
        out["user_item"]
        .group_by("user_id")
        .agg(u_repeat_share=((n - 1).clip(0).sum() / n.sum().clip(1)).cast(pl.Float32))
    )
    out["user"] = out["user"].join(share, on="user_id", how="left", maintain_order="left")
    return out


def item_tables(
    item: pl.DataFrame, item_attrs: pl.DataFrame, cycles_item: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The item features with ``i_cycle_days`` and the attributes with the item's cycle."""
    attrs = item_attrs.join(cycles_item, on="item_id", how="left", maintain_order="left")
    cycle = attrs.select("item_id", i_cycle_days=pl.col("cycle_days").cast(pl.Float32))
    return item.join(cycle, on="item_id", how="left", maintain_order="left"), attrs


def checked_windows(windows: tuple[int, ...]) -> tuple[int, ...]:
    out = tuple(sorted({int(w) for w in windows}))
    if not out or out[0] < 1:
        raise ValueError(f"feature windows are positive day counts, not {windows}")
    return out


def build(
    events: pl.DataFrame,
    items: pl.DataFrame,
    as_of: datetime,
    *,
    windows: tuple[int, ...] = DEFAULT_WINDOWS,
    bucket_events: int = BUCKET_EVENTS,
) -> FeatureSet:
    """Every feature as of ``as_of`` from the events before it and the catalog (see ``FEATURES``).

    ``events`` is an interaction frame (user_id, item_id, event_type, ts and optionally session_id,
    order_id, price, discount, page); ``items`` the catalog (item_id and optionally brand, category,
    price, original_price, in_stock, created_at, rating, review_count, likes). The user-level tables are
    built per bucket of about ``bucket_events`` events (the same frames for any value; see the module doc).
    """
    as_of = naive_utc(as_of)
    windows = checked_windows(windows)
    ev_in = prepare_events(events, as_of)
    it_in = ensure_columns(items, ITEM_SCHEMA)
    cyc_ui, cyc_item = cycles(ev_in, it_in)
    with session(as_of, {"ev_in": ev_in, "it_in": it_in}) as con:
        buckets = user_buckets(con, ev_in.height, bucket_events)
        only = len(buckets) == 1
        item, item_attrs = shop_tables(con, windows, as_of, stage_all=only)
        parts = [bucket_tables(con, windows, b, cyc_ui, only=only) for b in buckets]
    item, item_attrs = item_tables(item, item_attrs, cyc_item)
    users = {name: pl.concat([p[name] for p in parts], rechunk=False) for name in parts[0]}
    del parts
    return FeatureSet(as_of=as_of, item=item, item_attrs=item_attrs, windows=windows, **users)
