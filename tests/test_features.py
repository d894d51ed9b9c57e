"""The feature store: known answers per family, point-in-time correctness, pairs, registry, the command."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recctl.features import FEATURES, FeatureSet, build, online_item, online_user, pair_features, registry
from recctl.features.store import load_feature_set
from tests.conftest import ROOT, CliRunner, query

T = datetime(2024, 3, 1)
H = timedelta(hours=1)
D = timedelta(days=1)

ITEMS = pl.DataFrame(
    [
        ("a", "Acme", "Women > Shoes > Boots", 80.0, 100.0, T - 100 * D, 4.5, 10, 3, True),
        ("b", "Acme", "Women > Shoes > Sandals", 40.0, 40.0, T - 10 * D, None, None, None, False),
        ("c", " Zed ", "Men>Shirts", 20.0, None, T + 5 * D, None, None, None, None),
        ("d", None, None, None, None, None, None, None, None, None),
    ],
    schema={"item_id": pl.String, "brand": pl.String, "category": pl.String, "price": pl.Float64,
            "original_price": pl.Float64, "created_at": pl.Datetime("us"), "rating": pl.Float64,
            "review_count": pl.Int64, "likes": pl.Int64, "in_stock": pl.Boolean},
    orient="row",
)  # fmt: skip

EV_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
             "session_id": pl.String, "order_id": pl.String, "price": pl.Float64, "discount": pl.Float64}  # fmt: skip


def events(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EV_SCHEMA, orient="row")


EVENTS = events(
    [
        ("u1", "a", "view", T - 60 * D, "s1", None, 100.0, None),
        ("u1", "a", "view", T - 20 * D, "s2", None, 80.0, None),
        ("u1", "a", "add_to_cart", T - 20 * D + H, "s2", None, 80.0, None),
        ("u1", "a", "purchase", T - 20 * D + 2 * H, "s2", "o1", 80.0, 20.0),
        ("u1", "b", "view", T - 3 * D, "s3", None, 40.0, None),
        ("u1", "c", "view", T - 12 * H, "s4", None, 20.0, None),
        ("u2", "c", "view", T - 40 * D, "s5", None, 20.0, None),
        ("u2", "c", "purchase", T - 40 * D + H, "s5", "o2", 20.0, 0.0),
        ("u2", "c", "view", T - 5 * D, "s6", None, 20.0, None),
        ("u2", "c", "purchase", T - 5 * D + H, "s6", "o3", 20.0, 0.0),
        ("u3", "b", "view", T - 2 * D, "s7", None, None, None),
    ]
)


@pytest.fixture(scope="module")
def fs() -> FeatureSet:
    return build(EVENTS, ITEMS, T)


def row(frame: pl.DataFrame, key: str, value: str) -> dict[str, Any]:
    rows = frame.filter(pl.col(key) == value).to_dicts()
    assert len(rows) == 1
    return rows[0]


def close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, want in expected.items():
        got = actual[name]
        if want is None or isinstance(want, int):
            assert got == want, name
        else:
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6), name


def test_user_counts_by_window_recency_sessions(fs: FeatureSet) -> None:
    assert fs.user["user_id"].to_list() == ["u1", "u2", "u3"]
    close(row(fs.user, "user_id", "u1"), {
        "u_n_event_1d": 1, "u_n_event_7d": 2, "u_n_event_30d": 5, "u_n_event_90d": 6, "u_n_event": 6,
        "u_n_view_1d": 1, "u_n_view_7d": 2, "u_n_view_30d": 3, "u_n_view_90d": 4, "u_n_view": 4,
        "u_n_cart_7d": 0, "u_n_cart_30d": 1, "u_n_purchase_7d": 0, "u_n_purchase_30d": 1, "u_n_purchase": 1,
        "u_n_items": 3, "u_n_sessions": 4, "u_n_orders": 1, "u_n_active_days": 4, "u_events_per_session": 1.5,
        "u_days_since_last_event": 0.5, "u_days_since_first_event": 60.0, "u_days_since_last_view": 0.5,
        "u_days_since_last_cart": 20 - 1 / 24, "u_days_since_last_purchase": 20 - 2 / 24,
    })  # fmt: skip
    close(
        row(fs.user, "user_id", "u3"), {"u_n_event": 1, "u_days_since_last_purchase": None, "u_n_orders": 0}
    )


def test_user_prices_and_discounts(fs: FeatureSet) -> None:
    # u1 viewed at 100, 80, 40, 20; paid 80 (discount 20); all item-event prices 100, 80, 80, 80, 40, 20
    close(row(fs.user, "user_id", "u1"), {
        "u_view_price_median": 60.0, "u_view_price_iqr": 85.0 - 35.0, "u_buy_price_median": 80.0,
        "u_buy_price_iqr": 0.0, "u_price_p25": 50.0, "u_price_median": 80.0, "u_price_p75": 80.0,
        "u_discount_share": 1.0,
        # shop base rate: 1 of 3 purchases discounted; shrunk by 5 pseudo-purchases: (1 + 5/3) / 6 − 1/3
        "u_discount_sensitivity": 1 / 9,
    })  # fmt: skip
    close(row(fs.user, "user_id", "u2"), {"u_discount_share": 0.0, "u_discount_sensitivity": -2 / 21})
    # u3's view has no price: the catalog's is used; no purchases: share unknown, sensitivity neutral
    close(row(fs.user, "user_id", "u3"), {"u_view_price_median": 40.0, "u_discount_share": None,
                                          "u_discount_sensitivity": 0.0})  # fmt: skip


def test_user_brand_and_category_distributions(fs: FeatureSet) -> None:
    # u1's weights (view 1, cart 3, purchase 5): a 10, b 1, c 1 → Acme 11/12, Zed 1/12
    ent = -(11 / 12 * math.log(11 / 12) + 1 / 12 * math.log(1 / 12))
    ent3 = -(10 / 12 * math.log(10 / 12) + 2 / 12 * math.log(1 / 12))
    close(row(fs.user, "user_id", "u1"), {
        "u_n_brands": 2, "u_top_brand_share": 11 / 12, "u_brand_entropy": ent,
        "u_n_categories": 3, "u_top_category_share": 10 / 12, "u_category_entropy": ent3,
    })  # fmt: skip
    brands = {(r["user_id"], r["brand"]): r for r in fs.user_brand.to_dicts()}
    assert brands["u1", "Acme"]["share"] == pytest.approx(11 / 12)
    # Acme is 12 of all 25 weight units (u1 11, u3 1): lift = share / (12/25)
    assert brands["u1", "Acme"]["lift"] == pytest.approx(11 / 12 / (12 / 25))
    assert brands["u2", "Zed"]["share"] == 1.0 and brands["u2", "Zed"]["n_purchase"] == 2  # brand trimmed
    cats = {(r["user_id"], r["category"]): (r["depth"], r["share"]) for r in fs.user_category.to_dicts()}
    assert cats["u1", "Women"] == (1, pytest.approx(11 / 12))
    assert cats["u1", "Women > Shoes"] == (2, pytest.approx(11 / 12))  # prefixes count
    assert cats["u1", "Women > Shoes > Boots"] == (3, pytest.approx(10 / 12))
    assert cats["u1", "Men > Shirts"] == (2, pytest.approx(1 / 12))  # "Men>Shirts" normalized


def test_item_popularity_trend_conversion_catalog(fs: FeatureSet) -> None:
    assert fs.item["item_id"].to_list() == ["a", "b", "c", "d"]  # d never interacted: still there
    close(row(fs.item, "item_id", "a"), {
        "i_n_event_7d": 0, "i_n_event_30d": 3, "i_n_event_90d": 4, "i_n_purchase_30d": 1, "i_n_user_30d": 1,
        "i_n_view": 2, "i_n_cart": 1, "i_n_purchase": 1, "i_n_user": 1, "i_n_buyer": 1,
        "i_trend_7d": 0.0, "i_trend_30d": math.log(4 / 2),  # 3 in the last 30 days, 1 in the 30 before
        "i_conversion": 0.5, "i_cart_rate": 0.5, "i_repeat_share": 0.0,
        "i_price": 80.0, "i_discount_pct": 0.2, "i_price_rel_category": 1.0, "i_age_days": 100.0,
        "i_rating": 4.5, "i_review_count": 10, "i_likes": 3, "i_in_stock": 1,
        "i_days_since_first_event": 60.0, "i_days_since_last_event": 20 - 2 / 24,
    })  # fmt: skip
    close(row(fs.item, "item_id", "c"), {
        "i_n_event_7d": 3, "i_n_user_7d": 2, "i_trend_7d": math.log(4), "i_conversion": 2 / 3,
        "i_n_buyer": 1, "i_repeat_share": 1.0, "i_discount_pct": 0.0,  # from the events' discounts
        "i_age_days": None,  # listed after as_of
        "i_in_stock": None,
    })  # fmt: skip
    close(row(fs.item, "item_id", "b"), {"i_in_stock": 0, "i_discount_pct": 0.0, "i_age_days": 10.0})
    close(row(fs.item, "item_id", "d"), {
        "i_n_event": 0, "i_n_event_90d": 0, "i_conversion": None, "i_price": None, "i_trend_30d": 0.0,
        "i_days_since_last_event": None,
    })  # fmt: skip


def test_pair_features_known_answers(fs: FeatureSet) -> None:
    pairs = pl.DataFrame({"user_id": ["u1", "u1", "u1", "u3", "u1"], "item_id": ["a", "b", "c", "a", "d"]})
    out = pair_features(fs, pairs)
    u1a, u1b, u1c, u3a, u1d = out.to_dicts()
    close(u1a, {
        "ui_n_event": 4, "ui_n_view": 2, "ui_n_cart": 1, "ui_n_purchase": 1, "ui_days_since_item": 20 - 2 / 24,
        "ui_brand_share": 11 / 12, "ui_brand_n_purchase": 1, "ui_days_since_brand": 3.0,
        "ui_cat_share": 10 / 12, "ui_cat_parent_share": 11 / 12, "ui_cat_match_depth": 3,
        "ui_cat_match_share": 10 / 12, "ui_days_since_category": 20 - 2 / 24,
        "ui_price_log_ratio": 0.0, "ui_price_band_dist": 0.0, "ui_discount_x_sensitivity": 0.2 / 9,
    })  # fmt: skip
    # b at 40 is below u1's p25 of 50: (50 − 40) / median 80
    close(u1b, {"ui_n_event": 1, "ui_n_purchase": 0, "ui_price_band_dist": 0.125,
                "ui_price_log_ratio": math.log(0.5), "ui_days_since_category": 3.0, "ui_cat_share": 1 / 12})  # fmt: skip
    close(u1c, {"ui_brand_share": 1 / 12, "ui_price_band_dist": 30 / 80, "ui_days_since_item": 0.5})
    # u3 only viewed a sandal: the boot matches at "Women > Shoes" (depth 2), not at its leaf
    close(u3a, {"ui_n_event": 0, "ui_days_since_item": None, "ui_brand_share": 1.0, "ui_cat_share": 0.0,
                "ui_cat_parent_share": 1.0, "ui_cat_match_depth": 2, "ui_cat_match_share": 1.0,
                "ui_days_since_category": None})  # fmt: skip
    # d has no brand, category or price: those features are unknown, the touch counts are 0
    close(u1d, {"ui_n_event": 0, "ui_brand_share": None, "ui_cat_share": None, "ui_price_band_dist": None})


def test_context_derived_from_the_last_event(fs: FeatureSet) -> None:
    pairs = pl.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u3", "nobody"], "item_id": ["c", "b", "a", "a", "a"]}
    )
    out = pair_features(fs, pairs).to_dicts()
    page = [
        next(p for p in ("home", "product", "search", "cart", "checkout") if r[f"ctx_page_{p}"]) for r in out
    ]
    assert page == ["product", "product", "checkout", "product", "home"]  # u1 viewed c last, u2 bought
    close(out[0], {"ctx_is_current_item": 1, "ctx_same_brand": 1, "ctx_same_category": 1,
                   "ctx_shared_category_depth": 2, "ctx_price_ratio": 1.0})  # fmt: skip
    close(out[1], {"ctx_is_current_item": 0, "ctx_same_brand": 0, "ctx_same_category": 0,
                   "ctx_shared_category_depth": 0, "ctx_price_ratio": 2.0})  # fmt: skip
    # u3 is on b's page: a shares the brand and "Women > Shoes", costs twice as much
    close(out[3], {"ctx_is_current_item": 0, "ctx_same_brand": 1, "ctx_same_category": 0,
                   "ctx_shared_category_depth": 2, "ctx_price_ratio": 2.0})  # fmt: skip
    close(out[4], {"ctx_page_home": 1, "ctx_is_current_item": None, "ctx_same_brand": None})
    # the event's own page wins over the page its type implies
    paged = EVENTS.with_columns(page=pl.when(pl.col("user_id") == "u1").then(pl.lit("Search")))
    out = pair_features(build(paged, ITEMS, T), pairs.head(1))
    assert out["ctx_page_search"].to_list() == [1] and out["ctx_is_current_item"].to_list() == [1]


def test_context_given_at_serving_time(fs: FeatureSet) -> None:
    pairs = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["a", "b", "c"]})
    ctx = pl.DataFrame({"user_id": ["u1", "u2"], "page": ["cart", "PDP"], "current_item_id": ["a", None]})
    out = pair_features(fs, pairs, ctx).to_dicts()
    assert [out[0]["ctx_page_cart"], out[1]["ctx_page_other"], out[2]["ctx_page_home"]] == [1, 1, 1]
    assert out[0]["ctx_is_current_item"] == 1 and out[1]["ctx_is_current_item"] is None


def test_point_in_time_events_at_or_after_as_of_change_nothing(fs: FeatureSet) -> None:
    """A planted burst at and after as_of (known and new users, known and new items) is invisible."""
    burst = [(f"u{i % 4}", item, kind, T + i * H, "late", "late", 999.0, 500.0)
             for i in range(200) for item, kind in (("a", "purchase"), ("d", "view"), ("new", "add_to_cart"))]  # fmt: skip
    burst.append(("u1", "b", "purchase", T, "edge", "edge", 1.0, 0.0))  # exactly at as_of
    late = build(pl.concat([EVENTS, events(burst)]).sample(fraction=1.0, shuffle=True, seed=3), ITEMS, T)
    for name, frame in fs.tables().items():
        assert_frame_equal(late.tables()[name], frame, check_row_order=name != "user_item"), name
    pairs = pl.DataFrame({"user_id": ["u0", "u1", "u2", "u3"] * 3, "item_id": ["a", "b", "d", "new"] * 3})
    assert_frame_equal(pair_features(late, pairs), pair_features(fs, pairs))


def test_pairs_keep_order_length_and_columns_unknowns_are_null(fs: FeatureSet) -> None:
    pairs = pl.DataFrame({
        "user_id": ["u2", "ghost", "u1", "u2", "u1", "u1"], "item_id": ["c", "a", "zzz", "c", "a", None],
        "score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "u_n_event": [7, 7, 7, 7, 7, 7],
    })  # fmt: skip
    out = pair_features(fs, pairs)
    assert out.height == 6 and out["score"].to_list() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert out["user_id"].to_list() == pairs["user_id"].to_list()
    assert out["u_n_event"].to_list() == [4, None, 6, 4, 6, 6]  # the stale column was replaced
    assert out.row(0, named=True) == out.row(3, named=True) | {"score": 0.1}
    ghost = out.row(1, named=True)
    assert all(ghost[c] is None for c in out.columns if c.startswith(("u_", "ui_")))
    assert ghost["i_n_event"] == 4 and ghost["ctx_page_home"] == 1
    unknown_item = out.row(2, named=True)
    assert all(unknown_item[c] is None for c in out.columns if c.startswith("i_"))
    assert unknown_item["ui_n_event"] == 0 and unknown_item["u_n_event"] == 6
    empty = pair_features(fs, pairs.clear())
    assert empty.height == 0 and empty.columns == out.columns


def test_a_chunk_of_users_joins_its_own_rows_sorted_or_not(fs: FeatureSet) -> None:
    """``of_users`` keeps exactly the users' rows of the user-side tables (a slice once ``by_user`` sorted
    and flagged them, a scan otherwise) and leaves the item tables; pair features are the same either way."""
    from recctl.features.base import USER_TABLES

    shuffled = fs.of_users(pl.Series(["u3", "u1", "u2"]))
    shuffled = FeatureSet(**{  # the user-side tables in another order, unflagged
        f: (getattr(shuffled, f).sort("user_id", descending=True) if f in USER_TABLES else getattr(shuffled, f))
        for f in ("as_of", "user", "item", "user_item", "user_brand", "user_category", "item_attrs", "user_last")
    })  # fmt: skip
    by_user = shuffled.by_user()
    assert all(getattr(by_user, t)["user_id"].flags["SORTED_ASC"] for t in USER_TABLES)
    for tables in (shuffled, by_user):
        cut = tables.of_users(pl.Series(["u2", "ghost", None, "u2"]))
        for t in USER_TABLES:
            want = getattr(fs, t).filter(pl.col("user_id") == "u2").sort(pl.all())
            assert_frame_equal(getattr(cut, t).sort(pl.all()), want)
        assert cut.item is tables.item and cut.item_attrs is tables.item_attrs
        assert tables.of_users(pl.Series([], dtype=pl.String)).user_item.height == 0
    pairs = pl.DataFrame({"user_id": ["u2", "u1", "ghost", "u3", "u1"], "item_id": ["c", "a", "a", "b", "b"]})
    want = pair_features(fs, pairs)
    assert_frame_equal(pair_features(shuffled, pairs), want)
    assert_frame_equal(pair_features(by_user, pairs), want)
    assert_frame_equal(pair_features(by_user, pairs.slice(1, 1)), want.slice(1, 1))


def test_a_saved_set_serves_chunks_of_users_from_its_files(shop: Path, tmp_path: Path) -> None:
    """A run's saved features keep the user tables in their (user-sorted) files: a chunk of users reads
    its rows, which equal the in-memory set's; a folder written unsorted, before, is read whole."""
    import json

    from recctl.data import load_interactions, load_items
    from recctl.features import saved
    from recctl.features.base import USER_TABLES

    con = duckdb.connect(str(shop), read_only=True)
    try:
        whole = build(load_interactions(con), load_items(con), datetime(2026, 9, 1))
    finally:
        con.close()
    saved.write(whole, tmp_path / "f")
    assert json.loads((tmp_path / "f" / "meta.json").read_text())["by_user"] is True
    stored = saved.read(tmp_path / "f")
    assert isinstance(stored, saved.StoredFeatures) and stored.as_of == whole.as_of
    users = whole.user["user_id"].sort()
    for ids in (users.slice(10, 40), pl.Series(["nobody", users[3], users[-1]]), users.head(0)):
        cut, want = stored.of_users(ids), whole.of_users(ids)
        for t in USER_TABLES:
            assert_frame_equal(getattr(cut, t), getattr(want, t).sort("user_id", maintain_order=True))
        assert_frame_equal(cut.item, whole.item)
    pairs = pl.DataFrame({"user_id": users.slice(5, 30).to_list() * 2,
                          "item_id": whole.item["item_id"].head(60).to_list()})  # fmt: skip
    assert_frame_equal(pair_features(stored, pairs), pair_features(whole, pairs))
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    (tmp_path / "f" / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "by_user"}))
    old = saved.read(tmp_path / "f")
    assert isinstance(old, FeatureSet) and old.user_item.height == whole.user_item.height


