"""recctl.rules: filters, business rules, diversity and pins after ranking, with known answers."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import recctl.rules as rules_mod
from recctl.config import RulesConfig, load_config
from recctl.errors import ConfigError, DataError
from recctl.rules import OUTPUT_SCHEMA, RulesResult, apply, catalog
from tests.conftest import ROOT

SAMPLE = ROOT / "sample_data"
NOW = datetime(2026, 6, 15, 12, 0)

CATALOG = pl.DataFrame(
    [
        ("milk", "Farm", "Grocery > Dairy > Milk", 1.5, True),
        ("cheese", "Farm", "Grocery > Dairy > Cheese", 6.0, True),
        ("oat", "Oaty", "Grocery > Dairy-free > Oat drink", 2.5, True),
        ("bread", "Baker", "Grocery > Bakery", 3.0, True),
        ("boots", "Valenti", "Women > Shoes > Boots", 250.0, True),
        ("sneakers", "Northwind", "Women > Shoes > Sneakers", 90.0, True),
        ("bag", "Valenti", "Women > Bags", 400.0, None),
        ("dress", "Northwind", "Women > Clothing > Dresses", 120.0, False),
        ("hero", "Northwind", "Women > Clothing > Coats", 300.0, True),
        ("nobrand", None, None, None, True),
    ],
    schema={"item_id": pl.String, "brand": pl.String, "category": pl.String, "price": pl.Float64,
            "in_stock": pl.Boolean},
    orient="row",
)  # fmt: skip
NO_HISTORY = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "event_type": pl.String,
                                  "ts": pl.Datetime("us")})  # fmt: skip


def recs(lists: dict[str, list[str]], scores: dict[str, float] | None = None) -> pl.DataFrame:
    """Each user's items in the given order, scores 1.0, 0.9, ... (or from ``scores``)."""
    rows = [
        (u, i, (scores or {}).get(i, round(1.0 - 0.1 * n, 6)))
        for u, items in lists.items()
        for n, i in enumerate(items)
    ]
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64}, orient="row"
    )


def events(*rows: tuple[str, str, str, datetime]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=NO_HISTORY.schema, orient="row")


def run(
    frame: pl.DataFrame,
    cfg: dict[str, Any] | None = None,
    *,
    history: pl.DataFrame = NO_HISTORY,
    k: int | None = None,
    now: datetime = NOW,
    items: pl.DataFrame = CATALOG,
) -> RulesResult:
    return apply(frame, history=history, items=items, cfg=RulesConfig.model_validate(cfg or {}), now=now, k=k)


def listing(res: RulesResult, user: str = "u1") -> list[str]:
    f = res.frame.filter(pl.col("user_id") == user)
    assert f["rank"].to_list() == list(range(1, f.height + 1))
    return f["item_id"].to_list()


def explained(res: RulesResult) -> dict[tuple[str, str], list[str]]:
    """(user, item) → its rules, for the rows that have any."""
    return {(u, i): r for u, i, r in res.frame.select("user_id", "item_id", "rules").iter_rows() if r}


# ---------------------------------------------------------------------------------------------- filters


def test_bought_hidden_out_of_stock_removed_and_counted() -> None:
    items = ["milk", "dress", "oat", "bag", "hero", "unknown-item"]
    frame = recs({"u1": items, "u2": items})
    history = events(
        ("u1", "milk", "purchase", NOW - timedelta(days=400)),
        ("u1", "oat", "hide", NOW - timedelta(days=1)),
        ("u1", "hero", "purchase", NOW - timedelta(days=1)),
        ("u1", "dress", "purchase", NOW - timedelta(days=1)),  # bought AND out of stock: counted as bought
        ("u1", "bag", "view", NOW - timedelta(days=1)),
        ("u2", "milk", "add_to_cart", NOW - timedelta(days=1)),
        ("u9", "bag", "purchase", NOW - timedelta(days=1)),  # someone not being ranked
    )
    res = run(frame, history=history)
    assert listing(res, "u1") == ["bag", "unknown-item"]  # in_stock null and not in the catalog: in stock
    assert listing(res, "u2") == ["milk", "oat", "bag", "hero", "unknown-item"]
    assert res.report["removed"] == {"bought": 3, "out_of_stock": 1, "hidden": 1}
    assert res.report["users"] == 2 and res.report["rows_in"] == 12 and res.report["rows_out"] == 7
    assert res.report["touched"] == {} and explained(res) == {}


def test_hide_event_types_are_configurable() -> None:
    frame = recs({"u1": ["milk", "oat", "bread"]})
    history = events(
        ("u1", "milk", "dislike", NOW),
        ("u1", "oat", "not_interested", NOW),
        ("u1", "bread", "wishlist_drop", NOW),
    )
    assert listing(run(frame, history=history)) == ["bread"]
    res = run(frame, {"hide_event_types": ["wishlist_drop"]}, history=history)
    assert listing(res) == ["milk", "oat"] and res.report["removed"] == {
        "bought": 0,
        "out_of_stock": 0,
        "hidden": 1,
    }


