"""``content`` under the shared contract, its known answers on tiny data, and item neighbours on the sample shop."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest

from recctl.candidates.base import build
from recctl.candidates.content import _attribute_docs, _category_docs, holdout
from recctl.errors import ConfigError
from tests.contract import PairScorerContract, tiny_catalog, tiny_shop

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


class TestContent(PairScorerContract):
    kind = "content"


class TestContentFixedPrior(PairScorerContract):
    kind = "content"
    params: ClassVar[dict[str, Any]] = {"popularity_weight": 0.1, "ngram_range": [1, 1], "min_df": 2}


def fitted(params: dict[str, Any] | None = None, catalog: pl.DataFrame | None = None) -> Any:
    gen = build("content", "c", params if params is not None else {"popularity_weight": 0.05})
    gen.fit(tiny_shop(), seed=0, items=tiny_catalog() if catalog is None else catalog)
    return gen


def test_same_brand_and_category_words_make_the_nearest_neighbour() -> None:
    related = fitted().for_items(pl.Series(["a", "x"]), 7)
    first = dict(
        zip(
            related.filter(pl.col("rank") == 1)["item_id"],
            related.filter(pl.col("rank") == 1)["related_id"],
            strict=True,
        )
    )
    # a: Acme, Women > Shoes (b and the unseen "new" share brand and category); x: Zeta, Men > Shoes (y)
    assert first["a"] in {"b", "new"} and first["x"] == "y"
    a = related.filter(pl.col("item_id") == "a")["related_id"].to_list()
    assert set(a[:2]) == {"b", "new"} and a.index("c") < a.index("x")  # same brand before other brands
    assert (related["score"] <= 1.0 + 1e-6).all() and (related["score"] > 0).all()


def test_a_never_interacted_item_is_recommended() -> None:
    gen = fitted()
    recs = gen.for_users(pl.Series(["u5"]), 3, exclude=pl.DataFrame({"user_id": ["u5"], "item_id": ["a"]}))
    assert "new" in recs["item_id"].to_list()  # nobody touched "new", but it reads like what u5 viewed
    assert "new" in gen.for_items(pl.Series(["b"]), 2)["related_id"].to_list()


def test_out_of_stock_items_are_left_out_unless_kept() -> None:
    catalog = tiny_catalog().with_columns(in_stock=pl.col("item_id") != "new")
    users = pl.Series(["u0", "u5"])
    assert "new" not in fitted(catalog=catalog).for_users(users, 8)["item_id"].to_list()
    assert "new" not in fitted(catalog=catalog).for_items(pl.Series(["a"]), 8)["related_id"].to_list()
    kept = fitted({"popularity_weight": 0.05, "keep_out_of_stock": True}, catalog)
    assert "new" in kept.for_users(users, 8)["item_id"].to_list()


def test_without_a_catalog_the_interacted_items_are_the_candidates() -> None:
    gen = build("content", "c", {"popularity_weight": 0.5})
    gen.fit(tiny_shop(), seed=0)
    recs = gen.for_users(pl.Series(["u5"]), 3)
    assert recs.height == 3 and set(recs["item_id"]) <= set(tiny_shop()["item_id"])


def test_tokens_of_categories_and_json_attributes() -> None:
    cat = pl.DataFrame(
        {
            "category": ["Women > Shoes > Sneakers", "Action|Comedy", None],
            "attributes": ['{"color": "Dark Blue", "size": 3, "ids": [1, 22], "n": {"k": true}}', None, "{}"],
        }
    )
    assert _category_docs(cat).to_list() == [
        "women women/shoes women/shoes/sneakers a:women a:shoes a:sneakers",
        "action_comedy a:action a:comedy",
        "",
    ]
    assert _attribute_docs(cat).to_list() == ["color=dark_blue size=3 k=true ids=1 ids=22", "", ""]


def test_holdout_targets_are_new_items_of_the_last_tenth() -> None:
    t0 = datetime(2024, 1, 1)
    rows = [(f"u{u}", f"i{d % 5}", "view", t0 + timedelta(days=d)) for u in range(3) for d in range(10)]
    rows.append(("u0", "new", "purchase", t0 + timedelta(days=20)))
    rows.append(("late", "i1", "purchase", t0 + timedelta(days=21)))  # no earlier history: not a target
    train = pl.DataFrame(rows, schema=["user_id", "item_id", "event_type", "ts"], orient="row")
    early, targets = holdout(train, {"view": 1.0, "purchase": 5.0}, 1.0, seed=1)
    assert targets.rows() == [("u0", "new")] and early.height == 27  # cut at event 28 of 32: day 9


def test_unknown_fields_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="fields"):
        build("content", "c", {"fields": {"colour": 1.0}})
    with pytest.raises(ConfigError, match="neighbours"):
        build("content", "c", {"neighbours": 5})


def sample_shop() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The committed sample shop with its columns mapped to the canonical names by hand."""
    actions = {"pageview": "view", "addtocart": "add_to_cart", "purchase": "purchase", "search": "search"}
    events = (
        pl.read_csv(SAMPLE / "events.csv.gz", infer_schema=False)
        .filter(pl.col("product_id").is_not_null())
        .select(
            user_id="visitor_id", item_id="product_id", event_type=pl.col("action").replace_strict(actions),
            ts=pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ"), session_id="session",
            order_id="order_id", price=pl.col("price").cast(pl.Float64), discount=pl.lit(None, pl.Float64),
        )
    )  # fmt: skip
    items = pl.read_ndjson(SAMPLE / "items.ndjson").select(
        item_id="sku", title="name", description="description", brand="brand", category="category",
        price="price", original_price="list_price", gender="gender",
        attributes=pl.col("attributes").struct.json_encode(), in_stock="in_stock",
    )  # fmt: skip
    return events, items