def test_registry_documents_exactly_the_columns(fs: FeatureSet) -> None:
    out = pair_features(fs, pl.DataFrame({"user_id": ["u1"], "item_id": ["a"]}))
    assert out.columns == ["user_id", "item_id", *FEATURES]
    assert fs.user.columns == ["user_id", *(f for f in FEATURES if f.startswith("u_"))]
    assert fs.item.columns == ["item_id", *(f for f in FEATURES if f.startswith("i_"))]
    assert all(desc and "\n" not in desc for desc in FEATURES.values())
    numeric = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64)
    assert all(out.schema[f] in numeric for f in FEATURES)
    other = build(EVENTS, ITEMS, T, windows=(3, 14))
    out = pair_features(other, pl.DataFrame({"user_id": ["u1"], "item_id": ["a"]}))
    assert out.columns == ["user_id", "item_id", *registry((3, 14))]
    assert "u_n_view_14d" in out.columns and "i_trend_3d" in out.columns and "u_n_view_7d" not in out.columns


def test_no_events_before_as_of_and_aware_as_of() -> None:
    fs = build(EVENTS, ITEMS, T - 365 * D)
    assert fs.user.height == 0 and fs.item.height == 4 and fs.item["i_n_event"].sum() == 0
    out = pair_features(fs, pl.DataFrame({"user_id": ["u1"], "item_id": ["a"]}))
    assert out["u_n_event"].to_list() == [None] and out["ctx_page_home"].to_list() == [1]
    aware = build(EVENTS, ITEMS, T.replace(tzinfo=UTC))
    assert aware.as_of == T and aware.user.equals(build(EVENTS, ITEMS, T).user)