def test_filters_can_be_switched_off() -> None:
    frame = recs({"u1": ["milk", "dress", "oat"]})
    history = events(("u1", "milk", "purchase", NOW), ("u1", "oat", "hide", NOW))
    cfg = {"exclude_bought": False, "exclude_out_of_stock": False, "hide_event_types": []}
    res = run(frame, cfg, history=history)
    assert listing(res) == ["milk", "dress", "oat"] and res.report["removed"] == {}


def test_viewed_without_buying_is_off_by_default_then_counts_views() -> None:
    frame = recs({"u1": ["milk", "cheese", "bread", "oat"]})
    t = NOW - timedelta(days=2)
    history = events(
        ("u1", "milk", "view", t), ("u1", "milk", "view", t),
        ("u1", "cheese", "view", t),
        ("u1", "bread", "view", t), ("u1", "bread", "view", t), ("u1", "bread", "purchase", t),
        ("u1", "oat", "add_to_cart", t), ("u1", "oat", "add_to_cart", t),
    )  # fmt: skip
    assert listing(run(frame, history=history)) == ["milk", "cheese", "oat"]
    res = run(frame, {"exclude_viewed_times": 2}, history=history)
    assert listing(res) == ["cheese", "oat"]
    assert res.report["removed"] == {"bought": 1, "viewed": 1, "out_of_stock": 0, "hidden": 0}


@pytest.mark.parametrize(
    ("days", "kept"),
    [(1.0, []), (2.99, []), (3.0, ["milk", "cheese"]), (10.0, ["milk", "cheese"])],
)
def test_repurchase_after_min_days_for_matching_prefixes_only(days: float, kept: list[str]) -> None:
    """'Grocery > Dairy' covers milk and cheese, not 'Grocery > Dairy-free' (oat) nor the bakery."""
    frame = recs({"u1": ["milk", "oat", "cheese", "bread"]})
    history = events(
        *[("u1", i, "purchase", NOW - timedelta(days=days)) for i in ("milk", "oat", "cheese", "bread")]
    )
    res = run(frame, {"repurchase": [{"category": "grocery >dairy", "min_days": 3}]}, history=history)
    assert listing(res) == kept
    assert explained(res) == {("u1", i): ["repurchase: grocery >dairy"] for i in kept}
    assert res.report["removed"]["bought"] == 4 - len(kept)


def test_repurchase_counts_from_the_last_purchase_and_the_longest_prefix_decides() -> None:
    frame = recs({"u1": ["milk", "bread", "boots"]})
    history = events(
        ("u1", "milk", "purchase", NOW - timedelta(days=40)),
        ("u1", "milk", "purchase", NOW - timedelta(days=10)),  # the last purchase counts
        ("u1", "bread", "purchase", NOW - timedelta(days=10)),
        ("u1", "boots", "purchase", NOW - timedelta(days=100)),
    )
    entries = [{"category": "Grocery", "min_days": 1}, {"category": "Grocery > Dairy", "min_days": 20}]
    res = run(frame, {"repurchase": entries}, history=history)
    assert listing(res) == ["bread"]  # milk: its 20 days apply (not Grocery's 1); boots: no entry
    res = run(frame, {"repurchase": entries, "allow_repurchase_all_after_days": 60}, history=history)
    assert listing(res) == ["bread", "boots"]
    assert explained(res) == {
        ("u1", "bread"): ["repurchase: Grocery"],
        ("u1", "boots"): ["repurchase: after 60 days"],
    }


# ------------------------------------------------------------------------------------------ business rules


def test_exclude_rules_match_all_criteria_and_are_counted_per_rule() -> None:
    frame = recs({"u1": ["milk", "cheese", "oat", "bread", "boots", "sneakers", "bag", "nobrand"]})
    cfg = {
        "exclude_out_of_stock": False,
        "business": [
            {
                "name": "no-valenti-bags",
                "action": "exclude",
                "brands": ["VALENTI "],
                "categories": ["women > bags"],
            },
            {"name": "cheap-dairy", "action": "exclude", "categories": ["Grocery > Dairy"], "price_max": 2.0},
            {"name": "mid-price", "action": "exclude", "price_min": 90, "price_max": 250},
            {"name": "by-id", "action": "exclude", "items": ["oat", "sneakers", "ghost"]},
        ],
    }
    res = run(frame, cfg)
    assert listing(res) == ["cheese", "bread", "nobrand"]
    # sneakers match both mid-price and by-id: counted under the first
    assert res.report["removed"] == {"bought": 0, "hidden": 0, "exclude: no-valenti-bags": 1,
                                     "exclude: cheap-dairy": 1, "exclude: mid-price": 2, "exclude: by-id": 1}  # fmt: skip


