"""Business rules from ``[[rules.business]]``: exclude, boost, bury and pin.

A rule matches an item when every criterion it gives holds (AND): ``brands`` (any of them,
case-insensitive), ``categories`` (any path prefix, whole levels, case-insensitive), ``price_min`` /
``price_max`` (inclusive, on the catalog price; items without a price never match a price range) and
``items`` (any of these ids); ``users`` limits it to those customers (a rule with ``segment`` reaches
here already resolved into its members' ``users`` by :func:`recctl.rules.segments.resolve_segment_rules`).
A rule with ``start`` / ``end`` is active only while ``start <= now < end``.

- **exclude** removes the matching candidates (counted per rule, under the first exclude that matches).
- **boost** / **bury** scale the score by ``factor`` (> 1), multiplicatively: a boost multiplies a
  positive score by the factor and divides a negative one by it (rankers such as LambdaRank give negative
  scores, which a plain multiplication would push down), so a boost always moves an item up and a bury
  (the inverse) always down, whatever the scale of the scores. Several matching rules compound. Ranks
  are recomputed from the new scores.
- **pin** puts the rule's ``items`` that are in the list (after filters and excludes, which win over
  pins) at rank ``position``, ``position + 1``, ... in the order of ``items``; with ``add_if_missing``
  items nobody proposed are added from the catalog (with a null score) for every customer the rule
  applies to. Pins are placed after diversity and ignore its caps. When two pins want the same rank, the
  earlier rule (then the earlier item) gets it and the other takes the next one; an item pinned by two
  rules follows the first. A pin past the end of a list lands at its end.

Brand, category and price criteria are evaluated once per catalog item (:func:`item_columns`), item ids
and customers per candidate row (:func:`match`).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from recctl.config import BusinessRule
from recctl.rules.filters import under

IntArr = npt.NDArray[np.int64]
_ITEM_SLOTS = 1_000_000  # pin sort key: rule index × slots + the item's index in the rule


Active = list[tuple[int, BusinessRule]]  # (index in [[rules.business]], rule) of the rules in force


def active(rules: list[BusinessRule], now: datetime) -> Active:
    return [(i, r) for i, r in enumerate(rules) if r.active(now)]


def item_columns(rules: list[BusinessRule]) -> dict[str, pl.Expr]:
    """The catalog-level part of each rule (brands, categories, price) as a boolean column ``_r_m<i>``
    over the catalog columns (``_r_brand``, ``_r_cat``, ``_r_price``), computed once per item rather
    than per candidate row; ``i`` is the rule's index in ``rules`` (all of ``[[rules.business]]``)."""
    out = {}
    for i, rule in enumerate(rules):
        conds: list[pl.Expr] = []
        if rule.brands:
            conds.append(pl.col("_r_brand").is_in([b.strip().lower() for b in rule.brands]))
        if rule.categories:
            conds.append(under("_r_cat", rule.categories))
        if rule.price_min is not None:
            conds.append(pl.col("_r_price") >= rule.price_min)
        if rule.price_max is not None:
            conds.append(pl.col("_r_price") <= rule.price_max)
        if conds:
            out[f"_r_m{i}"] = pl.all_horizontal(conds).fill_null(False)
    return out


def match(i: int, rule: BusinessRule) -> pl.Expr:
    """True for the candidate rows rule ``i`` applies to (item ids and users are
    checked per row, so that items missing from the catalog can be matched by id)."""
    conds: list[pl.Expr] = []
    if rule.brands or rule.categories or rule.price_min is not None or rule.price_max is not None:
        conds.append(pl.col(f"_r_m{i}"))
    if rule.items:
        conds.append(pl.col("item_id").is_in(rule.items))
    if rule.users:
        conds.append(pl.col("user_id").is_in(rule.users))
    return pl.all_horizontal(conds).fill_null(False)


def excludes(rules: Active) -> list[tuple[str, pl.Expr]]:
    """(report key, condition) of each exclude rule, in config order."""
    return [(f"exclude: {r.name}", match(i, r)) for i, r in rules if r.action == "exclude"]


def rescore(rules: Active) -> tuple[pl.Expr | None, list[pl.Expr]]:
    """The new ``score`` after the boosts and buries (None when there are none) and one label per rule."""
    scaling = [(i, r) for i, r in rules if r.action in ("boost", "bury")]
    if not scaling:
        return None, []
    mult = pl.lit(1.0)
    for i, r in scaling:
        f = float(r.factor or 1.0)
        factor = pl.lit(f if r.action == "boost" else 1 / f)
        mult = mult * pl.when(match(i, r)).then(factor).otherwise(pl.lit(1.0))
    score = pl.col("score")
    new = pl.when(score >= 0).then(score * mult).otherwise(score / mult)
    none = pl.lit(None, pl.String)
    labels = [  # not on items a pin added: they have no score to scale
        pl.when(match(i, r) & score.is_not_null()).then(pl.lit(f"{r.action}: {r.name}")).otherwise(none)
        for i, r in scaling
    ]
    return new, labels


