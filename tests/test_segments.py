"""Customer segments: known answers per condition kind, the file's checks, membership in the warehouse,
segment actions through `recctl.rules.apply`, and `recctl segments` over the sample shop."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from recctl import schema
from recctl.config import BusinessRule, RecctlConfig, RulesConfig, ServingConfig, load_config
from recctl.errors import ConfigError
from recctl.rules import apply
from recctl.rules.segment_defs import Segment, SegmentsFile, load_segments
from recctl.rules.segments import membership, resolve_segment_rules, segment_rules, show_user
from tests.conftest import ROOT, CliRunner, query

NOW = datetime(2026, 10, 1)
SCHEMA = {
    "user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
    "session_id": pl.String, "order_id": pl.String, "value": pl.Float64, "quantity": pl.Float64,
    "price": pl.Float64, "discount": pl.Float64,
}  # fmt: skip
ITEMS = pl.DataFrame(
    [
        ("boots", "Valenti", "Women > Shoes > Boots", 300.0),
        ("flats", "Basico", "women > shoes", 20.0),
        ("string", "Basico", "Women > Shoestrings", 5.0),
        ("jeans", "Northwind", "Men > Clothing > Jeans", 70.0),
        ("kid", "SunnyDay", "Kids > Clothing", 15.0),
    ],
    schema={"item_id": pl.String, "brand": pl.String, "category": pl.String, "price": pl.Float64},
    orient="row",
)


def ev(
    user: str, item: str, kind: str = "view", days_ago: float = 1.0, *, order: str | None = None,
    price: float | None = None, value: float | None = None, qty: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {"user_id": user, "item_id": item, "event_type": kind, "ts": NOW - timedelta(days=days_ago),
            "session_id": None, "order_id": order, "value": value, "quantity": qty, "price": price,
            "discount": None}  # fmt: skip


def members(
    rows: list[dict[str, Any]], registered: list[str] | None = None, now: datetime = NOW, **cond: Any
) -> list[str]:
    events = pl.DataFrame(rows, schema=SCHEMA)
    seg = Segment(name="s", **cond)
    out = membership(events, ITEMS, registered or [], [seg], now)
    assert out.columns == ["user_id", "segment"] and set(out["segment"]) <= {"s"}
    return out["user_id"].to_list()


# -------------------------------------------------------------------------------- conditions, known answers


def test_visitor_states() -> None:
    rows = [ev("b1", "kid"), ev("b1", "kid", "purchase"), ev("r1", "kid"), ev("session:s1", "kid")]
    reg = ["r1", "r2", "b1"]  # r2: registered, no events
    assert members(rows, reg, visitor_states=["buyer"]) == ["b1"]
    assert members(rows, reg, visitor_states=["signed_in"]) == ["r1", "r2"]
    assert members(rows, reg, visitor_states=["returning"]) == ["session:s1"]
    assert members(rows, reg, visitor_states=["returning", "buyer"]) == ["b1", "session:s1"]
    assert members(rows, reg, visitor_states=["new"]) == []
    assert members(rows, reg) == ["b1", "r1", "r2", "session:s1"]  # no condition: everyone evaluated


def test_category_share_is_weighted_by_whole_levels_and_case_insensitive() -> None:
    rows = [
        ev("a", "boots"), ev("a", "flats"), ev("a", "jeans"),            # 2 of 3 → 0.667
        ev("b", "flats", "purchase"), *[ev("b", "jeans")] * 3,           # 5 of 8 → 0.625
        ev("c", "string"), ev("c", "string"),                            # Shoestrings: not under Shoes
        ev("d", "boots", "remove_from_cart"), ev("d", "jeans"),          # weight 0 → 0 of 1
    ]  # fmt: skip
    assert members(rows, categories=["WOMEN > shoes"], min_category_share=0.6) == ["a", "b"]
    assert members(rows, categories=["Women > Shoes"], min_category_share=0.65) == ["a"]
    assert members(rows, categories=["Women"], min_category_share=1.0) == ["c"]
    assert members(rows, categories=["Kids", "Men"], min_category_share=0.3) == ["a", "b", "d"]


def test_brand_share() -> None:
    rows = [ev("a", "boots", "add_to_cart"), ev("a", "jeans"),  # 3 of 4
            ev("b", "flats"), ev("b", "string"), ev("b", "boots")]  # 1 of 3  # fmt: skip
    assert members(rows, brands=[" valenti "], min_brand_share=0.75) == ["a"]
    assert members(rows, brands=["Basico", "Northwind"], min_brand_share=0.25) == ["a", "b"]
    assert members(rows, brands=["Basico"], min_brand_share=0.6) == ["b"]


def test_viewed_and_bought_price_medians() -> None:
    rows = [
        ev("a", "kid"), ev("a", "flats"), ev("a", "boots"),                       # catalog 15, 20, 300 → 20
        ev("b", "kid", price=100.0), ev("b", "kid", price=120.0),                 # shown prices → 110
        ev("a", "boots", "purchase", value=500.0, qty=2.0),                       # no price: 500 / 2 = 250
        ev("b", "jeans", "purchase", price=60.0), ev("b", "kid", "purchase"),     # 60 and catalog 15 → 37.5
    ]  # fmt: skip
    assert members(rows, viewed_price_max=20.0) == ["a"]
    assert members(rows, viewed_price_min=100.0, viewed_price_max=110.0) == ["b"]
    assert members(rows, bought_price_min=250.0) == ["a"]
    assert members(rows, bought_price_max=37.5) == ["b"]
    rows.append(ev("c", "kid"))  # no purchase: no bought price, so no bought-price condition holds
    assert members(rows, bought_price_max=1000.0) == ["a", "b"]


def test_recency_ignores_events_after_now() -> None:
    rows = [ev("a", "kid", days_ago=10), ev("b", "kid", days_ago=40), ev("b", "kid", days_ago=-5)]
    assert members(rows, recency_days_max=30) == ["a"]
    assert members(rows, recency_days_min=30) == ["b"]  # b's future event does not count
    assert members(rows, recency_days_min=10, recency_days_max=10) == ["a"]
    assert members(rows, now=NOW + timedelta(days=6), recency_days_max=2) == ["b"]


def test_orders_count_order_ids_or_purchase_days() -> None:
    rows = [
        ev("a", "kid", "purchase", order="o1"), ev("a", "jeans", "purchase", order="o1"),
        ev("a", "kid", "purchase", 3, order="o2"),
        ev("b", "kid", "purchase", 1.0), ev("b", "jeans", "purchase", 1.0),   # one day, no order id
        ev("b", "kid", "purchase", 5.0), ev("b", "kid", "purchase", 9.0),     # two more days
        ev("c", "kid"),                                                       # no orders
    ]  # fmt: skip
    assert members(rows, min_orders=2) == ["a", "b"]
    assert members(rows, min_orders=3) == ["b"]
    assert members(rows, max_orders=2) == ["a", "c"]
    assert members(rows, max_orders=0) == ["c"]


def test_spend_uses_value_then_price_times_quantity_then_catalog_price() -> None:
    rows = [
        ev("a", "boots", "purchase", value=100.0, price=300.0, qty=3.0),   # value wins: 100
        ev("b", "jeans", "purchase", price=50.0, qty=3.0),                 # 150
        ev("c", "kid", "purchase", qty=4.0), ev("c", "kid", "purchase"),   # catalog 15 × 4 + 15 = 75
        ev("d", "kid"),                                                    # nothing bought: 0
    ]  # fmt: skip
    assert members(rows, min_spend=100.0) == ["a", "b"]
    assert members(rows, min_spend=75.0, max_spend=75.0) == ["c"]
    assert members(rows, max_spend=0.0) == ["d"]


def test_window_days_limits_affinity_prices_orders_and_spend() -> None:
    rows = [
        ev("a", "boots", "purchase", 40, order="o1", value=300.0), ev("a", "kid", "purchase", 5, order="o2"),
        ev("a", "kid", days_ago=2),
    ]  # fmt: skip
    assert members(rows, min_orders=2) == ["a"]
    assert members(rows, min_orders=2, window_days=30) == []
    assert members(rows, min_spend=300.0) == ["a"]
    assert members(rows, max_spend=15.0, window_days=30) == ["a"]
    assert members(rows, categories=["Kids"], min_category_share=0.6) == []  # 5 + 1 of 11
    assert members(rows, categories=["Kids"], min_category_share=1.0, window_days=30) == ["a"]
    assert members(rows, bought_price_max=15.0, window_days=30) == ["a"]
    assert members(rows, recency_days_max=3, window_days=1) == ["a"]  # recency: whole history
    # segments with different windows in one call
    segs = [Segment(name="all", min_orders=2), Segment(name="recent", min_orders=2, window_days=30)]
    out = membership(pl.DataFrame(rows, schema=SCHEMA), ITEMS, [], segs, NOW)
    assert out.rows() == [("a", "all")]


def test_all_conditions_must_hold() -> None:
    rows = [ev("a", "boots", "purchase", value=900.0), ev("b", "boots", "purchase", value=100.0),
            ev("c", "kid", "purchase", value=900.0)]  # fmt: skip
    cond = {"visitor_states": ["buyer"], "brands": ["Valenti"], "min_brand_share": 0.5, "min_spend": 500.0}
    assert members(rows, **cond) == ["a"]


# --------------------------------------------------------------------------------------- the file's checks


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "segments.toml"
    f.write_text(text, encoding="utf-8")
    return f


def test_the_shipped_file_loads() -> None:
    defs = load_segments(ROOT / "configs" / "segments.toml")
    assert defs.names == ["premium-enthusiasts", "budget-kids"]
    for s in defs.segments:
        assert s.description and {a.type for a in s.actions} == {"boost", "bury", "emit"}


def test_the_shipped_commented_examples_are_valid() -> None:
    text = (ROOT / "configs" / "segments.toml").read_text(encoding="utf-8")
    lines = [re.sub(r"^# ([a-z_]+ = \S+)\s+#.*$", r"\1", ln) for ln in text.splitlines()]
    defs = SegmentsFile.model_validate(tomllib.loads("\n".join(lines)))
    assert (defs.segments[0].recency_days_max, defs.segments[0].window_days) == (60, 180)


def test_actions_parse(tmp_path: Path) -> None:
    f = _write(tmp_path, "[[segments]]\nname = 'vip'\nmin_spend = 10\n[[segments.actions]]\ntype = 'boost'\n"
                         "categories = ['Women']\nprice_min = 5\nfactor = 2\n[[segments.actions]]\ntype = 'emit'\n"
                         "id = 'banner-vip'\n")  # fmt: skip
    vip = load_segments(f).segments[0]
    assert [(a.type, a.categories, a.price_min, a.factor, a.id) for a in vip.actions] == [
        ("boost", ["Women"], 5.0, 2.0, None), ("emit", [], None, None, "banner-vip")]  # fmt: skip
    assert vip.conditions() == ["spend >= 10"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("colour = 'red'", "segment 'vip': unknown key 'colour'"),
        ("categories = ['Kids']", "segment 'vip': categories needs min_category_share"),
        ("min_brand_share = 0.5", "segment 'vip': min_brand_share needs brands"),
        ("min_category_share = 1.5\ncategories = ['x']", "segment 'vip': 'min_category_share'"),
        ("visitor_states = ['vip']", r"segment 'vip': 'visitor_states\[1\]'"),
        ("min_spend = 10\nmax_spend = 5", r"segment 'vip': min_spend \(10\) is above max_spend \(5\)"),
        ("recency_days_min = 9\nrecency_days_max = 3", "recency_days_min .* is above recency_days_max"),
        ("[[segments.actions]]\ntype = 'boost'\nbrands = ['x']", r"'actions\[1\]': action boost needs factor"),
        ("[[segments.actions]]\ntype = 'bury'\nfactor = 2", r"'actions\[1\]': action bury needs at least one"),
        ("[[segments.actions]]\ntype = 'boost'\nbrands = ['x']\nfactor = 0.5", r"'actions\[1\].factor'"),
        ("[[segments.actions]]\ntype = 'emit'", r"'actions\[1\]': action emit needs id"),
        ("[[segments.actions]]\ntype = 'emit'\nid = 'x'\nfactor = 2", "action emit takes only id"),
        ("[[segments.actions]]\ntype = 'pin'\nid = 'x'", r"'actions\[1\].type'"),
        ("[[segments.actions]]\ntype = 'emit'\nid = 'x'\nurl = 'y'", r"unknown key 'actions\[1\].url'"),
    ],
)  # fmt: skip
def test_bad_segments_name_the_segment_and_key(tmp_path: Path, body: str, message: str) -> None:
    f = _write(tmp_path, f"[[segments]]\nname = 'vip'\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        load_segments(f)


def test_other_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="segments file not found") as exc:
        load_segments(tmp_path / "nope.toml")
    assert exc.value.hint and "segments_file" in exc.value.hint
    with pytest.raises(ConfigError, match="cannot parse"):
        load_segments(_write(tmp_path, "[[segments]\nname = 'x'"))
    with pytest.raises(ConfigError, match="segment names must be unique: a"):
        load_segments(_write(tmp_path, "[[segments]]\nname = 'a'\n[[segments]]\nname = 'a'\n"))
    with pytest.raises(ConfigError, match="segment 'a b': 'name': String should match pattern"):
        load_segments(_write(tmp_path, "[[segments]]\nname = 'a'\n[[segments]]\nname = 'a b'\n"))
    with pytest.raises(ConfigError, match="segment #2: 'name': Field required"):
        load_segments(_write(tmp_path, "[[segments]]\nname = 'a'\n[[segments]]\nmin_spend = 1\n"))
    with pytest.raises(ConfigError, match="unknown key 'segment'"):
        load_segments(_write(tmp_path, "[[segment]]\nname = 'a'\n"))


# ------------------------------------------------------------------------------ actions as business rules


def _con_with_members(rows: list[tuple[str, str]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(schema.create_table_sql("segment_members", schema.SEGMENT_MEMBERS_COLUMNS))
    for u, s in rows:
        con.execute("INSERT INTO segment_members VALUES (?, ?, ?)", [u, s, NOW])
    return con


def _cfg(tmp_path: Path) -> RecctlConfig:
    f = _write(tmp_path, "[[segments]]\nname = 'shoes'\ndescription = 'shoe lovers'\n"
                         "[[segments.actions]]\ntype = 'emit'\nid = 'banner-shoes'\n"
                         "[[segments.actions]]\ntype = 'boost'\ncategories = ['Women > Shoes']\nfactor = 3\n"
                         "[[segments.actions]]\ntype = 'bury'\nbrands = ['northwind']\nfactor = 2\n"
                         "[[segments]]\nname = 'kids'\n[[segments.actions]]\ntype = 'emit'\nid = 'banner-kids'\n")  # fmt: skip
    return RecctlConfig(serving=ServingConfig(segments_file=f))


def test_segment_rules_boost_members_only(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    con = _con_with_members([("u1", "shoes"), ("u3", "shoes"), ("u1", "kids"), ("gone", "old-segment")])
    rules = segment_rules(con, cfg, ["u1", "u2"])
    assert [(r.name, r.action, r.users, r.factor) for r in rules] == [
        ("segment:shoes/2", "boost", ["u1"], 3.0), ("segment:shoes/3", "bury", ["u1"], 2.0)]  # fmt: skip
    assert segment_rules(con, cfg, ["u2"]) == []
    recs = pl.DataFrame({"user_id": ["u1"] * 3 + ["u2"] * 3, "item_id": ["jeans", "kid", "flats"] * 2,
                         "score": [3.0, 2.0, 1.0] * 2})  # fmt: skip
    history = pl.DataFrame(schema=SCHEMA)
    base = RulesConfig(exclude_bought=False, exclude_out_of_stock=False)
    out = apply(
        recs, history=history, items=ITEMS, cfg=base.model_copy(update={"business": rules}), now=NOW
    ).frame
    u1 = out.filter(pl.col("user_id") == "u1")
    assert u1["item_id"].to_list() == ["flats", "kid", "jeans"]  # 3.0 (boosted 1 × 3), 2.0, 1.5 (3 ÷ 2)
    assert u1["rules"].to_list() == [["boost: segment:shoes/2"], [], ["bury: segment:shoes/3"]]
    plain = apply(recs, history=history, items=ITEMS, cfg=base, now=NOW).frame
    assert out.filter(pl.col("user_id") == "u2").equals(plain.filter(pl.col("user_id") == "u2"))


def test_show_user_and_action_ids(tmp_path: Path) -> None:
    from recctl.rules.segments import action_ids

    cfg = _cfg(tmp_path)
    con = _con_with_members([("u1", "shoes"), ("u1", "kids"), ("u1", "old-segment")])
    doc = show_user(con, cfg, "u1")
    assert [s["name"] for s in doc["segments"]] == ["shoes", "kids"]  # file order
    assert doc["segments"][0]["description"] == "shoe lovers" and doc["applied_at"] == NOW
    assert doc["stale_segments"] == ["old-segment"]
    assert [(r["name"], r["action"], r["factor"]) for r in doc["rules"]] == [
        ("segment:shoes/2", "boost", 3.0), ("segment:shoes/3", "bury", 2.0)]  # fmt: skip
    assert doc["actions"] == action_ids(con, cfg, "u1") == ["banner-shoes", "banner-kids"]
    nobody = show_user(con, cfg, "nobody")
    assert (nobody["segments"], nobody["rules"], nobody["actions"]) == ([], [], [])
    assert nobody["applied_at"] == NOW  # the last apply
    assert action_ids(con, cfg, "nobody") == []


def test_resolve_segment_rules() -> None:
    cfg = RulesConfig(business=[
        BusinessRule(name="plain", action="exclude", items=["x"]),
        BusinessRule(name="vip-boost", action="boost", brands=["Valenti"], factor=3, segment="vip"),
        BusinessRule(name="vip-u2", action="exclude", items=["y"], segment="vip", users=["u2", "u9"]),
        BusinessRule(name="empty", action="exclude", items=["z"], segment="nobody-here"),
    ])  # fmt: skip
    mem = pl.DataFrame({"user_id": ["u2", "u1", "u3"], "segment": ["vip", "vip", "other"]})
    out = resolve_segment_rules(cfg, mem)
    assert [(r.name, r.users, r.segment) for r in out.business] == [
        ("plain", [], None), ("vip-boost", ["u1", "u2"], None), ("vip-u2", ["u2"], None)]  # fmt: skip
    known = SegmentsFile(segments=[Segment(name="vip"), Segment(name="other"), Segment(name="nobody-here")])
    assert resolve_segment_rules(cfg, mem, segments=known) == out
    with pytest.raises(ConfigError, match="rule 'empty': segment 'nobody-here' is not defined"):
        resolve_segment_rules(cfg, mem, segments=SegmentsFile(segments=[Segment(name="vip")]))
    untouched = RulesConfig(business=[BusinessRule(name="plain", action="exclude", items=["x"])])
    assert resolve_segment_rules(untouched, mem) is untouched
    # the resolved rules act on members only
    recs = pl.DataFrame({"user_id": ["u1", "u1", "u3", "u3"], "item_id": ["jeans", "boots"] * 2,
                         "score": [2.0, 1.0] * 2})  # fmt: skip
    res = apply(recs, history=pl.DataFrame(schema=SCHEMA), items=ITEMS, now=NOW,
                cfg=out.model_copy(update={"exclude_out_of_stock": False}))  # fmt: skip
    assert res.frame.filter(pl.col("user_id") == "u1")["item_id"].to_list() == ["boots", "jeans"]
    assert res.frame.filter(pl.col("user_id") == "u3")["item_id"].to_list() == ["jeans", "boots"]


def test_business_rules_accept_a_segment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[[rules.business]]\nname = 'r'\naction = 'exclude'\nitems = ['x']\nsegment = 'vip'\n")
    assert load_config(f, environ={}).rules.business[0].segment == "vip"
    f.write_text("[[rules.business]]\nname = 'r'\naction = 'exclude'\nitems = ['x']\nsegment = 'v i p'\n")
    with pytest.raises(ConfigError, match=r"'rules\.business\.0\.segment'"):
        load_config(f, environ={})


# ------------------------------------------------------------------------------ the command, sample shop


@pytest.fixture(scope="module")
def shop_wh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample shop's events, items and customers ingested once with the shipped mappings."""
    from recctl.cli import run

    db = tmp_path_factory.mktemp("segshop") / "shop.duckdb"
    files = {"events": "events.csv.gz", "items": "items.ndjson", "users": "users.csv"}
    for table, name in files.items():
        mapping = ROOT / "configs" / "mappings" / f"sample-shop-{table}.toml"
        args = ["--quiet", "--warehouse", str(db), "ingest", table, str(ROOT / "sample_data" / name),
                "--mapping", str(mapping)]  # fmt: skip
        assert run(args) == 0
    return db


