"""``affinity`` under the shared contract, its known answers on tiny shops, and the planted preferences of
the committed sample shop (brand loyalty, price bands, discount hunters, category affinity)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, ClassVar

import polars as pl
import pytest

from recctl.candidates.base import build
from recctl.errors import ConfigError
from tests.contract import ItemToItemContract, tiny_shop
from tests.test_cand_content import SAMPLE, sample_shop


class TestAffinity(ItemToItemContract):
    kind = "affinity"


class TestAffinityRelativeBand(ItemToItemContract):
    kind = "affinity"
    params: ClassVar[dict[str, Any]] = {"price_band_abs": 0.0, "price_band_rel": 0.5, "w_popularity": 0.5}


def shop(
    catalog: list[tuple[str, str, float, float]], bought: dict[str, list[str]], price_of: dict[str, float]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (a view then a purchase of each bought item, at the catalog price) and the catalog
    (item, brand, price, original price; one category, all in stock)."""
    t0 = datetime(2024, 3, 1)
    rows = [
        (user, item, kind, t0 + timedelta(hours=3 * u + j, minutes=m), price_of[item])
        for u, (user, items) in enumerate(sorted(bought.items()))
        for j, item in enumerate(items)
        for m, kind in enumerate(["view", "purchase"])
    ]
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "event_type", "ts", "price"], orient="row")
    items = pl.DataFrame(catalog, schema=["item_id", "brand", "price", "original_price"], orient="row")
    return events, items.with_columns(category=pl.lit("Women > Shoes > Sneakers"), in_stock=pl.lit(True))


def brand_shop() -> tuple[pl.DataFrame, pl.DataFrame]:
    acme = [
        ("A1", 45.0),
        ("A2", 50.0),
        ("A3", 55.0),
        ("A4", 42.0),
        ("A5", 59.0),
        ("A6", 250.0),
        ("A7", 130.0),
    ]
    zeta = [(f"Z{k}", 40.0 + 5 * k) for k in range(1, 5)]
    catalog = [(i, "Acme", p, p) for i, p in acme] + [(i, "Zeta", p, p) for i, p in zeta]
    bought = {"loyal": ["A1", "A2", "A3"]} | {
        f"o{k}": ["Z1", "Z2", "Z3", "Z4", "A6"][k % 3 :] for k in range(8)
    }
    return shop(catalog, bought, {i: p for i, _, p, _ in catalog})


def test_a_loyal_buyer_in_a_price_range_gets_that_brand_in_that_range_first() -> None:
    events, items = brand_shop()
    gen: Any = build("affinity", "a", {"w_popularity": 0.5})
    gen.fit(events, seed=0, items=items)
    seen = events.select("user_id", "item_id").unique()
    recs = gen.for_users(pl.Series(["loyal"]), 6, exclude=seen)["item_id"].to_list()
    assert set(recs[:2]) == {"A4", "A5"}  # Acme, inside 40–60
    assert recs[2] == "A7"  # Acme at 130: inside the ±100 band, but far from 50
    assert "A6" not in recs  # Acme at 250: outside the band
    prof = gen.profiles().filter(pl.col("user_id") == "loyal").row(0, named=True)
    assert prof["brands"] == [{"name": "Acme", "share": 1.0, "affinity": 1.0}] and prof["centre"] == 50.0
    assert (prof["low"], prof["high"]) == (0.0, 150.0)
    narrow: Any = build("affinity", "a", {"w_popularity": 0.5, "price_band_abs": 0.0, "price_band_rel": 0.2})
    narrow.fit(events, seed=0, items=items)
    recs = narrow.for_users(pl.Series(["loyal"]), 9, exclude=seen)["item_id"].to_list()
    assert set(recs[:2]) == {"A4", "A5"} and set(recs[2:]) == {"Z1", "Z2", "Z3", "Z4"}  # 50 ± 20%: no A7
    related = gen.for_items(pl.Series(["A2"]), 3)["related_id"].to_list()
    assert related[0] in {"A1", "A3"} and "A6" not in related  # same brand, close price


