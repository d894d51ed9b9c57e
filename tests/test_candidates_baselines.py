"""The baseline generators under the shared contract, and their known answers."""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from recctl.candidates.base import build
from tests.contract import GeneratorContract, ItemToItemContract, tiny_shop


class TestPopular(ItemToItemContract):
    kind = "popular"


class TestPopularRecent(GeneratorContract):
    kind = "popular"
    params: ClassVar[dict[str, Any]] = {"window_days": 3.0}


class TestRandom(GeneratorContract):
    kind = "random"


def test_popular_known_answer() -> None:
    gen = build("popular", "p", {})
    gen.fit(tiny_shop(), seed=0)
    recs = gen.for_users(pl.Series(["u5"]), 2)
    assert recs["item_id"].to_list() == ["p0", "a"]  # 12 users, then a (6 users; ties by id: a < x)


def test_popular_recent_counts_only_the_window() -> None:
    gen = build("popular", "p", {"window_days": 3.0})
    gen.fit(tiny_shop(), seed=0)  # last 3 days: users 9–11 (x, y, z)
    recs = gen.for_users(pl.Series(["u5"]), 2, exclude=pl.DataFrame({"user_id": ["u5"], "item_id": ["p0"]}))
    assert recs["item_id"].to_list() == ["x", "y"]
