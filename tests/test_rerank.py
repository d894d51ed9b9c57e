"""recctl rerank: the affinity profile, affinities and the 1:1 re-ranking, with known answers on a tiny
hand-made warehouse, and the command end to end over the sample shop."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from recctl.config import RecctlConfig, load_config
from recctl.errors import ConfigError, DataError
from recctl.serving.profile import ItemFacts, Profile, item_facts, user_profile
from recctl.serving.rerank import (
    PRICE_BAND,
    components,
    price_closeness,
    rerank,
    run_rerank,
)
from tests.conftest import ROOT, CliRunner

T0 = datetime(2026, 5, 1, 10, 0)
ITEMS = [  # item_id, title, brand, category, price, original_price
    ("i1", "Stride Boot", "Stride", "Women > Shoes > Boots", 50.0, 50.0),
    ("i2", "Stride Sandal", "Stride", "Women>Shoes > Sandals", 60.0, 100.0),  # 40% off
    ("i3", "Other Dress", "Other", "Women > Clothing > Dresses", 300.0, 300.0),
    ("i4", "Other Shirt", "Other", "Men > Shirts", 40.0, 40.0),
    ("i5", "Third Kids", "Third", " Kids >  Girls ", 150.0, None),
]
EVENTS = [  # user_id, session_id, item_id, event_type, minutes after T0, price
    ("u1", "a", "i1", "view", 0, 50.0),
    ("u1", "a", "i1", "view", 1, 50.0),
    ("u1", "a", "i1", "add_to_cart", 2, 50.0),
    ("u1", "a", "i3", "view", 3, 300.0),
    ("u1", "a", "i1", "purchase", 4, 50.0),  # full price
    ("u1", "a", None, "search", 5, None),  # item-less: not counted
    ("u2", "b", "i2", "purchase", 10, 60.0),  # on sale
    ("u2", "b", "i4", "purchase", 11, 40.0),
    ("u3", "c", "i2", "purchase", 20, 60.0),
    ("u3", "d", "i2", "purchase", 21, 60.0),
    ("u3", "e", "i2", "purchase", 22, 60.0),
    (None, "s9", "i4", "view", 30, 40.0),  # an anonymous session
]
RATE = 4 / 6  # purchases on sale in the shop: u2's i2 and u3's three


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with the five items and twelve events above."""
    from datetime import timedelta

    from recctl.warehouse import open_writer

    path = tmp_path_factory.mktemp("tiny") / "wh.duckdb"
    cfg = RecctlConfig.model_validate({"warehouse": {"path": str(path)}})
    with open_writer(cfg, "test") as wh:
        wh.con.executemany(
            "INSERT INTO items (item_id, title, brand, category, price, original_price) VALUES (?, ?, ?, ?, ?, ?)",
            [list(r) for r in ITEMS],
        )
        wh.con.executemany(
            "INSERT INTO events (event_key, user_id, session_id, item_id, event_type, ts, price) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[k, u, s, i, t, T0 + timedelta(minutes=m), p] for k, (u, s, i, t, m, p) in enumerate(EVENTS)],
        )
    return path


@pytest.fixture
def con(tiny: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tiny), read_only=True)
    yield c
    c.close()


@pytest.fixture
def u1(con: duckdb.DuckDBPyConnection) -> Profile:
    p = user_profile(con, "u1")
    assert p is not None
    return p


def test_profile_known_answers(u1: Profile) -> None:
    # weights: views 1 + 1 + 1 (i3), cart 3, purchase 5 = 11; Stride 10 of them
    assert (u1.n_events, u1.n_items, u1.n_purchases) == (5, 2, 1)
    assert u1.brands == pytest.approx({"Stride": 10 / 11, "Other": 1 / 11})
    assert list(u1.brands) == ["Stride", "Other"] and u1.top_brand == "Stride"
    assert u1.categories == pytest.approx(
        {
            "women": 1.0,
            "women > shoes": 10 / 11,
            "women > shoes > boots": 10 / 11,
            "women > clothing": 1 / 11,
            "women > clothing > dresses": 1 / 11,
        }
    )
    assert u1.top_category == "women > shoes > boots"
    assert (u1.price_p25, u1.price_median, u1.price_p75, u1.paid_median) == (50.0, 50.0, 50.0, 50.0)
    assert u1.discount_share == 0.0
    assert u1.shop_discount_rate == pytest.approx(RATE)
    assert u1.discount_sensitivity == pytest.approx((0 + 5 * RATE) / (1 + 5) - RATE)  # -1/9
    assert u1.last_ts == T0.replace(minute=4)