def test_users_limit_a_rule() -> None:
    frame = recs({"u1": ["milk", "bread"], "u2": ["milk", "bread"]})
    res = run(frame, {"business": [{"name": "x", "action": "exclude", "items": ["milk"], "users": ["u2"]}]})
    assert listing(res, "u1") == ["milk", "bread"] and listing(res, "u2") == ["bread"]


def test_boost_and_bury_reorder_and_label_exactly_the_matches() -> None:
    frame = recs(
        {"u1": ["boots", "milk", "bread", "sneakers"]},
        {"boots": 1.0, "milk": 0.5, "bread": 0.2, "sneakers": -1.0},
    )
    cfg = {
        "business": [
            {"name": "bakery", "action": "boost", "categories": ["Grocery > Bakery"], "factor": 10},
            {"name": "northwind", "action": "boost", "brands": ["northwind"], "factor": 4},
            {"name": "pricey", "action": "bury", "price_min": 200, "factor": 4},
        ]
    }
    res = run(frame, cfg)
    assert listing(res) == ["bread", "milk", "boots", "sneakers"]
    assert dict(res.frame.select("item_id", "score").iter_rows()) == {
        "bread": 2.0, "milk": 0.5, "boots": 0.25, "sneakers": -0.25  # a boost divides a negative score
    }  # fmt: skip
    assert explained(res) == {("u1", "bread"): ["boost: bakery"], ("u1", "boots"): ["bury: pricey"],
                              ("u1", "sneakers"): ["boost: northwind"]}  # fmt: skip
    assert res.report["touched"] == {"boost: bakery": 1, "bury: pricey": 1, "boost: northwind": 1}


def test_boosts_compound() -> None:
    frame = recs({"u1": ["milk", "cheese"]}, {"milk": 1.0, "cheese": 0.1})
    cfg = {"business": [{"name": "a", "action": "boost", "brands": ["Farm"], "factor": 2},
                        {"name": "b", "action": "boost", "items": ["cheese"], "factor": 6}]}  # fmt: skip
    res = run(frame, cfg)
    assert res.frame["score"].to_list() == pytest.approx([2.0, 1.2]) and listing(res) == ["milk", "cheese"]
    assert explained(res)[("u1", "cheese")] == ["boost: a", "boost: b"]


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (datetime(2026, 5, 31, 23, 59), False),
        (datetime(2026, 6, 1, 0, 0), True),
        (datetime(2026, 6, 30, 23, 59), True),
        (datetime(2026, 7, 1, 0, 0), False),
        (datetime(2026, 7, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), True),  # 23:00 UTC the day before
    ],
)
def test_date_windows(now: datetime, active: bool) -> None:
    frame = recs({"u1": ["milk", "bread"]})
    window = {"start": datetime(2026, 6, 1), "end": datetime(2026, 7, 1)}
    cfg = {"business": [{"name": "sale", "action": "boost", "items": ["bread"], "factor": 3, **window},
                        {"name": "gone", "action": "exclude", "items": ["milk"], **window}]}  # fmt: skip
    res = run(frame, cfg, now=now)
    assert listing(res) == (["bread"] if active else ["milk", "bread"])
    assert ("exclude: gone" in res.report["removed"]) is active


def test_window_with_a_zone_is_compared_in_utc() -> None:
    start = datetime(2026, 6, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))  # 12:00 UTC = NOW
    cfg = {"business": [{"name": "x", "action": "exclude", "items": ["milk"], "start": start}]}
    assert listing(run(recs({"u1": ["milk"]}), cfg)) == []
    assert listing(run(recs({"u1": ["milk"]}), cfg, now=NOW - timedelta(seconds=1))) == ["milk"]


# --------------------------------------------------------------------------------------------------- pins


ABC = ["milk", "cheese", "oat", "bread", "boots", "sneakers"]


def pin(name: str, items: list[str], position: int, **more: Any) -> dict[str, Any]:
    return {"name": name, "action": "pin", "items": items, "position": position, **more}


@pytest.mark.parametrize(
    ("pins", "expected"),
    [
        ([pin("p", ["boots"], 2)], ["milk", "boots", "cheese", "oat", "bread", "sneakers"]),
        (
            [pin("p", ["milk"], 3)],
            ["cheese", "oat", "milk", "bread", "boots", "sneakers"],
        ),  # pins move down too
        ([pin("p", ["bread"], 50)], ["milk", "cheese", "oat", "boots", "sneakers", "bread"]),  # past the end
        ([pin("p", ["sneakers", "boots"], 2)], ["milk", "sneakers", "boots", "cheese", "oat", "bread"]),
        (
            [pin("p", ["oat"], 1), pin("q", ["bread"], 1)],
            ["oat", "bread", "milk", "cheese", "boots", "sneakers"],
        ),
        (
            [pin("p", ["oat"], 2), pin("q", ["oat"], 5)],
            ["milk", "oat", "cheese", "bread", "boots", "sneakers"],
        ),
        ([pin("p", ["dress", "boots"], 1)], ["boots", "milk", "cheese", "oat", "bread", "sneakers"]),
    ],
)
def test_pin_to_position(pins: list[dict[str, Any]], expected: list[str]) -> None:
    res = run(recs({"u1": ABC}), {"business": pins})
    assert listing(res) == expected
    pinned = {i for p in pins for i in p["items"]} & set(ABC)
    assert set(explained(res)) == {("u1", i) for i in pinned}