def test_sample_shop_neighbours_share_leaf_and_brand_far_above_chance() -> None:
    events, items = sample_shop()
    gen: Any = build("content", "c", {})
    gen.fit(events, seed=42, items=items)
    related = gen.for_items(items["item_id"], 10)
    f = items.select("item_id", "brand", "category")
    pairs = related.join(f, on="item_id").join(
        f.rename({"item_id": "related_id", "brand": "r_brand", "category": "r_category"}), on="related_id"
    )
    leaf = pairs.select((pl.col("category") == pl.col("r_category")).mean()).item()
    brand = pairs.select((pl.col("brand") == pl.col("r_brand")).mean()).item()
    chance = {c: float((f[c].value_counts()["count"] / f.height).pow(2).sum()) for c in ("brand", "category")}
    # measured: same leaf 0.64 (chance 0.04), same brand 0.70 (chance 0.05), one of the two 1.00
    assert leaf > 0.5 and leaf > 8 * chance["category"]
    assert brand > 0.5 and brand > 8 * chance["brand"]
    assert related["item_id"].n_unique() == items.height
    assert (
        related.join(items.filter(~pl.col("in_stock")), left_on="related_id", right_on="item_id").height == 0
    )
    assert gen.pop_weight <= 1.0  # calibrated: in a fashion shop the text matters, the prior stays light


def test_the_prior_is_calibrated_up_when_text_tells_nothing() -> None:
    t0 = datetime(2024, 1, 1)
    rows = [(f"u{u}", f"i{(u * d) % 7 if d % 2 else d % 3}", "purchase", t0 + timedelta(hours=u * 30 + d))
            for u in range(40) for d in range(8)]  # fmt: skip
    train = pl.DataFrame(rows, schema=["user_id", "item_id", "event_type", "ts"], orient="row")
    catalog = pl.DataFrame({"item_id": [f"i{k}" for k in range(12)], "title": ["the same thing"] * 12})
    gen: Any = build("content", "c", {})
    gen.fit(train, seed=0, items=catalog)
    assert gen.pop_weight > 0
