"""Customer segments: membership from the data, materialized in ``segment_members``, and their actions.

Definitions live in ``[serving] segments_file`` (``configs/segments.toml``; models in
:mod:`recctl.rules.segment_defs`). :func:`membership` evaluates every segment over all users at once:

- **visitor_states**: the user's state as :mod:`recctl.serving.states` decides it (buyer: a purchase;
  signed_in: a row in ``users``; returning: events only) — always over the whole history;
- **affinities**: the share of the user's *weighted* item events (purchase 5, add_to_cart 3, like and
  rating 2, remove_from_cart and hide / dislike / not_interested 0, anything else 1) on items under any
  of ``categories`` (path prefixes, whole levels, case-insensitive) or of any of ``brands``;
- **prices**: the median price of the user's view events (the price shown, else the catalog price) and
  the median unit price of their purchases (price paid, else value / quantity, else the catalog price);
- **recency**: days from the user's last event to ``now`` — always over the whole history;
- **frequency**: distinct orders (an event without an order id counts its purchase day as one order);
- **spend**: the sum of purchase values (value, else price × quantity, else catalog price × quantity).

With ``window_days``, affinities, prices, orders and spend look at the events of the last
``window_days`` before ``now`` only. Events after ``now`` are ignored altogether. A user without the
events a condition needs (no views for a viewed-price range, ...) does not meet it; ``max_orders`` and
``max_spend`` are met by users with no purchases.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from recctl import progress
from recctl.config import BusinessRule, RecctlConfig, RulesConfig
from recctl.data import load_interactions, load_items
from recctl.errors import ConfigError
from recctl.rules.filters import norm_category, under
from recctl.rules.segment_defs import Segment, SegmentsFile, load_segments
from recctl.schema import EVENT_WEIGHTS
from recctl.warehouse.connection import Warehouse

__all__ = [
    "MEMBERS_SCHEMA",
    "action_ids",
    "apply_segments",
    "load_segments",
    "membership",
    "resolve_segment_rules",
    "segment_rules",
    "show_user",
]

MEMBERS_SCHEMA = pl.Schema({"user_id": pl.String(), "segment": pl.String()})
#: weights of event types in the affinity shares (types not listed weigh 1)
WEIGHTS: dict[str, float] = {**EVENT_WEIGHTS, "hide": 0.0, "dislike": 0.0, "not_interested": 0.0}
_DAY_US = 86_400 * 1_000_000


def _naive(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo is not None else now


def _ids(users: pl.DataFrame | pl.Series | Sequence[str]) -> pl.Series:
    if isinstance(users, pl.DataFrame):
        return users["user_id"].cast(pl.String)
    return pl.Series("user_id", users, dtype=pl.String)


def _stats(ev: pl.LazyFrame, segs: list[tuple[int, Segment]], tag: str) -> pl.LazyFrame:
    """Per user over ``ev`` (one window): weighted total, per-segment affinity sums, median prices,
    orders and spend, as columns ``_<tag>_...``."""
    w, buy = pl.col("_w"), pl.col("_buy")
    aggs = [
        w.sum().alias(f"_{tag}_tot"),
        pl.col("_seen").filter(pl.col("event_type") == "view").median().alias(f"_{tag}_vp"),
        pl.col("_paid").filter(buy).median().alias(f"_{tag}_bp"),
        pl.col("_order").filter(buy).n_unique().alias(f"_{tag}_orders"),
        pl.col("_line").filter(buy).sum().alias(f"_{tag}_spend"),
    ]
    for i, s in segs:
        if s.categories:
            aggs.append(w.filter(under("_cat", s.categories)).sum().alias(f"_c{i}"))
        if s.brands:
            aggs.append(
                w.filter(pl.col("_brand").is_in([b.strip().lower() for b in s.brands])).sum().alias(f"_b{i}")
            )
    return ev.group_by("user_id").agg(aggs)


def _condition(i: int, s: Segment, tag: str) -> pl.Expr:
    """Segment ``i`` holds for the user (all of its conditions; null = not met)."""
    c = pl.col
    conds: list[pl.Expr] = [pl.lit(True)]
    if s.visitor_states:
        conds.append(c("_state").is_in(list(s.visitor_states)))
    tot = pl.when(c(f"_{tag}_tot") > 0).then(c(f"_{tag}_tot"))
    if s.categories:
        conds.append(c(f"_c{i}") / tot >= s.min_category_share)
    if s.brands:
        conds.append(c(f"_b{i}") / tot >= s.min_brand_share)
    bounds = (
        (f"_{tag}_vp", s.viewed_price_min, s.viewed_price_max),
        (f"_{tag}_bp", s.bought_price_min, s.bought_price_max),
        ("_recency", s.recency_days_min, s.recency_days_max),
        (f"_{tag}_orders", s.min_orders, s.max_orders),
        (f"_{tag}_spend", s.min_spend, s.max_spend),
    )
    for col, lo, hi in bounds:
        if lo is not None:
            conds.append(c(col) >= lo)
        if hi is not None:
            conds.append(c(col) <= hi)
    return pl.all_horizontal(conds).fill_null(False)


def _evaluate(
    events: pl.DataFrame,
    items: pl.DataFrame,
    users_registered: pl.DataFrame | pl.Series | Sequence[str],
    segments: SegmentsFile | Sequence[Segment],
    now: datetime,
) -> tuple[pl.DataFrame, int]:
    segs = list(segments.segments if isinstance(segments, SegmentsFile) else segments)
    now = _naive(now)
    registered = _ids(users_registered).drop_nulls().unique().to_frame("user_id").lazy()
    cat = (
        items.lazy()
        .select(
            pl.col("item_id").cast(pl.String),
            _brand=pl.col("brand").cast(pl.String).str.strip_chars().str.to_lowercase(),
            _cat=norm_category(pl.col("category").cast(pl.String)),
            _list=pl.col("price").cast(pl.Float64),
        )
        .unique("item_id", keep="first")
    )
    qty = pl.col("quantity").cast(pl.Float64).fill_null(1.0)
    price = pl.col("price").cast(pl.Float64)
    ev = (
        events.lazy()
        .filter(pl.col("ts") <= now)
        .select(
            pl.col("user_id", "item_id", "event_type", "order_id").cast(pl.String),
            pl.col("ts").cast(pl.Datetime("us")),
            pl.col("value").cast(pl.Float64),
            qty.alias("_qty"),
            price.alias("_price"),
        )
        .join(cat, on="item_id", how="left")
        .with_columns(
            _w=pl.col("event_type").replace_strict(WEIGHTS, default=1.0, return_dtype=pl.Float64),
            _buy=pl.col("event_type") == "purchase",
            _seen=pl.coalesce("_price", "_list"),
            _paid=pl.coalesce("_price", pl.col("value") / pl.col("_qty"), "_list"),
            _line=pl.coalesce("value", pl.col("_price") * pl.col("_qty"), pl.col("_list") * pl.col("_qty")),
            _order=pl.coalesce("order_id", pl.lit("day:") + pl.col("ts").dt.date().cast(pl.String)),
        )
    )
    base = ev.group_by("user_id").agg(_last=pl.col("ts").max(), _bought=pl.col("_buy").any())
    users = (
        pl.concat([base.select("user_id"), registered])
        .unique()
        .join(base, on="user_id", how="left")
        .join(registered.with_columns(_reg=pl.lit(True)), on="user_id", how="left")
    )
    windows = sorted({s.window_days for s in segs}, key=lambda w: -1.0 if w is None else w)
    tags: dict[float | None, str] = {}
    for j, wdays in enumerate(windows):
        tags[wdays] = tag = f"w{j}"
        part = ev if wdays is None else ev.filter(pl.col("ts") > now - timedelta(days=wdays))
        per_window = [(i, s) for i, s in enumerate(segs) if s.window_days == wdays]
        users = users.join(_stats(part, per_window, tag), on="user_id", how="left").with_columns(
            pl.col(f"_{tag}_orders", f"_{tag}_spend").fill_null(0)
        )
    users = users.with_columns(
        _state=pl.when(pl.col("_bought").fill_null(False))
        .then(pl.lit("buyer"))
        .when(pl.col("_reg").fill_null(False))
        .then(pl.lit("signed_in"))
        .when(pl.col("_last").is_not_null())
        .then(pl.lit("returning"))
        .otherwise(pl.lit("new")),
        _recency=(pl.lit(now, pl.Datetime("us")) - pl.col("_last")).dt.total_microseconds() / _DAY_US,
    )
    flags = users.select(
        "user_id", *(_condition(i, s, tags[s.window_days]).alias(f"_in{i}") for i, s in enumerate(segs))
    ).collect()
    parts = [
        flags.filter(pl.col(f"_in{i}")).select("user_id", segment=pl.lit(s.name, pl.String)).sort("user_id")
        for i, s in enumerate(segs)
    ]
    members = pl.concat(parts) if parts else pl.DataFrame(schema=MEMBERS_SCHEMA)
    return members.cast(dict(MEMBERS_SCHEMA)), flags.height  # type: ignore[arg-type]


def membership(
    events: pl.DataFrame,
    items: pl.DataFrame,
    users_registered: pl.DataFrame | pl.Series | Sequence[str],
    segments: SegmentsFile | Sequence[Segment],
    now: datetime,
) -> pl.DataFrame:
    """(user_id, segment) for every user who meets every condition of a segment, segments in file order,
    users sorted within each. ``events`` is :func:`recctl.data.load_interactions`'s frame, ``items``
    :func:`recctl.data.load_items`'s, ``users_registered`` the ids in ``users`` (a frame with
    ``user_id``, or the ids); every user with events and every registered user is evaluated."""
    return _evaluate(events, items, users_registered, segments, now)[0]


def _file(cfg: RecctlConfig) -> SegmentsFile:
    return load_segments(cfg.serving.segments_file)


#: without --now, an export whose newest event is older than this before the clock is evaluated as of
#: its newest event: recency measured from the clock would put every customer in the past
EXPORT_LAG = timedelta(days=1)


def default_now(con: duckdb.DuckDBPyConnection, clock: datetime) -> tuple[datetime, str | None]:
    """``segments apply``'s time without --now: the clock, or the newest event when the export lags the
    clock by more than EXPORT_LAG (with the warning to print)."""
    latest = con.sql("SELECT max(ts) FROM events").fetchall()[0][0]
    if latest is None or latest >= clock - EXPORT_LAG:
        return clock, None
    lag = (clock - latest).total_seconds() / 86_400
    return latest, (
        f"the newest event ({latest:%Y-%m-%d %H:%M}) is {lag:.1f} days before the current time: segments are "
        "evaluated as of the newest event (recency, window_days); pass --now to choose another time"
    )


def apply_segments(wh: Warehouse, cfg: RecctlConfig, now: datetime | None = None) -> dict[str, Any]:
    """Compute membership from the warehouse at ``now`` and replace ``segment_members`` with it in one
    transaction. Without ``now``: the current time (UTC), or the newest event's when the export lags the
    clock by more than EXPORT_LAG (``warnings`` says so). Returns the report (member counts per segment)."""
    t0 = time.perf_counter()
    defs = _file(cfg)
    applied_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    con = wh.con
    warnings: list[str] = []
    if now is not None:
        now, now_from = _naive(now), "--now"
    else:
        now, lagging = default_now(con, applied_at)
        now_from = "clock" if lagging is None else "newest event"
        warnings += [lagging] if lagging else []
    with progress.stage("load events, items and users"):
        registered = con.sql("SELECT DISTINCT user_id FROM users WHERE user_id IS NOT NULL").pl()
        events, items = load_interactions(con), load_items(con)
    with progress.stage(f"membership of {len(defs.segments)} segments"):
        members, evaluated = _evaluate(events, items, registered, defs, now)
    con.begin()
    try:
        con.execute("DELETE FROM segment_members")
        con.register("_recctl_segment_members", members)
        try:
            con.execute(
                "INSERT INTO segment_members (user_id, segment, applied_at) "
                "SELECT user_id, segment, ? FROM _recctl_segment_members",
                [applied_at],
            )
        finally:
            con.unregister("_recctl_segment_members")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    counts = dict(members.group_by("segment").len().iter_rows())
    return {
        "file": str(cfg.serving.segments_file),
        "now": now,
        "now_from": now_from,
        "applied_at": applied_at,
        "warnings": warnings,
        "users_evaluated": evaluated,
        "members": members.height,
        "segments": {s.name: int(counts.get(s.name, 0)) for s in defs.segments},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def member_counts(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], datetime | None]:
    """Members per segment in ``segment_members`` and when they were applied (None: never)."""
    rows = con.sql("SELECT segment, count(*), max(applied_at) FROM segment_members GROUP BY 1").fetchall()
    when = [r[2] for r in rows]
    return {r[0]: int(r[1]) for r in rows}, max(when) if when else None


def _rules(seg: Segment, users: list[str]) -> list[BusinessRule]:
    """The boosts / buries of ``seg`` as business rules for ``users``, named ``segment:<name>/<n>`` (n is
    the action's 1-based position among the segment's actions)."""
    return [
        BusinessRule(
            name=f"segment:{seg.name}/{n}",
            action=a.type,
            categories=a.categories,
            brands=a.brands,
            price_min=a.price_min,
            price_max=a.price_max,
            factor=a.factor,
            users=users,
        )
        for n, a in enumerate(seg.actions, start=1)
        if a.type in ("boost", "bury")
    ]


def _members_of(con: duckdb.DuckDBPyConnection, user_ids: list[str]) -> pl.DataFrame:
    frame: pl.DataFrame = con.sql(
        "SELECT user_id, segment FROM segment_members WHERE user_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY segment, user_id",
        params=[user_ids],
    ).pl()
    return frame


def segment_rules(
    con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, user_ids: Sequence[str]
) -> list[BusinessRule]:
    """The boosts and buries of the segments that any of ``user_ids`` belongs to (per ``segment_members``),
    each restricted to those members among ``user_ids``: what ``recommend`` appends to [rules] business
    rules before :func:`recctl.rules.apply`. Segments no longer in the file have no actions."""
    defs = _file(cfg)
    if not any(a.type != "emit" for s in defs.segments for a in s.actions):
        return []
    members = _members_of(con, list(dict.fromkeys(user_ids)))
    per_segment = dict(members.group_by("segment").agg(pl.col("user_id").sort()).iter_rows())
    return [r for s in defs.segments if s.name in per_segment for r in _rules(s, per_segment[s.name])]


def action_ids(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, user_id: str) -> list[str]:
    """The ``emit`` action ids of the user's segments, in file order, each once."""
    defs = _file(cfg)
    mine = set(_members_of(con, [user_id])["segment"].to_list())
    ids = [a.id for s in defs.segments if s.name in mine for a in s.actions if a.type == "emit" and a.id]
    return list(dict.fromkeys(ids))