def test_pin_add_if_missing() -> None:
    frame = recs({"u1": ["milk", "cheese"], "u2": ["milk", "hero", "cheese"], "u3": ["milk"], "u4": ["milk"]})
    history = events(("u3", "hero", "purchase", NOW - timedelta(days=1)))
    cfg = {"business": [pin("hero", ["hero", "dress", "not-in-catalog"], 1, add_if_missing=True,
                            users=["u1", "u2", "u3"])]}  # fmt: skip
    res = run(frame, cfg, history=history)
    assert listing(res, "u1") == [
        "hero",
        "milk",
        "cheese",
    ]  # added (dress is out of stock, the other unknown)
    assert listing(res, "u2") == ["hero", "milk", "cheese"]  # proposed, moved up
    assert listing(res, "u3") == ["milk"]  # bought: filters win over pins
    assert listing(res, "u4") == ["milk"]  # not one of the rule's users
    assert explained(res) == {("u1", "hero"): ["pinned: hero (added)"], ("u2", "hero"): ["pinned: hero"]}
    row = res.frame.filter(pl.col("user_id") == "u1", pl.col("item_id") == "hero")
    assert row["score"].to_list() == [None] and row["rank"].to_list() == [1]
    assert res.report["removed"] == {
        "bought": 0,
        "out_of_stock": 0,
        "hidden": 0,
    }  # additions are not removals
    assert res.report["touched"] == {"pinned: hero (added)": 1, "pinned: hero": 1}
    without = run(frame, {"business": [pin("hero", ["hero"], 1)]}, history=history)
    assert listing(without, "u1") == ["milk", "cheese"]


def test_pins_count_towards_k() -> None:
    res = run(recs({"u1": ABC}), {"business": [pin("p", ["boots"], 1), pin("q", ["bread"], 4)]}, k=3)
    assert listing(res) == ["boots", "milk", "cheese"]
    assert res.report["removed"]["beyond k"] == 3


# ---------------------------------------------------------------------------------------------- diversity


DIV = pl.DataFrame(
    [
        ("a1", "A", "W > Shoes > Boots"), ("a2", "A", "W > Shoes > Boots"), ("a3", "A", "W > Shoes > Sneakers"),
        ("b1", "B", "W > Shoes > Sneakers"), ("a4", "A", "W > Bags"), ("c1", "C", "W > Bags"),
        ("n1", None, "W > Bags"), ("n2", None, "W > Bags"),
    ],
    schema={"item_id": pl.String, "brand": pl.String, "category": pl.String},
    orient="row",
)  # fmt: skip


def div(items: list[str], diversity: dict[str, Any], k: int | None = None, **cfg: Any) -> RulesResult:
    return run(recs({"u1": items}), {"diversity": diversity, **cfg}, items=DIV, k=k)


def test_brand_cap_within_k() -> None:
    res = div(["a1", "a2", "a3", "b1", "a4", "c1"], {"max_per_brand": 2}, k=4)
    assert listing(res) == ["a1", "a2", "b1", "c1"]
    assert explained(res) == {} and res.report["removed"]["beyond k"] == 2


def test_over_the_cap_moves_down_not_out() -> None:
    res = div(["a1", "a2", "a3", "b1", "a4", "c1"], {"max_per_brand": 2})  # window: the whole list
    assert listing(res) == ["a1", "a2", "b1", "c1", "a3", "a4"]
    label = ["diversity: moved down (brand cap 2)"]
    assert explained(res) == {("u1", "a3"): label, ("u1", "a4"): label}
    res = div(["a1", "a2", "a3", "b1"], {"max_per_brand": 1}, k=3)  # too few other brands: a2 fills the list
    assert listing(res) == ["a1", "b1", "a2"]
    assert explained(res) == {("u1", "a2"): ["diversity: moved down (brand cap 1)"]}
    res = div(["a1", "a2", "a3"], {"max_per_brand": 1}, k=3)  # one brand only: nothing moves
    assert listing(res) == ["a1", "a2", "a3"] and explained(res) == {}


def test_category_cap_at_a_depth_and_both_caps() -> None:
    items = ["a1", "a3", "b1", "a4", "c1"]
    assert listing(div(items, {"max_per_category": 1})) == ["a1", "a3", "a4", "b1", "c1"]  # whole path
    res = div(items, {"max_per_category": 1, "category_depth": 2})  # W > Shoes / W > Bags
    assert listing(res) == ["a1", "a4", "a3", "b1", "c1"]
    res = div(["a1", "a2", "a3", "c1", "b1"], {"max_per_brand": 1, "max_per_category": 1})
    assert listing(res) == ["a1", "c1", "b1", "a2", "a3"]
    assert explained(res) == {
        ("u1", "a2"): ["diversity: moved down (brand cap 1, category cap 1)"],
        ("u1", "a3"): ["diversity: moved down (brand cap 1)"],
    }


