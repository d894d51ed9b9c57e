"""Buy it again: the items a customer is due to re-buy, with the cycle as the reason.

The promoted run's ``repeat`` generator (``recctl.candidates.repeat``) knows each item's repurchase cycle
(backed off to its category); the visitor's own cycles and the days since they last bought each item are
recomputed from their events up to now (``_cycles.user_cycles``), so a purchase made after the training
counts at once. ``buy_again`` lists the bought items by how due they are, weighted by how habitual they
are (``due_score · n / (n + 1)`` for n purchase occasions), through the current [rules] — where the rules
keep bought items out (a fashion shop's dresses), only the categories they let back remain.
``cycle_reasons`` gives the same reason to bought items of any list ("you buy this about every 9 days;
last bought 11 days ago").
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from recctl.errors import NotTrainedError

if TYPE_CHECKING:
    from recctl.serving.served import Served

KIND = "repeat"


def _generator(served: Served) -> Any:
    names = served.names_of_kind(KIND)
    return served.generator(names[0]) if names else None


def due_items(served: Served, events: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """user_id, item_id, n_baskets, cycle_days, days_since, due_score, score, source for every item the
    users of ``events`` bought (empty when the run has no repeat generator)."""
    from recctl.candidates._cycles import due, user_cycles

    gen = _generator(served)
    if gen is None or events.height == 0:
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "n_baskets": pl.Int64,
                                    "cycle_days": pl.Float64, "days_since": pl.Float64,
                                    "due_score": pl.Float64, "score": pl.Float64, "source": pl.String})  # fmt: skip
    p = gen.params
    cyc = user_cycles(
        events, gen.cycles.item, event_types=p.event_types, user_prior=p.user_prior, min_sigma=p.min_sigma
    )
    n = pl.col("n_baskets").cast(pl.Float64)
    return due(cyc, now).select(
        "user_id", "item_id", "n_baskets", "cycle_days", "days_since", "due_score",
        score=pl.col("due_score") * n / (n + 1.0), source=pl.lit(gen.name),
    )  # fmt: skip


def _phrase() -> pl.Expr:
    days = pl.col("days_since").clip(lower_bound=0).round(0).cast(pl.Int64)
    ago = (
        pl.when(days == 0)
        .then(pl.lit("today"))
        .when(days == 1)
        .then(pl.lit("yesterday"))
        .otherwise(pl.format("{} days ago", days))
    )
    every = pl.col("cycle_days").round(0).cast(pl.Int64).clip(lower_bound=1)
    return (
        pl.when(pl.col("n_baskets") >= 2)
        .then(pl.format("you buy this about every {} days; last bought {}", every, ago))
        .otherwise(pl.format("you bought this {}; it is usually bought again every {} days", ago, every))
    )


def cycle_reasons(served: Served, events: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """user_id, item_id, reason for every item the users of ``events`` bought (run without a repeat
    generator: none)."""
    items = due_items(served, events, now)
    return items.select("user_id", "item_id", reason=_phrase())


def buy_again(
    served: Served, events: pl.DataFrame, catalog: pl.DataFrame, rules: Any, k: int, now: datetime
) -> pl.DataFrame:
    """Each user's ``k`` most due bought items after the ``rules``: user_id, rank, item_id, score, sources,
    reason, rules (the labels of the rules that touched the item)."""
    from recctl.rules import apply

    if _generator(served) is None:
        raise NotTrainedError(
            f"the promoted run {served.run_id} has no buy-again model (a generator of kind {KIND})",
            hint="add one to [[candidates]] (configs/recctl.toml lists buy-again) and run `recctl train`",
        )
    items = due_items(served, events, now).filter(pl.col("score") > 0)
    cands = items.select("user_id", "item_id", "score", sources=pl.concat_list(pl.col("source"))).sort(
        ["user_id", "score", "item_id"], descending=[False, True, False]
    )
    ranked = apply(cands, history=events, items=catalog, cfg=rules, now=now, k=k).frame
    reasons = items.select("user_id", "item_id", reason=_phrase())
    out = ranked.join(reasons, on=["user_id", "item_id"], how="left")
    return out.select("user_id", "rank", "item_id", "score", "sources", "reason", "rules")
