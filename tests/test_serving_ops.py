"""Serving in day-to-day operation (issue 14): during a train, right after a promotion, stored answers,
reasons without titles, stable lists and session files in the shop's own names.

One project for the module: the sample shop with trending, next-item, viewed- and bought-together,
itemknn, content and a small ranker (trains in seconds), its online store filled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import test_serving
from tests.conftest import ROOT, CliRunner, query
from tests.test_serving import CONFIG as SERVING_CONFIG

rec = test_serving.rec  # the same fixture, over this module's project

# test_serving's shop config without its sasrec (the fastest full pipeline) and with no segments file
CONFIG = SERVING_CONFIG.replace(
    'mappings_dir = "{mappings}"\n',
    'mappings_dir = "{mappings}"\n[serving]\nsegments_file = "{work}/no-segments.toml"\n',
).replace(
    '[[candidates]]\nname = "sasrec"\nkind = "sasrec"\n'
    "params = {{ hidden = 16, layers = 1, epochs = 2, val_users = 200, patience = 1 }}\n\n",
    "",
)
assert "sasrec" not in CONFIG and "segments_file" in CONFIG
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")} | {"PYTHONPATH": str(ROOT)}


def write_config(work: Path, wh: Path, runs: Path) -> Path:
    conf = work / "configs" / "recctl.toml"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(CONFIG.format(runs=runs, wh=wh, mappings=ROOT / "configs" / "mappings", work=work))
    return conf


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained sample-shop project with its online store filled (configs/recctl.toml)."""

    work = tmp_path_factory.mktemp("serving-ops")
    conf = write_config(work, work / "recctl.duckdb", work / "runs")
    test_serving.fill(conf, ["recommend", "--all", "--k", "10"])
    return work


