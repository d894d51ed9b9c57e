"""Canonical tables: column names and DuckDB types used everywhere in recctl.

Raw files are mapped onto these columns by ``configs/mappings/*.toml``; every later stage reads them by
these names. External ids are strings; models map them to dense integers internally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableName = Literal["events", "items", "users"]
TABLES: tuple[TableName, ...] = ("events", "items", "users")

#: Event types known out of the box; ``[ingest] extra_event_types`` in the config adds more.
EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "like",
    "rating",
)
#: Weight of an event in a user's brand and category distributions (other types weigh 1): the features'
#: affinities, the serving profile and segments all count events this way.
EVENT_WEIGHTS: dict[str, float] = {
    "purchase": 5.0,
    "add_to_cart": 3.0,
    "like": 2.0,
    "rating": 2.0,
    "remove_from_cart": 0.0,
}
#: Pseudo-purchases at the shop's base rate that shrink a user's discount share (discount sensitivity).
DISCOUNT_PRIOR = 5.0
#: Input formats `recctl ingest --format` accepts (readers in recctl/ingest/sources.py).
FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "ndjson", "parquet", "sequences", "keyed_json")
#: Event types that need no item (a search is about a query).
ITEMLESS_EVENT_TYPES: frozenset[str] = frozenset({"search"})


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    doc: str


EVENT_COLUMNS: tuple[Column, ...] = (
    Column("event_key", "UHUGEINT", "128-bit identity: hash of event_id when given, else of the content"),
    Column("event_id", "VARCHAR", "the source's own event id, when it has one"),
    Column("ts", "TIMESTAMP", "event time in UTC"),
    Column("user_id", "VARCHAR", "customer / visitor id; NULL for anonymous sessions"),
    Column("session_id", "VARCHAR", "visit or session id"),
    Column("item_id", "VARCHAR", "product id; NULL only for item-less events (search)"),
    Column("event_type", "VARCHAR", "one of the configured event types"),
    Column("value", "DOUBLE", "rating for ratings, revenue for purchases, else NULL"),
    Column("quantity", "DOUBLE", "units, for carts and purchases"),
    Column("price", "DOUBLE", "unit price shown or paid"),
    Column("discount", "DOUBLE", "unit discount given (0 = full price)"),
    Column("order_id", "VARCHAR", "basket / order id for purchases"),
    Column("query", "VARCHAR", "search text"),
    Column("page", "VARCHAR", "page type: home, product, category, search, cart, ..."),
    Column("source_file", "VARCHAR", "file the row came from"),
    Column("ingested_at", "TIMESTAMP", "when it was loaded (UTC)"),
)

ITEM_COLUMNS: tuple[Column, ...] = (
    Column("item_id", "VARCHAR", "product id"),
    Column("title", "VARCHAR", "product name"),
    Column("description", "VARCHAR", "free text"),
    Column("brand", "VARCHAR", "brand"),
    Column("category", "VARCHAR", "category path 'a > b > c'"),
    Column("price", "DOUBLE", "current price"),
    Column("original_price", "DOUBLE", "list price before discount"),
    Column("gender", "VARCHAR", "target gender, if any"),
    Column("attributes", "JSON", "other attributes as a JSON object"),
    Column("likes", "BIGINT", "likes / wishlist adds"),
    Column("review_count", "BIGINT", "number of reviews"),
    Column("rating", "DOUBLE", "mean review rating"),
    Column("in_stock", "BOOLEAN", "available to buy"),
    Column("created_at", "TIMESTAMP", "first listed (UTC)"),
    Column("updated_at", "TIMESTAMP", "last changed in the source (UTC)"),
    Column("source_file", "VARCHAR", "file of the latest accepted version"),
    Column("ingested_at", "TIMESTAMP", "when the latest version was loaded (UTC)"),
)

USER_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "VARCHAR", "customer id"),
    Column("gender", "VARCHAR", "gender"),
    Column("age_group", "VARCHAR", "age band"),
    Column("city", "VARCHAR", "city or region"),
    Column("device", "VARCHAR", "main device"),
    Column("signup_at", "TIMESTAMP", "sign-up time (UTC)"),
    Column("attributes", "JSON", "other attributes as a JSON object"),
    Column("updated_at", "TIMESTAMP", "last changed in the source (UTC)"),
    Column("source_file", "VARCHAR", "file of the latest accepted version"),
    Column("ingested_at", "TIMESTAMP", "when the latest version was loaded (UTC)"),
)

COLUMNS: dict[TableName, tuple[Column, ...]] = {
    "events": EVENT_COLUMNS,
    "items": ITEM_COLUMNS,
    "users": USER_COLUMNS,
}

#: Columns filled by recctl itself, never by a mapping.
SYSTEM_COLUMNS: frozenset[str] = frozenset({"event_key", "source_file", "ingested_at"})

#: The key of each table.
KEYS: dict[TableName, str] = {"events": "event_key", "items": "item_id", "users": "user_id"}

#: Columns each table needs from the source (after mapping). Events also need user_id or session_id,
#: and item_id unless the event type is item-less; those rules are row-level checks.
REQUIRED: dict[TableName, tuple[str, ...]] = {
    "events": ("ts", "event_type", "item_id"),
    "items": ("item_id",),
    "users": ("user_id",),
}
#: Events need at least one of these.
EVENT_ACTOR_COLUMNS: tuple[str, ...] = ("user_id", "session_id")

ID_COLUMNS: frozenset[str] = frozenset({"event_id", "user_id", "session_id", "item_id", "order_id"})
TIMESTAMP_COLUMNS: frozenset[str] = frozenset({"ts", "created_at", "updated_at", "signup_at"})

INGEST_FILES_COLUMNS: tuple[Column, ...] = (
    Column("path", "VARCHAR", "absolute path"),
    Column("sha256", "VARCHAR", "content hash"),
    Column("target", "VARCHAR", "events | items | users"),
    Column("mapping", "VARCHAR", "mapping file used"),
    Column("rows_read", "BIGINT", "records read"),
    Column("rows_loaded", "BIGINT", "records inserted or updated"),
    Column("rows_rejected", "BIGINT", "records sent to ingest_rejects"),
    Column("rows_duplicate", "BIGINT", "records already present or superseded"),
    Column("started_at", "TIMESTAMP", ""),
    Column("finished_at", "TIMESTAMP", ""),
    Column("status", "VARCHAR", "ok | failed"),
    Column("message", "VARCHAR", "error for failed files"),
    Column("mapping_sha256", "VARCHAR", "hash of the resolved mapping: a load is the same file AND mapping"),
)

INGEST_REJECTS_COLUMNS: tuple[Column, ...] = (
    Column("source_file", "VARCHAR", "file"),
    Column("target", "VARCHAR", "events | items | users"),
    Column("line", "BIGINT", "line (record) number in the file, 1-based, header counted"),
    Column("raw", "VARCHAR", "the raw line, or the record as JSON"),
    Column("reason", "VARCHAR", "why it was rejected"),
    Column("ingested_at", "TIMESTAMP", ""),
)


EVAL_RUNS_COLUMNS: tuple[Column, ...] = (
    Column("eval_id", "VARCHAR", "one evaluate call"),
    Column("created_at", "TIMESTAMP", "UTC"),
    Column("dataset", "VARCHAR", "label of the data evaluated"),
    Column("protocol", "VARCHAR", "temporal | leave-one-out | files"),
    Column("variant", "VARCHAR", "all | new-items"),
    Column("model", "VARCHAR", "model or baseline name"),
    Column("metric", "VARCHAR", "e.g. ndcg@10"),
    Column("value", "DOUBLE", "mean over test users"),
    Column("ci_low", "DOUBLE", "bootstrap 95% interval, when computed"),
    Column("ci_high", "DOUBLE", ""),
    Column("settings", "JSON", "protocol settings and data counts"),
)


#: The online store: each user's precomputed top-K (``recctl recommend --all``), answered by ``--user``.
RECS_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "VARCHAR", "customer id"),
    Column("rank", "INTEGER", "1-based"),
    Column("item_id", "VARCHAR", ""),
    Column("score", "DOUBLE", "the final score (ranker or generator)"),
    Column("reason", "VARCHAR", "one human reason, e.g. 'bought together with Linen shirt'"),
    Column("sources", "VARCHAR[]", "the generators that proposed the item"),
    Column("run_id", "VARCHAR", "the model run that produced the row"),
    Column("created_at", "TIMESTAMP", "UTC; freshness is judged on it"),
    Column("state", "VARCHAR", "the visitor state it was ranked for: new, returning, signed_in, buyer"),
    Column("strategy", "VARCHAR", "the strategy that state mapped to ([serving.strategies])"),
)

#: Segment membership (``recctl segments apply``): one row per (user, segment) at the last apply.
SEGMENT_MEMBERS_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "VARCHAR", "customer id"),
    Column("segment", "VARCHAR", "segment name from configs/segments.toml"),
    Column("applied_at", "TIMESTAMP", "UTC, when membership was materialized"),
)


def event_key_sql() -> str:
    """SQL for an event's identity over the canonical columns (in the stage and in ``events`` alike).

    Two 64-bit DuckDB hashes of the typed values in opposite orders make 128 bits: the same event read
    from CSV text and from JSON numbers gets the same key, and no text is built (an md5 of the row's text
    cost 40% of ingest time). DuckDB may change ``hash`` between releases; the warehouse stores a probe
    value and re-keys its events when the probe changes (``recctl.warehouse.migrations.check_key_probe``).
    """
    content = [c.name for c in EVENT_COLUMNS if c.name not in SYSTEM_COLUMNS and c.name != "event_id"]
    fwd, rev = ", ".join(content), ", ".join(reversed(content))
    return (
        "CASE WHEN event_id IS NOT NULL "
        "THEN (hash('recctl:event_id', event_id)::UHUGEINT << 64) | hash(event_id, 'recctl:event_id')::UHUGEINT "
        f"ELSE (hash({fwd})::UHUGEINT << 64) | hash({rev})::UHUGEINT END"
    )


def column_names(table: TableName) -> list[str]:
    return [c.name for c in COLUMNS[table]]


def mappable_columns(table: TableName) -> list[str]:
    return [c.name for c in COLUMNS[table] if c.name not in SYSTEM_COLUMNS]


def sql_type(table: TableName, column: str) -> str:
    for c in COLUMNS[table]:
        if c.name == column:
            return c.sql_type
    raise KeyError(f"{table}.{column}")


def create_table_sql(name: str, columns: tuple[Column, ...], primary_key: str | None = None) -> str:
    cols = [f"{c.name} {c.sql_type}" for c in columns]
    if primary_key:
        cols.append(f"PRIMARY KEY ({primary_key})")
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)})"
