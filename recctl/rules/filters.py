"""Per-customer filters: already bought (with repurchase windows), viewed without buying, out of stock, hidden.

Everything here works on the working frame of :func:`recctl.rules.apply`: one row per (user_id, item_id)
candidate, with the catalog columns joined on (``_r_brand``, ``_r_cat``, ``_r_price``, ``_r_in_stock``)
and the user's history of the item from :func:`user_item_history` (``_r_last_buy``, ``_r_views``,
``_r_hidden``). The filters only *flag* rows: :func:`conditions` lists them and :func:`chain_reasons`
makes one expression naming the first filter that removes a row (null = kept), so that every removal
is counted once, under the first filter in the order ``bought, viewed, out_of_stock, hidden``.

- **bought**: the user has a ``purchase`` event for the item. A bought item may come back when its
  category matches a ``[[rules.repurchase]]`` entry (a path prefix matched by whole levels and
  case-insensitively: "Grocery > Dairy" covers "grocery > dairy > milk", not "Grocery > Dairy-free") and at
  least ``min_days`` have passed since the user's last purchase of it; the longest matching prefix
  decides. Items no entry matches come back after ``allow_repurchase_all_after_days`` when that is set.
- **viewed** (off unless ``exclude_viewed_times`` > 0): viewed at least that many times, never bought.
- **out_of_stock**: ``in_stock`` is false in the catalog; null (unknown, or an item not in the catalog)
  counts as in stock.
- **hidden**: any event of a type in ``hide_event_types`` by the user for the item. Types beyond the
  built-in ones must be declared in ``[ingest] extra_event_types`` to be ingested at all.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from recctl.config import RepurchaseEntry, RulesConfig

FILTERS = ("bought", "viewed", "out_of_stock", "hidden")
PURCHASE = "purchase"
VIEW = "view"
SEP = " > "
_DAY_US = 86_400 * 1_000_000

HISTORY_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "item_id": pl.String(),
        "_r_last_buy": pl.Datetime("us"),
        "_r_views": pl.UInt32(),
        "_r_hidden": pl.Boolean(),
    }
)


def norm_category(expr: pl.Expr) -> pl.Expr:
    """A category path in the one form rules compare: lower case, levels joined by ' > ', no padding."""
    return expr.str.to_lowercase().str.replace_all(r"\s*>\s*", SEP).str.strip_chars()


def norm_path(text: str) -> str:
    return SEP.join(part.strip() for part in text.lower().split(">"))


def under(col: str, prefixes: list[str]) -> pl.Expr:
    """``col`` (a normalized path) equals one of ``prefixes`` or lies below it (whole levels only)."""
    out = pl.lit(False)
    for p in prefixes:
        q = norm_path(p)
        out = out | (pl.col(col) == q) | pl.col(col).str.starts_with(q + SEP)
    return out.fill_null(False)


def user_item_history(history: pl.DataFrame, cfg: RulesConfig, users: pl.DataFrame) -> pl.DataFrame:
    """Per (user_id, item_id) of ``users``' history: last purchase time, view count, hidden or not.

    Only the event types the filters look at are read; ``users`` (one column ``user_id``) limits the
    work to the customers being ranked.
    """
    types = list(cfg.hide_event_types)
    if cfg.exclude_bought:
        types.append(PURCHASE)
    if cfg.exclude_viewed_times:
        types += [VIEW, PURCHASE]
    if not types or history.height == 0:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    keep = pl.col("event_type").is_in(types)
    ev = history.lazy().select(
        pl.col("user_id", "item_id").cast(pl.String), "event_type", pl.col("ts").cast(pl.Datetime("us"))
    )
    if users.height < 1000:  # one customer at serving time: a filter beats a join
        ev = ev.filter(keep & pl.col("user_id").is_in(users["user_id"].implode()))
    else:
        ev = ev.filter(keep).join(users.lazy(), on="user_id", how="semi")
    buy = pl.col("event_type") == PURCHASE
    out: pl.DataFrame = (
        ev.group_by("user_id", "item_id")
        .agg(
            _r_last_buy=pl.col("ts").filter(buy).max(),
            _r_views=(pl.col("event_type") == VIEW).sum().cast(pl.UInt32),
            _r_hidden=pl.col("event_type").is_in(cfg.hide_event_types).any(),
        )
        .collect(engine="in-memory")
    )
    return out


def _days_since(now: datetime) -> pl.Expr:
    return (pl.lit(now, pl.Datetime("us")) - pl.col("_r_last_buy")).dt.total_microseconds() / _DAY_US


def _entries(cfg: RulesConfig) -> list[RepurchaseEntry]:
    """The repurchase entries, longest prefix first (it decides, even when its window has not passed)."""
    return sorted(cfg.repurchase, key=lambda e: -len(norm_path(e.category).split(SEP)))


def repurchase_entry(cfg: RulesConfig) -> pl.Expr:
    """Per catalog item (over ``_r_cat``): the index of the repurchase entry that applies, else null."""
    entries = _entries(cfg)
    if not entries:
        return pl.lit(None, pl.Int32)
    return pl.coalesce(
        [pl.when(under("_r_cat", [e.category])).then(pl.lit(i, pl.Int32)) for i, e in enumerate(entries)]
    )


def repurchase_label(cfg: RulesConfig, now: datetime) -> pl.Expr:
    """For a bought item that may be recommended again, the explanation ("repurchase: Grocery > Dairy",
    "repurchase: after 90 days"); null for items not bought or not yet allowed back. Needs ``_r_rep``
    (:func:`repurchase_entry`) and ``_r_last_buy``."""
    days = _days_since(now)
    entries = _entries(cfg)
    entry = pl.col("_r_rep")
    after = cfg.allow_repurchase_all_after_days
    rest = (
        pl.when(days >= after).then(pl.lit(f"repurchase: after {after:g} days"))
        if after is not None
        else pl.lit(None, pl.String)
    )
    label: pl.Expr = rest
    if entries:
        min_days = entry.replace_strict(
            {i: e.min_days for i, e in enumerate(entries)}, return_dtype=pl.Float64
        )
        names = entry.replace_strict(
            {i: f"repurchase: {e.category}" for i, e in enumerate(entries)}, return_dtype=pl.String
        )
        label = pl.when(entry.is_null()).then(rest).when(days >= min_days).then(names)
    return pl.when(pl.col("_r_last_buy").is_not_null()).then(label).otherwise(pl.lit(None, pl.String))


def conditions(cfg: RulesConfig) -> list[tuple[str, pl.Expr]]:
    """(filter name, removes-the-row condition) of each filter that is on, in order.

    Needs ``_r_repurchase`` (from :func:`repurchase_label`) on the frame.
    """
    bought = pl.col("_r_last_buy").is_not_null()
    conds: list[tuple[str, pl.Expr]] = []
    if cfg.exclude_bought:
        conds.append(("bought", bought & pl.col("_r_repurchase").is_null()))
    if cfg.exclude_viewed_times:
        conds.append(("viewed", ~bought & (pl.col("_r_views").fill_null(0) >= cfg.exclude_viewed_times)))
    if cfg.exclude_out_of_stock:
        conds.append(("out_of_stock", pl.col("_r_in_stock").not_().fill_null(False)))
    if cfg.hide_event_types:
        conds.append(("hidden", pl.col("_r_hidden").fill_null(False)))
    return conds


def chain_reasons(conds: list[tuple[str, pl.Expr]]) -> pl.Expr | None:
    """The name of the first condition that holds, else null."""
    if not conds:
        return None
    return pl.coalesce([pl.when(cond).then(pl.lit(name)) for name, cond in conds])