def test_items_without_a_brand_are_not_capped_and_window_limits_the_caps() -> None:
    assert listing(div(["n1", "n2", "a1"], {"max_per_brand": 1})) == ["n1", "n2", "a1"]
    res = div(["a1", "a2", "b1", "a3", "a4", "c1"], {"max_per_brand": 1, "window": 2})
    assert listing(res) == ["a1", "b1", "a2", "a3", "a4", "c1"]  # below the window the order stays


def test_mmr_with_lambda_one_is_the_input_order() -> None:
    rng = np.random.default_rng(3)
    items = DIV["item_id"].to_list()
    scores = dict(zip(items, rng.random(len(items)).tolist(), strict=True))
    res = run(recs({"u1": items, "u2": items[::-1]}, scores), {"diversity": {"mmr": True, "mmr_lambda": 1.0}},
              items=DIV)  # fmt: skip
    by_score = sorted(items, key=lambda i: -scores[i])
    assert listing(res, "u1") == by_score and listing(res, "u2") == by_score and explained(res) == {}


def test_mmr_prefers_a_different_item_second() -> None:
    scores = {"a1": 1.0, "a2": 0.95, "b1": 0.5, "c1": 0.4}
    res = run(recs({"u1": ["a1", "a2", "b1", "c1"]}, scores), {"diversity": {"mmr": True, "mmr_lambda": 0.3}},
              items=DIV, k=3)  # fmt: skip
    # relevance 1, .917, .167, 0. Similarity to a1: a2 1 (same brand and path), b1 .5·⅔ (W > Shoes),
    # c1 .5·⅓ (W). Second: a2 .3·.917 − .7·1 = −.425, b1 .05 − .7·.333 = −.183, c1 0 − .7·.167 = −.117 → c1;
    # third: b1 (its similarity to c1, .167, is below that to a1) before a2.
    assert listing(res) == ["a1", "c1", "b1"]
    assert explained(res) == {("u1", "c1"): ["diversity: mmr"]}  # b1 kept its rank


@pytest.mark.parametrize("seed", range(6))
def test_caps_and_pins_agree_with_a_plain_python_reference(seed: int) -> None:
    """Random lists, caps and pins against a loop-per-customer implementation of the documented rules."""
    rng = np.random.default_rng(seed)
    n_items = 40
    items = pl.DataFrame({
        "item_id": [f"i{j:02d}" for j in range(n_items)],
        "brand": [None if j % 11 == 0 else f"b{j % 4}" for j in range(n_items)],
        "category": [f"c{j % 3} > s{j % 5}" for j in range(n_items)],
    })  # fmt: skip
    brand = dict(zip(items["item_id"], items["brand"], strict=True))
    cat = dict(zip(items["item_id"], items["category"], strict=True))
    lists = {f"u{u}": list(rng.choice(items["item_id"].to_list(), int(rng.integers(0, 25)), replace=False))
             for u in range(30)}  # fmt: skip
    scores = {(u, i): float(rng.integers(0, 6)) for u, lst in lists.items() for i in lst}  # ties on purpose
    frame = pl.DataFrame([(u, i, scores[u, i]) for u, lst in lists.items() for i in lst],
                         schema=["user_id", "item_id", "score"], orient="row")  # fmt: skip
    pins = [pin("p", [f"i{j:02d}" for j in rng.choice(n_items, 3, replace=False)], int(rng.integers(1, 6))),
            pin("q", [f"i{j:02d}" for j in rng.choice(n_items, 2, replace=False)], int(rng.integers(1, 6)))]  # fmt: skip
    cap_b, cap_c, k = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(3, 12))
    res = run(frame, {"business": pins, "diversity": {"max_per_brand": cap_b, "max_per_category": cap_c}},
              items=items, k=k)  # fmt: skip

    for u, lst in lists.items():
        ranked = sorted(lst, key=lambda i: -scores[u, i])  # stable: ties keep the input order
        pin_of = {}
        for r, p in enumerate(pins):
            for j, item in enumerate(p["items"]):
                pin_of.setdefault(item, (p["position"] - 1, r, j))
        rest = [i for i in ranked if i not in pin_of]
        taken: list[str] = []
        for i in rest:
            if len(taken) == k:
                break
            nb = sum(1 for t in taken if brand[i] is not None and brand[t] == brand[i])
            nc = sum(1 for t in taken if cat[t] == cat[i])
            if nb < cap_b and nc < cap_c:
                taken.append(i)
        final = taken + [i for i in rest if i not in taken]
        e = -1
        for i in sorted((i for i in ranked if i in pin_of), key=lambda i: pin_of[i]):
            e = max(pin_of[i][0], e + 1)
            final.insert(min(e, len(final)), i)
        assert listing(res, u) == final[:k], u


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8])
def test_mmr_agrees_with_a_plain_python_reference(lam: float) -> None:
    rng = np.random.default_rng(int(lam * 10))
    paths = ["a > b > c", "a > b > d", "a > e", "f", "f > g > h > i", None]
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(30)],
                          "brand": [None if j % 7 == 0 else f"b{j % 3}" for j in range(30)],
                          "category": [paths[j % len(paths)] for j in range(30)]})  # fmt: skip
    brand = dict(zip(items["item_id"], items["brand"], strict=True))
    levels = {
        i: (c.split(" > ") if c else []) for i, c in zip(items["item_id"], items["category"], strict=True)
    }
    lists = {f"u{u}": list(rng.choice(items["item_id"].to_list(), 12, replace=False)) for u in range(8)}
    scores = {(u, i): float(rng.random()) for u, lst in lists.items() for i in lst}
    frame = pl.DataFrame([(u, i, scores[u, i]) for u, lst in lists.items() for i in lst],
                         schema=["user_id", "item_id", "score"], orient="row")  # fmt: skip
    k = 6
    res = run(
        frame, {"diversity": {"mmr": True, "mmr_lambda": lam, "mmr_brand_weight": 0.4}}, items=items, k=k
    )

    def sim(x: str, y: str) -> float:
        same = brand[x] is not None and brand[x] == brand[y]
        shared = 0
        for a, b in zip(levels[x], levels[y], strict=False):
            if a != b:
                break
            shared += 1
        longer = max(len(levels[x]), len(levels[y]), 1)
        return 0.4 * same + 0.6 * shared / longer

    n_reordered = 0
    for u, lst in lists.items():
        s = {i: scores[u, i] for i in lst}
        lo, hi = min(s.values()), max(s.values())
        rel = {i: (v - lo) / (hi - lo) for i, v in s.items()}
        left = sorted(lst, key=lambda i: -s[i])
        got = listing(res, u)
        assert len(got) == k and set(got) <= set(lst)
        for t, pick in enumerate(got):  # each pick maximises the MMR value given the earlier ones
            value = {i: lam * rel[i] - (1 - lam) * max((sim(i, c) for c in got[:t]), default=0) for i in left}
            assert value[pick] >= max(value.values()) - 1e-5, (u, t)
            left.remove(pick)
        n_reordered += got != sorted(lst, key=lambda i: -s[i])[:k]
    assert n_reordered > 0


