"""User features (``u_*``): activity by type and window, recency, sessions, prices, discounts, tastes.

One row per user with at least one event before ``as_of``. Aggregates over the staged events ``ev``
(``age`` = days before as_of) come first; the rest is derived from them, from the user×brand table and
from the user's leaf-category distribution.
"""

from __future__ import annotations

from recctl.features.base import EVENT_GROUPS, SQL_TYPES, Feature
from recctl.schema import DISCOUNT_PRIOR

_VIEW, _BUY = "event_type = 'view'", "event_type = 'purchase'"


def _quantile(q: float, cond: str) -> str:
    return f"quantile_cont(price, {q}) FILTER (WHERE {cond} AND price IS NOT NULL)"


def _aggregates(windows: tuple[int, ...]) -> list[Feature]:
    """Features that are aggregates over the user's events."""
    out: list[Feature] = []
    for label, cond, doc in EVENT_GROUPS:
        for w in windows:
            out.append(Feature(f"u_n_{label}_{w}d", f"count(*) FILTER (WHERE {cond} AND age <= {w})",
                               f"{doc} in the {w} days before as_of", "count"))  # fmt: skip
        out.append(Feature(f"u_n_{label}", f"count(*) FILTER (WHERE {cond})", f"{doc}, all time", "count"))
    out += [
        Feature("u_n_items", "count(DISTINCT item_id)", "distinct items touched", "count"),
        Feature("u_n_sessions", "count(DISTINCT session_id)", "distinct sessions (0 without session ids)", "count"),
        Feature("u_n_orders", f"count(DISTINCT order_id) FILTER (WHERE {_BUY})", "distinct orders", "count"),
        Feature("u_n_active_days", "count(DISTINCT CAST(ts AS DATE))", "distinct days with an event", "count"),
        Feature("u_days_since_last_event", "min(age)", "days since the user's last event (recency)"),
        Feature("u_days_since_first_event", "max(age)", "days since the user's first event (tenure)"),
        Feature("u_days_since_last_view", f"min(age) FILTER (WHERE {_VIEW})", "days since the last view"),
        Feature("u_days_since_last_cart", "min(age) FILTER (WHERE event_type = 'add_to_cart')",
                "days since the last add-to-cart"),
        Feature("u_days_since_last_purchase", f"min(age) FILTER (WHERE {_BUY})", "days since the last purchase"),
        Feature("u_view_price_median", _quantile(0.5, _VIEW), "median price of the items viewed"),
        Feature("u_view_price_iqr", f"{_quantile(0.75, _VIEW)} - {_quantile(0.25, _VIEW)}",
                "spread (interquartile range) of the prices viewed"),
        Feature("u_buy_price_median", _quantile(0.5, _BUY), "median unit price paid"),
        Feature("u_buy_price_iqr", f"{_quantile(0.75, _BUY)} - {_quantile(0.25, _BUY)}",
                "spread (interquartile range) of the prices paid"),
        Feature("u_price_p25", _quantile(0.25, "TRUE"), "25th percentile of the prices of all item events"),
        Feature("u_price_median", _quantile(0.5, "TRUE"), "median price of all item events (the price band's centre)"),
        Feature("u_price_p75", _quantile(0.75, "TRUE"), "75th percentile of the prices of all item events"),
        Feature("u_discount_share", f"avg(CAST(on_sale AS DOUBLE)) FILTER (WHERE {_BUY} AND on_sale IS NOT NULL)",
                "share of purchases made on discount (null without purchases)"),
    ]  # fmt: skip
    return out


_HIDDEN = (
    f"count(*) FILTER (WHERE {_BUY} AND on_sale) AS _n_sale",
    f"count(*) FILTER (WHERE {_BUY} AND on_sale IS NOT NULL) AS _n_known",
)


def _derived() -> list[Feature]:
    """Features computed from the aggregates (a), the shop's discount base rate (b), brand (bs) and
    category (cs) distributions."""
    p = DISCOUNT_PRIOR
    return [
        Feature("u_events_per_session", "a.u_n_event / nullif(a.u_n_sessions, 0)", "events per session"),
        Feature("u_discount_sensitivity", f"(a._n_sale + {p} * b.base) / (a._n_known + {p}) - b.base",
                f"discount share shrunk by {p:g} purchases at the shop's rate, minus that rate"),
        Feature("u_n_brands", "coalesce(bs.n, 0)", "distinct brands touched", "count"),
        Feature("u_top_brand_share", "bs.top", "weighted share of the user's favourite brand"),
        Feature("u_brand_entropy", "bs.entropy", "entropy of the user's brand distribution (nats)"),
        Feature("u_n_categories", "coalesce(cs.n, 0)", "distinct leaf categories touched", "count"),
        Feature("u_top_category_share", "cs.top", "weighted share of the user's favourite leaf category"),
        Feature("u_category_entropy", "cs.entropy", "entropy of the user's leaf-category distribution (nats)"),
    ]  # fmt: skip


def user_features(windows: tuple[int, ...]) -> list[Feature]:
    return _aggregates(windows) + _derived()


def user_query(windows: tuple[int, ...]) -> str:
    """One row per user of the staged events ``ev`` (sorted by user_id): user_id and every ``u_*`` feature;
    the shop's discount rate comes from ``shop_base`` (over every event, recctl.features.build)."""
    aggs = _aggregates(windows)
    inner = ",\n  ".join([*(f"{f.sql} AS {f.name}" for f in aggs), *_HIDDEN])
    outer = [f"CAST(a.{f.name} AS {SQL_TYPES[f.kind]}) AS {f.name}" for f in aggs]
    outer += [f.select() for f in _derived()]
    columns = ",\n  ".join(outer)
    dist = "abs(sum(share * ln(share)) FILTER (WHERE share > 0))"
    return f"""
WITH a AS (SELECT user_id,
  {inner}
  FROM ev GROUP BY user_id),
bs AS (SELECT user_id, count(*) AS n, max(share) AS top, {dist} AS entropy FROM user_brand GROUP BY user_id),
cw AS (SELECT user_id, category, sum(w) AS w FROM ev WHERE category IS NOT NULL GROUP BY user_id, category),
cs AS (SELECT user_id, count(*) AS n, max(share) AS top, {dist} AS entropy
       FROM (SELECT user_id, w / nullif(sum(w) OVER (PARTITION BY user_id), 0) AS share FROM cw)
       GROUP BY user_id)
SELECT a.user_id,
  {columns}
FROM a CROSS JOIN shop_base b LEFT JOIN bs USING (user_id) LEFT JOIN cs USING (user_id)
ORDER BY a.user_id"""
