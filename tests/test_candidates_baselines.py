"""The baseline generators under the shared contract, and their known answers."""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from recctl.candidates.base import build
from tests.contract import GeneratorContract, ItemToItemContract, tiny_catalog, tiny_shop


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


class TestTrendingByCategory(ItemToItemContract):
    kind = "popular"
    params: ClassVar[dict[str, Any]] = {
        "half_life_days": 2.0,
        "scope": "category",
        "event_weights": {"purchase": 5},
    }


def test_half_life_favours_recent_items() -> None:
    # a: 6 users on days 0–5; x: 6 users on days 6–11. All-time they tie; with a 2-day half-life x leads.
    gen = build("popular", "t", {"half_life_days": 2.0})
    gen.fit(tiny_shop(), seed=0)
    ranked = gen.for_users(pl.Series(["u5"]), 3, exclude=pl.DataFrame({"user_id": ["u5"], "item_id": ["p0"]}))
    assert ranked["item_id"].to_list()[0] == "x"


def test_event_weights_count_the_strongest_action() -> None:
    # only u0 bought c; with purchases weighing 10, c (5 users + 9 extra) beats b (5 users)
    gen = build("popular", "w", {"event_weights": {"purchase": 10.0}})
    gen.fit(tiny_shop(), seed=0)
    scores = dict(gen.ranking.select("item_id", "score").rows())
    assert scores["c"] > scores["b"] and round(scores["c"]) == 14


def test_category_scope_follows_the_users_categories() -> None:
    gen = build("popular", "c", {"scope": "category"})
    gen.fit(tiny_shop(), seed=0, items=tiny_catalog())
    # u11 has touched p0 (Basics) and x (Men > Shoes): Men > Shoes items come before the global leader a
    recs = gen.for_users(pl.Series(["u11"]), 3, exclude=pl.DataFrame({"user_id": ["u11"], "item_id": ["x"]}))
    assert recs["item_id"].to_list()[:2] == ["p0", "y"]
    assert gen.top_in_category("Women > Shoes", 1)["item_id"].to_list() == ["a"]
