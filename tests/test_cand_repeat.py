"""``repeat`` (TIFU-KNN + repurchase cycles), ``personal`` (TopPersonal) and the cycle model ``_cycles``:
the shared contract, and known answers on hand-made purchase histories."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recctl.candidates import _cycles, repeat
from recctl.candidates.base import build
from recctl.data import basket_key
from tests.contract import GeneratorContract

T0 = datetime(2024, 3, 1, 10, 0)
SCHEMA = {
    "user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
    "session_id": pl.String, "order_id": pl.String,
}  # fmt: skip


def events(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Interaction frame from (user, item, days after T0[, order_id[, session_id[, event_type]]]) rows."""
    full = []
    for r in rows:
        user, item, days, order, session, etype = (*r, *([None] * (6 - len(r))))[:6]
        full.append((user, item, etype or "purchase", T0 + timedelta(days=days), session, order))
    df = pl.DataFrame(full, schema=SCHEMA, orient="row")
    return df.with_columns(
        value=pl.lit(None, pl.Float64), quantity=pl.lit(1.0), price=pl.lit(1.0), discount=pl.lit(0.0)
    )


def baskets(user: str, contents: list[list[str]], every: float = 1.0) -> list[tuple[Any, ...]]:
    """One order per basket, ``every`` days apart."""
    return [(user, item, j * every, f"{user}-o{j}") for j, b in enumerate(contents) for item in b]


def scores(recs: pl.DataFrame, user: str) -> dict[str, float]:
    return dict(recs.filter(pl.col("user_id") == user).select("item_id", "score").rows())


# ------------------------------------------------------------------------------------------- contract


class TestRepeat(GeneratorContract):
    kind = "repeat"
    params: ClassVar[dict[str, Any]] = {"neighbors": 3}


class TestRepeatViewsCosine(GeneratorContract):
    kind = "repeat"
    params: ClassVar[dict[str, Any]] = {
        "neighbors": 3, "event_types": ["view", "purchase"], "metric": "cosine", "chunk_users": 4,
    }  # fmt: skip


class TestPersonal(GeneratorContract):
    kind = "personal"


class TestPersonalViews(GeneratorContract):
    kind = "personal"
    params: ClassVar[dict[str, Any]] = {"event_types": ["view", "purchase"]}


# --------------------------------------------------------------------------------------------- cycles


def milk_weekly() -> pl.DataFrame:
    return events([("u", "milk", 7.0 * j, f"o{j}") for j in range(4)])


def test_weekly_buyer_has_a_seven_day_cycle() -> None:
    c = _cycles.purchase_cycles(milk_weekly(), None)
    row = c.user_item.row(0, named=True)
    assert (row["n_baskets"], row["user_gaps"]) == (4, 3)
    assert row["cycle_days"] == pytest.approx(7.0, abs=1e-9)
    assert row["log_sigma"] == pytest.approx(0.25)  # no spread: the floor
    assert c.item.row(0, named=True)["level"] == "item"
    assert c.as_of == T0 + timedelta(days=21, microseconds=1)


def test_due_peaks_at_the_cycle_and_overdue_decays_slower() -> None:
    c = _cycles.purchase_cycles(milk_weekly(), None)
    last = T0 + timedelta(days=21)

    def at(days: float) -> dict[str, Any]:
        return _cycles.due(c.user_item, last + timedelta(days=days)).row(0, named=True)

    assert at(3.5)["days_since"] == pytest.approx(3.5)
    on_time = at(7.0)
    assert on_time["due_ratio"] == pytest.approx(1.0) and on_time["due_score"] == pytest.approx(1.0)
    assert at(2.0)["due_score"] < 1.0 and at(20.0)["due_score"] < 1.0
    # the same distance in log days, early and late: late has z halved
    dist = math.log(20.5) - math.log(7.5)
    early_day = 7.5**2 / 20.5 - 0.5
    sigma = c.user_item["log_sigma"][0]
    assert at(early_day)["due_score"] == pytest.approx(math.exp(-0.5 * (dist / sigma) ** 2))
    assert at(20.0)["due_score"] == pytest.approx(math.exp(-0.5 * (dist / sigma / 2) ** 2))
    assert at(20.0)["due_score"] > at(early_day)["due_score"]
    assert 0.0 <= at(-3.0)["due_score"] <= 1.0  # a now before the last purchase does not fail


