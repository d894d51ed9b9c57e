"""Fault injection with real processes: kill -9, SIGTERM and SIGINT at seeded random points of an ingest
and of a training, then exact counts, a clean status and a serving check.

The points are drawn from one seeded generator per case (``SEED``) as a share of the same work's duration
measured in the same run (the machine is shared and its speed varies), so the signal lands inside the work;
the test asserts the process was still running when it was signalled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import AS_FROM_A_TERMINAL, query

SEED = 13
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}
#: rows per file: five files, a few seconds of ingest
FILE_ROWS = (240_000, 280_000, 320_000, 360_000, 400_000)
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}
#: what each signal's process must exit with (subprocess reports death by a signal as -signum)
EXPECTED_CODE = {"kill": -9, "term": 143, "int": 130}


def recctl(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *AS_FROM_A_TERMINAL, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def signal_at(proc: subprocess.Popen[str], sig: signal.Signals, after: float) -> None:
    time.sleep(after)
    assert proc.poll() is None, f"the process ended before {after:.2f} s: make the work bigger"
    proc.send_signal(sig)


@pytest.fixture(scope="module")
def event_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], float]:
    """Five CSV files of distinct events (path → rows), and the seconds a complete ingest of them takes."""
    folder = tmp_path_factory.mktemp("fault-events")
    con = duckdb.connect()
    files, start = {}, 0
    for k, n in enumerate(FILE_ROWS):
        path = folder / f"events-{k}.csv"
        con.execute(
            f"COPY (SELECT 'u' || (i % 20000) AS user_id, 'p' || (i % 3000) AS item_id, 'view' AS event_type, "
            f"TIMESTAMP '2024-01-01' + to_seconds(i) AS ts FROM range({start}, {start + n}) t(i)) "
            f"TO '{path}' (HEADER)"
        )
        files[str(path)] = n
        start += n
    con.close()
    t0 = time.monotonic()
    assert finish(recctl("--warehouse", folder / "reference.duckdb", "ingest", "events", folder))[0] == 0
    return files, time.monotonic() - t0


def assert_consistent(db: Path, files: dict[str, int]) -> set[str]:
    """Every file the manifest calls loaded is in the events completely, nothing of any other file is;
    an interrupted file is not recorded as failed. Returns the loaded files."""
    manifest = query(
        db, "SELECT path, status, rows_read, rows_loaded FROM ingest_files WHERE path LIKE '%events-%'"
    )
    assert all(status == "ok" for _, status, _, _ in manifest), manifest
    ok = {p: (read, loaded) for p, _, read, loaded in manifest}
    by_file = dict(query(db, "SELECT source_file, count(*) FROM events GROUP BY 1"))
    by_file.pop(next((p for p in by_file if p.endswith("seed.csv")), ""), None)
    assert by_file == {p: files[p] for p in ok}
    assert all(read == loaded == files[p] for p, (read, loaded) in ok.items())
    assert query(db, "SELECT count(*) - count(DISTINCT event_key) FROM events") == [(0,)]
    return set(ok)


def assert_no_writer(db: Path) -> None:
    code, out, err = finish(recctl("--json", "--warehouse", db, "status"), timeout=60)
    assert code == 0, err
    assert json.loads(out)["writer"] is None


@pytest.mark.parametrize("kind", list(SIGNALS))
def test_signal_at_a_random_point_of_an_ingest(
    kind: str, event_files: tuple[dict[str, int], float], tmp_path: Path
) -> None:
    files, seconds = event_files
    db = tmp_path / "w.duckdb"
    seed = tmp_path / "seed.csv"
    seed.write_text("ts,user_id,item_id,event_type\n2023-12-01T00:00:00Z,u0,p0,view\n")
    assert finish(recctl("--warehouse", db, "ingest", "events", seed))[0] == 0
    folder = Path(next(iter(files))).parent
    # within the first half: the reference ingest is timed once, perhaps beside heavier tests than this one
    after = random.Random(f"{SEED}-ingest-{kind}").uniform(0.1, 0.5) * seconds
    victim = recctl("--json", "--warehouse", db, "ingest", "events", folder)
    signal_at(victim, SIGNALS[kind], after)
    code, _, err = finish(victim)
    assert code == EXPECTED_CODE[kind], err
    if kind != "kill":  # one clear line, no traceback
        assert "interrupted by SIG" in err and "Traceback" not in err
    loaded = assert_consistent(db, files)
    assert loaded != set(files), f"every file loaded before the signal at {after:.2f} s"
    assert_no_writer(db)
    # the rerun loads exactly what is missing: no duplicates, no rejects, every count reconciled
    code, out, err = finish(recctl("--json", "--warehouse", db, "ingest", "events", folder))
    assert code == 0, err
    report = json.loads(out)
    fresh = {f["path"]: f for f in report["files"] if f["status"] == "loaded"}
    assert set(fresh) == set(files) - loaded
    assert all(
        (f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"])
        == (files[p], files[p], 0, 0)
        for p, f in fresh.items()
    )
    assert assert_consistent(db, files) == set(files)
    assert query(db, "SELECT count(*) FROM events") == [(sum(files.values()) + 1,)]


@pytest.fixture(scope="module")
def trained(quick_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A copy of the quick demo's warehouse and a config training two generators and the ranker, with
    one promoted run; and the seconds that training took."""
    work = tmp_path_factory.mktemp("fault-train")
    shutil.copy(quick_demo / "recctl.duckdb", work / "recctl.duckdb")
    (work / "recctl.toml").write_text(
        f'runs_dir = "{work / "runs"}"\n[warehouse]\npath = "{work / "recctl.duckdb"}"\n'
        '[[candidates]]\nname = "trending"\nkind = "popular"\nparams = { half_life_days = 7.0 }\n'
        '[[candidates]]\nname = "next-item"\nkind = "cooccur"\n'
    )
    t0 = time.monotonic()
    code, _, err = finish(recctl("--quiet", "--config", work / "recctl.toml", "train"))
    assert code == 0, err
    return work, time.monotonic() - t0