def _project(shop_wh: Path, tmp_path: Path, segments: Path | None = None) -> Path:
    db = tmp_path / "w.duckdb"
    shutil.copy(shop_wh, db)
    cfg = tmp_path / "recctl.toml"
    cfg.write_text(f'[warehouse]\npath = "{db}"\n[serving]\nsegments_file = '
                   f'"{segments or ROOT / "configs" / "segments.toml"}"\n')  # fmt: skip
    return cfg


def test_segments_commands_on_the_sample_shop(cli: CliRunner, shop_wh: Path, tmp_path: Path) -> None:
    cfg = _project(shop_wh, tmp_path)
    db = tmp_path / "w.duckdb"
    r = cli("--json", "--config", cfg, "segments", "list")
    assert r.code == 0, r.stderr
    assert r.json["applied_at"] is None and [s["members"] for s in r.json["segments"]] == [None, None]

    r = cli("--json", "--config", cfg, "segments", "apply", "--now", "2026-10-01")
    assert r.code == 0, r.stderr
    rep = r.json
    assert r.stdout.count("\n") == 1 and rep["users_evaluated"] == 2000  # every visitor of the sample shop
    counts = rep["segments"]
    assert list(counts) == ["premium-enthusiasts", "budget-kids"]
    assert all(50 <= n <= 300 for n in counts.values()), counts  # some, not everyone
    assert query(db, "SELECT count(*) FROM segment_members")[0][0] == rep["members"] == sum(counts.values())
    before = query(db, "SELECT user_id, segment FROM segment_members ORDER BY ALL")
    # the planted structure: premium members spend mostly on premium brands; budget-kids view cheap kids' items
    tiers = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())["meta"]["tiers"]
    premium = [u for u, s in before if s == "premium-enthusiasts"]
    kids = [u for u, s in before if s == "budget-kids"]
    brands = query(db, "SELECT i.brand FROM events e JOIN items i USING (item_id) WHERE e.event_type = 'purchase' "
                       f"AND e.user_id IN ({', '.join(repr(u) for u in premium)})")  # fmt: skip
    assert sum(tiers[b] == "premium" for (b,) in brands) / len(brands) > 0.5

    r = cli("--json", "--config", cfg, "segments", "apply", "--now", "2026-10-01")  # idempotent
    assert r.code == 0 and r.json["segments"] == counts
    assert query(db, "SELECT user_id, segment FROM segment_members ORDER BY ALL") == before
    assert query(db, "SELECT count(DISTINCT applied_at) FROM segment_members")[0][0] == 1

    r = cli("--json", "--config", cfg, "segments", "list")
    assert r.code == 0, r.stderr
    listed = {s["name"]: s for s in r.json["segments"]}
    assert {n: s["members"] for n, s in listed.items()} == counts
    assert "spend >= 800" in listed["premium-enthusiasts"]["conditions"]
    assert "emit banner-kids-deals" in listed["budget-kids"]["actions"]

    for user, seg, action in ((premium[0], "premium-enthusiasts", "banner-premium-new-arrivals"),
                              (kids[0], "budget-kids", "banner-kids-deals")):  # fmt: skip
        r = cli("--json", "--config", cfg, "segments", "show", user)
        assert r.code == 0, r.stderr
        doc = r.json
        assert [s["name"] for s in doc["segments"]] == [seg] and doc["actions"] == [action]
        assert [x["name"] for x in doc["rules"]] == [f"segment:{seg}/1", f"segment:{seg}/2"]
    r = cli("--json", "--config", cfg, "segments", "show", "no-such-user")
    assert r.code == 0 and (r.json["segments"], r.json["rules"], r.json["actions"]) == ([], [], [])

    # a re-apply with another file replaces the membership: old segments are gone
    other = _write(tmp_path, "[[segments]]\nname = 'buyers'\nvisitor_states = ['buyer']\n")
    cfg.write_text(f'[warehouse]\npath = "{db}"\n[serving]\nsegments_file = "{other}"\n')
    r = cli("--json", "--config", cfg, "segments", "apply", "--now", "2026-10-01")
    assert r.code == 0 and list(r.json["segments"]) == ["buyers"]
    assert query(db, "SELECT DISTINCT segment FROM segment_members") == [("buyers",)]
    assert r.json["segments"]["buyers"] == query(
        db, "SELECT count(DISTINCT user_id) FROM events WHERE event_type = 'purchase'")[0][0]  # fmt: skip


