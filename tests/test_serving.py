"""Serving surfaces end to end over the sample shop: recommend --user / --item / --session / --all.

One project is trained for the module: the sample shop with trending, next-item, viewed- and
bought-together, itemknn, content, a small SASRec and the ranker over them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import ROOT, CliRunner, query

TRUTH = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())
CONFIG = """
runs_dir = "{runs}"
[warehouse]
path = "{wh}"
[ingest]
mappings_dir = "{mappings}"

[[candidates]]
name = "trending"
kind = "popular"
params = {{ half_life_days = 7.0 }}

[[candidates]]
name = "next-item"
kind = "cooccur"

[[candidates]]
name = "viewed-together"
kind = "cooccur"
params = {{ mode = "session" }}

[[candidates]]
name = "bought-together"
kind = "cooccur"
params = {{ mode = "basket" }}

[[candidates]]
name = "itemknn"
kind = "itemknn"

[[candidates]]
name = "content"
kind = "content"

[[candidates]]
name = "sasrec"
kind = "sasrec"
params = {{ hidden = 16, layers = 1, epochs = 2, val_users = 200, patience = 1 }}

[ranker]
params = {{ negatives = 50, n_per_generator = 50 }}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained sample-shop project: configs/recctl.toml, recctl.duckdb, runs/ (promoted)."""

    work = tmp_path_factory.mktemp("serving")
    (work / "configs").mkdir()
    conf = work / "configs" / "recctl.toml"
    conf.write_text(
        CONFIG.format(runs=work / "runs", wh=work / "recctl.duckdb", mappings=ROOT / "configs" / "mappings")
    )
    fill(conf)
    return work


def fill(conf: Path, *extra: list[str]) -> None:
    """Ingest the sample shop with project config ``conf``, train, then run each of ``extra`` (argv
    lists), in this process with no RECCTL_* setting but the datasets folder."""
    from recctl.cli import run

    saved = {
        k: os.environ.pop(k)
        for k in [k for k in os.environ if k.startswith("RECCTL_") and k != "RECCTL_DATASETS"]
    }
    try:
        for table, name in (("events", "events.csv.gz"), ("items", "items.ndjson"), ("users", "users.csv")):
            args = ["--quiet", "--config", str(conf), "ingest", table, str(ROOT / "sample_data" / name),
                    "--mapping", f"sample-shop-{table}"]  # fmt: skip
            assert run(args) == 0
        assert run(["--quiet", "--config", str(conf), "train"]) == 0
        for argv in extra:
            assert run(["--quiet", "--config", str(conf), *argv]) == 0
    finally:
        os.environ.update(saved)


@pytest.fixture
def rec(cli: CliRunner, project: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``rec(*args)`` → Result of ``recctl --config <project> --json <args>`` run from the project."""
    monkeypatch.chdir(project)

    def _run(*args: str, json_: bool = True) -> Any:
        return cli("--config", project / "configs" / "recctl.toml", *(["--json"] if json_ else []), *args)

    return _run


def bought(project: Path, user: str) -> set[str]:
    rows = query(
        project / "recctl.duckdb",
        f"SELECT item_id FROM events WHERE user_id = '{user}' AND event_type = 'purchase'",
    )
    return {r[0] for r in rows}


def buyer_with_history(project: Path) -> str:
    """A brand-loyal buyer of the ground truth with at least ten distinct items."""
    rows = query(project / "recctl.duckdb", "SELECT user_id FROM events WHERE event_type = 'purchase' GROUP BY 1 "
                 "HAVING count(DISTINCT item_id) >= 3 ORDER BY 1")  # fmt: skip
    loyal = set(TRUTH["brand_loyal"])
    return next(u for (u,) in rows if u in loyal)


# ------------------------------------------------------------------------------------------ --user


def test_user_live_follows_the_contract_and_the_rules(rec: Any, project: Path) -> None:
    user = buyer_with_history(project)
    r = rec("recommend", "--user", user, "--k", "8", "--live")
    assert r.code == 0, r.stderr
    doc = r.json
    assert doc["user_id"] == user and doc["run_id"] and doc["source"] == "live"
    assert doc["state"] == "buyer" and doc["strategy"] == "personalized"
    items = doc["items"]
    assert [i["rank"] for i in items] == list(range(1, 9))
    assert all(i["sources"] and i["reason"] and isinstance(i["score"], float) for i in items)
    assert not {i["item_id"] for i in items} & bought(project, user)  # [rules] exclude_bought
    assert len({i["item_id"] for i in items}) == 8