def test_items_back_off_to_their_category_then_the_global() -> None:
    ev = events(
        [("u", "milk", 7.0 * j, f"o{j}") for j in range(4)]
        + [("v", "nails", 0.0, "n0"), ("v", "nails", 30.0, "n1")]
        + [("w", "oat", 3.0, "w0"), ("w", "mystery", 3.0, "w0")]
    )
    catalog = pl.DataFrame(
        {
            "item_id": ["milk", "oat", "nails", "mystery"],
            "category": ["Food > Dairy", "Food > Dairy", "Tools", None],
        }
    )
    c = _cycles.purchase_cycles(ev, catalog, prior=5.0, min_sigma=0.25)
    mu_g = (3 * math.log(7) + math.log(30)) / 4
    mu_dairy = (3 * math.log(7) + 5 * mu_g) / 8
    item = {r["item_id"]: r for r in c.item.iter_rows(named=True)}
    assert item["oat"]["level"] == "category" and item["oat"]["n_gaps"] == 0
    assert item["oat"]["cycle_days"] == pytest.approx(math.exp(mu_dairy))
    assert item["mystery"]["level"] == "global"
    assert item["mystery"]["cycle_days"] == pytest.approx(math.exp(mu_g))
    assert item["milk"]["cycle_days"] == pytest.approx(math.exp((3 * math.log(7) + 5 * mu_dairy) / 8))
    assert min(r["log_sigma"] for r in item.values()) >= 0.25
    # the one-time buyer of oat carries the item's (category) cycle; the weekly buyer blends own and item
    ui = {(r["user_id"], r["item_id"]): r for r in c.user_item.iter_rows(named=True)}
    assert ui["w", "oat"]["user_gaps"] == 0
    assert ui["w", "oat"]["cycle_days"] == pytest.approx(item["oat"]["cycle_days"])
    mu_milk = math.log(item["milk"]["cycle_days"])
    # (with user_prior = 1 pseudo-gap: three own gaps of 7 days weigh 3 : 1 against the item's cycle)
    assert ui["u", "milk"]["cycle_days"] == pytest.approx(math.exp((3 * math.log(7) + mu_milk) / 4))


def test_same_day_purchases_count_once() -> None:
    ev = events(
        [("u", "milk", 0.0, "a"), ("u", "milk", 0.3, "b"), ("u", "milk", 7.0, "c"), ("u", "milk", 7.2, "d")]
    )
    row = _cycles.purchase_cycles(ev, None).user_item.row(0, named=True)
    assert (row["n_baskets"], row["user_gaps"]) == (2, 1)
    assert row["cycle_days"] == pytest.approx(7.0)  # the day's first purchase times the occasion
    assert row["last_ts"] == T0 + timedelta(days=7)


def test_basket_keys_order_then_session_then_day() -> None:
    ev = events([("u", "milk", 0.0, "o1", "s1"), ("u", "milk", 0.0, None, "s1"), ("u", "milk", 0.0)])
    keys = ev.select(basket_key())["basket"].to_list()
    assert keys == ["o:o1", "s:s1", "d:2024-03-01"]
    ev = events(
        [
            ("u", "milk", 0.5, "o1"), ("u", "milk", 2.0, "o1"),  # one order over two days: one basket
            ("u", "milk", 4.0, None, "s9"), ("u", "milk", 4.1, None, "s10"),  # two sessions, one day
            ("u", "milk", 9.0), ("u", "milk", 9.4),  # no ids: the calendar day
        ]
    )  # fmt: skip
    row = _cycles.purchase_cycles(ev, None).user_item.row(0, named=True)
    assert (row["n_baskets"], row["user_gaps"]) == (3, 2)


# --------------------------------------------------------------------------------------------- repeat

TIFU_HISTORY = baskets("A", [["a", "b"], ["a"], ["b", "c"], ["a", "c"]]) + baskets("B", [["a"], ["d"]])


def fit_repeat(ev: pl.DataFrame, **params: Any) -> Any:
    gen = build("repeat", "r", params)
    gen.fit(ev, seed=0)
    return gen


def test_tifu_weights_known_answer() -> None:
    gen = fit_repeat(events(TIFU_HISTORY), neighbors=0, cycle_weight=0.0)
    recs = gen.for_users(pl.Series(["A", "B"]), 10)
    # A: 4 baskets in 3 groups of sizes 1, 1, 2 (the older groups smaller)
    w0 = 1.0 * 0.6**2 / 3  # group 0: basket 0 alone
    w1 = 1.0 * 0.6**1 / 3  # group 1: basket 1 alone
    w2 = 0.9 / 2 * 0.6**0 / 3  # group 2, older basket
    w3 = 1.0 / 2 * 0.6**0 / 3  # group 2, newer basket
    expected = {"a": w0 + w1 + w3, "b": w0 + w2, "c": w2 + w3}
    assert scores(recs, "A") == pytest.approx(expected, abs=1e-12)
    # B: 2 baskets, fewer than groups: one basket per group, G = 2
    assert scores(recs, "B") == pytest.approx({"a": 0.6 / 2, "d": 1.0 / 2}, abs=1e-12)
    assert recs.filter(pl.col("user_id") == "A")["item_id"].to_list() == ["a", "c", "b"]


