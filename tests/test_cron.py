"""Cron as a first-class use (issue 14, points 3-ingest, 5 and 7), all through real processes
(``python -m recctl`` with PYTHONPATH set and every RECCTL_* variable removed):

- an ingest with rejected rows prints one summary line on stderr even with --quiet, and a file whose
  rejected share reaches ``[ingest] max_reject_share`` (default 1.0: every row) exits 65;
- the mapping's content is part of what makes a load the same (a fixed mapping re-reads the file);
- unknown names in options exit 2 naming the valid ones and the closest; a partial train is saved, not
  promoted, unless --promote;
- ``runs prune --keep N``, ``segments apply`` on an export that lags the clock, and the README's cron
  script run as a shell script, twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import STAGE_LOG, messages

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")} | {"PYTHONPATH": str(ROOT)}


def recctl(
    cwd: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recctl", *map(str, args)], cwd=cwd, env={**ENV, **(env or {})},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [tuple(r) for r in con.sql(sql).fetchall()]
    finally:
        con.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``recctl init`` in a fresh folder, plus a mapping ``shop`` that renames ``action`` to event_type."""
    p = tmp_path / "shop"
    r = recctl(tmp_path, "init", p)
    assert r.returncode == 0, r.stderr
    (p / "configs" / "mappings" / "shop.toml").write_text(
        'target = "events"\n[columns]\nevent_type = "action"\n'
    )
    return p


HEADER = "event_id,ts,user_id,item_id,action\n"


def events_csv(p: Path, *lines: str) -> Path:
    f = p / "events.csv"
    f.write_text(HEADER + "".join(ln + "\n" for ln in lines))
    return f


# ----------------------------------------------------------------------------------- 3: ingest rejects

ALL_BAD = ("e1,,u1,i1,view", "e2,,u1,i2,view", "e3,2026-11-01T10:00:00,u2,i1,clickk")


def test_every_row_rejected_exits_65_with_one_summary_line_even_quiet(project: Path) -> None:
    events_csv(project, *ALL_BAD)
    r = recctl(project, "--quiet", "ingest", "events", "events.csv", "--mapping", "shop")
    assert r.returncode == 65, r.stderr
    assert r.stdout.startswith("path\tstatus\t")  # --quiet drops decoration, never the data
    lines = r.stderr.splitlines()  # and no stage logs: the summary and the error only
    assert lines[0] == (
        "recctl ingest: events.csv: 3 of 3 rows rejected (2 missing ts, 1 unknown event type); "
        "see recctl rejects --file events.csv"
    )
    assert lines[1].startswith("recctl: error: events.csv: 3 of 3 rows rejected (100%), at or above [ingest] "
                               "max_reject_share = 1.0")  # fmt: skip
    # still loaded (its rejects recorded, the manifest says ok): the next night skips it as unchanged
    assert rows(project / "recctl.duckdb", "SELECT status, rows_rejected FROM ingest_files") == [("ok", 3)]
    assert rows(project / "recctl.duckdb", "SELECT count(*) FROM ingest_rejects") == [(3,)]
    again = recctl(project, "--quiet", "ingest", "events", "events.csv", "--mapping", "shop")
    assert again.returncode == 0 and again.stderr == ""


def test_some_rows_rejected_exit_0_and_still_say_so(project: Path) -> None:
    events_csv(project, "e1,2026-11-01T10:00:00,u1,i1,view", "e2,2026-11-01T10:01:00,u1,i2,view", ALL_BAD[2])
    r = recctl(project, "--json", "ingest", "events", "events.csv", "--mapping", "shop")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    f = doc["files"][0]
    assert (f["rows_loaded"], f["rows_rejected"], f["reject_reasons"]) == (2, 1, {"unknown event type": 1})
    assert f["reject_share_exceeded"] is False and doc["over_reject_share"] == 0
    assert [ln for ln in messages(r.stderr) if ln] == [
        "recctl ingest: events.csv: 1 of 3 rows rejected (1 unknown event type); see recctl rejects --file events.csv"
    ]