def test_profile_discount_hunter_sessions_time_and_unknown(
    con: duckdb.DuckDBPyConnection, u1: Profile
) -> None:
    u3 = user_profile(con, "u3")
    assert u3 is not None and u3.discount_share == 1.0
    assert u3.discount_sensitivity == pytest.approx((3 + 5 * RATE) / (3 + 5) - RATE)  # 1/8
    anon = user_profile(con, "session:s9")
    assert anon is not None and (anon.n_events, anon.brands) == (1, {"Other": 1.0})
    assert user_profile(con, "session:a") is None  # session a belongs to u1: keyed by the user
    before = user_profile(con, "u1", now=T0.replace(minute=3))  # the first three events only
    assert before is not None and before.n_events == 3 and before.brands == {"Stride": 1.0}
    assert user_profile(con, "nobody") is None
    decayed = user_profile(con, "u1", half_life_days=1 / 1440)  # one minute: older events count less
    stride = 5 + 3 / 4 + 1 / 8 + 1 / 16  # purchase (last), cart 2 min, views 3 and 4 min before it
    assert decayed is not None and decayed.brands["Stride"] == pytest.approx(stride / (stride + 1 / 2))
    assert decayed.brands["Stride"] > u1.brands["Stride"]


def test_profile_agrees_with_the_feature_store(con: duckdb.DuckDBPyConnection, u1: Profile) -> None:
    from recctl.data import load_interactions, load_items
    from recctl.features.build import build

    fs = build(load_interactions(con), load_items(con), datetime(2026, 6, 1))
    row = fs.user.filter(user_id="u1").row(0, named=True)
    assert row["u_price_median"] == pytest.approx(u1.price_median)
    assert row["u_discount_sensitivity"] == pytest.approx(u1.discount_sensitivity, abs=1e-6)
    brand = fs.user_brand.filter(user_id="u1")
    assert dict(zip(brand["brand"], brand["share"], strict=True)) == pytest.approx(u1.brands)
    cats = fs.user_category.filter(user_id="u1")
    assert {k.lower(): v for k, v in zip(cats["category"], cats["share"], strict=True)} == pytest.approx(
        u1.categories
    )


def test_item_facts(con: duckdb.DuckDBPyConnection) -> None:
    from recctl.rules.filters import norm_path

    facts = item_facts(con, ["i2", "i5", "zz"])
    assert set(facts) == {"i2", "i5"}
    assert facts["i2"] == ItemFacts("i2", "Stride Sandal", "Stride", "Women > Shoes > Sandals", 60.0, 0.4)
    assert facts["i5"].category == "Kids > Girls" and facts["i5"].discount == 0.0
    assert facts["i5"].prefixes == ["kids", "kids > girls"]
    assert facts["i2"].prefixes[-1] == norm_path(ITEMS[1][3])
    assert item_facts(con, []) == {}


