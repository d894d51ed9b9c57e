"""`recctl prepare`: known answers for every filter, reports that add up, safe defaults, the command."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recctl.config import PrepareConfig, load_config
from recctl.errors import ConfigError, DataError
from recctl.prepare import PrepareResult, _in_user_time_order, prepare
from tests.conftest import ROOT, CliRunner, query

T0 = datetime(2024, 3, 1, 10, 0, 0)
SCHEMA = {
    "user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
    "session_id": pl.String, "order_id": pl.String, "value": pl.Float64, "quantity": pl.Float64,
    "price": pl.Float64, "discount": pl.Float64,
}  # fmt: skip
OFF = {"sessionize": False, "collapse_repeats": False, "bots": False, "min_counts": False}


def frame(rows: list[tuple[str, str, str, float, str | None]]) -> pl.DataFrame:
    """(user, item, event type, seconds after T0, session) → an interaction frame in load order.

    ``value`` carries the input position, so tests can see that kept rows keep their order.
    """
    data = [
        (u, i, e, T0 + timedelta(seconds=s), sess, None, float(n), None, 10.0, None)
        for n, (u, i, e, s, sess) in enumerate(rows)
    ]
    return pl.DataFrame(data, schema=SCHEMA, orient="row")


def cfg(**kw: Any) -> PrepareConfig:
    return PrepareConfig(**{**OFF, **kw})


def step(result: PrepareResult, name: str) -> dict[str, Any]:
    return next(r.as_dict() for r in result.report if r.filter == name)


def sessions(result: PrepareResult) -> list[str | None]:
    return result.events["session_id"].to_list()


def test_defaults_change_nothing_on_a_clean_frame() -> None:
    rows = [(f"u{u}", f"p{(u * 7 + k) % 9}", ("view", "add_to_cart", "purchase")[k % 3], 600.0 * k + u, f"s{u}")
            for u in range(6) for k in range(8)]  # fmt: skip
    rows += [("u1", "p1", "purchase", 0.0, "s1"), ("u1", "p1", "purchase", 0.0, "s1")]  # a real quantity of 2
    ev = frame(rows).sort("user_id", "ts")
    result = prepare(ev, PrepareConfig())
    assert result.events.equals(ev)
    assert [r.filter for r in result.report] == ["sessionize", "collapse_repeats", "bots", "min_counts"]
    assert all(r.events_removed == r.users_removed == r.items_removed == r.events_changed == 0
               for r in result.report)  # fmt: skip


def test_sessionize_fills_missing_sessions_at_gaps_longer_than_session_gap() -> None:
    m = 60.0
    ev = frame([
        ("u1", "p1", "view", 0, None), ("u1", "p2", "view", 10 * m, None),
        ("u1", "p3", "view", 40 * m, None),          # exactly 30m later: still the same session
        ("u1", "p4", "view", 71 * m, None),          # 31m later: a new one
        ("u1", "p5", "view", 72 * m, "real"),        # a real session is left alone
        ("u2", "p1", "view", 5 * m, None),
        ("session:s9", "p1", "view", 0, "s9"),
    ])  # fmt: skip
    result = prepare(ev, cfg(sessionize=True))
    assert sessions(result) == ["u1#1", "u1#1", "u1#1", "u1#2", "real", "u2#1", "s9"]
    rep = step(result, "sessionize")
    assert rep["events_changed"] == 5 and rep["events_removed"] == 0
    assert rep["extra"]["sessions_made"] == 3
    assert "5 events without a session got one (3 sessions)" in rep["detail"]


def test_sessionize_ids_never_collide_with_real_ones() -> None:
    """A shop whose real session ids look like made ones: the made ids step aside ("##", "~~")."""
    ev = frame([
        ("u1", "p1", "view", 0, None), ("u1", "p2", "view", 7200, None),
        ("u2", "p1", "view", 0, "u1#1"), ("u2", "p1", "view", 10, "u1##2"),
        ("u3", "p1", "view", 0, "s1"), ("u3", "p2", "view", 7200, "s1"), ("u3", "p3", "view", 9000, "s1~2"),
    ])  # fmt: skip
    result = prepare(ev, cfg(sessionize=True, resplit_sessions=True))
    got = sessions(result)
    assert got == ["u1###1", "u1###2", "u1#1", "u1##2", "s1", "s1~~2", "s1~2"]
    # every (user, made id) is its own visit: no made id equals an id that existed
    assert not set(got[:2] + got[5:6]) & {"u1#1", "u1##2", "s1", "s1~2"}
    assert step(result, "sessionize")["extra"]["separators"] == ["###", "~~"]


def test_resplit_cuts_real_sessions_at_the_gaps_only_when_asked() -> None:
    m = 60.0
    rows = [
        ("u1", "p1", "view", 0, "s1"), ("u1", "p2", "view", 30 * m, "s1"),   # 30m: not longer than the gap
        ("u1", "p3", "view", 61 * m, "s1"), ("u1", "p4", "view", 62 * m, "s1"),  # 31m: cut
        ("u1", "p5", "view", 200 * m, "s1"),                                  # cut again
        ("u1", "p6", "view", 201 * m, "s2"),
    ]  # fmt: skip
    ev = frame(rows)
    assert sessions(prepare(ev, cfg(sessionize=True))) == ["s1"] * 5 + ["s2"]
    result = prepare(ev, cfg(sessionize=True, resplit_sessions=True))
    assert sessions(result) == ["s1", "s1", "s1~2", "s1~2", "s1~3", "s2"]
    rep = step(result, "sessionize")
    assert rep["extra"]["events_resplit"] == 3 and rep["extra"]["sessions_split_off"] == 2
    assert rep["events_changed"] == 3


def test_collapse_repeats_keeps_the_first_of_each_burst_and_never_touches_purchases() -> None:
    ev = frame([
        ("u1", "p1", "view", 0, "s"), ("u1", "p1", "view", 1, "s"), ("u1", "p1", "view", 3, "s"),  # chain: 1 left
        ("u1", "p1", "view", 6, "s"),                                          # 3s after the previous: kept
        ("u1", "p2", "view", 6.5, "s"),                                        # another item: kept
        ("u1", "p1", "click", 6.5, "s"), ("u1", "p1", "click", 7, "s"),        # click burst: 1 left
        ("u1", "p1", "add_to_cart", 7, "s"), ("u1", "p1", "add_to_cart", 7, "s"),  # not a listed type
        ("u1", "p1", "purchase", 8, "s"), ("u1", "p1", "purchase", 8, "s"), ("u1", "p1", "purchase", 9, "s"),
        ("u2", "p1", "view", 1, "t"),                                          # another user: kept
    ])  # fmt: skip
    result = prepare(ev, cfg(collapse_repeats=True, repeat_window="2s"))
    rep = step(result, "collapse_repeats")
    assert rep["events_removed"] == 3 and rep["purchases_removed"] == 0
    assert rep["extra"]["removed_by_type"] == {"click": 1, "view": 2}
    assert result.events["value"].to_list() == [0, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    assert (result.events["event_type"] == "purchase").sum() == 3
    # 0 switches it off; purchases cannot even be configured into it
    assert prepare(ev, cfg(collapse_repeats=True, repeat_window="0")).events.height == ev.height
    with pytest.raises(ValueError, match="purchases are never collapsed"):
        PrepareConfig(repeat_event_types=["view", "purchase"])


def _burst(user: str, n: int, start: float, every: float, kind: str = "view") -> list[tuple[str, str, str, float, str | None]]:  # fmt: skip
    return [(user, f"p{k % 50}", kind, start + k * every, f"{user}-s") for k in range(n)]


def test_bots_over_the_hourly_limit_lose_all_their_events_and_the_report_counts_their_purchases() -> None:
    rows = _burst("bot", 11, 0, 60)  # 11 events within 10:00–10:59
    rows += _burst("bot", 2, 86400, 60, "purchase")  # and two purchases the next day: they go too
    rows += _burst("human", 10, 1800, 120)  # 10:30–10:48: 10 in one clock hour, the limit
    rows += _burst("night", 12, 3000, 60)  # 10:50–11:01: 10 + 2 across two clock hours
    result = prepare(frame(rows), cfg(bots=True, bot_max_events_per_hour=10))
    rep = step(result, "bots")
    assert rep["users_removed"] == 1 and rep["events_removed"] == 13 and rep["purchases_removed"] == 2
    assert set(result.events["user_id"]) == {"human", "night"}
    assert rep["extra"]["bot_users_by_rule"] == {"events/hour": 1}
    assert "2 of them purchases" in rep["detail"] and "bot" in rep["detail"]


def test_bots_by_day_and_by_distinct_items_per_session() -> None:
    rows = _burst("busy", 30, 0, 1800)  # 30 events over 15 hours of one day
    rows += _burst("crawler", 8, 0, 30)  # 8 distinct items in one session
    rows += _burst("human", 5, 0, 600)
    ev = frame(rows)
    by_day = step(prepare(ev, cfg(bots=True, bot_max_events_per_hour=0, bot_max_events_per_day=20)), "bots")
    assert by_day["users_removed"] == 1 and by_day["events_removed"] == 30
    per_session = cfg(bots=True, bot_max_events_per_hour=0, bot_max_distinct_items_per_session=6)
    result = prepare(ev, per_session)
    assert set(result.events["user_id"]) == {"human"}  # busy has 30 distinct items in its session too
    assert step(result, "bots")["extra"]["bot_users_by_rule"] == {"items/session": 2}
    off = prepare(ev, cfg(bots=True, bot_max_events_per_hour=0))
    assert step(off, "bots")["enabled"] is False and off.events.height == ev.height


def _chain() -> pl.DataFrame:
    """A and B share p1, p2; C hangs on by p2 and p3; D by p3 and p4, which only D has."""
    return frame([
        ("A", "p1", "view", 0, "a"), ("A", "p2", "view", 1, "a"),
        ("B", "p1", "view", 0, "b"), ("B", "p2", "view", 1, "b"),
        ("C", "p2", "view", 0, "c"), ("C", "p3", "view", 1, "c"),
        ("D", "p3", "view", 0, "d"), ("D", "p4", "view", 1, "d"),
    ])  # fmt: skip


def test_min_counts_once_versus_k_core_to_a_fixed_point() -> None:
    ev = _chain()
    once = prepare(ev, cfg(min_counts=True, min_user_events=2, min_item_users=2))
    assert step(once, "min_counts")["events_removed"] == 1  # only p4; D now has one event left
    assert step(once, "min_counts")["extra"]["passes"] == 1
    core = prepare(ev, cfg(min_counts=True, min_user_events=2, min_item_users=2, k_core=True))
    rep = step(core, "min_counts")
    # p4 → D → p3 → C, one per pass, then a pass that removes nothing
    assert rep["extra"]["passes"] == 5
    assert rep["events_removed"] == 4 and rep["users_removed"] == 2 and rep["items_removed"] == 2
    kept = core.events
    assert set(kept["user_id"]) == {"A", "B"} and set(kept["item_id"]) == {"p1", "p2"}
    assert kept.group_by("user_id").len()["len"].min() >= 2
    assert kept.group_by("item_id").agg(pl.col("user_id").n_unique())["user_id"].min() >= 2
    # minimums of 1 (the defaults) are off
    assert step(prepare(ev, cfg(min_counts=True)), "min_counts")["enabled"] is False


def test_report_adds_up_and_rows_keep_their_order_and_dtypes() -> None:
    rows = (
        _burst("bot", 40, 0, 20)
        + _chain()
        .drop("value")
        .with_columns(s=(pl.col("ts") - T0).dt.total_seconds().cast(pl.Float64))
        .select("user_id", "item_id", "event_type", "s", "session_id")
        .rows()
    )
    rows += [
        ("u9", "p1", "view", 5.0, None),
        ("u9", "p1", "view", 5.5, None),
        ("u9", "p2", "purchase", 9.0, None),
    ]
    rows += [("B", "p1", "view", 1.5, "b")]
    ev = frame(rows)
    full = PrepareConfig(bot_max_events_per_hour=30, min_user_events=2, min_item_users=2, k_core=True,
                         resplit_sessions=True)  # fmt: skip
    result = prepare(ev, full)
    before = ev.height
    for r in result.report:
        assert r.events_before == before and r.events_after == r.events_before - r.events_removed
        before = r.events_after
    assert before == result.events_after == result.events.height
    total = sum(r.events_removed for r in result.report)
    assert result.as_dict()["events_removed"] == total == ev.height - result.events.height
    assert result.events.schema == ev.schema
    assert result.events["value"].is_sorted()  # kept rows in input order
    assert [step(result, n)["events_removed"] for n in ("collapse_repeats", "bots")] == [2, 40]


def test_bad_frames_are_data_errors() -> None:
    with pytest.raises(DataError, match="lacks column"):
        prepare(pl.DataFrame({"user_id": ["u"]}), PrepareConfig())
    bad = frame([("u", "p", "view", 0, "s")]).with_columns(pl.col("ts").cast(pl.String))
    with pytest.raises(DataError, match="not a timestamp"):
        prepare(bad, PrepareConfig())


def test_prepare_config_keys(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[prepare]\nsession_gap = "1h"\nmin_user_events = 5\nk_core = true\n')
    c = load_config(f, environ={"RECCTL_PREPARE__BOT_MAX_EVENTS_PER_HOUR": "300"})
    assert (c.prepare.session_gap, c.prepare.min_user_events, c.prepare.k_core) == ("1h", 5, True)
    assert c.prepare.bot_max_events_per_hour == 300
    for text, message in [
        ('[prepare]\nsession_gap = "soon"\n', "not a duration"),
        ('[prepare]\nsession_gap = "0s"\n', "longer than zero"),
        ("[prepare]\nbot_max_event_per_hour = 5\n", "unknown key 'prepare.bot_max_event_per_hour'"),
        ('[prepare]\nrepeat_event_types = ["purchase"]\n', "never collapsed"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(f, environ={})


# ---------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample shop's events ingested once with the shipped mapping; tests copy the file."""
    from recctl.cli import run

    db = tmp_path_factory.mktemp("shop") / "shop.duckdb"
    mapping = ROOT / "configs" / "mappings" / "sample-shop-events.toml"
    args = ["--quiet", "--warehouse", str(db), "ingest", "events", str(ROOT / "sample_data" / "events.csv.gz"),
            "--mapping", str(mapping)]  # fmt: skip
    assert run(args) == 0
    return db