def test_new_visitor_gets_trending_and_the_context_category(rec: Any, project: Path) -> None:
    r = rec("recommend", "--user", "never-seen-before", "--k", "5")
    doc = r.json
    assert r.code == 0 and doc["state"] == "new" and doc["strategy"] == "trending"
    from recctl.serving.served import promoted

    trend = promoted(project / "runs").generator("trending")
    top = trend.ranking.sort("score", "item_id", descending=[True, False])["item_id"].head(5).to_list()  # type: ignore[attr-defined]
    assert [i["item_id"] for i in doc["items"]] == top
    assert all(i["reason"].startswith("trending in ") for i in doc["items"])
    cat = rec("recommend", "--user", "never-seen-before", "--k", "5", "--category", "Men > Shoes").json
    cats = dict(query(project / "recctl.duckdb", "SELECT item_id, category FROM items"))
    assert cat["items"] and all(cats[i["item_id"]].startswith("Men > Shoes") for i in cat["items"])


def test_thin_evidence_is_blended_with_trending_under_a_category_cap(
    rec: Any, project: Path, tmp_path: Path
) -> None:
    first = TRUTH["sequences"][0][0]
    events = tmp_path / "one.jsonl"
    events.write_text(json.dumps({"item_id": first, "event_type": "view"}) + "\n")
    doc = rec("recommend", "--session", str(events), "--k", "10").json
    trending_only = [i for i in doc["items"] if i["sources"] == ["trending"]]
    assert doc["state"] == "returning" and doc["strategy"] == "session"
    assert 4 <= len(trending_only) <= 6  # trending_share 0.5 of the slots
    cats = dict(query(project / "recctl.duckdb", "SELECT item_id, category FROM items"))
    per_cat = pl.Series([cats[i["item_id"]] for i in doc["items"]]).value_counts()["count"].max()
    assert per_cat <= 3  # [serving] max_per_category


def test_the_guard_is_off_with_min_items_0(rec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECCTL_SERVING__MIN_ITEMS", "0")
    first = TRUTH["sequences"][0][0]
    events = tmp_path / "one.jsonl"
    events.write_text(json.dumps({"item_id": first, "event_type": "view"}) + "\n")
    doc = rec("recommend", "--session", str(events), "--k", "10").json
    assert sum(i["sources"] == ["trending"] for i in doc["items"]) <= 2


# ------------------------------------------------------------------------------------------ --session


def test_session_finds_the_planted_next_item(rec: Any, project: Path, tmp_path: Path) -> None:
    """The sample shop plants sequences a → b: a visitor who just viewed a is shown b near the top."""
    hits = 0
    pairs = TRUTH["sequences"][:10]
    for a, b in pairs:
        f = tmp_path / "s.jsonl"
        f.write_text("\n".join(json.dumps({"item_id": x, "event_type": "view", "ts": f"2026-10-01T10:0{n}:00Z"})
                               for n, x in enumerate(["p0500", "p0501", a])) + "\n")  # fmt: skip
        doc = rec("recommend", "--session", str(f), "--k", "10").json
        hits += b in [i["item_id"] for i in doc["items"]]
        assert a not in [i["item_id"] for i in doc["items"]]  # the session's own items are not proposed
    assert hits >= 7, f"planted next item found for {hits} of {len(pairs)} sessions"


def test_session_input_errors_and_empty_session(rec: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"item_id": "p0001", "event_type": "view"}\n{"item_id": "p0002", "event_type": "teleport"}\n'
    )
    r = rec("recommend", "--session", str(bad))
    assert r.code == 65 and "line 2" in r.stderr and "teleport" in r.stderr
    notjson = tmp_path / "nj.jsonl"
    notjson.write_text("p0001\n")
    assert rec("recommend", "--session", str(notjson)).code == 65
    assert rec("recommend", "--session", str(tmp_path / "missing.jsonl")).code == 66
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    doc = rec("recommend", "--session", str(empty), "--k", "3").json
    assert doc["state"] == "new" and doc["strategy"] == "trending" and len(doc["items"]) == 3
    unknown = tmp_path / "u.jsonl"
    unknown.write_text('{"item_id": "no-such-item", "event_type": "view"}\n')
    assert rec("recommend", "--session", str(unknown)).json["unknown_items"] == ["no-such-item"]


