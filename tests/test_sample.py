"""The synthetic fashion shop (``recctl.sample``): determinism, shape, and recoverable planted structure.

Structure checks run on the committed ``sample_data/`` with plain polars statistics; a regeneration with
the default seed must reproduce it byte for byte.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recctl.sample import generate

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FILES = ("events.csv.gz", "items.ndjson", "users.csv", "ground_truth.json")
END = datetime(2026, 9, 30, tzinfo=UTC)
HEADER = "event_time,visitor_id,session,product_id,action,price,search_query,page,order_id"


@dataclass
class Shop:
    events: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    truth: dict[str, Any]

    @property
    def item_events(self) -> pl.DataFrame:
        return self.events.filter(pl.col("product_id").is_not_null()).join(
            self.items.select("sku", "brand", "category", "list_price"), left_on="product_id", right_on="sku"
        )


def load(folder: Path) -> Shop:
    raw = gzip.decompress((folder / "events.csv.gz").read_bytes())
    events = pl.read_csv(io.BytesIO(raw), infer_schema=False).with_columns(
        pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC"),
        pl.col("price").cast(pl.Float64),
    )
    items = pl.read_ndjson(folder / "items.ndjson")
    users = pl.read_csv(folder / "users.csv", infer_schema=False)
    truth = json.loads((folder / "ground_truth.json").read_text(encoding="utf-8"))
    return Shop(events, items, users, truth)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate(out, seed=7, n_users=300, n_items=300, days=30)
    return out


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("default")
    return out, generate(out)


@pytest.fixture(scope="module")
def shop() -> Shop:
    assert SAMPLE.is_dir(), "sample_data/ is missing: run `python -m recctl.sample sample_data`"
    return load(SAMPLE)


# --- determinism and the committed copy -------------------------------------------------------------


def content(path: Path) -> bytes:
    """File content, decompressed: gzip bytes depend on the zlib build, the data must not."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def test_same_seed_is_identical(small: Path, tmp_path: Path) -> None:
    generate(tmp_path, seed=7, n_users=300, n_items=300, days=30)
    for name in FILES:
        assert content(tmp_path / name) == content(small / name), name


def test_different_seed_differs(small: Path, tmp_path: Path) -> None:
    generate(tmp_path, seed=8, n_users=300, n_items=300, days=30)
    for name in FILES:
        assert content(tmp_path / name) != content(small / name), name


def test_small_run_is_consistent(small: Path) -> None:
    s = load(small)
    assert s.items.height == 300 + 6  # the fashion items and the care range (2 %, every care leaf stocked)
    assert 250 <= s.events["visitor_id"].n_unique() <= 300
    assert set(s.events["product_id"].drop_nulls().unique()) <= set(s.items["sku"])
    assert s.events["event_time"].min() >= END - timedelta(days=30)


def test_committed_copy_is_small_and_reproducible(regenerated: tuple[Path, dict[str, int]]) -> None:
    out, summary = regenerated
    total = sum(p.stat().st_size for p in SAMPLE.iterdir() if p.is_file())
    assert total < 5 * 1024 * 1024
    assert sorted(p.name for p in SAMPLE.iterdir()) == sorted(FILES)
    for name in FILES:
        assert content(out / name) == content(SAMPLE / name), f"{name} differs from a regeneration"
    assert summary["items"] == 1500 + 30  # the fashion items and the care range
    assert (
        summary["events"]
        == json.loads((SAMPLE / "ground_truth.json").read_text())["meta"]["counts"]["events"]
    )


# --- shape of the export ----------------------------------------------------------------------------


def test_counts_and_span(shop: Shop) -> None:
    ev = shop.events
    assert gzip.decompress((SAMPLE / "events.csv.gz").read_bytes()).decode().split("\n", 1)[0] == HEADER
    assert 1900 <= ev["visitor_id"].n_unique() <= 2100
    assert shop.items.height == 1530 and shop.items["sku"].n_unique() == 1530
    assert 120_000 <= ev.height <= 180_000
    first, last = ev["event_time"].min(), ev["event_time"].max()
    assert first >= END - timedelta(days=90) and last < END
    assert last - first > timedelta(days=89)
    assert ev["event_time"].is_sorted()
    signed = shop.users["customer_id"]
    assert 0.6 <= signed.n_unique() / ev["visitor_id"].n_unique() <= 0.8
    assert set(signed) <= set(ev["visitor_id"])


