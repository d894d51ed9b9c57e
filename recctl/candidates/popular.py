"""``popular``: the most popular items — globally, in a recent window, time-decayed (trending), or within
the categories a user shops in. The fallback for new visitors, and the baselines ``popular`` and
``popular-recent``.

An item's score is the sum over users of the user's strongest action on it: the action's weight
(``event_weights``, default 1 for every type) times ``0.5 ** (age / half_life_days)`` when a half-life is
set, counting only events in the last ``window_days`` when a window is set. With the defaults it is the
number of distinct users who touched the item. Ties fall back to all-time popularity, then item id.
With ``scope = "category"``, a user's items are the popular ones of the categories in their history,
weighted by how much of their history each category holds (global popularity for users without one).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

import polars as pl
from pydantic import Field

from recctl.candidates.base import (
    Params,
    in_user_blocks,
    max_excluded,
    rank_top,
    read_frames,
    register,
    save_frames,
)


class PopularParams(Params):
    window_days: float = Field(0.0, ge=0)  # 0 = all time
    half_life_days: float = Field(0.0, ge=0)  # 0 = no decay
    event_types: list[str] = Field(default_factory=list)  # empty = every type
    event_weights: dict[str, float] = Field(default_factory=dict)  # type → weight; others 1
    scope: Literal["global", "category"] = "global"


@register("popular")
class Popular:
    kind = "popular"
    Params = PopularParams

    def __init__(self, name: str, params: PopularParams) -> None:
        self.name = name
        self.params = params
        self.ranking = pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64})
        self.by_category = pl.DataFrame(
            schema={"category": pl.String, "item_id": pl.String, "score": pl.Float64}
        )
        self.user_categories = pl.DataFrame(
            schema={"user_id": pl.String, "category": pl.String, "share": pl.Float64}
        )

    def _scores(self, df: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        end = df["ts"].max()
        weight = pl.col("event_type").replace_strict(p.event_weights, default=1.0, return_dtype=pl.Float64)
        if p.half_life_days > 0:
            age_days = (pl.lit(end) - pl.col("ts")).dt.total_seconds() / 86400.0
            weight = weight * (0.5 ** (age_days / p.half_life_days))
        if p.window_days > 0:
            df = df.filter(pl.col("ts") > pl.lit(end) - timedelta(days=p.window_days))
        strongest = df.group_by("user_id", "item_id").agg(w=weight.max())
        # rounded: a float sum's last bits depend on the (threaded) summation order
        return strongest.group_by("item_id").agg(score=pl.col("w").sum().round(9))

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        df = train
        if self.params.event_types:
            df = df.filter(pl.col("event_type").is_in(self.params.event_types))
        if df.height == 0:
            return
        total = df.group_by("item_id").agg(total=pl.col("user_id").n_unique())
        scored = total.join(self._scores(df), on="item_id", how="left").with_columns(
            pl.col("score").fill_null(0.0)
        )
        # all-time distinct users break ties (scaled below the smallest score step)
        scale = float(scored["total"].max() or 1) + 1.0  # type: ignore[arg-type]
        self.ranking = scored.select(
            "item_id", score=(pl.col("score") + pl.col("total") / scale / 1e3).cast(pl.Float64)
        ).sort(["score", "item_id"], descending=[True, False])
        if self.params.scope == "category" and items is not None:
            cats = items.select("item_id", "category").filter(pl.col("category").is_not_null())
            self.by_category = self.ranking.join(cats, on="item_id").select("category", "item_id", "score")
            hist = df.join(cats, on="item_id").group_by("user_id", "category").len()
            self.user_categories = hist.with_columns(
                share=pl.col("len") / pl.col("len").sum().over("user_id")
            ).select("user_id", "category", "share")

    @in_user_blocks
    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        want = n + max_excluded(exclude)
        u = pl.DataFrame({"user_id": users.unique()})
        top = self.ranking.head(want)
        if self.params.scope == "category" and self.user_categories.height:
            # each category's best items, weighted by the user's share of it; global list fills up below
            per_cat = self.by_category.sort("score", descending=True).group_by("category").head(want)
            cat_scored = (
                u.join(self.user_categories, on="user_id")
                .join(per_cat, on="category")
                .group_by("user_id", "item_id")
                .agg(score=((pl.col("share") * pl.col("score")).sum() + 1e9).round(6))
            )
            glob = u.join(top, how="cross")
            scored = pl.concat([cat_scored, glob]).group_by("user_id", "item_id").agg(pl.col("score").max())
            return rank_top(scored, n, exclude)
        return rank_top(u.join(top, how="cross"), n, exclude)

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """Item-to-item fallback: the popular items other than the item itself."""
        top = self.ranking.head(n + 1).rename({"item_id": "related_id"})
        pairs = pl.DataFrame({"item_id": items.unique()}).join(top, how="cross")
        return (
            pairs.filter(pl.col("item_id") != pl.col("related_id"))
            .sort(["item_id", "score", "related_id"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("item_id").cast(pl.Int32))
            .filter(pl.col("rank") <= n)
        )

    def top_in_category(self, category: str, n: int) -> pl.DataFrame:
        """The category's most popular items (for "trending in <category>"); needs scope = "category"."""
        return self.by_category.filter(pl.col("category") == category).sort("score", descending=True).head(n)

    def save(self, path: Path) -> None:
        save_frames(
            path, self.params, ranking=self.ranking, by_category=self.by_category,
            user_categories=self.user_categories,
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, PopularParams.model_validate(params))
        gen.ranking, gen.by_category, gen.user_categories = read_frames(
            path, "ranking", "by_category", "user_categories"
        )
        return gen