# -------------------------------------------------------------------------------------- apply as a whole


def test_report_and_explanations_on_a_mixed_case() -> None:
    frame = recs(
        {"u1": ["milk", "cheese", "oat", "bread", "boots", "sneakers", "bag", "dress"], "u2": ["milk"]}
    )
    history = events(
        ("u1", "milk", "purchase", NOW - timedelta(days=5)),
        ("u1", "boots", "purchase", NOW - timedelta(days=5)),
        ("u1", "oat", "hide", NOW),
    )
    cfg = {
        "repurchase": [{"category": "Grocery > Dairy", "min_days": 3}],
        "business": [
            {"name": "no-bags", "action": "exclude", "categories": ["Women > Bags"]},
            {"name": "sale", "action": "boost", "brands": ["Northwind"], "factor": 10},
            pin("hero", ["hero"], 2, add_if_missing=True),
        ],
        "diversity": {"max_per_brand": 1},
    }
    res = run(frame, cfg, history=history, k=4)
    # u1 after filters: milk (repurchase) cheese bread sneakers(×10 → 5.0); farm cap 1 moves cheese down
    assert listing(res, "u1") == ["sneakers", "hero", "milk", "bread"]
    assert listing(res, "u2") == ["milk", "hero"]
    assert explained(res) == {
        ("u1", "sneakers"): ["boost: sale"],
        ("u1", "hero"): ["pinned: hero (added)"],
        ("u1", "milk"): ["repurchase: Grocery > Dairy"],
        ("u2", "hero"): ["pinned: hero (added)"],
    }
    assert res.report == {
        "users": 2,
        "rows_in": 9,
        "rows_out": 6,
        "removed": {"bought": 1, "out_of_stock": 1, "hidden": 1, "exclude: no-bags": 1, "beyond k": 1},
        "touched": {"pinned: hero (added)": 2, "boost: sale": 1, "repurchase: Grocery > Dairy": 1},
    }


def test_output_schema_extra_columns_and_customer_order() -> None:
    frame = recs({"zed": ["milk", "bread"], "amy": ["bread", "milk"]}).with_columns(
        rank=pl.lit(7, pl.Int64), sources=pl.lit(["ials"]), rules=pl.lit("old")
    )
    res = run(frame, k=1)
    assert res.frame.schema == pl.Schema(
        {**OUTPUT_SCHEMA, "sources": pl.List(pl.String), "rules": pl.List(pl.String)}
    )
    assert res.frame.select("user_id", "item_id", "rank").rows() == [("zed", "milk", 1), ("amy", "bread", 1)]
    assert res.frame["sources"].to_list() == [["ials"], ["ials"]]