def test_affinity_components(con: duckdb.DuckDBPyConnection, u1: Profile) -> None:
    facts = item_facts(con, ["i1", "i2", "i3", "i4", "i5"])
    a1 = components(u1, facts["i1"])  # brand 10/11, boots 10/11 at full depth, price inside, no discount
    assert (a1.brand, a1.category, a1.price, a1.discount) == pytest.approx((10 / 11, 10 / 11, 1.0, 0.0))
    assert a1.score == pytest.approx(0.65 * 10 / 11 + 0.2) and a1.reason == "your brand Stride"
    a2 = components(u1, facts["i2"])  # sandals untouched: "women > shoes" at 2 of 3 levels; 40% off
    sens = (-1 / 9) / RATE  # u1 avoids sales: sensitivity scaled by its range
    assert a2.category == pytest.approx(10 / 11 * 2 / 3)
    assert a2.discount == pytest.approx(0.8 * sens)
    assert a2.score == pytest.approx(0.35 * 10 / 11 + 0.3 * 20 / 33 + 0.2 + 0.15 * 0.8 * sens)
    a3 = components(u1, facts["i3"])  # $250 from the median: $150 beyond the band
    assert a3.price == pytest.approx(0.5**1.5)
    assert a3.score == pytest.approx(0.65 / 11 + 0.2 * 0.5**1.5) and a3.reason is None  # shares < 0.1
    a4 = components(u1, facts["i4"])
    assert (a4.category, a4.score, a4.reason) == pytest.approx(
        (0.0, 0.35 / 11 + 0.2, "in your usual price range")
    )
    a5 = components(u1, facts["i5"])  # exactly $100 above the median: still inside
    assert (a5.brand, a5.category, a5.price) == (0.0, 0.0, 1.0)
    shoes = ItemFacts("x", None, None, "Women > Shoes", 500.0, 0.0)
    assert components(u1, shoes).reason == "in Women > Shoes, which you browse"
    hunter = user_profile(con, "u3")
    assert hunter is not None
    assert components(hunter, facts["i2"]).discount > 0  # a deal for a discount hunter


def test_price_band_edges() -> None:
    assert PRICE_BAND == 100.0
    assert price_closeness(150.0, 50.0) == 1.0 and price_closeness(0.0, 50.0) == 1.0
    assert price_closeness(250.0, 50.0) == 0.5 and price_closeness(-150.0, 50.0) == 0.5
    assert price_closeness(350.0, 50.0) == 0.25
    assert price_closeness(None, 50.0) == 0.0 and price_closeness(50.0, None) == 0.0
    assert price_closeness(90.0, 50.0, band=20.0) == 0.5  # the band is a parameter


LIST = ["i4", "i3", "i5", "i2", "i1", "zz", "yy"]


def test_impact_zero_keeps_the_order_and_100_sorts_by_affinity(
    con: duckdb.DuckDBPyConnection, u1: Profile
) -> None:
    facts = item_facts(con, LIST)
    same = rerank(u1, LIST, facts, 0)
    assert [r.item_id for r in same] == LIST and [r.rank for r in same] == [r.original_rank for r in same]
    assert [r.score for r in same] == [1 - k / 7 for k in range(7)]
    by_aff = rerank(u1, LIST, facts, 100)
    assert [r.item_id for r in by_aff] == [
        "i1",
        "i2",
        "i4",
        "i5",
        "i3",
        "zz",
        "yy",
    ]  # zz, yy tie: input order
    assert [r.score for r in by_aff] == [r.affinity for r in by_aff]
    unknown = [r for r in by_aff if not r.known]
    assert [(r.item_id, r.affinity, r.reason) for r in unknown] == [
        ("zz", 0.0, "not in the catalog"),
        ("yy", 0.0, "not in the catalog"),
    ]


def test_intermediate_impact_moves_a_match_up_a_bounded_amount(
    con: duckdb.DuckDBPyConnection, u1: Profile
) -> None:
    fillers = [f"f{k:02d}" for k in range(19)]  # not in the catalog: affinity 0
    ids = [*fillers, "i1"]
    facts = item_facts(con, ids)
    for impact, rank in ((0, 20), (10, 19), (20, 17), (50, 5), (100, 1)):
        out = rerank(u1, ids, facts, impact)
        assert [r.item_id for r in out].index("i1") + 1 == rank
        lam = impact / 100
        if 0 < lam < 1:  # an item gains at most λ/(1-λ)·n positions (affinities differ by at most 1)
            assert 20 - rank <= math.ceil(lam / (1 - lam) * 20)
        assert [r.item_id for r in out if r.item_id != "i1"] == fillers  # the rest keep their order