# ------------------------------------------------------------------------------------------ --item


def test_item_strategies(rec: Any, project: Path) -> None:
    a, _b = TRUTH["sequences"][0]
    for strategy in ("similar", "bought-together", "viewed-together"):
        r = rec("recommend", "--item", a, "--strategy", strategy, "--k", "6")
        assert r.code == 0, r.stderr
        doc = r.json
        ids = [i["item_id"] for i in doc["items"]]
        assert doc["strategy"] == strategy and a not in ids and len(ids) == len(set(ids)) <= 6
        assert all(i["reason"] for i in doc["items"])
    similar = rec("recommend", "--item", a, "--k", "10").json
    assert {s for i in similar["items"] for s in i["sources"]} <= {"content", "itemknn"}
    brand = dict(query(project / "recctl.duckdb", "SELECT item_id, brand FROM items"))
    cat = dict(query(project / "recctl.duckdb", "SELECT item_id, category FROM items"))
    # content similarity: same brand or same category for most of the list
    assert sum(brand[i["item_id"]] == brand[a] or cat[i["item_id"]] == cat[a] for i in similar["items"]) >= 6
    assert rec("recommend", "--item", "no-such-item").code == 65
    assert rec("recommend", "--item", a, "--strategy", "cheapest").code == 2


def test_an_item_without_interactions_falls_back_to_content(rec: Any, project: Path) -> None:
    """The sample catalog has items nobody touched: no co-occurrence or collaborative similarity, so
    bought-together falls back to content similarity and similar is content only."""
    rows = query(project / "recctl.duckdb", "SELECT item_id FROM items WHERE item_id NOT IN "
                 "(SELECT DISTINCT item_id FROM events WHERE item_id IS NOT NULL) ORDER BY 1 LIMIT 1")  # fmt: skip
    assert rows, "the sample shop should have catalog items without events"
    cold = rows[0][0]
    doc = rec("recommend", "--item", cold, "--strategy", "bought-together", "--k", "5").json
    assert doc["fallback"] is True and len(doc["items"]) == 5
    assert all(i["sources"] == ["content"] and i["reason"].startswith("similar to ") for i in doc["items"])
    similar = rec("recommend", "--item", cold, "--k", "5").json
    assert similar["items"] and all(i["sources"] == ["content"] for i in similar["items"])
    warm = TRUTH["sequences"][0][0]
    assert rec("recommend", "--item", warm, "--strategy", "viewed-together").json["fallback"] is False


# ------------------------------------------------------------------------------------------ --all and the store