def test_empty_input_gives_an_empty_frame_with_the_schema() -> None:
    empty = recs({}).with_columns(extra=pl.lit(1.0))
    cfg = {
        "business": [pin("hero", ["hero"], 1, add_if_missing=True)],
        "diversity": {"mmr": True, "max_per_brand": 2},
    }
    res = run(empty, cfg, k=10)
    assert res.frame.height == 0
    assert res.frame.schema == pl.Schema({**OUTPUT_SCHEMA, "extra": pl.Float64, "rules": pl.List(pl.String)})
    assert res.report["users"] == 0 and res.report["rows_out"] == 0


def test_unknown_users_and_items() -> None:
    frame = recs({"new-visitor": ["ghost-1", "milk", "ghost-2"]})
    cfg = {"business": [{"name": "b", "action": "boost", "brands": ["Farm"], "factor": 2}],
           "diversity": {"max_per_brand": 1, "max_per_category": 1, "mmr": True}}  # fmt: skip
    history = events(("someone", "milk", "purchase", NOW))
    res = run(frame, cfg, history=history, items=CATALOG.head(0))  # an empty catalog: nothing known
    assert listing(res, "new-visitor") == ["ghost-1", "milk", "ghost-2"] and explained(res) == {}


def test_bad_input() -> None:
    with pytest.raises(DataError, match="score"):
        run(pl.DataFrame({"user_id": ["u"], "item_id": ["i"]}))
    with pytest.raises(ValueError, match="k must be"):
        run(recs({"u1": ["milk"]}), k=0)


def test_a_prepared_catalog_gives_the_same_answer() -> None:
    """rules.catalog(items, cfg) built once (serving) is looked up instead of derived on every call."""
    frame = recs({"u1": ["milk", "ghost", "dress", "boots", "sneakers", "bag"], "u2": ["bread", "oat"]})
    history = events(("u1", "boots", "purchase", NOW - timedelta(days=1)))
    cfg = {"business": [pin("hero", ["hero"], 2, add_if_missing=True),
                        {"name": "b", "action": "boost", "brands": ["Valenti"], "factor": 5}],
           "diversity": {"max_per_brand": 1, "mmr": True, "mmr_lambda": 0.9}}  # fmt: skip
    raw = run(frame, cfg, history=history, k=4)
    prepared = run(frame, cfg, history=history, k=4, items=catalog(CATALOG, RulesConfig.model_validate(cfg)))
    assert prepared.frame.equals(raw.frame) and prepared.report == raw.report
    assert listing(raw, "u1") == ["bag", "hero", "milk", "ghost"]
    with pytest.raises(ValueError, match="another rules configuration"):
        run(frame, {}, items=catalog(CATALOG, RulesConfig.model_validate(cfg)))


def test_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    items = CATALOG["item_id"].to_list()
    frame = pl.DataFrame(
        {"user_id": np.repeat([f"u{u}" for u in range(40)], len(items)), "item_id": items * 40,
         "score": rng.normal(size=40 * len(items))}
    )  # fmt: skip
    history = events(*[(f"u{u}", items[u % 10], "purchase", NOW - timedelta(days=u)) for u in range(40)])
    cfg = {"repurchase": [{"category": "Grocery", "min_days": 20}],
           "business": [pin("hero", ["hero"], 2), {"name": "b", "action": "bury", "brands": ["Farm"], "factor": 3}],
           "diversity": {"max_per_brand": 1, "mmr": True}}  # fmt: skip
    whole = run(frame, cfg, history=history, k=5)
    monkeypatch.setattr(rules_mod, "CHUNK_ROWS", 37)
    chunked = run(frame, cfg, history=history, k=5)
    assert chunked.frame.equals(whole.frame) and chunked.report == whole.report
    assert whole.frame["user_id"].unique(maintain_order=True).to_list() == [f"u{u}" for u in range(40)]


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "promote", "items": ["x"]}, "'rules.business.0.action'"),
        ({"action": "boost", "items": ["x"]}, "action boost needs factor"),
        ({"action": "bury", "items": ["x"], "factor": 0.5}, "'rules.business.0.factor'"),
        ({"action": "pin", "items": ["x"]}, "action pin needs position"),
        ({"action": "pin", "position": 1, "brands": ["b"]}, "action pin needs items"),
        ({"action": "exclude", "items": ["x"], "factor": 2}, "factor is only for actions boost and bury"),
        ({"action": "exclude"}, "give at least one of brands"),
        ({"action": "exclude", "items": ["x"], "start": datetime(2026, 2, 1), "end": datetime(2026, 1, 1)},
         "start .* is not before end"),
        ({"action": "exclude", "items": ["x"], "segment": "v i p"}, "'rules.business.0.segment'"),
        ({"action": "exclude", "items": ["x"], "colour": "red"}, "unknown key 'rules.business.0.colour'"),
        ({"action": "exclude", "price_min": 10, "price_max": 5}, "price_min is above price_max"),
    ],
)  # fmt: skip
def test_bad_rules_name_the_key(tmp_path: Path, rule: dict[str, Any], message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[[rules.business]]\nname = 'r'\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in rule.items()))
    with pytest.raises(ConfigError, match=message):
        load_config(f, environ={})