def show_user(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, user_id: str) -> dict[str, Any]:
    """The user's segments (from the last apply), their boosts / buries as rule-like dicts and the action
    ids they emit; an id with no membership has no segments."""
    defs = _file(cfg)
    rows = con.sql(
        "SELECT segment, applied_at FROM segment_members WHERE user_id = ?", params=[user_id]
    ).fetchall()
    mine = {r[0]: r[1] for r in rows}
    _, last = member_counts(con)
    segs = [s for s in defs.segments if s.name in mine]
    rules = [
        r.model_dump(mode="json", include={"name", "action", "categories", "brands", "price_min", "price_max",
                                           "factor"})
        for s in segs
        for r in _rules(s, [user_id])
    ]  # fmt: skip
    return {
        "user_id": user_id,
        "applied_at": max(mine.values()) if mine else last,
        "segments": [
            {"name": s.name, "description": s.description, "conditions": s.conditions()} for s in segs
        ],
        # memberships of segments since removed from the file: `segments apply` drops them
        "stale_segments": sorted(n for n in mine if defs.get(n) is None),
        "rules": rules,
        "actions": list(dict.fromkeys(a.id for s in segs for a in s.actions if a.type == "emit" and a.id)),
    }


def resolve_segment_rules(
    rules_cfg: RulesConfig, members: pl.DataFrame, *, segments: SegmentsFile | None = None
) -> RulesConfig:
    """[rules] business rules with ``segment = "name"`` turned into rules for that segment's members in
    ``members`` (user_id, segment; e.g. ``segment_members``), intersected with the rule's own ``users``
    when it has any. A rule whose segment has no such member matches nobody and is left out. With
    ``segments`` (the segments file), a segment name not defined there is a ConfigError."""
    if not any(r.segment is not None for r in rules_cfg.business):
        return rules_cfg
    known = set(segments.names) if segments is not None else None
    per_segment = dict(members.group_by("segment").agg(pl.col("user_id").unique().sort()).iter_rows())
    out = []
    for r in rules_cfg.business:
        if r.segment is None:
            out.append(r)
            continue
        if known is not None and r.segment not in known:
            from recctl.names import closest

            near = closest(r.segment, sorted(known))
            raise ConfigError(
                f"rule {r.name!r}: segment {r.segment!r} is not defined in the segments file"
                + (f" (did you mean {near!r}?)" if near else ""),
                hint=f"segments defined: {', '.join(sorted(known)) or 'none'}",
            )
        who = per_segment.get(r.segment, [])
        if r.users:
            allowed = set(r.users)
            who = [u for u in who if u in allowed]
        if who:
            out.append(r.model_copy(update={"segment": None, "users": who}))
    return rules_cfg.model_copy(update={"business": out})