def recctl_proc(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "recctl", "--config", str(project / "configs" / "recctl.toml"), *args]
    return subprocess.Popen(argv, cwd=project, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def a_buyer(project: Path) -> str:
    return str(query(project / "recctl.duckdb", "SELECT user_id FROM events WHERE event_type = 'purchase' "
                     "GROUP BY 1 HAVING count(DISTINCT item_id) >= 3 ORDER BY 1 LIMIT 1")[0][0])  # fmt: skip


def promoted(project: Path) -> str:
    return (project / "runs" / "PROMOTED").read_text().strip()


# --------------------------------------------------------------------------- 6: serving during the nightly job


def test_a_reader_waits_out_a_writers_short_write(project: Path) -> None:
    """A read-write open (the end of a train --gate, of recommend --all) refuses DuckDB's read-only
    opens: recommend retries for [serving] read_wait instead of exiting 75."""
    user = a_buyer(project)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"con = duckdb.connect({str(project / 'recctl.duckdb')!r})\nprint('open', flush=True)\n"
         "time.sleep(2.0)\ncon.close()\n"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        reader = recctl_proc(project, "--json", "recommend", "--user", user, "--k", "3")
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert json.loads(out)["items"]
    finally:
        holder.wait(timeout=30)
    # --wait 0 is still "do not wait"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, time\n"
         f"con = duckdb.connect({str(project / 'recctl.duckdb')!r})\nprint('open', flush=True)\n"
         "time.sleep(3.0)\n"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        refused = recctl_proc(project, "recommend", "--user", user, "--wait", "0")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 75, err
    finally:
        holder.wait(timeout=30)


def test_recommend_answers_throughout_a_train_and_from_the_store_right_after(project: Path) -> None:
    """Real processes: `recommend --user` called over and over while `train --gate` runs (reading,
    fitting, the gate's eval_runs write, the store's refill, the promotion) always exits 0, and the
    first answer after the promotion comes from the store with the new run."""
    user, before = a_buyer(project), promoted(project)
    # the gate is judged (and its rows written) but passes: the new run must be promoted
    train = recctl_proc(project, "--json", "train", "--gate", env={"RECCTL_EVALUATE__GATE_TOLERANCE": "1"})
    codes: list[tuple[int, str]] = []
    overlapped = 0
    while train.poll() is None:
        call = recctl_proc(project, "--json", "recommend", "--user", user, "--k", "5")
        out, err = call.communicate(timeout=120)
        codes.append((call.returncode, err))
        overlapped += train.poll() is None
    out, err = train.communicate(timeout=60)
    assert train.returncode == 0, err
    assert overlapped >= 3, codes
    assert all(code == 0 for code, _ in codes), [e for c, e in codes if c]
    result = json.loads(out)
    assert result["run_id"] != before and promoted(project) == result["run_id"]
    assert result["online_store"]["users"] > 0
    first = recctl_proc(project, "--json", "recommend", "--user", user, "--k", "5")
    doc = json.loads(first.communicate(timeout=60)[0])
    assert doc["source"] == "store" and doc["run_id"] == result["run_id"]


def test_runs_promote_fills_the_store_from_the_run(rec: Any, project: Path) -> None:
    """A rollback serves from the store from its first request; status judges the promoted run's rows."""
    before = promoted(project)
    runs = sorted(p.name for p in (project / "runs").iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(runs) < 2:  # run alone (not after the train-while-serving test): a second run to roll back from
        assert rec("train").code == 0
        runs = [before]
    other = next(r for r in runs if r != promoted(project))
    r = rec("runs", "promote", other)
    assert r.code == 0, r.stderr
    assert r.json["online_store"]["run_id"] == other and r.json["online_store"]["users"] > 0
    doc = rec("recommend", "--user", a_buyer(project), "--k", "3").json
    assert doc["source"] == "store" and doc["run_id"] == other
    store = rec("status").json["online_store"]
    assert store["fresh"] is True and store["promoted_run"] == other and other in store["run_ids"]


def test_model_files_are_hashed_only_when_changed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving does not hash a model file whose size and mtime are those of the manifest, hashes a
    touched one once per process, and still refuses an altered one."""
    import hashlib

    from recctl import run_files
    from recctl.errors import NotTrainedError
    from recctl.serving import served

    hashed: list[int] = []

    class Counting:
        @staticmethod
        def sha256() -> Any:
            hashed.append(1)
            return hashlib.sha256()

    monkeypatch.setattr(run_files, "hashlib", Counting)
    monkeypatch.setattr(run_files, "_HASHED", {})
    work = project / "hash-check"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(project / "runs", work, copy_function=shutil.copy2)  # copy2 keeps the mtimes
    run = work / promoted(project)
    folder = run / "models" / "ranked"
    run_files.verify(run, folder, trust_mtime=True)
    assert hashed == []
    ranker = folder / "ranker.txt"
    os.utime(ranker, ns=(time.time_ns(), time.time_ns()))
    run_files.verify(run, folder, trust_mtime=True)
    run_files.verify(run, folder, trust_mtime=True)
    assert len(hashed) == 1  # ranker.txt, once, though verified twice
    text = ranker.read_text()
    at = text.index("leaf_value=") + len("leaf_value=") + 3
    ranker.write_text(text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :])
    served._CACHE.clear()
    with pytest.raises(NotTrainedError, match="SHA-256"):
        served.load_run(work, run.name).pipeline()
    served._CACHE.clear()


# --------------------------------------------------------------------------------- 8b: stored answers


def test_store_answers_carry_state_and_strategy(rec: Any, project: Path) -> None:
    user = a_buyer(project)
    stored = rec("recommend", "--user", user, "--k", "5").json
    live = rec("recommend", "--user", user, "--k", "5", "--live").json
    assert stored["source"] == "store" and live["source"] == "live"
    assert (
        (stored["state"], stored["strategy"])
        == (live["state"], live["strategy"])
        == ("buyer", "personalized")
    )
    assert [i["item_id"] for i in stored["items"]] == [i["item_id"] for i in live["items"]]
    anonymous = query(project / "recctl.duckdb", "SELECT user_id FROM recs WHERE state = 'returning' LIMIT 1")
    assert anonymous, "the sample shop has returning visitors in the store"
    doc = rec("recommend", "--user", anonymous[0][0]).json
    assert doc["source"] == "store" and (doc["state"], doc["strategy"]) == ("returning", "session")


# ---------------------------------------------------------------------------- 9: reasons without titles


def test_the_item_label_falls_back_to_brand_and_category() -> None:
    import polars as pl

    from recctl.serving.explain import label

    frame = pl.DataFrame(
        {
            "title": ["Linen Shirt", None, "", None, None, None],
            "brand": ["Northwind", "Samsung", "Samsung", "Samsung", None, None],
            "category": ["Men > Shirts", "Electronics > Smartphones", "Phones", None, "Kids > Socks", None],
        }
    )
    assert frame.select(name=label())["name"].to_list() == [
        "Linen Shirt", "Samsung Smartphones", "Samsung Phones", "Samsung", "Socks", None,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def untitled(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's warehouse with every title removed (as in the REES46 export), same runs."""
    work = tmp_path_factory.mktemp("untitled")
    shutil.copy(project / "recctl.duckdb", work / "recctl.duckdb")
    con = duckdb.connect(str(work / "recctl.duckdb"))
    con.execute("UPDATE items SET title = NULL")
    con.close()
    return write_config(work, work / "recctl.duckdb", project / "runs")


def test_reasons_without_titles_name_brand_and_category(
    cli: CliRunner, untitled: Path, project: Path
) -> None:
    ids = re.compile(r"\bp\d{4}\b")
    user = a_buyer(project)
    doc = cli("--config", untitled, "--json", "recommend", "--user", user, "--k", "10", "--live").json
    reasons = [i["reason"] for i in doc["items"]]
    assert reasons and not any(ids.search(r) for r in reasons), reasons
    brands = {b for (b,) in query(project / "recctl.duckdb", "SELECT DISTINCT brand FROM items")}
    named = [r for r in reasons if re.search(r"(after|with|viewed) ", r)]
    assert named and all(any(f" {b} " in f" {r} " for b in brands) for r in named), named
    item = query(project / "recctl.duckdb", "SELECT item_id FROM events WHERE event_type = 'purchase' "
                 "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[0][0]  # fmt: skip
    page = cli(
        "--config", untitled, "--json", "recommend", "--item", item, "--strategy", "bought-together"
    ).json
    assert page["items"] and not any(ids.search(i["reason"]) for i in page["items"])
    brand, cat = query(
        project / "recctl.duckdb", f"SELECT brand, category FROM items WHERE item_id = '{item}'"
    )[0]
    leaf = cat.split(">")[-1].strip()
    assert page["items"][0]["reason"] == f"bought together with {brand} {leaf}"


def test_bought_together_fallback_is_said_in_text_mode(rec: Any, project: Path) -> None:
    cold = query(project / "recctl.duckdb", "SELECT item_id FROM items WHERE item_id NOT IN "
                 "(SELECT DISTINCT item_id FROM events WHERE item_id IS NOT NULL) ORDER BY 1 LIMIT 1")[0][0]  # fmt: skip
    text = rec("recommend", "--item", cold, "--strategy", "bought-together", "--k", "3", json_=False)
    assert text.code == 0 and len(text.stdout.splitlines()) == 3
    assert "no bought-together data" in text.stderr and "similar items" in text.stderr
    warm = rec("recommend", "--item", a_buyer_item(project), "--strategy", "bought-together", json_=False)
    assert warm.code == 0 and "similar items" not in warm.stderr


def a_buyer_item(project: Path) -> str:
    return str(query(project / "recctl.duckdb", "SELECT item_id FROM events WHERE event_type = 'purchase' "
                     "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[0][0])  # fmt: skip


# ------------------------------------------------------------------------------------ 10: stable lists


@pytest.fixture(scope="module")
def served_env(project: Path) -> Any:
    """(config, open reader, users, items) for in-process calls."""
    from recctl.config import load_config
    from recctl.warehouse import open_reader

    cfg = load_config(project / "configs" / "recctl.toml", environ={})
    cfg = cfg.model_copy(update={"runs_dir": project / "runs"})
    users = [u for (u,) in query(project / "recctl.duckdb", "SELECT DISTINCT user_id FROM events "
                                 "WHERE user_id IS NOT NULL ORDER BY 1 LIMIT 300")]  # fmt: skip
    items = [i for (i,) in query(project / "recctl.duckdb", "SELECT item_id FROM items ORDER BY 1")]
    with open_reader(cfg) as wh:
        yield cfg, wh, users, items


KS = st.tuples(st.integers(1, 30), st.integers(1, 30)).filter(lambda t: t[0] != t[1]).map(sorted)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), ks=KS)
def test_a_longer_list_extends_a_shorter_one(served_env: Any, data: Any, ks: list[int]) -> None:
    from recctl.serving import service

    cfg, wh, users, items = served_env
    k1, k2 = ks
    user = data.draw(st.sampled_from(users), label="user")
    lists = [service.recommend_user(wh, cfg, user, k=k, live=True)["items"] for k in (k1, k2)]
    assert [i["item_id"] for i in lists[0]] == [i["item_id"] for i in lists[1]][:k1]
    item = data.draw(st.sampled_from(items), label="item")
    strategy = data.draw(st.sampled_from(["similar", "bought-together", "viewed-together"]), label="strategy")
    pages = [service.recommend_item(wh, cfg, item, strategy=strategy, k=k)["items"] for k in (k1, k2)]
    assert [i["item_id"] for i in pages[0]] == [i["item_id"] for i in pages[1]][:k1]
    visit = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=6), label="session")
    text = "\n".join(json.dumps({"item_id": i, "event_type": "view"}) for i in visit)
    sessions = [service.recommend_session(wh, cfg, text, k=k)["items"] for k in (k1, k2)]
    assert [i["item_id"] for i in sessions[0]] == [i["item_id"] for i in sessions[1]][:k1]


def test_session_files_use_the_shops_event_names(
    rec: Any, cli: CliRunner, project: Path, tmp_path: Path
) -> None:
    """A session file in the shop's own export names (sample-shop-events: action = pageview, addtocart,
    product_id, event_time) is read through the events mapping, given or the configured default."""
    shop = tmp_path / "visit.jsonl"
    canonical = tmp_path / "canonical.jsonl"
    items = [i for (i,) in query(project / "recctl.duckdb", "SELECT item_id FROM items ORDER BY 1 LIMIT 3")]
    actions = [("pageview", "view"), ("PageView", "view"), ("addtocart", "add_to_cart")]
    shop.write_text("".join(json.dumps({"event_time": f"2026-09-01T10:0{n}:00Z", "product_id": i, "action": a})
                            + "\n" for n, (i, (a, _)) in enumerate(zip(items, actions, strict=True))))  # fmt: skip
    canonical.write_text("".join(json.dumps({"ts": f"2026-09-01T10:0{n}:00Z", "item_id": i, "event_type": c})
                                 + "\n" for n, (i, (_, c)) in enumerate(zip(items, actions, strict=True))))  # fmt: skip
    want = rec("recommend", "--session", str(canonical), "--k", "5")
    assert want.code == 0, want.stderr
    got = rec("recommend", "--session", str(shop), "--mapping", "sample-shop-events", "--k", "5")
    assert got.code == 0, got.stderr
    assert got.json["session_events"] == 3 and got.json["items"] == want.json["items"]
    refused = rec("recommend", "--session", str(shop))  # no mapping: product_id is no field of events
    assert refused.code == 65 and "line 1" in refused.stderr
    conf = project / "configs" / "recctl.toml"
    with_default = tmp_path / "recctl.toml"
    with_default.write_text(conf.read_text().replace("[serving]", '[ingest.default_mapping]\nevents = '
                                                     '"sample-shop-events"\n\n[serving]', 1))  # fmt: skip
    assert "default_mapping" in with_default.read_text()
    r = cli("--config", with_default, "--json", "recommend", "--session", shop, "--k", "5")
    assert r.code == 0, r.stderr
    assert r.json["items"] == want.json["items"]
    wrong = rec("recommend", "--session", str(shop), "--mapping", "sample-shop-items")
    assert wrong.code == 2 and "not events" in wrong.stderr