def _copy(shop_db: Path, tmp_path: Path) -> Path:
    db = tmp_path / "w.duckdb"
    shutil.copy(shop_db, db)
    return db


def _tables(db: Path) -> set[str]:
    return {r[0] for r in query(db, "SELECT table_name FROM information_schema.tables")}


def test_prepare_command_on_the_sample_shop(cli: CliRunner, shop_db: Path, tmp_path: Path) -> None:
    db = _copy(shop_db, tmp_path)
    item_events = query(db, "SELECT count(*) FROM events WHERE item_id IS NOT NULL")[0][0]
    cfg_file = tmp_path / "strict.toml"
    cfg_file.write_text(
        f'[warehouse]\npath = "{db}"\n[prepare]\nrepeat_window = "1m"\nbot_max_events_per_hour = 30\n'
        "min_user_events = 5\nmin_item_users = 5\nk_core = true\n"
    )
    r = cli("--json", "--config", cfg_file, "prepare")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert r.stdout.count("\n") == 1  # one document
    assert doc["events_before"] == item_events and doc["dry_run"] is False
    removed = sum(f["events_removed"] for f in doc["filters"])
    assert removed > 0 and doc["events_after"] == item_events - removed
    assert query(db, "SELECT count(*) FROM events_prepared")[0][0] == item_events - removed
    # the sample shop has no planted bots; a threshold of 30 events/hour catches its busiest shoppers,
    # and the report says how many purchases went with them
    bots = next(f for f in doc["filters"] if f["filter"] == "bots")
    assert bots["users_removed"] > 0 and bots["purchases_removed"] > 0
    log = query(db, "SELECT step, filter, events_removed, json_extract(params, '$.k_core') FROM prepare_log "
                    "ORDER BY step")  # fmt: skip
    assert [row[1] for row in log] == ["sessionize", "collapse_repeats", "bots", "min_counts"]
    assert sum(row[2] for row in log) == removed and log[3][3] == "true"
    cols = [r[0] for r in query(db, "SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'events_prepared' ORDER BY ordinal_position")]  # fmt: skip
    assert cols == ["user_id", "item_id", "event_type", "ts", "session_id", "order_id", "value", "quantity",
                    "price", "discount"]  # fmt: skip
    assert cli("--config", cfg_file, "prepare").code == 0  # a rerun replaces the table, appends to the log
    assert query(db, "SELECT count(*), count(DISTINCT run_id) FROM prepare_log")[0] == (8, 2)
    assert query(db, "SELECT count(*) FROM events_prepared")[0][0] == item_events - removed


