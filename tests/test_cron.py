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
    assert r.stdout == ""
    lines = r.stderr.splitlines()
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
    assert r.stderr.splitlines() == [
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
    assert rows(project / "recctl.duckdb", "SELECT max(version) FROM schema_version") == [(5,)]
    r = recctl(project, "--json", "ingest", "events", "events.csv", "--mapping", "shop")
    assert json.loads(r.stdout)["files"][0]["status"] == "unchanged"
