"""``recommend --item P``: items related to one product, for product pages.

- ``similar``: content similarity (TF-IDF over title, description, brand, category, attributes) blended
  with collaborative similarity (itemknn: who interacted with both), each scaled to a maximum of 1 and
  weighted ``[serving] similar_content_weight`` : 1 − that; an item nobody interacted with gets content
  only.
- ``bought-together`` / ``viewed-together``: the run's co-occurrence generator of mode ``basket`` /
  ``session``; an item without such co-occurrences falls back to content similarity.

Out-of-stock items and the item itself are never proposed. Each item carries its sources and a reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from recctl.errors import NotTrainedError, UnknownIdError
from recctl.serving.served import RELATIONS

if TYPE_CHECKING:
    from recctl.config import RecctlConfig
    from recctl.serving.served import Served

ItemStrategy = Literal["similar", "bought-together", "viewed-together"]
STRATEGIES: tuple[str, ...] = ("similar", "bought-together", "viewed-together")
_REASON = {
    "content": "similar to {}",
    "itemknn": "liked by the same customers as {}",
    "bought-together": "bought together with {}",
    "viewed-together": "viewed together with {}",
}


def related(
    served: Served, cfg: RecctlConfig, catalog: pl.DataFrame, item_id: str, strategy: str, k: int
) -> dict[str, Any]:
    """The ``recommend --item --json`` document: item_id, strategy, run_id, fallback, items."""
    if strategy not in STRATEGIES:
        from recctl.errors import ConfigError

        raise ConfigError(f"unknown --strategy {strategy!r}: use {', '.join(STRATEGIES)}")
    from recctl.serving.served import items_of

    known = items_of(catalog, pl.Series([item_id]))
    if known.height == 0:
        raise UnknownIdError(f"unknown item {item_id!r}: it is neither in the catalog nor in any event")
    from recctl.serving.user import STABLE_K

    n = 2 * max(k, STABLE_K) + 10  # the same lists for every k <= STABLE_K: a longer list extends a shorter
    lists: list[tuple[str, pl.DataFrame, float]] = []
    fallback = False
    if strategy == "similar":
        w = cfg.serving.similar_content_weight
        if not (served.names_of_kind("content") or served.names_of_kind("itemknn")):
            _rel(served, "content", item_id, n)  # raises: the run has neither similarity
        sims = [
            ("content", _rel(served, "content", item_id, n, required=False), w),
            ("itemknn", _rel(served, "itemknn", item_id, n, required=False), 1.0 - w),
        ]
        lists += [(label, rel, wt) for label, rel, wt in sims if rel.height]
    else:
        rel = _rel(served, strategy, item_id, n)
        if rel.height:
            lists.append((strategy, rel, 1.0))
        else:
            fallback = True
            lists.append(("content", _rel(served, "content", item_id, n), 1.0))
    if not any(r.height for _, r, _ in lists):
        return _doc(item_id, strategy, served.run_id, fallback, pl.DataFrame())
    long = pl.concat(
        [
            r.select("related_id", s=pl.col("score") / pl.col("score").max() * wt, src=pl.lit(label))
            for label, r, wt in lists
            if r.height
        ]
    )
    stock = items_of(catalog, long["related_id"]).select("item_id", "in_stock", "title")
    ranked = (
        long.group_by("related_id")
        .agg(score=pl.col("s").sum(), sources=pl.col("src").sort_by("s", descending=True))
        .rename({"related_id": "item_id"})
        .join(stock, on="item_id", how="left")
        .filter((pl.col("item_id") != item_id) & pl.col("in_stock").fill_null(True))
        .sort(["score", "item_id"], descending=[True, False])
        .head(k)
        .with_columns(rank=pl.int_range(1, pl.len() + 1))
    )
    from recctl.serving.explain import label

    named = known.select(label()).item() if {"title", "brand", "category"} <= set(known.columns) else None
    title = named or "this item"  # no title, brand or category: an id means nothing to a shopper
    ranked = ranked.with_columns(
        reason=pl.col("sources")
        .list.first()
        .replace_strict(
            {key: fmt.format(title) for key, fmt in _REASON.items()}, default=f"related to {title}"
        )
    )
    return _doc(item_id, strategy, served.run_id, fallback, ranked)


def _rel(served: Served, relation: str, item_id: str, n: int, *, required: bool = True) -> pl.DataFrame:
    """related_id, score from the run's generator for ``relation`` (content, itemknn, or a co-occurrence
    mode); empty when the generator has nothing for the item."""
    if relation in RELATIONS:
        names = served.names_of_kind("cooccur", mode=RELATIONS[relation])
        what = f"co-occurrence generator with mode = {RELATIONS[relation]!r}"
    else:
        names = served.names_of_kind(relation)
        what = f"{relation} generator"
    if not names:
        if not required:
            return pl.DataFrame(schema={"related_id": pl.String, "score": pl.Float64})
        raise NotTrainedError(
            f"the promoted run {served.run_id} has no {what}", hint="add one to [[candidates]] and retrain"
        )
    gen: Any = served.generator(names[0])
    rel: pl.DataFrame = gen.for_items(pl.Series([item_id], dtype=pl.String), n)
    return rel.filter(pl.col("score") > 0).select("related_id", pl.col("score").cast(pl.Float64))


def _doc(item_id: str, strategy: str, run_id: str, fallback: bool, ranked: pl.DataFrame) -> dict[str, Any]:
    items = [
        {
            "item_id": r["item_id"],
            "rank": int(r["rank"]),
            "score": round(float(r["score"]), 6),
            "sources": list(r["sources"]),
            "reason": r["reason"],
        }
        for r in (ranked.iter_rows(named=True) if ranked.height else [])
    ]
    return {"item_id": item_id, "strategy": strategy, "run_id": run_id, "fallback": fallback, "items": items}