@pytest.mark.parametrize(
    ("share", "code"),
    [("0.5", 65), ("0.51", 0), ("0.0", 65), ("1", 0)],  # 1 of 2 rejected: the share is compared with >=
)
def test_max_reject_share_is_reached_at_or_above(project: Path, share: str, code: int) -> None:
    events_csv(project, "e1,2026-11-01T10:00:00,u1,i1,view", ALL_BAD[2])
    r = recctl(project, "--quiet", "ingest", "events", "events.csv", "--mapping", "shop",
               env={"RECCTL_INGEST__MAX_REJECT_SHARE": share})  # fmt: skip
    assert r.returncode == code, r.stderr
    assert r.stderr.startswith("recctl ingest: events.csv: 1 of 2 rows rejected (1 unknown event type)")
    assert rows(project / "recctl.duckdb", "SELECT count(*) FROM events") == [(1,)]  # loaded either way


def test_max_reject_share_outside_0_to_1_is_a_config_error(project: Path) -> None:
    events_csv(project, ALL_BAD[0])
    r = recctl(project, "ingest", "events", "events.csv", env={"RECCTL_INGEST__MAX_REJECT_SHARE": "1.5"})
    assert r.returncode == 2 and "ingest.max_reject_share" in r.stderr


def test_a_fixed_mapping_re_reads_the_file(project: Path) -> None:
    events_csv(project, "e1,2026-11-01T10:00:00,u1,i1,view", "e2,2026-11-01T10:01:00,u1,i2,clickk")
    mapping = project / "configs" / "mappings" / "shop.toml"

    def ingest() -> dict[str, object]:
        r = recctl(project, "--json", "ingest", "events", "events.csv", "--mapping", "shop")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["files"][0]  # type: ignore[no-any-return]

    first = ingest()
    assert (first["status"], first["rows_loaded"], first["rows_rejected"]) == ("loaded", 1, 1)
    assert ingest()["status"] == "unchanged"
    mapping.write_text(mapping.read_text() + '[event_types]\nclickk = "click"\n')
    fixed = ingest()
    assert (fixed["status"], fixed["rows_loaded"], fixed["rows_rejected"]) == ("loaded", 1, 0)
    assert "with another mapping content" in str(fixed["message"])
    db = project / "recctl.duckdb"
    assert rows(db, "SELECT count(*) FROM ingest_rejects") == [(0,)]  # the earlier read's rejects superseded
    assert rows(db, "SELECT event_type FROM events ORDER BY event_id") == [("view",), ("click",)]
    assert ingest()["status"] == "unchanged"
    # what the mapping does is its identity, not its description or where it lies
    mapping.write_text('description = "our shop"\n' + mapping.read_text())
    assert ingest()["status"] == "unchanged"


def test_loads_recorded_before_the_mapping_hash_are_re_read_once(project: Path) -> None:
    """A warehouse of schema v4 (ingest_files without mapping_sha256) is migrated; a file it loaded is
    re-read once (adding nothing) and is unchanged from then on."""
    events_csv(project, "e1,2026-11-01T10:00:00,u1,i1,view")
    assert recctl(project, "--quiet", "ingest", "events", "events.csv", "--mapping", "shop").returncode == 0
    con = duckdb.connect(str(project / "recctl.duckdb"))
    con.execute("ALTER TABLE ingest_files DROP COLUMN mapping_sha256")
    con.execute("DELETE FROM schema_version WHERE version >= 5")
    con.close()
    r = recctl(project, "--json", "ingest", "events", "events.csv", "--mapping", "shop")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)["files"][0]
    assert (f["status"], f["rows_loaded"], f["rows_duplicate"]) == ("loaded", 0, 1)
    assert "did not record the mapping" in f["message"]
    from recctl.warehouse.migrations import LATEST

    assert rows(project / "recctl.duckdb", "SELECT max(version) FROM schema_version") == [(LATEST,)]
    r = recctl(project, "--json", "ingest", "events", "events.csv", "--mapping", "shop")
    assert json.loads(r.stdout)["files"][0]["status"] == "unchanged"


