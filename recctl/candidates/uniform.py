"""``random``: items drawn uniformly from the training catalog — the floor every model must clear."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from recctl.candidates.base import Params, in_user_blocks, max_excluded, rank_top, register


class RandomParams(Params):
    pass


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ITEMS = np.uint64(0x632BE59BD9B4E019)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer over uint64 values (wrapping): well-spread 64-bit random keys."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        out: np.ndarray = x ^ (x >> np.uint64(31))
        return out


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

    @in_user_blocks
    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        """Each user's random items: a sequence drawn from a key of (seed, user id) alone, so a user gets
        the same list in any request (the evaluation and ``recommend --all`` ask in blocks of users)."""
        u = users.unique().sort().cast(pl.String)
        n_items = len(self.items)
        if n_items == 0 or len(u) == 0:
            empty = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64})
            return rank_top(empty, n, None)
        draw = min(n_items, n + max_excluded(exclude) + 8)
        keys = u.hash(seed=self.seed).to_numpy().astype(np.uint64)[:, None]
        # the kind of draw depends on n and the catalog only (not on the request), so that a longer draw
        # extends a shorter one: a random permutation prefix per user when the catalog is small ...
        if n_items <= 4 * (n + 8):
            noise = _mix(keys ^ _mix(np.arange(n_items, dtype=np.uint64) + _ITEMS)[None, :])
            idx = np.argsort(noise, axis=1, kind="stable")[:, :draw]
        else:  # ... else a sample with replacement (the few duplicates are dropped below)
            steps = np.arange(1, 2 * draw + 1, dtype=np.uint64)[None, :]
            idx = (_mix(keys + steps * _GOLDEN) % np.uint64(n_items)).astype(np.int64)
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
