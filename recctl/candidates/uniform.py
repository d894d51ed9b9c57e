"""``random``: items drawn uniformly from the training catalog — the floor every model must clear."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from recctl.candidates.base import Params, max_excluded, rank_top, register


class RandomParams(Params):
    pass


@register("random")
class Random:
    kind = "random"
    Params = RandomParams

    def __init__(self, name: str, params: RandomParams) -> None:
        self.name = name
        self.params = params
        self.items = pl.Series("item_id", [], dtype=pl.String)
        self.seed = 0

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        self.items = train["item_id"].unique().sort()
        self.seed = seed

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        u = users.unique().sort()
        n_items = len(self.items)
        if n_items == 0 or len(u) == 0:
            empty = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64})
            return rank_top(empty, n, None)
        draw = min(n_items, n + max_excluded(exclude) + 8)
        rng = np.random.default_rng(self.seed)
        # a random permutation prefix per user: random keys, argsort along each row
        if n_items <= 4 * draw:  # small catalog: a random permutation prefix per user
            idx = np.argsort(rng.random((len(u), n_items)), axis=1)[:, :draw]
        else:  # large catalog: sample with replacement; the few duplicates are dropped below
            idx = rng.integers(0, n_items, size=(len(u), draw * 2))
        scored = pl.DataFrame(
            {
                "user_id": np.repeat(u.to_numpy(), idx.shape[1]),
                "item_id": self.items.to_numpy()[idx.ravel()],
                "score": -np.tile(np.arange(idx.shape[1], dtype=np.float64), len(u)),
            }
        ).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
        return rank_top(scored, n, exclude)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"item_id": self.items}).write_parquet(path / "items.parquet")
        (path / "state.json").write_text(json.dumps({"seed": self.seed}))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, RandomParams.model_validate(params))
        gen.items = pl.read_parquet(path / "items.parquet")["item_id"]
        gen.seed = int(json.loads((path / "state.json").read_text())["seed"])
        return gen