# ------------------------------------------------------------------------------ a tiny shop, trained

TINY = """[evaluate]
n_boot = 20
cutoff = "1w"
# 18 test users cannot tell the models apart: the gate here checks the cron plumbing, not quality
gate_tolerance = 0.5
[ranker]
label_window = "1w"
[[candidates]]
name = "pop"
kind = "popular"
[[candidates]]
name = "next"
kind = "cooccur"
"""


def tiny_shop(where: Path) -> Path:
    """``init``, a 40-user sample shop in ``exports/`` (three weeks, ending 2026-09-29) ingested, a config
    with two cheap generators and the ranker, and ``shop-events`` / ``shop-items`` mappings."""
    p = where / "shop"
    assert recctl(where, "init", p).returncode == 0
    assert recctl(p, "sample", "exports", "--users", "40", "--items", "60", "--days", "20").returncode == 0
    (p / "configs" / "recctl.toml").write_text(TINY)
    maps = p / "configs" / "mappings"
    for t in ("events", "items"):
        (maps / f"shop-{t}.toml").write_text((maps / f"sample-shop-{t}.toml").read_text())
    (p / "catalog").mkdir()
    (p / "exports" / "items.ndjson").rename(p / "catalog" / "items.ndjson")
    for extra in ("users.csv", "ground_truth.json"):
        (p / "exports" / extra).unlink()
    for t, d in (("events", "exports"), ("items", "catalog")):
        r = recctl(p, "--quiet", "ingest", t, d, "--mapping", f"shop-{t}")
        assert r.returncode == 0, r.stderr
    return p


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny shop with one full train promoted (shared: tests that write use ``copy``)."""
    p = tiny_shop(tmp_path_factory.mktemp("cron"))
    r = recctl(p, "--json", "train")
    assert r.returncode == 0 and json.loads(r.stdout)["promoted"], r.stderr
    return p


def copy(shop: Path, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "shop"
    shutil.copytree(shop, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


def promoted(p: Path) -> str:
    return (p / "runs" / "PROMOTED").read_text().strip()


# ------------------------------------------------------------------------------------ 5: typos fail loudly

TYPOS = [
    (("train", "--candidates", "pop,nope", "--no-ranker"), {}, "--candidates: unknown candidate generator "
     "'nope'; valid: pop, next"),
    (("train", "--candidates", "po"), {}, "'po' (did you mean 'pop'?); valid: pop, next"),
    (("evaluate", "--protocol", "leave_one_out"), {}, "unknown protocol 'leave_one_out' (did you mean "
     "'leave-one-out'?); valid: temporal, leave-one-out, next-basket, files"),
    (("evaluate", "--variant", "new"), {}, "'new' (did you mean 'new-items'?); valid: all, new-items, repeat"),
    (("evaluate", "--models", "rankd,pop"), {}, "unknown model 'rankd' (did you mean 'ranked'?); valid: "
     "ranked, pop, next, popular, popular-recent, random, personal-top"),
    (("recommend", "--item", "p0001", "--strategy", "simlar"), {}, "(did you mean 'similar'?)"),
    (("recommend", "--user", "u00001", "--list", "buyagain"), {}, "(did you mean 'buy-again'?)"),
    (("ingest", "event", "exports"), {}, "unknown table 'event' (did you mean 'events'?)"),
    (("ingest", "events", "exports", "--format", "jsonl"), {}, "(did you mean 'json'?)"),
    (("status",), {"RECCTL_EVALUATE__BASELINES": '["popular_recent"]'}, "(did you mean 'popular-recent'?)"),
    (("train",), {"RECCTL_RANKER__GENERATORS": '["nxt"]'}, "unknown generator 'nxt' (did you mean 'next'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "message"), TYPOS, ids=[" ".join(t[0][:2]) for t in TYPOS])
def test_unknown_names_exit_2_naming_the_valid_ones_and_the_closest(
    shop: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    before = sorted(p.name for p in (shop / "runs").iterdir())
    r = recctl(shop, *args, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("recctl: error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert sorted(p.name for p in (shop / "runs").iterdir()) == before  # nothing trained, nothing promoted


def test_a_partial_train_is_saved_but_not_promoted_unless_asked(shop: Path, tmp_path: Path) -> None:
    p = copy(shop, tmp_path)
    live = promoted(p)
    r = recctl(p, "--quiet", "--json", "train", "--candidates", "pop", "--no-ranker")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    run_id = doc["run_id"]
    assert doc["promoted"] is False and doc["partial"] == "--candidates pop --no-ranker"
    assert promoted(p) == live and (p / "runs" / run_id / "meta.json").exists()
    assert r.stderr.splitlines() == [
        f"recctl train: run {run_id} saved, not promoted: a partial train (--candidates pop --no-ranker) does "
        f"not replace the live run {live}; promote it with `recctl runs promote {run_id}`, or train with --promote"
    ]
    listed = json.loads(recctl(p, "--json", "runs", "list").stdout)
    assert {x["run_id"]: x["promoted"] for x in listed} == {live: True, run_id: False}
    r = recctl(p, "--json", "train", "--no-ranker", "--promote")  # partial (the ranker is on), asked for
    assert r.returncode == 0 and json.loads(r.stdout)["promoted"] is True, r.stderr
    assert promoted(p) == json.loads(r.stdout)["run_id"]
    # every configured generator named is not partial
    r = recctl(p, "--json", "train", "--candidates", "next,pop", "--no-ranker")
    assert json.loads(r.stdout)["promoted"] is False  # but without the ranker it still is


# ------------------------------------------------------------------------------------ 7: runs prune


def test_runs_prune_keeps_the_newest_and_the_promoted(shop: Path, tmp_path: Path) -> None:
    import shutil

    p = copy(shop, tmp_path)
    runs = p / "runs"
    real = promoted(p)
    ids = ["20200101-000000000-0001", "20200102-000000000-0002", "20990101-000000000-0003",
           "20990102-000000000-0004"]  # fmt: skip
    for i in ids:
        shutil.copytree(runs / real, runs / i)
    (runs / "20200103-000000000-0005" / "models").mkdir(parents=True)  # broken: no meta.json
    assert recctl(p, "runs", "promote", ids[0]).returncode == 0  # an old run is live
    dry = recctl(p, "--json", "runs", "prune", "--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expect_removed = ["20200102-000000000-0002", "20200103-000000000-0005", real]
    assert [r["run_id"] for r in json.loads(dry.stdout)["removed"]] == expect_removed
    assert len([q for q in runs.iterdir() if q.is_dir()]) == 6  # nothing removed
    r = recctl(p, "--json", "runs", "prune", "--keep", "2")
    doc = json.loads(r.stdout)
    assert [x["run_id"] for x in doc["removed"]] == expect_removed and doc["freed_bytes"] > 0
    assert sorted(q.name for q in runs.iterdir()) == sorted(["PROMOTED", ids[0], ids[2], ids[3]])
    assert promoted(p) == ids[0]
    again = json.loads(recctl(p, "--json", "runs", "prune", "--keep", "0").stdout)
    assert [x["run_id"] for x in again["removed"]] == ids[2:] and again["kept"] == [ids[0]]
    assert recctl(p, "runs", "prune").returncode == 2  # --keep is required


# ------------------------------------------------------------------ 7: segments apply on a lagging export

RECENT = """[[segments]]
name = "recent-visitors"
description = "an event in the last 3 days"
recency_days_max = 3.0