def test_prepare_defaults_keep_the_sample_shop_and_dry_run_writes_nothing(
    cli: CliRunner, shop_db: Path, tmp_path: Path
) -> None:
    db = _copy(shop_db, tmp_path)
    item_events = query(db, "SELECT count(*) FROM events WHERE item_id IS NOT NULL")[0][0]
    r = cli("--json", "--warehouse", db, "prepare", "--dry-run")
    assert r.code == 0, r.stderr
    assert r.json["dry_run"] is True and r.json["written"] == [] and r.json["events_after"] == item_events
    assert not {"events_prepared", "prepare_log"} & _tables(db)
    r = cli("--warehouse", db, "prepare")
    assert r.code == 0 and r.stdout.startswith("filter\tenabled\tevents_removed\t")  # the report as TSV
    assert query(db, "SELECT count(*) FROM events_prepared")[0][0] == item_events


def test_prepare_needs_a_warehouse(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("--warehouse", tmp_path / "none.duckdb", "prepare", "--dry-run")
    assert r.code == 2 and "no warehouse" in r.stderr


def test_evaluate_cleans_the_training_view_only_and_keeps_what_users_saw() -> None:
    """`recctl evaluate` runs [prepare] on the split's training view: a bot's training events go, but its
    purchases after the cutoff stay targets, and the items it touched stay "seen" (filtered from its list)."""
    from recctl.config import RecctlConfig
    from recctl.evaluate.runner import Options, make_split

    day = 86400.0
    rows = _burst("bot", 40, 0, 20)  # 40 views in 13 minutes, before the cutoff
    rows += _burst("bot", 30, 3 * day, 20)  # another burst after the cutoff: test period, never cleaned
    rows += [("bot", "p7", "purchase", 3 * day + 900, "bot-s")]
    rows += [*_burst("human", 6, 0, 3600), ("human", "p3", "purchase", 3 * day, "h-s")]
    ev = frame(rows).sort("user_id", "ts")
    conf = RecctlConfig.model_validate(
        {
            "prepare": {**OFF, "bots": True, "bot_max_events_per_hour": 30},
            "evaluate": {"protocol": "temporal"},
        }
    )
    opts = Options.from_config(conf)
    split = make_split(ev, conf, opts, cutoff=(T0 + timedelta(days=2)).isoformat())
    raw = make_split(ev, RecctlConfig(), Options.from_config(RecctlConfig(), protocol="temporal"),
                     cutoff=(T0 + timedelta(days=2)).isoformat())  # fmt: skip
    assert set(split.train["user_id"]) == {"human"}
    assert split.train.height == 6 and raw.train.height == 46
    assert split.test.equals(raw.test) and set(split.test["user_id"]) == {"bot", "human"}
    assert split.seen().sort("user_id", "item_id").equals(raw.seen().sort("user_id", "item_id"))
    states = dict(split.visitor_states().iter_rows())
    assert states == {"bot": "returning", "human": "returning"}
    assert split.info["prepare"]["events_removed"] == 40
    assert raw.info["prepare"]["events_removed"] == 0


def test_a_frame_already_in_user_time_order_gives_what_a_shuffled_one_gives() -> None:
    """prepare skips its two sorts when the rows already are in (user, ts) order (as recctl.data loads
    them): the events kept and every report are those of the same rows in another order."""
    rows = _burst("bot", 40, 0, 20) + [
        (f"u{u}", f"p{(u * 3 + k) % 5}", ("view", "view", "purchase")[k % 3], 1.0 * (k // 2) + 0.5 * u,
         None if k % 4 == 0 else f"s{u}")
        for u in range(8) for k in range(9)
    ]  # fmt: skip
    full = PrepareConfig(bot_max_events_per_hour=30, min_user_events=3, min_item_users=2, k_core=True,
                         resplit_sessions=True, session_gap="1s")  # fmt: skip
    ordered = frame(rows).sort("user_id", "ts", maintain_order=True)
    shuffled = ordered.sample(fraction=1.0, shuffle=True, seed=7)
    a, b = prepare(ordered, full), prepare(shuffled, full)
    assert [r.as_dict() for r in a.report] == [r.as_dict() for r in b.report]
    assert _in_user_time_order(ordered) and not _in_user_time_order(shuffled)
    kept = ordered.filter(pl.col("value").is_in(a.events["value"].implode()))
    assert a.events.equals(kept.with_columns(a.events["session_id"]))  # input order; sessions made
    assert a.events.sort("value").equals(b.events.sort("value"))
    assert step(a, "bots")["events_removed"] == 40 and step(a, "sessionize")["events_changed"] > 0