# --- the command -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample shop's events and items in a warehouse (ingested once for the module)."""
    from recctl.cli import run

    wh = tmp_path_factory.mktemp("features") / "wh.duckdb"
    maps = ROOT / "configs" / "mappings"
    for table, name in (("events", "events.csv.gz"), ("items", "items.ndjson")):
        args = ["--quiet", "--warehouse", str(wh), "ingest", table, str(ROOT / "sample_data" / name),
                "--mapping", str(maps / f"sample-shop-{table}.toml")]  # fmt: skip
        assert run(args) == 0
    return wh


def counts(wh: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = ["features_user", "features_item", "features_user_item", "features_user_brand",
              "features_user_category", "features_item_attrs", "features_user_last", "features_meta"]  # fmt: skip
    return {t: query(wh, f"SELECT as_of, count(*) FROM {t} GROUP BY as_of ORDER BY as_of") for t in tables}


def test_command_writes_snapshots_idempotently_and_the_online_store(cli: CliRunner, shop: Path) -> None:
    r = cli("--json", "--warehouse", shop, "features", "--as-of", "2026-09-01")
    assert r.code == 0 and r.stdout.count("\n") == 1
    doc = r.json
    assert doc["as_of"] == "2026-09-01T00:00:00" and doc["online"] is True
    assert doc["features"] == len(FEATURES) and doc["tables"]["features_item"] == 1530  # with the care range
    first = counts(shop)
    assert first["features_user"] == [(datetime(2026, 9, 1), doc["users"])]
    assert first["features_meta"] == [(datetime(2026, 9, 1), 1)]
    assert cli("--json", "--warehouse", shop, "features", "--as-of", "2026-09-01").code == 0
    assert counts(shop) == first  # the same as_of replaces its snapshot

    r = cli("--json", "--warehouse", shop, "features")  # as of the newest event + 1 µs
    assert r.code == 0 and r.json["online"] is True
    newest = query(shop, "SELECT max(ts) FROM events WHERE item_id IS NOT NULL")[0][0]
    assert r.json["as_of"] == (newest + timedelta(microseconds=1)).isoformat()
    assert len(counts(shop)["features_user"]) == 2
    online = query(shop, "SELECT DISTINCT as_of FROM online_user_features")
    assert online == [(newest + timedelta(microseconds=1),)]
    # a backfill of an older as_of keeps the newer online snapshot
    r = cli("--json", "--warehouse", shop, "features", "--as-of", "2026-08-01")
    assert r.code == 0 and r.json["online"] is False
    assert query(shop, "SELECT DISTINCT as_of FROM online_item_features") == online

    con = duckdb.connect(str(shop), read_only=True)
    try:
        user = con.sql("SELECT user_id FROM online_user_features ORDER BY user_id LIMIT 1").fetchall()[0][0]
        got = online_user(con, user)
        assert (
            got is not None and got["user_id"] == user and set(got) >= {f for f in FEATURES if f[:2] == "u_"}
        )
        assert online_user(con, "no-such-user") is None
        item = online_item(con, "p0002")
        assert item is not None and item["i_price"] == pytest.approx(29.99)
        stored = load_feature_set(con)  # the newest snapshot, as a FeatureSet
        assert stored.as_of == online[0][0] and stored.user.height == got_users(con)
        out = pair_features(stored, pl.DataFrame({"user_id": [user], "item_id": ["p0002"]}))
        assert out.columns == ["user_id", "item_id", *FEATURES]
    finally:
        con.close()


def got_users(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.sql("SELECT count(*) FROM online_user_features").fetchall()[0][0])


def test_command_errors(cli: CliRunner, shop: Path, wh: Path) -> None:
    r = cli("--warehouse", shop, "features", "--as-of", "yesterday")
    assert r.code == 2 and "--as-of" in r.stderr
    r = cli("--warehouse", wh, "features")  # an empty warehouse
    assert r.code == 65 and "no item events" in r.stderr
    assert json.loads(cli("--json", "--warehouse", wh, "status").stdout)["events"]["rows"] == 0


def assert_same_features(a: FeatureSet, b: FeatureSet) -> None:
    for name, frame in a.tables().items():
        assert_frame_equal(frame, b.tables()[name], check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_buckets_of_users_give_the_same_frames(fs: FeatureSet, shop: Path) -> None:
    """The user-level tables built per bucket of users (contiguous user_id ranges) equal the one-pass
    build, on the known-answer shop and on the sample shop: the lifts' shop-wide shares, the discount base
    rate and the items' features are over every event, not the bucket's."""
    from recctl.data import load_interactions, load_items

    tiny = build(EVENTS, ITEMS, T, bucket_events=2)  # a bucket per user
    assert_same_features(fs, tiny)
    con = duckdb.connect(str(shop), read_only=True)
    try:
        events, items = load_interactions(con), load_items(con)
    finally:
        con.close()
    as_of = datetime(2026, 9, 1)
    whole = build(events, items, as_of)
    parts = build(events, items, as_of, bucket_events=events.height // 7)
    assert whole.user.height > 1000 and whole.user_category.height > whole.user.height
    assert_same_features(whole, parts)
    assert parts.user["user_id"].is_sorted() and parts.user_item["user_id"].is_sorted()


KEYS = {"user": ["user_id"], "item": ["item_id"], "user_item": ["user_id", "item_id"],
        "user_brand": ["user_id", "brand"], "user_category": ["user_id", "category"],
        "item_attrs": ["item_id"], "user_last": ["user_id"]}  # fmt: skip


def test_the_command_streams_buckets_from_the_warehouse_into_the_frames_build_gives(
    shop: Path, tmp_path: Path
) -> None:
    """``recctl features`` builds from the warehouse one bucket of users at a time (the shop-wide tables
    over a view of the events): its stored snapshot and online tables equal ``build`` over the loaded
    frames, however many buckets."""
    import shutil

    from recctl.data import load_interactions, load_items
    from recctl.features.store import stream_features

    db = tmp_path / "wh.duckdb"
    shutil.copy(shop, db)
    con = duckdb.connect(str(db))
    try:
        as_of = datetime(2026, 9, 1)
        for table in ("online_user_features", "online_item_features"):  # another test's newer snapshot
            con.execute(f"DROP TABLE IF EXISTS {table}")
        # ties in time: 30 users' last event again, on another item, with a later event key, which must win
        con.execute("""INSERT INTO events SELECT * REPLACE (event_key + 1 AS event_key,
            (SELECT min(item_id) FROM items) AS item_id) FROM events WHERE user_id IS NOT NULL AND ts < '2026-09-01'
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, event_key DESC) = 1 LIMIT 30""")
        want = build(load_interactions(con), load_items(con), as_of)
        first = con.sql("SELECT min(item_id) FROM items").fetchall()[0][0]
        assert want.user_last.filter(pl.col("item_id") == first).height >= 30
        n = con.sql("SELECT count(*) FROM events WHERE ts < ?", params=[as_of]).fetchall()[0][0]
        meta = stream_features(con, as_of, want.windows, bucket_events=n // 6)
        assert meta["buckets"] >= 5 and meta["users"] == want.user.height and meta["online"] is True
        got = load_feature_set(con, as_of)
        for name, frame in want.tables().items():
            assert_frame_equal(got.tables()[name].sort(KEYS[name]), frame.sort(KEYS[name]), check_exact=False,
                               rel_tol=1e-9, abs_tol=1e-12)  # fmt: skip
        online = con.sql("SELECT * EXCLUDE (as_of) FROM online_user_features ORDER BY user_id").pl()
        assert_frame_equal(online, want.user)
    finally:
        con.close()