def test_rows_are_well_formed(shop: Shop) -> None:
    ev = shop.events
    assert set(ev["product_id"].drop_nulls().unique()) <= set(shop.items["sku"])
    search = ev.filter(pl.col("action") == "search")
    assert search["search_query"].null_count() == 0 and search["product_id"].null_count() == search.height
    rest = ev.filter(pl.col("action") != "search")
    assert rest["search_query"].null_count() == rest.height and rest["product_id"].null_count() == 0
    assert set(ev["page"].unique()) <= {"home", "product", "category", "search", "cart"}
    buys = ev.filter(pl.col("action") == "purchase")
    assert buys["order_id"].null_count() == 0 and ev["order_id"].drop_nulls().len() == buys.height
    assert buys["order_id"].n_unique() < buys.height  # some orders hold several items
    # the shown price is the item's current price
    priced = rest.join(shop.items.select("sku", "price"), left_on="product_id", right_on="sku")
    assert (priced["price"] - priced["price_right"]).abs().max() < 1e-9
    # nothing is viewed before it was created (new arrivals only show up late in the window)
    created = shop.items.select("sku", created=pl.col("created").str.to_datetime(time_zone="UTC"))
    assert (
        rest.join(created, left_on="product_id", right_on="sku")
        .filter(pl.col("event_time") < pl.col("created"))
        .height
        == 0
    )


def test_funnel_shares(shop: Shop) -> None:
    share = shop.events["action"].value_counts(normalize=True)
    got = dict(zip(share["action"], share["proportion"], strict=True))
    assert 0.74 <= got["pageview"] <= 0.86
    assert 0.07 <= got["addtocart"] <= 0.13
    assert 0.025 <= got["purchase"] <= 0.06
    assert 0.04 <= got["search"] <= 0.08


def test_sessions_are_bursts(shop: Shop) -> None:
    gaps = (
        shop.events.sort("visitor_id", "event_time")
        .with_columns(
            gap=pl.col("event_time").diff().over("visitor_id").dt.total_seconds(),
            new=pl.col("session") != pl.col("session").shift().over("visitor_id"),
        )
        .drop_nulls("gap")
    )
    assert gaps.filter(pl.col("new"))["gap"].min() >= 1800
    assert gaps.filter(~pl.col("new"))["gap"].max() < 1800


def test_catalogue(shop: Shop) -> None:
    it = shop.items
    assert it["brand"].n_unique() >= 20 and it["category"].n_unique() >= 28
    assert it["category"].str.count_matches(" > ").eq(2).all()
    on_sale = (it["list_price"] > it["price"]).mean()
    assert on_sale is not None and 0.2 <= on_sale <= 0.3
    in_stock = it["in_stock"].mean()
    assert in_stock is not None and 0.92 <= in_stock <= 0.98
    assert (
        it.filter(pl.col("created").str.to_datetime(time_zone="UTC") >= END - timedelta(days=14)).height > 30
    )
    tiers = shop.truth["meta"]["tiers"]
    median = (
        it.group_by("brand")
        .agg(pl.col("price").median())
        .with_columns(tier=pl.col("brand").replace_strict(tiers))
    )
    by_tier = {r["tier"]: r["price"] for r in median.group_by("tier").agg(pl.col("price").mean()).to_dicts()}
    assert by_tier["budget"] < 40 < by_tier["mid"] < 120 < by_tier["premium"]
    # titles share vocabulary with colour and material (what a TF-IDF model picks up)
    words = it.select(
        ok=pl.col("name").str.to_lowercase().str.contains(pl.col("attributes").struct.field("color"))
        & pl.col("description").str.contains(pl.col("attributes").struct.field("material"))
    )
    assert words["ok"].all()


