"""Per-customer filters, business rules and diversity, applied to ranked candidates (``[rules]``).

:func:`apply` takes the ranker's frame for any number of customers (user_id, item_id, score, maybe rank
and other columns, which are kept) and returns each customer's final list, in this order:

1. **filters** (:mod:`recctl.rules.filters`): already bought (unless a repurchase window allows it),
   viewed without buying (optional), out of stock, hidden by the customer;
2. **business rules** (:mod:`recctl.rules.business`) active at ``now``: exclude, then bury / boost;
3. **sort** by the new score (ties keep the input order);
4. **diversity** (:mod:`recctl.rules.diversity`): MMR and brand / category caps within the window;
5. **pins** put chosen items at fixed ranks (added from the catalog when asked);
6. **cut** to ``k`` per customer, ranks recomputed 1..k.

Every kept row carries ``rules``, the list of rules that touched it ("repurchase: Grocery > Dairy",
"boost: summer-sale", "diversity: moved down (brand cap 3)", "pinned: hero", ...), and the report counts
what each filter and rule removed (a row that several would remove is counted under the first) and how
many kept rows each label touched. Large batches are processed in chunks of customers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from recctl.config import RulesConfig
from recctl.errors import ConfigError, DataError
from recctl.rules import business, diversity, filters

__all__ = ["OUTPUT_SCHEMA", "RulesResult", "apply", "catalog"]

OUTPUT_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "score": pl.Float64, "rank": pl.Int32}
CHUNK_ROWS = 2_000_000  # candidate rows per chunk of customers (bounds memory on 100k-user batches)
BEYOND_K = "beyond k"
#: order-keeping joins over millions of candidate rows run several times faster in memory than streaming
ENGINE: Literal["in-memory"] = "in-memory"
_CATALOG = {"brand": pl.String, "category": pl.String, "price": pl.Float64, "in_stock": pl.Boolean}
_SEP = "\x1f"  # joins explanations internally (the ASCII unit separator: no rule name has one)
_LOOKUP = 10_000  # up to this many distinct items a sorted lookup beats a join


@dataclass(frozen=True)
class RulesResult:
    """The final lists and what happened: ``report`` = {"users", "rows_in", "rows_out", "removed":
    {filter or "exclude: <rule>" or "beyond k": rows}, "touched": {label: kept rows}}."""

    frame: pl.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def apply(
    recs: pl.DataFrame,
    *,
    history: pl.DataFrame,
    items: pl.DataFrame,
    cfg: RulesConfig,
    now: datetime,
    k: int | None = None,
) -> RulesResult:
    """The rules of ``cfg`` applied to ``recs`` for customers whose events are ``history`` (the
    interaction frame of :func:`recctl.data.load_interactions`), over the catalog ``items``
    (:func:`recctl.data.load_items`, or :func:`catalog` of it), at time ``now`` (naive = UTC), keeping
    ``k`` items per customer (all when None).

    Output: user_id, item_id, score (after boosts and buries; null for items a pin added), rank (1..k),
    the other input columns, and ``rules`` (the labels of the rules that touched the row); customers in
    the order they first appear in ``recs``, each by rank. ``recs`` has one row per (user, item).
    """
    missing = [c for c in ("user_id", "item_id", "score") if c not in recs.columns]
    if missing:
        raise DataError(
            f"recommendations lack column(s) {', '.join(missing)} (have: {', '.join(recs.columns)})"
        )
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    now = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo is not None else now
    rules = business.active(cfg.business, now)
    unresolved = [r.name for _, r in rules if r.segment is not None]
    if unresolved:  # a segment rule must be turned into its members first (rules.segments)
        raise ConfigError(
            f"rule(s) {', '.join(unresolved)} name a segment that was not resolved to its members",
            hint="serving resolves them with recctl.rules.segments.resolve_segment_rules",
        )
    extra = [c for c in recs.columns if c not in (*OUTPUT_SCHEMA, "rules") and not c.startswith("_r_")]
    users = recs.select(pl.col("user_id").cast(pl.String).unique(maintain_order=True))
    code = pl.Enum(users["user_id"])  # customers keep the order they first appear in
    base = recs.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("score").cast(pl.Float64),
        *extra,
        _r_added=pl.lit(False),
        _r_u=pl.col("user_id").cast(pl.String).cast(code).to_physical().cast(pl.Int64),
    )
    pin_items = [i for _, r in business.pins(rules) if r.add_if_missing for i in r.items]
    cat = _items_in_play(items, base["item_id"].append(pl.Series(pin_items, dtype=pl.String)), cfg)
    if pin_items:
        proposed = base.filter(pl.col("item_id").is_in(pin_items)).select("user_id", "item_id")
        added = business.additions(users, rules, cat["item_id"]).join(
            proposed, on=["user_id", "item_id"], how="anti"
        )
        base = pl.concat(
            [
                base,
                added.with_columns(
                    _r_added=pl.lit(True), _r_u=pl.col("user_id").cast(code).to_physical().cast(pl.Int64)
                ),
            ],
            how="diagonal_relaxed",
        )
    hist = filters.user_item_history(history, cfg, users)
    removed = dict.fromkeys([name for name, _ in [*filters.conditions(cfg), *business.excludes(rules)]], 0)
    if k is not None:
        removed[BEYOND_K] = 0
    n_chunks = -(-base.height // CHUNK_ROWS)
    parts = [base]
    if n_chunks > 1:  # contiguous ranges of customer codes, so that the outputs concatenate in order
        per_chunk = -(-users.height // n_chunks)
        parts = base.with_columns(_r_chunk=pl.col("_r_u") // per_chunk).partition_by(
            "_r_chunk", include_key=False
        )
    outs = []
    for part in parts:
        out, counts = _chunk(part, hist, cat, cfg, rules, now, k)
        outs.append(out)
        for key, n in counts.items():
            removed[key] = removed.get(key, 0) + n
    frame = pl.concat(outs) if len(outs) > 1 else outs[0]
    touched = frame.select(pl.col("rules").explode().drop_nulls().value_counts(sort=True)).unnest("rules")
    report = {
        "users": users.height,
        "rows_in": recs.height,
        "rows_out": frame.height,
        "removed": removed,
        "touched": dict(zip(touched["rules"].to_list(), touched["count"].to_list(), strict=True)),
    }
    return RulesResult(frame, report)


def catalog(items: pl.DataFrame, cfg: RulesConfig) -> pl.DataFrame:
    """What the rules know of each item, one row per item sorted by item_id: ``_r_in_stock``, ``_r_rep``
    (the repurchase entry that applies), ``_r_m<i>`` (the catalog criteria of business rule i) and the
    diversity codes. :func:`apply` derives it for the items in play on every call; a serving process can
    build it once for the whole catalog and pass it as ``items`` (it carries a fingerprint of ``cfg``)."""
    cols = [(pl.col(c) if c in items.columns else pl.lit(None)).cast(t).alias(c) for c, t in _CATALOG.items()]
    norm = (
        items.lazy()
        .select(pl.col("item_id").cast(pl.String), *cols)
        .unique("item_id", keep="first", maintain_order=True)
        .select(
            "item_id",
            _r_brand=pl.col("brand").str.strip_chars().str.to_lowercase(),
            _r_cat=filters.norm_category(pl.col("category")),
            _r_price=pl.col("price"),
            _r_in_stock=pl.col("in_stock"),
        )
    )
    out = norm.with_columns(_r_rep=filters.repurchase_entry(cfg), **business.item_columns(cfg.business))
    if diversity.enabled(cfg.diversity):
        out = out.with_columns(**diversity.item_codes(cfg.diversity))
    return (
        out.drop("_r_brand", "_r_cat", "_r_price")
        .sort("item_id")
        .with_columns(_r_rules=pl.lit(_fingerprint(cfg)))
        .collect(engine=ENGINE)
    )


def _fingerprint(cfg: RulesConfig) -> str:
    return hashlib.sha1(cfg.model_dump_json().encode(), usedforsecurity=False).hexdigest()[:16]


def _items_in_play(items: pl.DataFrame, ids: pl.Series, cfg: RulesConfig) -> pl.DataFrame:
    """:func:`catalog` rows of the items ``ids`` (those in the catalog), from a prepared catalog or not."""
    prepared = "_r_rules" in items.columns
    if prepared and items.height and items["_r_rules"][0] != _fingerprint(cfg):
        raise ValueError("the catalog was prepared by recctl.rules.catalog for another rules configuration")
    if ids.len() >= _LOOKUP:  # a batch: the whole catalog, the join with the candidates picks the rows
        return items if prepared else catalog(items, cfg)
    ids = ids.unique()
    if not prepared:
        return catalog(items.filter(pl.col("item_id").cast(pl.String).is_in(ids.implode())), cfg)
    at = items["item_id"].search_sorted(ids).to_numpy().clip(0, max(items.height - 1, 0))
    found = items[at] if items.height else items
    return found.filter(pl.col("item_id").is_in(ids.implode())).unique("item_id")


def _chunk(
    part: pl.DataFrame,
    hist: pl.DataFrame,
    cat: pl.DataFrame,
    cfg: RulesConfig,
    rules: business.Active,
    now: datetime,
    k: int | None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """One chunk of customers (all rows of each): the final frame and the rows removed per reason."""
    extra = [c for c in part.columns if c not in ("user_id", "item_id", "score") and not c.startswith("_r_")]
    f = (
        part.lazy()
        .join(cat.lazy(), on="item_id", how="left", maintain_order="left")
        .join(hist.lazy(), on=["user_id", "item_id"], how="left", maintain_order="left")
        .with_columns(
            _r_repurchase=filters.repurchase_label(cfg, now)
            if cfg.exclude_bought
            else pl.lit(None, pl.String)
        )
    )
    drop = filters.chain_reasons([*filters.conditions(cfg), *business.excludes(rules)])
    new_score, boost_labels = business.rescore(rules)
    labels = [f"_r_l{i}" for i in range(len(boost_labels))]
    pin_cols = business.pin_columns(rules) or {
        "_r_pin": pl.lit(None, pl.Int64),
        "_r_pin_label": pl.lit(None, pl.String),
    }
    kept = f.with_columns(_r_drop=drop).cache() if drop is not None else f
    ranked_lf = kept.filter(pl.col("_r_drop").is_null()) if drop is not None else kept
    if new_score is not None:
        ranked_lf = ranked_lf.with_columns(
            new_score.alias("score"), *(e.alias(n) for e, n in zip(boost_labels, labels, strict=True))
        )
    ranked_lf = ranked_lf.with_columns(**pin_cols).filter(
        ~pl.col("_r_added") | pl.col("_r_pin").is_not_null()
    )
    counts: dict[str, int] = {}
    if drop is not None:
        gone_lf = kept.filter(pl.col("_r_drop").is_not_null() & ~pl.col("_r_added")).group_by("_r_drop").len()
        ranked, gone = pl.collect_all([ranked_lf, gone_lf], engine=ENGINE, optimizations=_opt(part))
        counts = dict(zip(gone["_r_drop"].to_list(), gone["len"].to_list(), strict=True))
    else:
        ranked = ranked_lf.collect(engine=ENGINE, optimizations=_opt(part))
    # the new order as index arithmetic over `ranked` (rows in input order), then one gather:
    # sort by customer and score, diversity over the unpinned rows, pins, cut to k
    u = ranked["_r_u"].to_numpy().astype(np.int64)
    srt = diversity.order_by_score(u, ranked["score"].to_numpy().astype(np.float64))
    su = u[srt]
    uid = np.cumsum(np.r_[False, su[1:] != su[:-1]]) if su.size else su  # dense customer ids, ascending
    is_pin = ranked["_r_pin"].is_not_null().to_numpy()[srt]
    rest, pinned = np.flatnonzero(~is_pin), np.flatnonzero(is_pin)  # positions in sorted order
    why = np.zeros(srt.size, dtype=np.int8)
    if diversity.enabled(cfg.diversity):
        div_cols = [
            c
            for c in ranked.columns
            if c in ("_r_u", "score", "_r_bid", "_r_cid", "_r_depth") or c.startswith("_r_lv")
        ]
        sub = ranked.select(div_cols)[srt[rest]]
        sub_perm, sub_why = diversity.reorder(sub, cfg.diversity, cfg.diversity.window or k)
        why[rest] = sub_why
        rest = rest[sub_perm]
    pins = ranked[srt[pinned]].select("_r_pin", key=business.pin_order(rules)) if pinned.size else None
    order = business.arrange(
        uid,
        rest,
        pinned,
        pins["_r_pin"].to_numpy().astype(np.int64) if pins is not None else pinned,
        pins["key"].to_numpy().astype(np.int64) if pins is not None else pinned,
    )
    rank = np.arange(order.size) - business.first_of_run(uid) + 1  # customers keep their blocks of rows
    keep = rank <= (k if k is not None else order.size)
    if k is not None:
        counts[BEYOND_K] = int(order.size - keep.sum())
    rows = srt[order[keep]]
    out = ranked[rows].with_columns(
        rank=pl.Series(rank[keep], dtype=pl.Int32), _r_div=pl.Series(why[order[keep]])
    )
    # the explanations, from the label columns that say anything (lists are costly on millions of rows)
    parts = [pl.col(c) for c in ("_r_repurchase", *labels) if out[c].null_count() < out.height]
    if why.any():
        parts.append(
            pl.col("_r_div").replace_strict(
                diversity.labels(cfg.diversity), default=None, return_dtype=pl.String
            )
        )
    if pinned.size:
        parts.append(
            pl.when(pl.col("_r_added"))
            .then(pl.col("_r_pin_label") + " (added)")
            .otherwise(pl.col("_r_pin_label"))
        )
    explain = pl.lit([], pl.List(pl.String))
    if parts:  # joined and split again: several times faster than concat_list(...).list.drop_nulls()
        joined = pl.concat_str(parts, separator=_SEP, ignore_nulls=True)
        explain = pl.when(joined == "").then(explain).otherwise(joined.str.split(_SEP))
    out = (
        out.lazy()
        .select(*OUTPUT_SCHEMA, *extra, rules=explain)
        .cast(OUTPUT_SCHEMA)  # type: ignore[arg-type]
        .collect(engine=ENGINE, optimizations=_opt(part))
    )
    return out, counts


def _opt(frame: pl.DataFrame) -> pl.QueryOptFlags:
    """Query optimization pays off on large chunks; for one customer's few hundred rows it costs more
    than it saves."""
    return pl.QueryOptFlags() if frame.height > 10_000 else pl.QueryOptFlags.none()
