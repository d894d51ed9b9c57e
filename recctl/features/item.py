"""Item features (``i_*``): popularity by window and its trend, conversion, price, discount, age, catalog.

One row per catalog item (and per item seen only in events), never-interacted items included: their
counts are 0 and their rates null. Catalog values (price, rating, stock, ...) are the catalog's current
ones; ``i_age_days`` is null for items listed at or after ``as_of``.
"""

from __future__ import annotations

from datetime import datetime

from recctl.features.base import SQL_TYPES, Feature, ts_literal

_GROUPS = (("event", "TRUE", "item events"), ("purchase", "event_type = 'purchase'", "purchases"))
_TOTALS = (
    ("event", "TRUE", "item events, all time"),
    ("view", "event_type = 'view'", "views, all time"),
    ("cart", "event_type = 'add_to_cart'", "add-to-carts, all time"),
    ("purchase", "event_type = 'purchase'", "purchases, all time"),
)


def _aggregates(windows: tuple[int, ...]) -> list[Feature]:
    """Counts over the item's events (0 for items without events)."""
    out: list[Feature] = []
    for w in windows:
        for label, cond, doc in _GROUPS:
            out.append(Feature(f"i_n_{label}_{w}d", f"count(*) FILTER (WHERE {cond} AND age <= {w})",
                               f"{doc} in the {w} days before as_of", "count"))  # fmt: skip
        out.append(Feature(f"i_n_user_{w}d", f"count(*) FILTER (WHERE recent <= {w})",
                           f"distinct users in the {w} days before as_of", "count"))  # fmt: skip
    for label, cond, doc in _TOTALS:
        out.append(Feature(f"i_n_{label}", f"count(*) FILTER (WHERE {cond})", doc, "count"))
    out.append(Feature("i_n_user", "count(*)", "distinct users, all time", "count"))
    return out


def _per_user(feature: Feature) -> bool:
    """Distinct-user counts are counted over the (item, user) pairs ``iu``, not with count(DISTINCT) over
    the events: one hash aggregate DuckDB can spill instead of a set of user ids per item and window."""
    return feature.name.startswith("i_n_user")


def _hidden(windows: tuple[int, ...]) -> list[str]:
    """Events in the window before each window (for the trend) and the first / last event ages."""
    prev = [f"count(*) FILTER (WHERE age > {w} AND age <= {2 * w}) AS _prev_{w}" for w in windows]
    return [*prev, "max(age) AS _first", "min(age) AS _last"]


def _derived(windows: tuple[int, ...], as_of: datetime) -> list[Feature]:
    trend = [
        Feature(f"i_trend_{w}d", f"ln((coalesce(a.i_n_event_{w}d, 0) + 1.0) / (coalesce(a._prev_{w}, 0) + 1.0))",
                f"ln((events in the last {w} days + 1) / (events in the {w} days before those + 1))")
        for w in windows
    ]  # fmt: skip
    return [
        *trend,
        Feature("i_conversion", "a.i_n_purchase / nullif(a.i_n_view, 0)", "purchases per view (null without views)"),
        Feature("i_cart_rate", "a.i_n_cart / nullif(a.i_n_view, 0)", "add-to-carts per view (null without views)"),
        Feature("i_n_buyer", "coalesce(b.n_buyer, 0)", "distinct buyers, all time", "count"),
        Feature("i_repeat_share", "b.n_repeat / nullif(b.n_buyer, 0)", "share of buyers who bought it twice or more"),
        Feature("i_days_since_first_event", "a._first", "days since the item's first event"),
        Feature("i_days_since_last_event", "a._last", "days since the item's last event"),
        Feature("i_price", "x.price", "price: the catalog's, else the median price in events"),
        Feature("i_discount_pct", "x.discount_pct",
                "discount: 1 − price / original_price, else the mean discount share in events"),
        Feature("i_price_rel_category", "x.price / nullif(x.cat_median, 0)",
                "price relative to the median price of its leaf category"),
        Feature("i_age_days", f"CASE WHEN x.created_at < {ts_literal(as_of)} THEN days_before(x.created_at) END",
                "days since the item was listed (null if unknown or listed later)"),
        Feature("i_rating", "x.rating", "mean review rating"),
        Feature("i_review_count", "x.review_count", "number of reviews", "count"),
        Feature("i_likes", "x.likes", "likes / wishlist adds", "count"),
        Feature("i_in_stock", "CAST(x.in_stock AS TINYINT)", "1 in stock, 0 out of stock, null unknown", "flag"),
    ]  # fmt: skip


def item_features(windows: tuple[int, ...], as_of: datetime | None = None) -> list[Feature]:
    return _aggregates(windows) + _derived(windows, as_of or datetime(2000, 1, 1))


def item_query(windows: tuple[int, ...], as_of: datetime) -> str:
    """One row per item of the staged catalog ``it`` (sorted by item_id): item_id and every ``i_*``, over
    every staged event ``ev_all``."""
    aggs = _aggregates(windows)
    inner = ",\n  ".join([*(f"{f.sql} AS {f.name}" for f in aggs if not _per_user(f)), *_hidden(windows)])
    users = ",\n  ".join(f"{f.sql} AS {f.name}" for f in aggs if _per_user(f))
    outer = [f"CAST(coalesce({'b' if _per_user(f) else 'a'}.{f.name}, 0) AS {SQL_TYPES[f.kind]}) AS {f.name}"
             for f in aggs]  # fmt: skip
    outer += [f.select() for f in _derived(windows, as_of)]
    columns = ",\n  ".join(outer)
    return f"""
WITH a AS (SELECT item_id,
  {inner}
  FROM ev_all WHERE item_id IS NOT NULL GROUP BY item_id),
iu AS (SELECT item_id, user_id, min(age) AS recent, count(*) FILTER (WHERE event_type = 'purchase') AS n_buy
       FROM ev_all WHERE item_id IS NOT NULL GROUP BY item_id, user_id),
b AS (SELECT item_id,
  {users},
  count(*) FILTER (WHERE n_buy > 0) AS n_buyer, count(*) FILTER (WHERE n_buy >= 2) AS n_repeat
  FROM iu GROUP BY item_id),
x AS (SELECT *, CASE WHEN category IS NOT NULL
        THEN median(price) OVER (PARTITION BY category) END AS cat_median FROM it)
SELECT x.item_id,
  {columns}
FROM x LEFT JOIN a USING (item_id) LEFT JOIN b USING (item_id)
ORDER BY x.item_id"""