def serves(cfg: Path) -> str:
    """The run that answers a known buyer's request (the answer must be a full list)."""
    code, out, err = finish(recctl("--json", "--config", cfg, "recommend", "--user", "u00001"), timeout=60)
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["items"]) == 10
    return str(answer["run_id"])


@pytest.mark.parametrize("kind", list(SIGNALS))
def test_signal_at_a_random_point_of_a_train(kind: str, trained: tuple[Path, float]) -> None:
    work, seconds = trained
    cfg, runs = work / "recctl.toml", work / "runs"
    before = (runs / "PROMOTED").read_text().strip()
    listed = sorted(p.name for p in runs.iterdir())
    after = random.Random(f"{SEED}-train-{kind}").uniform(0.2, 0.8) * seconds
    victim = recctl("--quiet", "--config", cfg, "train")
    signal_at(victim, SIGNALS[kind], after)
    code, _, err = finish(victim)
    assert code == EXPECTED_CODE[kind], err
    # the promoted run is untouched and serves; no half-built run is listed
    assert (runs / "PROMOTED").read_text().strip() == before
    assert serves(cfg) == before
    code, out, _ = finish(recctl("--json", "--config", cfg, "runs", "list"), timeout=60)
    assert code == 0 and before in [r["run_id"] for r in json.loads(out)]
    if kind != "kill":  # the staging folder was removed on the way out
        assert sorted(p.name for p in runs.iterdir()) == listed
        assert "interrupted by SIG" in err and "Traceback" not in err
    assert_no_writer(work / "recctl.duckdb")
    # the next train cleans up what a kill -9 left, and promotes a new run that serves
    code, out, err = finish(recctl("--json", "--quiet", "--config", cfg, "train"))
    assert code == 0, err
    new = json.loads(out)["run_id"]
    assert not [p for p in runs.iterdir() if p.name.startswith(".tmp-")]
    assert serves(cfg) == new != before