def test_group_sizes_when_they_do_not_divide() -> None:
    gen = fit_repeat(events(baskets("A", [["a"], ["b"], ["c"], ["d"], ["e"]])), neighbors=0, cycle_weight=0.0)
    got = scores(gen.for_users(pl.Series(["A"]), 10), "A")
    # 5 baskets in 3 groups: sizes 1, 2, 2
    expected = {"a": 0.36 / 3, "b": 0.9 / 2 * 0.6 / 3, "c": 1 / 2 * 0.6 / 3, "d": 0.9 / 2 / 3, "e": 1 / 2 / 3}
    assert got == pytest.approx(expected, abs=1e-12)


def test_alpha_one_ignores_neighbours() -> None:
    ev = events(TIFU_HISTORY)
    own = fit_repeat(ev, neighbors=0, cycle_weight=0.0).for_users(pl.Series(["A", "B"]), 10)
    alone = fit_repeat(ev, neighbors=1, alpha=1.0, cycle_weight=0.0).for_users(pl.Series(["A", "B"]), 10)
    assert alone.equals(own)


def test_neighbour_only_item_gets_the_neighbours_mean() -> None:
    ev = events(baskets("A", [["a", "b"], ["a"]]) + baskets("B", [["a", "z"]]) + baskets("C", [["z"]]))
    gen = fit_repeat(ev, neighbors=5, alpha=0.2, cycle_weight=0.0)  # capped at 2 = users − 1
    assert gen.neighbors.shape == (3, 2)
    got = scores(gen.for_users(pl.Series(["A"]), 10), "A")
    own_a, own_b = 0.6 / 2 + 1 / 2, 0.6 / 2  # A: 2 baskets, one per group
    assert got["z"] == pytest.approx(0.8 * (1.0 + 1.0) / 2)
    assert got["a"] == pytest.approx(0.2 * own_a + 0.8 * (1.0 + 0.0) / 2)
    assert got["b"] == pytest.approx(0.2 * own_b)


def due_history() -> pl.DataFrame:
    """Milk on days 0 and 7 (due again on day 14), bread on days 12 and 14 (just bought)."""
    return events(
        [
            ("u", "milk", 0.0, "o0"),
            ("u", "milk", 7.0, "o1"),
            ("u", "bread", 12.0, "o2"),
            ("u", "bread", 14.0, "o3"),
        ]
    )


def test_the_due_item_ranks_above_a_just_bought_one() -> None:
    flat = {"neighbors": 0, "groups": 1, "within_decay": 1.0}  # every basket weighs 1/4: milk = bread
    plain = fit_repeat(due_history(), cycle_weight=0.0, **flat).for_users(pl.Series(["u"]), 2)
    assert scores(plain, "u") == pytest.approx({"milk": 0.5, "bread": 0.5})
    assert plain["item_id"].to_list() == ["bread", "milk"]  # a tie: item id
    gen = fit_repeat(due_history(), cycle_weight=1.0, **flat)
    lifted = gen.for_users(pl.Series(["u"]), 2)
    assert lifted["item_id"].to_list() == ["milk", "bread"]
    due = gen.due(pl.Series(["u"])).row(0, named=True)
    assert scores(lifted, "u")["milk"] == pytest.approx(0.5 * (1 + due["due_score"]))


def test_due_columns_and_order() -> None:
    gen = fit_repeat(events(TIFU_HISTORY).vstack(due_history()), neighbors=0)
    out = gen.due(pl.Series(["u", "A", "nobody"]))
    assert out.columns == [
        "user_id", "item_id", "n_baskets", "last_ts", "cycle_days", "days_since", "due_ratio", "due_score",
    ]  # fmt: skip
    assert out["user_id"].to_list() == ["A"] * 3 + ["u"] * 2
    assert out.filter(pl.col("user_id") == "u")["item_id"].to_list() == ["milk", "bread"]
    assert out.group_by("user_id").agg(ok=(pl.col("due_score").diff() <= 0).all())["ok"].all()
    later = gen.due(pl.Series(["u"]), now=T0 + timedelta(days=24))
    assert later.filter(pl.col("item_id") == "bread")["days_since"][0] == pytest.approx(10.0)


def test_nearest_by_euclidean_and_cosine() -> None:
    # A = (1, 0); B = (0.1, 0): same direction, far in length; C = (0.8, 0.6): close in length, 37° off
    x = sp.csr_matrix(np.array([[1.0, 0.0], [0.1, 0.0], [0.8, 0.6]]))
    assert repeat.nearest(x, 1, "euclidean", 10)[0, 0] == 2
    assert repeat.nearest(x, 1, "cosine", 10)[0, 0] == 1
    ev = events(TIFU_HISTORY + baskets("C", [["c", "d"], ["a"]]) + baskets("D", [["b"]]))
    for metric in ("euclidean", "cosine"):
        recs = fit_repeat(ev, neighbors=2, metric=metric).for_users(pl.Series(["A", "B", "C", "D"]), 3)
        assert set(recs["user_id"]) == {"A", "B", "C", "D"}


