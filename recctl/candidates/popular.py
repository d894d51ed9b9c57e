"""``popular``: the most popular items, globally or in a recent window (the ``popular-recent`` baseline).

Popularity is the number of distinct users who interacted with an item (optionally only with some event
types, only in the last ``window_days`` before the end of training). Ties fall back to all-time
popularity, then item id, so the list is always full.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

import polars as pl
from pydantic import Field

from recctl.candidates.base import Params, max_excluded, rank_top, register


class PopularParams(Params):
    window_days: float = 0.0  # 0 = all time
    event_types: list[str] = Field(default_factory=list)  # empty = every type


@register("popular")
class Popular:
    kind = "popular"
    Params = PopularParams

    def __init__(self, name: str, params: PopularParams) -> None:
        self.name = name
        self.params = params
        self.ranking = pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64})

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        df = train
        if self.params.event_types:
            df = df.filter(pl.col("event_type").is_in(self.params.event_types))
        overall = df.group_by("item_id").agg(total=pl.col("user_id").n_unique())
        if self.params.window_days > 0 and df.height:
            start = df["ts"].max() - timedelta(days=self.params.window_days)  # type: ignore[operator]
            recent = (
                df.filter(pl.col("ts") > start).group_by("item_id").agg(recent=pl.col("user_id").n_unique())
            )
            overall = overall.join(recent, on="item_id", how="left").with_columns(
                pl.col("recent").fill_null(0)
            )
            # recent count first; all-time count breaks ties (as a fraction below 1)
            total_max = float(overall["total"].cast(pl.Float64).max() or 1.0) + 1.0  # type: ignore[arg-type]
            score = pl.col("recent") + pl.col("total") / total_max
        else:
            score = pl.col("total").cast(pl.Float64)
        self.ranking = overall.select("item_id", score=score.cast(pl.Float64)).sort(
            ["score", "item_id"], descending=[True, False]
        )

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        top = self.ranking.head(n + max_excluded(exclude))
        scored = pl.DataFrame({"user_id": users.unique()}).join(top, how="cross")
        return rank_top(scored, n, exclude)

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """Item-to-item fallback: the popular items other than the item itself."""
        top = self.ranking.head(n + 1).rename({"item_id": "related_id"})
        pairs = pl.DataFrame({"item_id": items.unique()}).join(top, how="cross")
        return (
            pairs.filter(pl.col("item_id") != pl.col("related_id"))
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("item_id").cast(pl.Int32))
            .filter(pl.col("rank") <= n)
        )

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.ranking.write_parquet(path / "ranking.parquet")
        (path / "params.json").write_text(json.dumps(self.params.model_dump()))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, PopularParams.model_validate(params))
        gen.ranking = pl.read_parquet(path / "ranking.parquet")
        return gen