def test_unknown_user_and_bad_input(con: duckdb.DuckDBPyConnection, u1: Profile) -> None:
    out = rerank(None, LIST, item_facts(con, LIST), 100)
    assert [r.item_id for r in out] == LIST and all(r.affinity is None for r in out)
    cfg = RecctlConfig()
    doc = run_rerank(con, cfg, "nobody", LIST, 80)
    assert doc["personalized"] is False and [i["item_id"] for i in doc["items"]] == LIST
    doc = run_rerank(con, cfg, "u1", LIST)  # the impact from [serving] rerank_impact
    assert doc["impact"] == cfg.serving.rerank_impact == 50 and doc["personalized"] is True
    assert set(doc["items"][0]) == {
        "item_id",
        "rank",
        "original_rank",
        "score",
        "affinity",
        "reason",
        "known",
    }
    with pytest.raises(DataError, match=r"duplicate item ids.*: i1, i3$"):
        run_rerank(con, cfg, "u1", ["i1", "i3", "i1", "i2", "i3"], 50)
    with pytest.raises(DataError, match="non-empty"):
        rerank(u1, ["i1", ""], {}, 50)
    for bad in (-1, 100.5, True, "50"):
        with pytest.raises(ConfigError, match="0 to 100"):
            run_rerank(con, cfg, "u1", LIST, bad)  # type: ignore[arg-type]
    assert run_rerank(con, cfg, "u1", [], 50)["items"] == []


def test_cli_on_the_tiny_warehouse(cli: CliRunner, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("--warehouse", tiny, "--json", "rerank", "--user", "u1", "--impact", "100", *LIST)
    assert r.code == 0, r.stderr
    assert [i["item_id"] for i in r.json["items"]] == ["i1", "i2", "i4", "i5", "i3", "zz", "yy"]
    assert "2 item(s) not in the catalog" in r.stderr
    assert cli("--warehouse", tiny, "rerank", "--user", "u1", "--impact", "101", "i1").code == 2
    assert cli("--warehouse", tiny, "rerank", "--user", "u1", "--impact", "x", "i1").code == 2
    assert cli("--warehouse", tiny, "rerank", "i1").code == 2  # --user is required
    assert cli("--warehouse", tiny, "rerank", "--user", "u1", "i1", "i1").code == 65
    monkeypatch.setattr("sys.stdin", io.StringIO('{"item_id": "i1"}'))
    r = cli("--warehouse", tiny, "rerank", "--user", "u1")
    assert r.code == 65 and "must be a JSON list" in r.stderr
    monkeypatch.setattr("sys.stdin", io.StringIO("[1, 2"))
    assert cli("--warehouse", tiny, "rerank", "--user", "u1", "-").code == 65


# --- end to end over the sample shop ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample shop ingested (no training: re-ranking needs only events and items)."""
    from recctl.demo import SAMPLE_FILES
    from recctl.ingest import ingest, resolve_mapping
    from recctl.warehouse import open_writer

    path = tmp_path_factory.mktemp("shop") / "recctl.duckdb"
    cfg = load_config(
        ROOT / "configs" / "recctl.toml", environ={}, overrides={"warehouse": {"path": str(path)}}
    )
    with open_writer(cfg, "test") as wh:
        for table, name in SAMPLE_FILES.items():
            mapping = resolve_mapping(cfg, table, f"sample-shop-{table}")
            ingest(wh, cfg, table, [ROOT / "sample_data" / name], mapping=mapping)
    return path


def _loyal_list(shop: Path) -> tuple[str, str, list[str]]:
    """A brand-loyal user of the ground truth, their brand, and a list with 5 of its items last."""
    loyal: dict[str, str] = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())[
        "brand_loyal"
    ]
    user, brand = sorted(loyal.items())[0]
    con = duckdb.connect(str(shop), read_only=True)
    try:
        sql = "SELECT item_id FROM items WHERE brand {} ? ORDER BY item_id"
        others = [r[0] for r in con.sql(sql.format("<>"), params=[brand]).fetchall()][::97][:15]
        theirs = [r[0] for r in con.sql(sql.format("="), params=[brand]).fetchall()][:5]
    finally:
        con.close()
    assert len(others) == 15 and len(theirs) == 5
    return user, brand, [*others, *theirs]


