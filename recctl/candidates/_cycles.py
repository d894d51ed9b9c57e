"""The repurchase-cycle model: how many days pass between two purchases of an item, per item and per user.

Used by the ``repeat`` generator (to lift the items a user is due to buy again) and by the feature store
(due ratios as ranking features), so it is a pure function of the events with a fixed API.

Purchase occasions. Only events of ``event_types`` (default ``["purchase"]``) count. A purchase occasion of
a (user, item) is a distinct basket: the ``order_id`` when not null, else the ``session_id``, else the
calendar day of ``ts`` (``basket_key``); the occasion's time is the earliest event of the item in that
basket. Occasions of the same (user, item) on the same calendar day count once (an order and a separate
session of the same afternoon are one purchase).

Gaps. The gaps of a (user, item) are the float days between its consecutive occasions (all > 0).

Item level. Over every user's gaps of an item: n = the number of gaps, mu_item = mean ln(gap) and
sd_item = the (population) standard deviation of ln(gap). Each is shrunk toward the parent level with
``prior`` pseudo-gaps, mu = (n·mu_item + prior·mu_parent) / (n + prior) and sigma likewise from sd_item
and sigma_parent, floored at ``min_sigma``; cycle_days = exp(mu). The parent is the item's category (the
full path, e.g. "Food > Dairy > Milk"); items without a category, or whose category has no gaps, back off
to the global level. ``level`` tells which level the estimate rests on: "item" (the item has gaps),
"category" (it has none, its category has) or "global". The category level pools the gaps of the
category's items and shrinks to the global the same way; the global level is the mean and standard
deviation of every ln(gap) (a 30-day cycle with sigma 1 when nobody bought anything twice). ``item`` has a
row for every item bought and every item of the catalog (when given), so a new item gets its category's
cycle.

User level. A (user, item) with user_gaps ≥ 1 blends its own mean ln(gap) with the item's mu, with the same
weights but ``user_prior`` pseudo-gaps (default 1: customers differ more than the gaps of one customer do,
so a few regular gaps of their own outweigh the item's mix of everyone's),
(user_gaps·own + user_prior·item) / (user_gaps + user_prior), and its own ln-gap deviation with the item's
sigma likewise (floored at ``min_sigma``). Every (user, item) the user bought gets a row; without an own gap
it carries the item's cycle.

Due. ``due`` adds, at a time ``now``: days_since (float days since the last occasion), due_ratio =
days_since / cycle_days and due_score, a log-normal bump around the cycle, exp(−z²/2) with
z = (ln(days_since + ½) − ln(cycle_days + ½)) / log_sigma — the half day keeps a purchase of today finite
and is added on both sides so the bump peaks (due_score = 1) exactly at days_since = cycle_days. z is halved
when days_since > cycle_days: an overdue item stays due longer than an early one is (a week late is more
likely still wanted than a week early). A ``now`` before the last purchase counts as 0 days in the score.

``as_of`` is just after (1 µs) the last purchase event seen: the time the model describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from recctl.data import basket_key

DAY_SECONDS = 86_400.0
DEFAULT_CYCLE_DAYS = 30.0  # the global cycle when nobody bought anything twice
DEFAULT_SIGMA = 1.0
EPOCH = datetime(1970, 1, 1)


@dataclass
class Cycles:
    """The fitted cycles: per item, per (user, item), and the time they describe."""

    item: pl.DataFrame  # item_id, cycle_days, log_sigma, n_gaps, level ("item" | "category" | "global")
    #: user_id, item_id, n_baskets, first_ts, last_ts, user_gaps, cycle_days, log_sigma
    user_item: pl.DataFrame
    as_of: datetime  # just after the last purchase event seen


def occasions(events: pl.DataFrame) -> pl.DataFrame:
    """user_id, item_id, ts: one row per purchase occasion (distinct basket, one per calendar day)."""
    per_basket = events.group_by("user_id", "item_id", basket_key()).agg(pl.col("ts").min())
    per_day = per_basket.group_by("user_id", "item_id", pl.col("ts").dt.date().alias("day")).agg(
        pl.col("ts").min()
    )
    return per_day.select("user_id", "item_id", "ts").sort("user_id", "item_id", "ts")


def _shrink(n: pl.Expr, own: pl.Expr, parent: pl.Expr, prior: float) -> pl.Expr:
    """(n·own + prior·parent) / (n + prior); the parent alone when there is no own gap."""
    return pl.when(n > 0).then((n * own.fill_null(0.0) + prior * parent) / (n + prior)).otherwise(parent)


def _log_stats(gaps: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return gaps.group_by(by).agg(
        n=pl.len().cast(pl.Int64), mu=pl.col("lg").mean(), sd=pl.col("lg").std(ddof=0).fill_null(0.0)
    )


def purchase_cycles(
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    *,
    event_types: list[str] = ["purchase"],  # noqa: B006 (read only; the API the feature store calls)
    prior: float = 5.0,
    user_prior: float = 1.0,
    min_sigma: float = 0.25,
) -> Cycles:
    """The repurchase cycles of every item and every (user, item) in ``events`` (see the module docstring)."""
    ev = events.filter(pl.col("event_type").is_in(event_types))
    last = ev["ts"].max() if ev.height else events["ts"].max() if events.height else None
    as_of = (last if isinstance(last, datetime) else EPOCH) + timedelta(microseconds=1)

    occ = _gaps(occasions(ev))
    gaps = occ.filter(pl.col("gap") > 0).with_columns(lg=pl.col("gap").log())

    # global level
    if gaps.height:
        mu_g = float(gaps["lg"].mean())  # type: ignore[arg-type]
        sd_g = max(float(gaps["lg"].std(ddof=0)), min_sigma)  # type: ignore[arg-type]
    else:
        mu_g, sd_g = math.log(DEFAULT_CYCLE_DAYS), max(DEFAULT_SIGMA, min_sigma)

    # category level: the item's full category path; empty paths count as none
    cats = pl.DataFrame(schema={"item_id": pl.String, "category": pl.String})
    if items is not None and "category" in items.columns:
        cats = (
            items.select(pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String))
            .filter(pl.col("category").str.strip_chars() != "")
            .unique("item_id", keep="first", maintain_order=True)
        )
    cat = _log_stats(gaps.join(cats, on="item_id"), ["category"]).select(
        "category",
        mu_c=_shrink(pl.col("n"), pl.col("mu"), pl.lit(mu_g), prior),
        sd_c=pl.max_horizontal(_shrink(pl.col("n"), pl.col("sd"), pl.lit(sd_g), prior), pl.lit(min_sigma)),
    )

    # item level: every item bought, and every catalog item
    ids = occ.select("item_id").unique()
    if items is not None:
        ids = pl.concat([ids, items.select(pl.col("item_id").cast(pl.String))]).unique()
    st = _log_stats(gaps, ["item_id"])
    it = (
        ids.join(cats, on="item_id", how="left")
        .join(cat, on="category", how="left")
        .join(st, on="item_id", how="left")
        .with_columns(
            n=pl.col("n").fill_null(0),
            mu_p=pl.col("mu_c").fill_null(mu_g),
            sd_p=pl.col("sd_c").fill_null(sd_g),
        )
        .with_columns(
            mu=_shrink(pl.col("n"), pl.col("mu"), pl.col("mu_p"), prior),
            log_sigma=pl.max_horizontal(
                _shrink(pl.col("n"), pl.col("sd"), pl.col("sd_p"), prior), pl.lit(min_sigma)
            ),
            level=pl.when(pl.col("n") > 0)
            .then(pl.lit("item"))
            .when(pl.col("mu_c").is_not_null())
            .then(pl.lit("category"))
            .otherwise(pl.lit("global")),
        )
        .sort("item_id")
    )
    item = it.select(
        "item_id", cycle_days=pl.col("mu").exp(), log_sigma="log_sigma", n_gaps="n", level="level"
    )

    user_item = _user_level(occ, it.select("item_id", "mu", "log_sigma"), user_prior, min_sigma)
    return Cycles(item=item, user_item=user_item, as_of=as_of)


def _gaps(occ: pl.DataFrame) -> pl.DataFrame:
    return occ.with_columns(
        gap=pl.col("ts").diff().over("user_id", "item_id").dt.total_seconds(fractional=True) / DAY_SECONDS
    )


def _user_level(occ: pl.DataFrame, it: pl.DataFrame, prior: float, min_sigma: float) -> pl.DataFrame:
    """The user level over occasions with gaps ``occ`` and item priors ``it`` (item_id, mu, log_sigma)."""
    own = occ.group_by("user_id", "item_id").agg(
        n_baskets=pl.len().cast(pl.Int64),
        first_ts=pl.col("ts").min(),
        last_ts=pl.col("ts").max(),
        user_gaps=(pl.col("gap") > 0).sum().cast(pl.Int64),
        mu_u=pl.col("gap").filter(pl.col("gap") > 0).log().mean(),
        sd_u=pl.col("gap").filter(pl.col("gap") > 0).log().std(ddof=0),
    )
    g = pl.col("user_gaps")
    return (
        own.join(it, on="item_id", how="left")
        .with_columns(
            cycle_days=_shrink(g, pl.col("mu_u"), pl.col("mu"), prior).exp(),
            log_sigma=pl.max_horizontal(
                _shrink(g, pl.col("sd_u"), pl.col("log_sigma"), prior), pl.lit(min_sigma)
            ),
        )
        .select(
            "user_id", "item_id", "n_baskets", "first_ts", "last_ts", "user_gaps", "cycle_days", "log_sigma"
        )
        .sort("user_id", "item_id")
    )


def user_cycles(
    events: pl.DataFrame, item: pl.DataFrame, *, event_types: list[str] | None = None,
    user_prior: float = 1.0, min_sigma: float = 0.25,
) -> pl.DataFrame:  # fmt: skip
    """The user level alone (``Cycles.user_item`` columns) over ``events``, with a fitted item level
    ``item`` (``Cycles.item``) as the prior: serving recomputes a visitor's cycles from their events up to
    now with the items' cycles of the promoted run. Items the fit never saw get no row."""
    ev = events.filter(pl.col("event_type").is_in(event_types or ["purchase"]))
    it = item.select("item_id", mu=pl.col("cycle_days").log(), log_sigma="log_sigma")
    out = _user_level(_gaps(occasions(ev)), it, user_prior, min_sigma)
    return out.filter(pl.col("cycle_days").is_not_null())


def due(cycles_user_item: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """``cycles_user_item`` plus days_since, due_ratio and due_score (in [0, 1]) at ``now``."""
    days = (pl.lit(now) - pl.col("last_ts")).dt.total_seconds(fractional=True) / DAY_SECONDS
    out = cycles_user_item.with_columns(days_since=days.cast(pl.Float64))
    z = (
        (pl.col("days_since").clip(lower_bound=0.0) + 0.5).log() - (pl.col("cycle_days") + 0.5).log()
    ) / pl.col("log_sigma")
    z = pl.when(pl.col("days_since") > pl.col("cycle_days")).then(z / 2.0).otherwise(z)
    return out.with_columns(
        due_ratio=pl.col("days_since") / pl.col("cycle_days"), due_score=(-0.5 * z * z).exp()
    )