def test_segments_errors(
    cli: CliRunner, shop_wh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the default segments file is missing
    missing_wh = tmp_path / "none.duckdb"
    for args in (("segments", "apply"), ("segments", "show", "u1")):
        r = cli("--warehouse", missing_wh, *args)
        assert r.code == 2 and "no warehouse at" in r.stderr, r.stderr
    assert not missing_wh.exists()
    r = cli("--warehouse", missing_wh, "segments", "list")
    assert r.code == 2 and "segments file not found: configs/segments.toml" in r.stderr
    db = tmp_path / "w.duckdb"
    shutil.copy(shop_wh, db)
    r = cli("--warehouse", db, "segments", "apply")
    assert r.code == 2 and "segments file not found" in r.stderr and "hint" in r.stderr
    cfg = _project(shop_wh, tmp_path, _write(tmp_path, "[[segments]]\nname = 'x'\nmin_spend = 'lots'\n"))
    r = cli("--config", cfg, "segments", "apply")
    assert r.code == 2 and "segment 'x': 'min_spend'" in r.stderr
    cfg = _project(shop_wh, tmp_path)
    r = cli("--config", cfg, "segments", "apply", "--now", "yesterday")
    assert r.code == 2 and "--now takes an ISO date" in r.stderr


@pytest.mark.parametrize("args", [(), ("list",), ("show",), ("apply",)])
def test_segments_help(cli: CliRunner, args: tuple[str, ...]) -> None:
    r = cli("segments", *args, "--help")
    assert r.code == 0 and "Usage" in r.stdout
    assert {(): "Rule-based customer segments", ("list",): "conditions in words", ("show",): "action ids",
            ("apply",): "one transaction"}[args] in " ".join(r.stdout.split())  # fmt: skip