def test_a_discount_hunter_gets_discounted_items_first() -> None:
    sale = [(f"D{k}", "Acme", 50.0, 80.0) for k in range(1, 6)]
    full = [(f"F{k}", "Acme", 50.0, 50.0) for k in range(1, 6)]
    bought = {"hunter": ["D1", "D2", "D3"]} | {f"n{k}": ["F1", "F2", "F3", "D1"][k % 2 :] for k in range(8)}
    events, items = shop(sale + full, bought, dict.fromkeys(["D1", "D2", "D3", "D4", "D5"], 50.0) | {
        f"F{k}": 50.0 for k in range(1, 6)})  # fmt: skip
    gen: Any = build("affinity", "a", {"w_popularity": 0.2})
    gen.fit(events, seed=0, items=items)
    seen = events.select("user_id", "item_id").unique()
    recs = gen.for_users(pl.Series(["hunter"]), 3, exclude=seen)["item_id"].to_list()
    assert recs[:2] == ["D4", "D5"]  # unseen by anyone, on sale; F4, F5 are not; F1–F3 are popular but seen
    full_price_first = gen.for_users(pl.Series(["hunter"]), 3)["item_id"].to_list()
    assert full_price_first[0].startswith("D")  # even without the exclusion, a sale item leads
    prof = gen.profiles().select("user_id", "discount_sensitive").rows()
    assert dict(prof)["hunter"] and not dict(prof)["n0"]


def test_prices_and_discounts_come_from_the_events_without_a_catalog() -> None:
    events = tiny_shop().with_columns(discount=pl.when(pl.col("item_id") == "z").then(5.0).otherwise(0.0))
    gen: Any = build("affinity", "a", {"w_popularity": 0.5})
    gen.fit(events, seed=0)  # no catalog: no brands or categories, so no candidates
    items = gen.tables["items"]
    assert items.filter(pl.col("item_id") == "z")["discount"].item() > 0.0
    assert items["price"].to_list() == [10.0] * items.height
    assert gen.for_users(pl.Series(["u5"]), 3).height == 0


def test_minimal_training_frames_are_enough() -> None:
    train = tiny_shop().select("user_id", "item_id", "event_type", "ts")
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "x", "y", "z", "p0"], "brand": ["A"] * 3 + ["Z"] * 4})
    gen: Any = build("affinity", "a", {})
    gen.fit(train, seed=0, items=catalog)
    assert set(gen.for_users(pl.Series(["u5"]), 2)["item_id"]) <= {"a", "b", "c", "p0"}


def test_unknown_params_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="price_band"):
        build("affinity", "a", {"price_band": 100})
    with pytest.raises(ConfigError, match="sensitive_at"):
        build("affinity", "a", {"sensitive_at": 2})


def test_sample_shop_preferences_are_recovered() -> None:
    events, items = sample_shop()
    truth = json.loads((SAMPLE / "ground_truth.json").read_text(encoding="utf-8"))
    gen: Any = build("affinity", "a", {})
    gen.fit(events, seed=42, items=items)
    recs = gen.for_users(events["user_id"].unique(), 10, exclude=events.select("user_id", "item_id").unique())
    r = recs.join(items.select("item_id", "brand", "category", "price", "original_price"), on="item_id")

    loyal = pl.DataFrame(
        {"user_id": list(truth["brand_loyal"]), "loyal_to": list(truth["brand_loyal"].values())}
    )
    brand_share = r.join(loyal, on="user_id").select((pl.col("brand") == pl.col("loyal_to")).mean()).item()
    sizes = loyal.join(items.group_by("brand").len(), left_on="loyal_to", right_on="brand")
    chance = sizes.select(pl.col("len").mean() / items.height).item()
    assert brand_share > 0.85 and brand_share > 8 * chance  # measured 0.96 against 0.06

    band = pl.DataFrame(
        {"user_id": list(truth["price_band"]), "lo": [b[0] for b in truth["price_band"].values()],
         "hi": [b[1] for b in truth["price_band"].values()]}
    ).join(loyal, on="user_id", how="anti")  # fmt: skip
    in_band = r.join(band, on="user_id").select(pl.col("price").is_between("lo", "hi").mean()).item()
    cross = band.join(items.select("price"), how="cross")
    chance = cross.select(pl.col("price").is_between("lo", "hi").mean()).item()
    assert in_band > 0.9 and in_band > chance + 0.15  # measured 0.97 against 0.72

    sale = r.with_columns(
        on_sale=pl.col("original_price") > pl.col("price"), hunter=pl.col("user_id").is_in(truth["discount_hunters"])
    ).group_by("hunter").agg(pl.col("on_sale").mean())  # fmt: skip
    hunters, others = (sale.filter(pl.col("hunter") == h)["on_sale"].item() for h in (True, False))
    assert hunters > 0.5 and hunters > 1.8 * others  # measured 0.65 against 0.30

    leaf = pl.DataFrame(
        {"user_id": list(truth["category_affinity"]), "leaf": list(truth["category_affinity"].values())}
    )
    same_leaf = r.join(leaf, on="user_id").select((pl.col("category") == pl.col("leaf")).mean()).item()
    assert same_leaf > 0.6  # measured 0.78
    prof = gen.profiles().join(loyal, on="user_id")
    top = prof.select(pl.col("brands").list.first().struct.field("name") == pl.col("loyal_to")).to_series()
    assert top.mean() > 0.95