def test_other_bad_rules_config(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[[rules.business]]\nname='a'\naction='exclude'\nitems=['x']\n[[rules.business]]\nname='a'\n"
                 "action='exclude'\nitems=['y']\n")  # fmt: skip
    with pytest.raises(ConfigError, match="rule names must be unique"):
        load_config(f, environ={})
    f.write_text("[[rules.repurchase]]\ncategory = 'Grocery'\nmin_days = -1\n")
    with pytest.raises(ConfigError, match=re.escape("'rules.repurchase.0.min_days'")):
        load_config(f, environ={})
    f.write_text("[rules.diversity]\nmmr_lambda = 1.5\n")
    with pytest.raises(ConfigError, match=re.escape("'rules.diversity.mmr_lambda'")):
        load_config(f, environ={})


def test_shipped_examples_are_valid() -> None:
    """Uncommenting the [[rules.*]] examples of configs/recctl.toml gives a valid config."""
    text = (ROOT / "configs" / "recctl.toml").read_text()
    section = text[text.index("[rules]") : text.index("[evaluate]")]
    lines = [
        ln[2:] if re.match(r"# (\[\[rules\.[a-z]+\]\]$|[a-z_]+ = \S)", ln) else ln
        for ln in section.splitlines()
    ]
    cfg = RulesConfig.model_validate(tomllib.loads("\n".join(lines))["rules"])
    assert [r.action for r in cfg.business] == ["boost", "pin"] and cfg.repurchase[0].min_days == 3
    assert cfg.allow_repurchase_all_after_days == 90 and cfg.business[0].active(
        datetime(2026, 7, 1, tzinfo=UTC)
    )


def _toml(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


# ---------------------------------------------------------------------------------------- the sample shop


def test_sample_shop_no_bought_or_out_of_stock_item_survives() -> None:
    raw = pl.read_csv(SAMPLE / "events.csv.gz", schema_overrides={"order_id": pl.String})
    kinds = {"pageview": "view", "addtocart": "add_to_cart", "purchase": "purchase"}
    history = raw.filter(pl.col("product_id").is_not_null() & pl.col("action").is_in(list(kinds))).select(
        user_id="visitor_id",
        item_id="product_id",
        event_type=pl.col("action").replace_strict(kinds),
        ts=pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ"),
    )
    items = pl.read_ndjson(SAMPLE / "items.ndjson").select(
        item_id="sku", brand="brand", category="category", price="price", in_stock="in_stock"
    )
    buyers = history.filter(pl.col("event_type") == "purchase")["user_id"].unique().sort().head(300)
    rng = np.random.default_rng(1)
    frame = pl.DataFrame(
        {"user_id": np.repeat(buyers.to_numpy(), items.height), "item_id": np.tile(items["item_id"].to_numpy(), 300),
         "score": rng.random(300 * items.height)}
    )  # fmt: skip
    now = history["ts"].max() + timedelta(days=1)  # type: ignore[operator]
    purchases = history.filter(pl.col("event_type") == "purchase", pl.col("user_id").is_in(buyers.implode()))
    bought = purchases.select("user_id", "item_id").unique()
    out_of_stock = items.filter(~pl.col("in_stock"))
    assert out_of_stock.height > 0 and bought.height > 300

    res = apply(frame, history=history, items=items, cfg=RulesConfig(), now=now, k=50)
    assert res.frame.height == 300 * 50
    assert res.frame.join(bought, on=["user_id", "item_id"], how="semi").height == 0
    assert res.frame.join(out_of_stock, on="item_id", how="semi").height == 0
    assert (
        res.report["removed"]["bought"] == bought.height
    )  # bought comes first: bought and out of stock counts there

    # with a repurchase entry, bought items come back only under its prefix and only after min_days
    prefix = items["category"].drop_nulls().sort()[0].split(" > ")[0]
    cfg = RulesConfig.model_validate({"repurchase": [{"category": prefix, "min_days": 30}]})
    again = apply(frame, history=history, items=items, cfg=cfg, now=now)
    back = again.frame.join(bought, on=["user_id", "item_id"], how="semi").join(items, on="item_id")
    assert back.height > 0 and back["category"].str.starts_with(prefix + " > ").all()
    last = purchases.group_by("user_id", "item_id").agg(pl.col("ts").max())
    assert (back.join(last, on=["user_id", "item_id"])["ts"] <= now - timedelta(days=30)).all()
    assert back["rules"].to_list() == [[f"repurchase: {prefix}"]] * back.height
    assert again.frame.join(out_of_stock, on="item_id", how="semi").height == 0
