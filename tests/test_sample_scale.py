"""``recctl sample --scale`` (``recctl.sample.scale``): determinism, chunking, the shape of the shop and a
clean ingest through the shipped ``scale-shop-*`` mappings. Memory that does not grow with the event count
is measured by ``benchmarks/scale.py``, not here."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from recctl.errors import ConfigError
from recctl.sample.scale import default_items, generate_scale, parse_count
from tests.conftest import CliRunner

N = 50_000
FILES = ("events.parquet", "items.parquet", "users.parquet")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale")
    summary = generate_scale(out, N, seed=11, chunk=20_000)
    assert summary["events"] == N and summary["row_groups"] == 3
    return out


@pytest.fixture(scope="module")
def events(shop: Path) -> pl.DataFrame:
    return pl.read_parquet(shop / "events.parquet")


def test_parse_count() -> None:
    assert [parse_count(s) for s in ("1M", "10m", "100M", "250k", "1.5M", "100000", "2_000")] == [
        1_000_000, 10_000_000, 100_000_000, 250_000, 1_500_000, 100_000, 2_000,
    ]  # fmt: skip
    for bad in ("", "ten", "1T", "-5", "999"):
        with pytest.raises(ConfigError):
            parse_count(bad)


def test_catalog_scales_with_events() -> None:
    assert default_items(1_000_000) == 100_000
    assert default_items(100_000_000) == 1_000_000
    assert default_items(10_000_000) == 316_228
    assert default_items(10_000) == 10_000 and default_items(1_000) == 3_162


def test_exact_count_and_row_groups(shop: Path) -> None:
    meta = pq.ParquetFile(shop / "events.parquet").metadata
    assert meta.num_rows == N
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [20_000, 20_000, 10_000]


def test_same_seed_same_files_whatever_the_chunk(shop: Path, events: pl.DataFrame, tmp_path: Path) -> None:
    generate_scale(tmp_path / "a", N, seed=11, chunk=7_000)
    assert pq.ParquetFile(tmp_path / "a" / "events.parquet").metadata.num_row_groups == 8
    for f in FILES:
        assert pl.read_parquet(tmp_path / "a" / f).equals(pl.read_parquet(shop / f)), f
    generate_scale(tmp_path / "b", N, seed=12, chunk=N)
    other = pl.read_parquet(tmp_path / "b" / "events.parquet")
    assert other.height == N and not other.equals(events)


def test_a_shorter_shop_is_a_prefix_of_a_longer_one(events: pl.DataFrame, tmp_path: Path) -> None:
    generate_scale(tmp_path / "s", 12_345, seed=11, chunk=5_000, items=default_items(N), users=N // 10)
    assert pl.read_parquet(tmp_path / "s" / "events.parquet").equals(events.head(12_345))


def test_popularity_is_zipf_like(shop: Path, events: pl.DataFrame) -> None:
    n_items = pl.read_parquet(shop / "items.parquet").height
    per_item = events["sku"].value_counts(sort=True)["count"]
    top = per_item.head(n_items // 100).sum() / N
    assert top > 0.2  # the top 1 % of the catalog carries a fifth of the events (uniform: 1 %)
    assert per_item.len() < 0.8 * n_items  # a long tail never seen in 50k events


def test_user_activity_is_heavy_tailed(events: pl.DataFrame) -> None:
    per_user = events["customer_id"].value_counts(sort=True)["count"]
    assert per_user.head(per_user.len() // 100).sum() / N > 0.1  # the top 1 % of users: over 10 % of events
    assert (per_user <= 5).sum() > 0.25 * per_user.len()  # a long tail of users with few events
    assert per_user.max() > 20 * per_user.median()  # type: ignore[operator]


def test_sessions_are_ordered_and_funnel_holds(events: pl.DataFrame) -> None:
    e = events.with_row_index("i")
    assert e["action"].unique().sort().to_list() == ["cart", "purchase", "view"]
    # the file is grouped by session and time runs forward within each
    order = e.group_by("session").agg(pl.col("i").min().alias("lo"), pl.col("i").max().alias("hi"), pl.len())
    assert (order["hi"] - order["lo"] + 1 == order["len"]).all()
    assert e.select((pl.col("event_time").diff().over("session") >= pl.duration(seconds=0)).all()).item()
    # every cart follows a view of the item in its session, every purchase a cart, with an order id
    first = e.group_by("session", "sku", "action").agg(pl.col("i").min())
    wide = first.pivot("action", index=["session", "sku"], values="i")
    assert (
        wide.filter(pl.col("cart").is_not_null())["view"] < wide.filter(pl.col("cart").is_not_null())["cart"]
    ).all()
    bought = wide.filter(pl.col("purchase").is_not_null())
    assert bought.height > 0 and (bought["cart"] < bought["purchase"]).all()
    p = e.filter(pl.col("action") == "purchase")
    assert p["order_id"].null_count() == 0 and p["quantity"].min() >= 1  # type: ignore[operator]
    assert (p["order_id"].str.slice(1) == p["session"].str.slice(1)).all()
    assert e.filter(pl.col("action") != "purchase")["order_id"].null_count() == N - p.height
    span = e["event_time"].max() - e["event_time"].min()  # type: ignore[operator]
    assert 85 <= span.days <= 92  # type: ignore[union-attr]


def test_brand_and_price_structure(shop: Path, events: pl.DataFrame) -> None:
    items = pl.read_parquet(shop / "items.parquet")
    assert items["sku"].is_unique().all() and items["price"].min() > 0  # type: ignore[operator]
    assert (items["price"] <= items["list_price"]).all()
    # brands keep a price level: the spread of mean prices across brands is wide
    by_brand = items.group_by("brand").agg(pl.col("list_price").mean())["list_price"]
    assert by_brand.max() > 5 * by_brand.min()  # type: ignore[operator]
    # users come back to their brand: a regular's most viewed brand has a far larger share of their views
    # than of everyone's
    v = events.filter(pl.col("action") == "view").join(items.select("sku", "brand"), on="sku")
    overall = v.group_by("brand").agg((pl.len() / v.height).alias("overall"))
    per = v.group_by("customer_id", "brand").len().filter(pl.col("len").sum().over("customer_id") >= 20)
    top = (
        per.with_columns((pl.col("len") / pl.col("len").sum().over("customer_id")).alias("own"))
        .sort("own", "brand", descending=[True, False])
        .group_by("customer_id", maintain_order=True)
        .first()
        .join(overall, on="brand")
    )
    assert top.height > 20
    assert (top["own"] / top["overall"]).median() > 3  # type: ignore[operator]
    # and to their price tier: regulars' median viewed price spreads far wider than one shop-wide median
    med = (
        v.group_by("customer_id").agg(pl.col("price").median(), pl.len()).filter(pl.col("len") >= 20)["price"]
    )
    assert med.quantile(0.9) > 3 * med.quantile(0.1)  # type: ignore[operator]


def test_ingests_with_zero_rejects_through_shipped_mappings(
    shop: Path, tmp_path: Path, cli: CliRunner
) -> None:
    wh = tmp_path / "w.duckdb"
    for target in ("events", "items", "users"):
        r = cli(
            "--json", "--warehouse", wh, "ingest", target, shop / f"{target}.parquet", "--mapping",
            f"scale-shop-{target}",
        )  # fmt: skip
        assert r.code == 0, r.stderr
        f = r.json["files"][0]
        assert f["rows_rejected"] == 0 and f["rows_duplicate"] == 0 and f["rows_loaded"] == f["rows_read"]
    con = duckdb.connect(str(wh), read_only=True)
    try:
        got = con.execute(
            "SELECT count(*), count(DISTINCT event_type), sum((event_type = 'purchase')::INT), "
            "count(*) FILTER (WHERE item_id NOT IN (SELECT item_id FROM items)), "
            "count(*) FILTER (WHERE user_id NOT IN (SELECT user_id FROM users)), "
            "count(*) FILTER (WHERE event_type = 'purchase' AND (order_id IS NULL OR value IS NULL)) FROM events"
        ).fetchone()
    finally:
        con.close()
    assert got is not None and got[:2] == (N, 3) and got[2] > 0 and got[3:] == (0, 0, 0)