# --- planted structure ------------------------------------------------------------------------------


def test_brand_loyalty_is_recoverable(shop: Shop) -> None:
    per = shop.item_events.group_by("visitor_id", "brand").len()
    top = (
        per.with_columns(share=pl.col("len") / pl.col("len").sum().over("visitor_id"))
        .sort("visitor_id", "share", "brand", descending=[False, True, False])
        .group_by("visitor_id")
        .first()
    )
    truth = pl.DataFrame(
        {"visitor_id": list(shop.truth["brand_loyal"]), "gt": list(shop.truth["brand_loyal"].values())}
    )
    assert 0.15 <= truth.height / shop.events["visitor_id"].n_unique() <= 0.25
    got = truth.join(top, on="visitor_id")
    assert got.height == truth.height
    assert ((got["share"] >= 0.6) & (got["brand"] == got["gt"])).mean() >= 0.9
    others = top.join(truth, on="visitor_id", how="anti")
    assert others["share"].median() < 0.5


def test_price_band_is_recoverable(shop: Shop) -> None:
    band = pl.DataFrame(
        {
            "visitor_id": list(shop.truth["price_band"]),
            "lo": [b[0] for b in shop.truth["price_band"].values()],
            "hi": [b[1] for b in shop.truth["price_band"].values()],
        }
    )
    assert band.height == shop.events.filter(pl.col("product_id").is_not_null())["visitor_id"].n_unique()
    views = shop.events.filter(pl.col("action") == "pageview").join(band, on="visitor_id")
    inside = views.group_by("visitor_id").agg(pl.col("price").is_between(pl.col("lo"), pl.col("hi")).mean())
    assert (inside["price"] >= 0.8).mean() >= 0.8
    assert band.filter(pl.col("lo") >= 100).height > 100  # premium-band shoppers exist


def test_discount_hunters_are_recoverable(shop: Shop) -> None:
    hunters = list(shop.truth["discount_hunters"])
    assert 0.1 <= len(hunters) / shop.events["visitor_id"].n_unique() <= 0.2
    share = (
        shop.item_events.filter(pl.col("action") == "purchase")
        .group_by("visitor_id")
        .agg(sale=(pl.col("list_price") > pl.col("price")).mean())
    )
    hunt = share.filter(pl.col("visitor_id").is_in(hunters))["sale"].mean()
    rest = share.filter(~pl.col("visitor_id").is_in(hunters))["sale"].mean()
    assert isinstance(hunt, float) and isinstance(rest, float)
    assert hunt >= 0.8 and rest <= 0.4 and hunt - rest >= 0.4


def test_sequences_are_recoverable(shop: Shop) -> None:
    pairs = pl.DataFrame(shop.truth["sequences"], schema=["a", "b"], orient="row")
    assert 40 <= pairs.height <= 80
    assert pairs["a"].n_unique() == pairs.height
    views = (
        shop.events.filter(pl.col("action") == "pageview")
        .sort("visitor_id", "event_time")
        .with_columns(nxt=pl.col("product_id").shift(-1).over("visitor_id"))
    )
    p_next = (
        views.join(pairs, left_on="product_id", right_on="a")
        .group_by("product_id")
        .agg((pl.col("nxt") == pl.col("b")).mean())
    )
    assert p_next.height >= 0.9 * pairs.height
    assert p_next["nxt"].mean() >= 0.4
    # bought together: among orders holding a, the share that also holds b
    buys = shop.events.filter(pl.col("action") == "purchase").select("order_id", "product_id")
    with_a = buys.join(pairs, left_on="product_id", right_on="a")
    both = with_a.join(buys, left_on=["order_id", "b"], right_on=["order_id", "product_id"], how="semi")
    assert both.height / with_a.height >= 0.3