def test_batch_fills_the_store_and_user_answers_from_it(rec: Any, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    r = rec("recommend", "--all", "--k", "5", "--out", str(out))
    assert r.code == 0, r.stderr
    report = r.json
    n_users = query(project / "recctl.duckdb", "SELECT count(*) FROM (SELECT DISTINCT coalesce(user_id, "
                    "'session:' || session_id) FROM events WHERE item_id IS NOT NULL UNION SELECT user_id FROM users)")[0][0]  # fmt: skip
    assert report["users"] == n_users and report["rows"] == pl.read_parquet(out).height
    stored = query(project / "recctl.duckdb", "SELECT count(DISTINCT user_id), max(rank) FROM recs")[0]
    assert stored == (n_users, 5)
    user = buyer_with_history(project)
    from_store = rec("recommend", "--user", user, "--k", "5").json
    live = rec("recommend", "--user", user, "--k", "5", "--live").json
    assert from_store["source"] == "store" and live["source"] == "live"
    assert [i["item_id"] for i in from_store["items"]] == [i["item_id"] for i in live["items"]]
    assert [i["reason"] for i in from_store["items"]] == [i["reason"] for i in live["items"]]
    status = rec("status").json
    assert status["online_store"]["fresh"] is True and status["online_store"]["users"] == n_users


def test_serving_goes_on_while_the_batch_ranks(
    rec: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recommend --all holds the writer lock but ranks through a read-only connection: another process
    answers from the store meanwhile; only the final write opens the file read-write."""
    from recctl.serving import store

    seen: dict[str, Any] = {}
    rank_into = store.rank_into

    def ranking(wh: Any, *args: Any, **kw: Any) -> Any:
        seen["read_only"] = wh.read_only
        code = (
            "import duckdb, sys\n"
            f"con = duckdb.connect({str(project / 'recctl.duckdb')!r}, read_only=True)\n"
            "print(con.sql('SELECT count(*) FROM recs').fetchall()[0][0])\n"
        )
        reader = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
        seen["reader"] = (reader.returncode, reader.stderr)
        return rank_into(wh, *args, **kw)

    monkeypatch.setattr(store, "rank_into", ranking)
    r = rec("recommend", "--all", "--k", "3")
    assert r.code == 0, r.stderr
    assert seen["read_only"] is True and seen["reader"] == (0, "")
    assert query(project / "recctl.duckdb", "SELECT max(rank) FROM recs")[0][0] == 3


def test_a_stale_store_is_not_used(rec: Any, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rec("recommend", "--all", "--k", "3").code == 0
    monkeypatch.setenv("RECCTL_SERVING__MAX_AGE", "0s")
    user = buyer_with_history(project)
    assert rec("recommend", "--user", user, "--k", "3").json["source"] == "live"
    assert rec("status").json["online_store"]["fresh"] is False


def test_tsv_output_and_usage_errors(rec: Any, project: Path) -> None:
    user = buyer_with_history(project)
    r = rec("recommend", "--user", user, "--k", "4", "--live", json_=False)
    lines = r.stdout.strip().splitlines()
    assert r.code == 0 and len(lines) == 4 and all(len(line.split("\t")) == 4 for line in lines)
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3", "4"]
    assert rec("recommend").code == 2
    assert rec("recommend", "--user", user, "--item", "p0001").code == 2
    assert rec("recommend", "--user", user, "--out", "x.parquet").code == 2


def test_no_promoted_run(
    cli: CliRunner, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "w.duckdb"
    shutil.copy(project / "recctl.duckdb", db)
    r = cli("--warehouse", db, "recommend", "--user", "u00001")
    assert r.code == 2 and "no promoted run" in r.stderr


# ------------------------------------------------------------------------------------------ segments


def test_segment_boosts_take_effect_for_members_only(
    rec: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / "configs" / "segments.toml", project / "configs" / "segments.toml")
    assert rec("segments", "apply", "--now", "2026-10-01").code == 0
    db = project / "recctl.duckdb"
    member = query(db, "SELECT min(user_id) FROM segment_members WHERE segment = 'budget-kids'")[0][0]
    outsider = query(db, "SELECT min(user_id) FROM events WHERE user_id NOT IN (SELECT user_id FROM segment_members) "
                     "AND event_type = 'purchase'")[0][0]  # fmt: skip
    on = {
        u: rec("recommend", "--user", u, "--live", "--explain", "--k", "10").json for u in (member, outsider)
    }
    monkeypatch.setenv("RECCTL_SERVING__SEGMENTS_FILE", str(project / "configs" / "no-segments.toml"))
    off = {
        u: rec("recommend", "--user", u, "--live", "--explain", "--k", "10").json for u in (member, outsider)
    }
    labels = [lab for i in on[member]["items"] for lab in i["rules"]]
    assert any(lab.startswith("boost: segment:budget-kids") for lab in labels)
    cat = dict(query(db, "SELECT item_id, category || '|' || price FROM items"))

    def kids_deals(doc: dict[str, Any]) -> float:
        """The kids deals in the list, weighted by 1 / rank: more of them, or the same ones higher up."""
        return sum(1 / i["rank"] for i in doc["items"]
                   if cat[i["item_id"]].startswith("Kids") and float(cat[i["item_id"]].split("|")[1]) <= 40)  # fmt: skip

    assert kids_deals(on[member]) > kids_deals(off[member])
    assert [i["item_id"] for i in on[outsider]["items"]] == [i["item_id"] for i in off[outsider]["items"]]
    assert not any(lab.startswith("boost: segment:") for i in on[outsider]["items"] for lab in i["rules"])


# ------------------------------------------------------------------------------------------ visitor states


def test_visitor_states_are_decided_from_the_data() -> None:
    import duckdb

    from recctl.serving.states import visitor, visitors
    from recctl.warehouse.migrations import migrate

    con = duckdb.connect()
    migrate(con)
    cols = "event_key, ts, user_id, session_id, item_id, event_type"
    rows = [
        (1, "buyer", "s1", "p1", "view"), (2, "buyer", "s1", "p1", "purchase"),  # bought: buyer
        (3, "member", "s2", "p2", "view"),  # registered, no purchase: signed_in
        (4, "visitor", "s3", "p3", "view"), (5, "visitor", "s3", "p4", "add_to_cart"),  # not registered
        (6, None, "anon", "p5", "view"),  # an anonymous session: keyed session:anon
        (7, "searcher", "s4", None, "search"),  # only a search: no item events, so new
    ]  # fmt: skip
    for key, user, sess, item, kind in rows:
        con.execute(f"INSERT INTO events ({cols}) VALUES (?, TIMESTAMP '2026-01-01', ?, ?, ?, ?)",
                    [key, user, sess, item, kind])  # fmt: skip
    con.execute("INSERT INTO users (user_id) VALUES ('member'), ('buyer'), ('registered-only')")
    got = {v.user_id: (v.state, v.n_items) for v in (visitor(con, u) for u in
           ("buyer", "member", "visitor", "session:anon", "searcher", "registered-only", "stranger"))}  # fmt: skip
    assert got == {"buyer": ("buyer", 1), "member": ("signed_in", 1), "visitor": ("returning", 2),
                   "session:anon": ("returning", 1), "searcher": ("new", 0), "registered-only": ("signed_in", 0),
                   "stranger": ("new", 0)}  # fmt: skip
    frame = visitors(con, list(got))
    assert dict(zip(frame["user_id"], frame["state"], strict=True)) == {u: s for u, (s, _) in got.items()}
    everyone = visitors(con)
    assert set(everyone["user_id"]) == {"buyer", "member", "visitor", "session:anon", "registered-only"}


def test_batch_on_parallel_chunks_gives_the_same_lists(
    rec: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project / "recctl.duckdb"
    assert rec("recommend", "--all", "--k", "4").code == 0
    one = query(db, "SELECT user_id, rank, item_id, reason FROM recs ORDER BY 1, 2")
    monkeypatch.setenv("RECCTL_SERVING__BATCH_WORKERS", "2")
    monkeypatch.setenv("RECCTL_SERVING__BATCH_CHUNK_USERS", "150")
    assert rec("recommend", "--all", "--k", "4").code == 0
    assert query(db, "SELECT user_id, rank, item_id, reason FROM recs ORDER BY 1, 2") == one


def test_a_new_visitor_on_a_product_page_gets_trending_in_its_category(rec: Any, project: Path) -> None:
    cats = dict(query(project / "recctl.duckdb", "SELECT item_id, category FROM items"))
    page = TRUTH["sequences"][0][0]
    doc = rec("recommend", "--user", "first-visit", "--context-item", page, "--k", "4").json
    assert doc["state"] == "new" and len(doc["items"]) == 4
    assert all(cats[i["item_id"]] == cats[page] for i in doc["items"])


def test_every_stored_list_is_the_live_answer_for_that_user_alone(
    rec: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch ranks users in blocks (every generator, the features, the ranker and the rules over a
    whole chunk at once); a user's stored list must be exactly what the per-user path ranks for them alone
    (recctl.serving.user for one user, as `recommend --user U --live` runs it): items, order, scores,
    sources, reasons, state and strategy. Users of every visitor state, strategy and guard case, ranked
    by the batch in chunks that mix them, at one fixed time."""
    from recctl.config import load_config

    fresh = tmp_path / "users.csv"  # registered customers without a single event
    fresh.write_text("customer_id,gender,age_group,city,device,signup_date\n"
                     "z-new-1,female,25-34,Houston,mobile,2026-09-01\nz-new-2,male,55+,Austin,desktop,2026-09-02\n")  # fmt: skip
    assert rec("ingest", "users", str(fresh), "--mapping", "sample-shop-users").code == 0
    monkeypatch.setenv("RECCTL_SERVING__BATCH_CHUNK_USERS", "700")
    cases = batch_equals_live(
        load_config(project / "configs" / "recctl.toml"), datetime(2026, 10, 1, 12), tmp_path
    )
    assert {s for s, *_ in cases} == {"buyer", "returning", "signed_in"}, cases
    assert {s for _, s, *_ in cases} == {"personalized", "session"}, cases
    assert {c[2] for c in cases} == {True, False} and any(c[3] for c in cases), cases


def test_the_batch_reads_each_chunk_of_users_from_the_sorted_export(project: Path, tmp_path: Path) -> None:
    """``recommend --all`` keeps the events on disk: exported in load_interactions' order, a range of
    users read back is exactly their slice of the whole frame (types, order, every column); the file is
    in several row groups, so that a range's reader skips the others by their user_id statistics."""
    import duckdb

    from recctl.data import export_interactions, load_interactions, read_users

    con = duckdb.connect(str(project / "recctl.duckdb"), read_only=True)
    try:
        whole = load_interactions(con)
        export_interactions(con, tmp_path / "ev.parquet")
    finally:
        con.close()
    users = whole["user_id"].unique().sort()
    assert users.len() > 500 and whole.height > 100_000
    for ids in (users.slice(0, 3), users.slice(200, 150), pl.Series(["nobody", users[7], None, users[-1]])):
        want = whole.filter(pl.col("user_id").is_in(ids.drop_nulls().implode()))
        assert_frame_equal(read_users(tmp_path / "ev.parquet", ids), want)
    assert read_users(tmp_path / "ev.parquet", pl.Series([], dtype=pl.String)).schema == whole.schema
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(tmp_path / "ev.parquet").metadata.num_row_groups
    assert groups >= 2  # ranges of users are whole row groups apart: the reader can skip the others


def test_users_without_events_are_ranked_once_per_state_and_copied(
    rec: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered customers without a single event get the list of the first of them (ranked alone,
    once per state), copied: every copy equals that customer's live answer. One named by a business
    rule is ranked in its chunk like any other user, not copied."""
    import recctl.serving.user as user_mod
    from recctl.config import BusinessRule, load_config
    from recctl.serving import store
    from recctl.serving.service import recommend_user
    from recctl.serving.states import visitors
    from recctl.warehouse import open_reader

    fresh = tmp_path / "users.csv"
    fresh.write_text("customer_id,gender,age_group,city,device,signup_date\n"
                     + "".join(f"zz-blank-{j:02d},female,25-34,Houston,mobile,2026-09-01\n" for j in range(12)))  # fmt: skip
    assert rec("ingest", "users", str(fresh), "--mapping", "sample-shop-users").code == 0
    monkeypatch.setenv("RECCTL_SERVING__BATCH_CHUNK_USERS", "700")
    cfg = load_config(project / "configs" / "recctl.toml")
    now = datetime(2026, 10, 1, 12)
    with open_reader(cfg) as wh:
        top = recommend_user(wh, cfg, "zz-blank-00", k=5, live=True, now=now)["items"][0]["item_id"]
    rule = BusinessRule(name="not-for-vip", action="exclude", items=[top], users=["zz-blank-05"])
    cfg = cfg.model_copy(
        update={"rules": cfg.rules.model_copy(update={"business": [*cfg.rules.business, rule]})}
    )
    calls: list[list[str]] = []
    real = user_mod.recommend_users

    def counted(con: Any, cfg_: Any, served: Any, inputs: Any, k: int, **kw: Any) -> pl.DataFrame:
        calls.append(inputs.visitors["user_id"].to_list())
        return real(con, cfg_, served, inputs, k, **kw)

    monkeypatch.setattr(user_mod, "recommend_users", counted)
    with open_reader(cfg) as wh:
        (tmp_path / "parts").mkdir()
        parts, report = store.rank_into(wh, cfg, tmp_path / "parts", k=5, now=now)
        rows = pl.read_parquet(parts)
        states = visitors(wh.con)  # other tests of the module may have added blank customers too
        blank = states.filter((pl.col("n_events") == 0) & (pl.col("user_id") != "zz-blank-05"))
        assert blank["state"].unique().to_list() == ["signed_in"] and blank.height >= 11
        first, *others = sorted(blank["user_id"])
        assert [first] in calls  # the first blank customer alone
        assert not any(u in c for c in calls for u in others)  # the others are copies
        assert any("zz-blank-05" in c and len(c) > 1 for c in calls)  # ranked in a chunk
        assert rows["user_id"].n_unique() == report["users"] and set(others) <= set(rows["user_id"])
        monkeypatch.setattr(user_mod, "recommend_users", real)
        for user in ("zz-blank-00", "zz-blank-07", "zz-blank-11", "zz-blank-05"):
            live = recommend_user(wh, cfg, user, k=5, live=True, now=now)
            mine = rows.filter(pl.col("user_id") == user).sort("rank")
            assert [i["item_id"] for i in live["items"]] == mine["item_id"].to_list(), user
            assert [i["reason"] for i in live["items"]] == mine["reason"].to_list(), user
            assert (
                (live["state"], live["strategy"])
                == (mine["state"][0], mine["strategy"][0])
                == ("signed_in", "personalized")
            )
        vip = rows.filter(pl.col("user_id") == "zz-blank-05")["item_id"].to_list()
        assert top in rows.filter(pl.col("user_id") == "zz-blank-07")["item_id"].to_list() and top not in vip


def test_stored_lists_are_live_answers_with_buy_again_repurchase_rules_and_segments(
    quick_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same over the quick demo (configs/fashion.toml): the repeat generator, repurchase windows that
    depend on the time, the cycle reasons of bought items and the segments' boosts."""
    from recctl.config import load_config

    monkeypatch.chdir(quick_demo)
    monkeypatch.setenv("RECCTL_SERVING__BATCH_CHUNK_USERS", "600")
    cfg = load_config(quick_demo / "configs" / "fashion.toml",
                      overrides={"warehouse": {"path": str(quick_demo / "recctl.duckdb")}})  # fmt: skip
    (last,) = query(quick_demo / "recctl.duckdb", "SELECT max(ts) FROM events")[0]
    cases = batch_equals_live(cfg, last + timedelta(days=20), tmp_path)
    assert {s for s, *_ in cases} >= {"buyer", "returning"} and any(c[4] for c in cases), cases


def batch_equals_live(cfg: Any, now: datetime, tmp_path: Path) -> set[tuple[Any, ...]]:
    """Rank every user as `recommend --all` does (its parquet parts) and compare up to 6 users of each
    case (visitor state × strategy × thin evidence (the trending blend) × no events at all × a bought item
    explained by its cycle) with their live per-user answer; returns the cases seen."""
    from recctl.serving import store
    from recctl.serving.service import recommend_user
    from recctl.serving.states import visitors
    from recctl.warehouse import open_reader

    with open_reader(cfg) as wh:
        (tmp_path / "parts").mkdir()
        parts, report = store.rank_into(wh, cfg, tmp_path / "parts", k=6, now=now)
        assert len(parts) > 1  # chunks that mix the cases
        rows = pl.read_parquet(parts)
        assert report["rows"] == rows.height and rows["user_id"].n_unique() == report["users"]
        cycle = rows.group_by("user_id").agg(
            cycle=pl.col("reason").str.starts_with("you buy this").any()
            | pl.col("reason").str.starts_with("you bought this").any()
        )
        who = (
            visitors(wh.con)
            .join(rows.select("user_id", "strategy").unique(), on="user_id")
            .join(cycle, on="user_id")
        )
        case = ["state", "strategy", "thin", "empty", "cycle"]
        picked = (
            who.with_columns(thin=pl.col("n_items") < cfg.serving.min_items, empty=pl.col("n_events") == 0)
            .sort("user_id")
            .group_by(case, maintain_order=True)
            .head(6)
        )
        for user in picked["user_id"].to_list():
            live = recommend_user(wh, cfg, user, k=6, live=True, now=now)
            mine = rows.filter(pl.col("user_id") == user).sort("rank")
            got = [(i["item_id"], i["rank"], i["score"], i["sources"], i["reason"]) for i in live["items"]]
            want = [(r["item_id"], r["rank"], None if r["score"] is None else round(r["score"], 6),
                     list(r["sources"] or []), r["reason"]) for r in mine.iter_rows(named=True)]  # fmt: skip
            assert got == want, user
            assert (live["state"], live["strategy"]) == (mine["state"][0], mine["strategy"][0]), user
    return set(picked.select(case).iter_rows())