[[segments.actions]]
type = "emit"
id = "banner-welcome-back"
"""


def test_segments_apply_on_a_lagging_export_uses_the_newest_event(shop: Path, tmp_path: Path) -> None:
    p = copy(shop, tmp_path)
    (p / "configs" / "segments.toml").write_text(RECENT)
    newest = rows(p / "recctl.duckdb", "SELECT max(ts) FROM events")[0][0]
    r = recctl(p, "--quiet", "--json", "segments", "apply")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["now_from"] == "newest event" and doc["now"] == newest.isoformat()  # type: ignore[attr-defined]
    assert doc["segments"]["recent-visitors"] > 0  # measured from the clock it would be empty
    assert r.stderr.startswith(f"warning: the newest event ({newest:%Y-%m-%d %H:%M}) is ")
    assert "pass --now to choose another time" in r.stderr and len(r.stderr.splitlines()) == 1
    r = recctl(p, "--json", "segments", "apply", "--now", "2026-12-31")
    doc = json.loads(r.stdout)
    assert (doc["now_from"], doc["segments"]["recent-visitors"]) == ("--now", 0)
    assert not [ln for ln in messages(r.stderr) if ln], r.stderr  # no warning, only stage logs


# ---------------------------------------------------------------------------- 7: the README's cron job


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```sh\n#!/bin/sh\n# nightly.sh")
    return text[start + len("```sh\n") : text.index("```", start + 6)]


def test_the_readme_cron_script_runs_twice_with_honest_logs(tmp_path: Path) -> None:
    """The README's nightly.sh as written (only its project folder and PATH replaced), run by /bin/sh
    with stdout and stderr appended to one log, on a fresh tiny shop: twice exit 0, the log names every
    step and its exit code; then a nightly export with every row rejected exits 65 while every later
    step still ran."""
    p = tiny_shop(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "recctl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m recctl "$@"\n')
    shim.chmod(0o755)
    script = readme_script()
    assert "PROJECT=/srv/shop " in script and "PATH=/srv/shop/.venv/bin:" in script
    script = script.replace("PROJECT=/srv/shop ", f"PROJECT={p} ").replace(
        "PATH=/srv/shop/.venv/bin:", f"PATH={bin_dir}:"
    )
    nightly = tmp_path / "nightly.sh"
    nightly.write_text(script)
    nightly.chmod(0o755)
    log = tmp_path / "nightly.log"
    env = {k: v for k, v in ENV.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}  # cron's bare PATH

    def night() -> tuple[int, str]:
        before = log.read_text() if log.exists() else ""
        code = subprocess.run(
            f"{nightly} >> {log} 2>&1", check=False, shell=True, cwd="/", env=env, timeout=900
        ).returncode
        return code, log.read_text()[len(before) :]

    steps = [
        "ingest events exports/",
        "train --gate",
        "segments apply",
        "recommend --all",
        "runs prune --keep 7",
    ]
    for _night in (1, 2):
        code, out = night()
        assert code == 0, out
        said = [
            ln.split(" recctl ", 1)[1]
            for ln in out.splitlines()
            if " recctl " in ln and ln[:4].isdigit() and not STAGE_LOG.match(ln)  # the script's own lines
        ]
        assert [s.split(" --")[0] for s in said] == [s.split(" --")[0] for s in steps], out
        assert out.count(" exit 0\n") == len(steps), out
        assert "error" not in out and "Traceback" not in out, out
    runs = [q for q in (p / "runs").iterdir() if q.is_dir()]
    assert len(runs) == 2 and promoted(p) in {q.name for q in runs}  # the gate passed (or kept the first)
    assert rows(p / "recctl.duckdb", "SELECT count(*) FROM recs")[0][0] > 0

    (p / "exports" / "late.csv").write_text(
        "event_time,visitor_id,session,product_id,action,price,search_query,page,order_id\n"
        ",u1,s1,p0001,pageview,,,home,\nyesterday,u1,s1,p0002,pageview,,,home,\n"
    )
    code, out = night()
    assert code == 65, out
    assert (
        "recctl ingest: late.csv: 2 of 2 rows rejected (1 missing ts, 1 unparseable ts); see recctl rejects"
        in out
    )
    assert "recctl: error: late.csv: 2 of 2 rows rejected (100%)" in out
    assert out.count(" exit 0\n") == len(steps) - 1 and " exit 65\n" in out  # the later steps all ran