def test_trending_items_are_recoverable(shop: Shop) -> None:
    cut = END - timedelta(days=7)
    ev = shop.item_events.with_columns(late=pl.col("event_time") >= cut)
    n_late, n_early = ev["late"].sum(), (~ev["late"]).sum()
    share = ev.group_by("product_id").agg(
        late=pl.col("late").sum() / n_late, early=(~pl.col("late")).sum() / n_early
    )
    trend = share.filter(pl.col("product_id").is_in(shop.truth["trending"]))
    assert trend.height == len(shop.truth["trending"]) >= 15
    ratio = trend["late"] / trend["early"].clip(lower_bound=1 / n_early)
    assert ratio.median() >= 4
    # and they stand out: among items older than the window (new arrivals have no past), the top items
    # by lift over the last week are mostly the planted ones
    old = shop.items.filter(pl.col("created").str.to_datetime(time_zone="UTC") < END - timedelta(days=90))
    lift = share.filter(
        pl.col("product_id").is_in(old["sku"].to_list()) & (pl.col("late") * n_late >= 10)
    ).with_columns(lift=pl.col("late") / pl.col("early"))
    top = lift.sort("lift", "product_id", descending=[True, False]).head(len(shop.truth["trending"]))
    assert top["product_id"].is_in(shop.truth["trending"]).mean() >= 0.7


def test_new_visitors_are_recoverable(shop: Shop) -> None:
    new = shop.truth["new_visitors"]
    assert 250 <= len(new) <= 350
    per = shop.events.group_by("visitor_id").agg(first=pl.col("event_time").min(), n=pl.len())
    got = per.filter(pl.col("visitor_id").is_in(new))
    assert got.height == len(new)
    assert (got["first"] >= END - timedelta(days=7)).all() and got["n"].is_between(1, 5).all()
    others = per.filter(~pl.col("visitor_id").is_in(new))
    assert (others["first"] < END - timedelta(days=7)).all()


def test_category_affinity_is_recoverable(shop: Shop) -> None:
    truth = pl.DataFrame(
        {
            "visitor_id": list(shop.truth["category_affinity"]),
            "gt": list(shop.truth["category_affinity"].values()),
        }
    )
    assert 0.25 <= truth.height / shop.events["visitor_id"].n_unique() <= 0.35
    top = (
        shop.item_events.group_by("visitor_id", "category")
        .len()
        .sort("visitor_id", "len", "category", descending=[False, True, False])
        .group_by("visitor_id")
        .first()
    )
    got = truth.join(top, on="visitor_id")
    assert (got["category"] == got["gt"]).mean() >= 0.85


def test_gender_preference(shop: Shop) -> None:
    views = shop.item_events.join(shop.users, left_on="visitor_id", right_on="customer_id").with_columns(
        women=pl.col("category").str.starts_with("Women")
    )
    share = views.group_by("gender").agg(pl.col("women").mean())
    got = dict(zip(share["gender"], share["women"], strict=True))
    assert got["female"] >= 0.7 and got["male"] <= 0.2