def pins(rules: Active) -> Active:
    return [(i, r) for i, r in rules if r.action == "pin"]


def additions(users: pl.DataFrame, rules: Active, catalog_ids: pl.Series) -> pl.DataFrame:
    """(user_id, item_id) candidates that ``add_if_missing`` pins add: each rule's catalog items for each of
    ``users`` it applies to (the caller drops pairs already proposed)."""
    parts = []
    wanted = [i for _, r in pins(rules) if r.add_if_missing for i in r.items]
    in_catalog = set(catalog_ids.filter(catalog_ids.is_in(wanted)).to_list())
    for _, r in pins(rules):
        if not r.add_if_missing:
            continue
        known = [i for i in dict.fromkeys(r.items) if i in in_catalog]
        who = users.filter(pl.col("user_id").is_in(r.users)) if r.users else users
        if known and who.height:
            parts.append(
                who.join(pl.DataFrame({"item_id": known}, schema={"item_id": pl.String}), how="cross")
            )
    if not parts:
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
    return pl.concat(parts).unique(maintain_order=True) if len(parts) > 1 else parts[0]


def pin_columns(rules: Active) -> dict[str, pl.Expr]:
    """``_r_pin`` (0-based target rank, null = not pinned) and ``_r_pin_label``, from the first pin rule
    that matches each row (empty when there are no pin rules)."""
    found = pins(rules)
    if not found:
        return {}
    return {
        "_r_pin": pl.coalesce(
            [pl.when(match(i, r)).then(pl.lit(int(r.position or 1) - 1)) for i, r in found]
        ),
        "_r_pin_label": pl.coalesce(
            [pl.when(match(i, r)).then(pl.lit(f"pinned: {r.name}")) for i, r in found]
        ),
    }


def pin_order(rules: Active) -> pl.Expr:
    """For pinned rows: their order among pins of the same target (rule, then position in its items);
    meant for the few pinned rows only (it looks item ids up per row)."""
    keys = []
    for i, r in pins(rules):
        slot = {item: i * _ITEM_SLOTS + j for j, item in enumerate(dict.fromkeys(r.items))}
        keys.append(
            pl.when(match(i, r)).then(
                pl.col("item_id").replace_strict(slot, default=0, return_dtype=pl.Int64)
            )
        )
    return pl.coalesce(keys).fill_null(0) if keys else pl.lit(0, pl.Int64)


def arrange(uid: IntArr, order: IntArr, pinned: IntArr, target: IntArr, key: IntArr) -> IntArr:
    """The final order of a chunk's rows (sorted by customer): ``order`` lists the unpinned rows in their
    order (customers contiguous, in ``uid`` order), ``pinned`` the pinned rows with their 0-based
    ``target`` rank and ``key`` (rule, then item order).

    The i-th pin of a customer (by target, then key) goes to rank e_i = max(target_i, e_(i-1) + 1), so it
    comes just before the unpinned row of ordinal e_i - i = max over i' <= i of (target_i' - i') — a
    running maximum — or after the last unpinned row when there are fewer. An unpinned row of ordinal n
    moves down by the number of the customer's pins whose e_i - i <= n. All in numpy: no sort of the
    whole chunk.
    """
    n = uid.shape[0]
    if pinned.size == 0:
        return order
    big = np.int64(n + int(target.max()) + 2)
    start = first_of_run(uid)  # per row: the first row of its customer (= where the customer's output starts)
    by = np.lexsort((key, target, uid[pinned]))
    pinned, target = pinned[by], target[by]
    pu = uid[pinned]
    i = np.arange(pinned.size) - first_of_run(pu)  # the pin's index among the customer's pins
    thr = np.maximum.accumulate(pu * big + (target - i)) - pu * big  # running max, reset per customer
    ou = uid[order]
    ordinal = np.arange(order.size) - first_of_run(ou)
    n_rest = np.bincount(ou, minlength=int(uid[-1]) + 1)
    thr = np.minimum(thr, n_rest[pu])
    pin_keys = pu * big + thr
    before = np.searchsorted(pin_keys, ou * big + ordinal, side="right") - np.searchsorted(pin_keys, ou * big)
    out = np.empty(n, dtype=np.int64)
    out[start[order] + ordinal + before] = order
    out[start[pinned] + thr + i] = pinned
    return out


def first_of_run(a: IntArr) -> IntArr:
    """For each position of a sorted array, the position where its run of equal values starts."""
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    return np.repeat(starts, np.diff(np.r_[starts, a.size])).astype(np.int64)