def test_cli_brand_loyal_user_gets_their_brand_moved_up(
    cli: CliRunner, shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, brand, ids = _loyal_list(shop)
    theirs = set(ids[-5:])
    r = cli("--warehouse", shop, "--json", "rerank", "--user", user, "--impact", "50", *ids)
    assert r.code == 0, r.stderr
    doc: dict[str, Any] = r.json
    assert doc["user_id"] == user and doc["personalized"] is True and doc["impact"] == 50
    assert sorted(i["item_id"] for i in doc["items"]) == sorted(ids)  # 1:1
    moved = [i for i in doc["items"] if i["item_id"] in theirs]
    assert all(i["rank"] < i["original_rank"] for i in moved)
    assert sum(i["original_rank"] - i["rank"] for i in moved) / 5 >= 3  # from 16-20, by 3+ places
    assert all(i["reason"] == f"your brand {brand}" for i in moved)
    top = cli("--warehouse", shop, "--json", "rerank", "--user", user, "--impact", "100", *ids).json["items"]
    assert {i["item_id"] for i in top[:5]} == theirs  # by affinity alone: their brand first

    # the same list as JSON on stdin (objects with item_id), TSV out
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps([{"item_id": i, "title": "x"} for i in ids])))
    t = cli("--warehouse", shop, "rerank", "--user", user, "--impact", "50")
    assert t.code == 0, t.stderr
    lines = [line.split("\t") for line in t.stdout.splitlines()]
    assert all(len(f) == 4 for f in lines)
    assert [(int(f[0]), f[1]) for f in lines] == [(i["rank"], i["item_id"]) for i in doc["items"]]
    assert [float(f[2]) for f in lines] == pytest.approx([i["score"] for i in doc["items"]], abs=1e-5)

    # ids on stdin as a plain list, impact 0: unchanged
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ids)))
    z = cli("--warehouse", shop, "--json", "rerank", "--user", user, "--impact", "0", "-")
    assert [i["item_id"] for i in z.json["items"]] == ids

    # an unknown visitor: order unchanged, not personalized
    u = cli("--warehouse", shop, "--json", "rerank", "--user", "never-seen", *ids)
    assert u.json["personalized"] is False and [i["item_id"] for i in u.json["items"]] == ids


def test_cli_help(cli: CliRunner) -> None:
    r = cli("rerank", "--help")
    assert r.code == 0
    for word in ("--user", "--impact", "stdin", "affinit"):
        assert word in r.stdout


def test_the_in_memory_catalog_path_gives_the_same_profiles_and_lists(tiny: Path) -> None:
    """A long-lived caller re-ranks with the catalog in memory (profile.catalog_index): same profiles,
    facts and documents as the per-request queries."""
    from recctl.config import RecctlConfig
    from recctl.serving.profile import catalog_index, facts_from_index, profile_from_index
    from recctl.serving.rerank import run_rerank

    c = duckdb.connect(str(tiny), read_only=True)
    try:
        index = catalog_index(c, str(tiny))
        users = [
            r[0]
            for r in c.sql(
                "SELECT DISTINCT coalesce(user_id, 'session:' || session_id) FROM events"
            ).fetchall()
        ]
        assert len(users) >= 3
        for u in [*users, "nobody"]:
            assert profile_from_index(c, u, index) == user_profile(c, u)
        assert facts_from_index(index, [*LIST, "zzz"]) == item_facts(c, [*LIST, "zzz"])
        cfg = RecctlConfig()
        for u in users:
            assert run_rerank(c, cfg, u, LIST, 70, index=index) == run_rerank(c, cfg, u, LIST, 70)
    finally:
        c.close()


def test_the_in_memory_catalog_path_agrees_on_the_sample_shop(shop: Path) -> None:
    from recctl.serving.profile import catalog_index, profile_from_index

    c = duckdb.connect(str(shop), read_only=True)
    try:
        index = catalog_index(c, str(shop))
        users = [r[0] for r in c.sql("SELECT DISTINCT coalesce(user_id, 'session:' || session_id) AS u FROM events "
                                     "WHERE item_id IS NOT NULL ORDER BY u LIMIT 60").fetchall()]  # fmt: skip
        for u in users:
            a, b = profile_from_index(c, u, index), user_profile(c, u)
            assert a is not None and b is not None
            assert a == b or (a.brands.keys() == b.brands.keys() and a.categories.keys() == b.categories.keys()
                              and all(abs(a.brands[k] - b.brands[k]) < 1e-12 for k in a.brands)
                              and a.price_median == pytest.approx(b.price_median)
                              and a.discount_sensitivity == pytest.approx(b.discount_sensitivity))  # fmt: skip
    finally:
        c.close()