def habits(shop: Shop) -> pl.DataFrame:
    h = shop.truth["consumable_habits"]
    return pl.DataFrame(
        {
            "visitor_id": list(h),
            "item": [v["item_id"] for v in h.values()],
            "also": [v["also_item_ids"] for v in h.values()],
            "every": [v["every_days"] for v in h.values()],
            "last": [v["last_purchase"] for v in h.values()],
            "due": [v["due_at_end"] for v in h.values()],
        },
        schema_overrides={"also": pl.List(pl.String)},
    ).with_columns(pl.col("last").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC"))


def test_care_range_is_cheap_and_separate(shop: Shop) -> None:
    care_paths = shop.truth["meta"]["consumable_categories"]
    care = shop.items.filter(pl.col("category").is_in(care_paths))
    assert 20 <= care.height <= 40 and set(care["category"]) == set(care_paths)
    assert care["price"].is_between(5, 25, closed="left").all()
    assert (care["list_price"] == care["price"]).all() and care["in_stock"].all()
    assert (care["sku"] >= "p1500").all()  # appended after the fashion items, whose skus did not move
    # the fashion tree is all still there
    assert shop.items.filter(~pl.col("category").is_in(care_paths))["category"].n_unique() >= 28


def test_consumable_habits_are_recoverable(shop: Shop) -> None:
    truth = habits(shop)
    visitors = shop.events["visitor_id"].n_unique()
    assert 0.06 <= truth.height / visitors <= 0.10
    # the planted visitors carry no other planted preference that a re-buy would blur
    others = set(shop.truth["brand_loyal"]) | set(shop.truth["category_affinity"])
    others |= set(shop.truth["discount_hunters"]) | set(shop.truth["new_visitors"])
    assert not set(truth["visitor_id"]) & others
    assert truth["every"].is_between(7, 21).all() and truth["every"].n_unique() >= 10
    # the habit items are cheap consumables
    care = shop.items.filter(pl.col("category").is_in(shop.truth["meta"]["consumable_categories"]))
    items = pl.concat([truth["item"], truth["also"].explode().drop_nulls()])
    assert items.is_in(care["sku"].to_list()).all()
    assert care.filter(pl.col("sku").is_in(items.to_list()))["price"].is_between(5, 25).all()
    assert 0.1 <= (truth["also"].list.len() > 0).mean() <= 0.4  # some re-buy two items together

    buys = shop.events.filter(pl.col("action") == "purchase")
    mine = buys.join(truth, left_on=["visitor_id", "product_id"], right_on=["visitor_id", "item"])
    per = (
        mine.sort("visitor_id", "event_time")
        .group_by("visitor_id")
        .agg(
            n=pl.len(),
            sessions=pl.col("session").n_unique(),
            orders=pl.col("order_id").n_unique(),
            every=pl.col("every").first(),
            # the cycle is a number of days: gaps between the purchase dates
            gap=pl.col("event_time").dt.date().diff().dt.total_days().median(),
            hours=(pl.col("event_time").diff().dt.total_seconds() / 86_400).median(),
            last=pl.col("event_time").max(),
            gt_last=pl.col("last").first(),
            due=pl.col("due").first(),
        )
    )
    assert per.height == truth.height
    assert (per["n"] >= 5).all()
    assert (per["sessions"] == per["n"]).all() and (per["orders"] == per["n"]).all()  # one order a visit
    assert ((per["gap"] - per["every"]).abs() <= 1).all()
    assert ((per["hours"] - per["every"]).abs() <= 1.25).all()
    assert (per["last"] == per["gt_last"]).all()
    since = (END - per["last"]).dt.total_seconds() / 86_400
    assert ((since >= per["every"] - 1) == per["due"]).all()
    assert 0.2 <= per["due"].mean() <= 0.6  # some are due at the end of the window, some bought lately

    # each re-buy is its own short visit: the item viewed and carted in the same session, at a usual hour
    visits = shop.events.join(mine.select("session", "product_id"), on=["session", "product_id"])
    funnel = visits.group_by("session").agg(pl.col("action").unique().sort())
    assert (funnel["action"].list.join(",") == "addtocart,pageview,purchase").all()
    hour = mine["event_time"].dt.hour()
    assert hour.is_between(7, 23).mean() >= 0.8
    # a second habit item is bought in the same orders
    two = truth.filter(pl.col("also").list.len() > 0).explode("also")
    pair = buys.join(two, left_on=["visitor_id", "product_id"], right_on=["visitor_id", "also"])
    both = pair.join(mine.select("order_id"), on="order_id", how="semi")
    assert pair.height > 0 and both.height == pair.height


def test_consumables_are_rarely_rebought_without_a_habit(shop: Shop) -> None:
    care = shop.items.filter(pl.col("category").is_in(shop.truth["meta"]["consumable_categories"]))
    planted = list(shop.truth["consumable_habits"])
    ev = shop.events.filter(
        pl.col("product_id").is_in(care["sku"].to_list()) & ~pl.col("visitor_id").is_in(planted)
    )
    assert ev["visitor_id"].n_unique() >= 200  # others browse the care range too
    per = ev.filter(pl.col("action") == "purchase").group_by("visitor_id", "product_id").len()
    assert per.height >= 100 and (per["len"] >= 2).sum() >= 1  # a few repeat, without a cycle
    assert (per["len"] >= 4).sum() <= 2