def random_shop(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(25):
        n_baskets = int(rng.integers(1, 7))
        for j in range(n_baskets):
            for item in rng.choice(12, size=int(rng.integers(1, 4)), replace=False):
                rows.append((f"u{u:02d}", f"i{item:02d}", 3.0 * j + float(rng.random()), f"u{u}-{j}"))
    twin = [(("twin" + r[0]), *r[1:]) for r in rows if r[0] == "u03"]  # exact ties in distance
    return events(rows + twin)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunking_does_not_change_answers(metric: str) -> None:
    ev = random_shop(11)
    users = pl.Series(ev["user_id"].unique().sort())
    params = {"neighbors": 5, "metric": metric}
    one = fit_repeat(ev, chunk_users=1, **params)
    default = fit_repeat(ev, **params)
    assert np.array_equal(one.neighbors, default.neighbors)
    assert one.for_users(users, 6).equals(default.for_users(users, 6))
    assert default.for_users(users, 6).height == 6 * len(users)


def test_the_per_row_cut_gives_the_full_ranking_top() -> None:
    """for_users keeps each row's best n + (most excluded) scores in numpy before ranking: the same lists
    as ranking every scored item, with and without excluded items."""
    from recctl.candidates.base import rank_top

    ev = random_shop(5)
    users = pl.Series(ev["user_id"].unique().sort())
    gen = fit_repeat(ev, neighbors=4)
    rows = np.arange(len(gen.users))
    seen = ev.select("user_id", "item_id").unique().filter(pl.col("user_id").is_in(users.head(5).implode()))
    for exclude in (None, seen):
        full = rank_top(gen._scores(rows), 4, exclude)
        assert (
            gen.for_users(users, 4, exclude=exclude)
            .sort("user_id", "rank")
            .equals(full.sort("user_id", "rank"))
        )


def test_users_without_baskets_get_nothing() -> None:
    ev = events([*TIFU_HISTORY, ("V", "a", 1.0, None, "s1", "view")])
    recs = fit_repeat(ev, neighbors=1).for_users(pl.Series(["V", "nobody"]), 3)
    assert recs.height == 0 and recs.columns == ["user_id", "item_id", "score", "rank"]


# ------------------------------------------------------------------------------------------- personal


def personal_shop() -> pl.DataFrame:
    return events(
        [("u", "a", d) for d in (1.0, 2.0, 3.0)]
        + [("u", "c", 1.5), ("u", "c", 2.5), ("u", "b", 1.0), ("u", "d", 4.0)]
        + [("u", "z", 5.0, None, "s", "view")]  # a view: not a purchase
        + [(v, "z", 1.0) for v in ("v1", "v2", "v3")]
        + [(v, "y", 1.0) for v in ("v1", "v2")]
        + [("v1", "a", 1.0), ("v1", "x", 1.0)]
    )


def fit_personal(**params: Any) -> Any:
    gen = build("personal", "p", params)
    gen.fit(personal_shop(), seed=0)
    return gen


def test_personal_counts_then_recency_then_popular_fill() -> None:
    recs = fit_personal().for_users(pl.Series(["u"]), 7)
    # a ×3, c ×2, then d and b once each (d more recent); then popular z (3), y (2), x (1; a already listed)
    assert recs["item_id"].to_list() == ["a", "c", "d", "b", "z", "y", "x"]
    s = recs["score"].to_list()
    assert all(hi > lo for hi, lo in itertools.pairwise(s))
    assert min(s[:4]) > max(s[4:])


def test_personal_without_purchases_gets_the_popular_list() -> None:
    recs = fit_personal().for_users(pl.Series(["nobody"]), 3)
    assert recs["item_id"].to_list() == ["z", "a", "y"]  # a and y both 2 users: id order


def test_personal_exclude() -> None:
    exclude = pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "z"]})
    recs = fit_personal().for_users(pl.Series(["u"]), 5, exclude=exclude)
    assert recs["item_id"].to_list() == ["c", "d", "b", "y", "x"]


def test_personal_event_types() -> None:
    recs = fit_personal(event_types=["view"]).for_users(pl.Series(["u", "v1"]), 2)
    assert recs.filter(pl.col("user_id") == "u")["item_id"].to_list() == ["z"]  # the only item viewed
    assert recs.filter(pl.col("user_id") == "v1")["item_id"].to_list() == ["z"]
