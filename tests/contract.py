"""The contract every candidate generator passes (LensKit/RecTools style shared test class).

A module's own test file subclasses ``GeneratorContract`` (or ``ItemToItemContract`` when the generator
also relates items to items) and sets ``kind`` and ``params``::

    class TestItemKNN(GeneratorContract):
        kind = "itemknn"
        params = {"neighbors": 20}

Known-answer tests specific to the model live beside it in the same file.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from recctl.candidates.base import RECS_SCHEMA, CandidateGenerator, PairScorer, build, load_generator
from recctl.errors import NotTrainedError
from recctl.ranking import PIPELINE


def tiny_shop() -> pl.DataFrame:
    """12 users, 10 items: users 0–5 follow a → b → c; users 6–11 follow x → y → z; p0 is liked by all."""
    t0 = datetime(2024, 1, 1)
    rows = []
    for u in range(12):
        seq = ["a", "b", "c"] if u < 6 else ["x", "y", "z"]
        if u in (5, 11):
            seq = seq[:1]  # the test users: only the first item so far
        for j, item in enumerate(["p0", *seq]):
            rows.append((f"u{u}", item, "view", t0 + timedelta(days=u, minutes=10 * j), f"s{u}", None))
    rows.append(("u0", "c", "purchase", t0 + timedelta(days=0, minutes=40), "s0", "o1"))
    schema = {"user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
              "session_id": pl.String, "order_id": pl.String}  # fmt: skip
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return df.with_columns(
        value=pl.lit(None, pl.Float64), quantity=pl.lit(None, pl.Float64),
        price=pl.lit(10.0), discount=pl.lit(0.0),
    ).sort("user_id", "ts")  # fmt: skip


def tiny_catalog() -> pl.DataFrame:
    """The catalog of ``tiny_shop``: two brands / categories, prices, text (and one item never seen)."""
    ids = ["p0", "a", "b", "c", "x", "y", "z", "new"]
    brand = ["Acme", "Acme", "Acme", "Acme", "Zeta", "Zeta", "Zeta", "Acme"]
    cat = ["Basics", "Women > Shoes", "Women > Shoes", "Women > Bags", "Men > Shoes", "Men > Shoes",
           "Men > Bags", "Women > Shoes"]  # fmt: skip
    return pl.DataFrame(
        {
            "item_id": ids, "title": [f"{b} {c.split(' > ')[-1].lower()} {i}" for i, b, c in zip(ids, brand, cat, strict=True)],
            "description": [f"{c} by {b}" for b, c in zip(brand, cat, strict=True)], "brand": brand, "category": cat,
            "price": [10.0, 50, 55, 80, 120, 130, 200, 52], "original_price": [10.0, 60, 55, 80, 120, 150, 200, 52],
            "gender": ["unisex", "women", "women", "women", "men", "men", "men", "women"],
            "attributes": ['{"color": "black"}'] * 8, "in_stock": [True] * 8, "created_at": [None] * 8,
            "rating": [None] * 8, "review_count": [None] * 8, "likes": [None] * 8,
        },
        schema_overrides={"created_at": pl.Datetime("us"), "rating": pl.Float64, "review_count": pl.Int64, "likes": pl.Int64},
    )  # fmt: skip


class GeneratorContract:
    kind: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}

    def make(self) -> CandidateGenerator:
        return build(self.kind, f"test-{self.kind}", self.params)

    def fitted(self, seed: int = 7) -> CandidateGenerator:
        gen = self.make()
        gen.fit(tiny_shop(), seed=seed, items=tiny_catalog())
        return gen

    def test_is_a_generator(self) -> None:
        assert isinstance(self.fitted(), CandidateGenerator)

    def test_output_shape_and_ranks(self) -> None:
        recs = self.fitted().for_users(pl.Series(["u5", "u11", "u0"]), 3)
        assert recs.schema == pl.Schema(RECS_SCHEMA)
        assert recs.height > 0
        per_user = recs.group_by("user_id").agg(
            pl.col("rank").sort(), pl.col("item_id").n_unique().alias("n")
        )
        for ranks, n in zip(per_user["rank"].to_list(), per_user["n"].to_list(), strict=True):
            assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= 3 and n == len(ranks)
        # scores never increase down a user's list
        ordered = recs.sort("user_id", "rank")
        assert (
            ordered.group_by("user_id")
            .agg(ok=(pl.col("score").diff() <= 1e-12).all() | (pl.len() == 1))["ok"]
            .all()
        )

    def test_excluded_items_never_come_back(self) -> None:
        exclude = pl.DataFrame({"user_id": ["u5", "u5", "u11"], "item_id": ["p0", "b", "y"]})
        recs = self.fitted().for_users(pl.Series(["u5", "u11"]), 5, exclude=exclude)
        assert recs.join(exclude, on=["user_id", "item_id"], how="semi").height == 0

    def test_unknown_user_does_not_fail(self) -> None:
        recs = self.fitted().for_users(pl.Series(["nobody", "u5"]), 3)
        assert set(recs["user_id"].unique()) <= {"nobody", "u5"}

    def test_deterministic_for_a_seed(self) -> None:
        users = pl.Series(["u5", "u11", "u3"])
        assert self.fitted(seed=3).for_users(users, 4).equals(self.fitted(seed=3).for_users(users, 4))

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        gen = self.fitted()
        gen.save(tmp_path / "m")
        loaded = type(gen).load(tmp_path / "m", gen.name, self.params)
        users = pl.Series(["u5", "u11", "nobody"])
        assert loaded.for_users(users, 4).equals(gen.for_users(users, 4))
        assert not list((tmp_path / "m").rglob("*.pkl")) and not list((tmp_path / "m").rglob("*.pickle"))

    def test_a_damaged_save_is_a_clear_error(self, tmp_path: Path) -> None:
        gen = self.fitted()
        gen.save(tmp_path / "m")
        files = sorted(p for p in (tmp_path / "m").rglob("*") if p.is_file() and p.name != "params.json")
        assert files, "save wrote no artifact"
        files[0].unlink()
        load = type(gen).load if self.kind == PIPELINE else partial(load_generator, self.kind)
        with pytest.raises(NotTrainedError, match="cannot be loaded"):
            load(tmp_path / "m", gen.name, self.params)


class ItemToItemContract(GeneratorContract):
    """For generators with an item-to-item mode (``for_items``)."""

    def test_item_to_item(self) -> None:
        gen: Any = self.fitted()
        related = gen.for_items(pl.Series(["a", "x", "unknown-item"]), 3)
        assert set(related.columns) >= {"item_id", "related_id", "score", "rank"}
        assert related.filter(pl.col("item_id") == pl.col("related_id")).height == 0


class PairScorerContract(ItemToItemContract):
    """For generators that also score given pairs (``pair_scores``)."""

    def test_pair_scores_agree_with_item_to_item(self) -> None:
        """Each pair gets the score ``for_items`` ranks it by; unknown items and an item with itself NaN."""
        gen: Any = self.fitted()
        assert isinstance(gen, PairScorer)
        related = gen.for_items(pl.Series(["a", "x", "p0"]), 5)
        assert related.height > 0
        got = gen.pair_scores(related["item_id"], related["related_id"])
        assert np.allclose(got, related["score"].to_numpy(), rtol=1e-4, atol=1e-5)
        odd = gen.pair_scores(pl.Series(["a", "unknown-item", "a"]), pl.Series(["unknown-item", "a", "a"]))
        assert np.isnan(odd).all()
