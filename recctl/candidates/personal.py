"""``personal``: the ``personal-top`` baseline of the next-basket literature ("TopPersonal") — each user's own
most-bought items, the popular items below them.

A user's items are ranked by how often the user bought them (the number of events of ``event_types``,
default purchases), ties by recency (the more recently bought first), then by item id. Below them the
globally popular items (distinct users over the same events; ties by item id) fill the list; a user
without purchases (or unknown) gets the popular list alone. Simple, yet hard to beat for repeat-heavy
shops (groceries, drugstores): it is the floor ``repeat`` must clear.

Scores strictly decrease down a list, so the order survives exclusions and any later sort by score: a
personal item scores 1 + count − r / (t + 1), with t the user's items of the same count and r (0-based)
its place among them by recency — in (count, count + 1]; popular fill scores 1 − (q + 1) / (P + 1) by its
place q among the P popular items, in (0, 1), below every personal item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

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


class PersonalParams(Params):
    event_types: list[str] = Field(default_factory=lambda: ["purchase"], min_length=1)


@register("personal")
class Personal:
    kind = "personal"
    Params = PersonalParams

    def __init__(self, name: str, params: PersonalParams) -> None:
        self.name = name
        self.params = params
        self.counts = pl.DataFrame(
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "count": pl.Int64,
                "last_ts": pl.Datetime("us"),
            }
        )
        self.popular = pl.DataFrame(schema={"item_id": pl.String, "users": pl.Int64})

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        ev = train.filter(pl.col("event_type").is_in(self.params.event_types))
        self.counts = (
            ev.group_by("user_id", "item_id")
            .agg(count=pl.len().cast(pl.Int64), last_ts=pl.col("ts").max())
            .sort("user_id", "item_id")
        )
        self.popular = (
            ev.group_by("item_id")
            .agg(users=pl.col("user_id").n_unique().cast(pl.Int64))
            .sort(["users", "item_id"], descending=[True, False])
        )

    @in_user_blocks
    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        u = pl.DataFrame({"user_id": users.unique().cast(pl.String)})
        own = (
            u.join(self.counts, on="user_id")
            .sort(["user_id", "count", "last_ts", "item_id"], descending=[False, True, True, False])
            .with_columns(
                r=pl.int_range(pl.len()).over("user_id", "count"), t=pl.len().over("user_id", "count")
            )
            .select("user_id", "item_id", score=(1.0 + pl.col("count") - pl.col("r") / (pl.col("t") + 1.0)))
        )
        total = self.popular.height
        top = (
            self.popular.head(n + max_excluded(exclude))
            .with_row_index("q")
            .select("item_id", score=1.0 - (pl.col("q").cast(pl.Float64) + 1.0) / (total + 1.0))
        )
        fill = u.join(top, how="cross").join(own, on=["user_id", "item_id"], how="anti")
        return rank_top(pl.concat([own, fill]), n, exclude)

    def save(self, path: Path) -> None:
        save_frames(path, self.params, counts=self.counts, popular=self.popular)

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, PersonalParams.model_validate(params))
        gen.counts, gen.popular = read_frames(path, "counts", "popular")
        return gen
