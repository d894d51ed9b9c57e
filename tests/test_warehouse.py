"""One writer at a time, read-only readers, crash safety: real processes, real locks, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from recctl.config import RecctlConfig
from recctl.errors import LockHeldError
from recctl.warehouse import open_reader, open_writer, reopen_writer, writer_lock
from recctl.warehouse.lock import WarehouseLock, lock_path_for, read_holder
from tests.conftest import query

ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}


def recctl(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "recctl", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip


def wait_for_holder(db: Path, proc: subprocess.Popen[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = read_holder(lock_path_for(db))
        if holder and holder["pid"] == proc.pid:
            return holder
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the writer never took the lock")


def big_csv(path: Path, rows: int) -> Path:
    duckdb.sql(
        f"COPY (SELECT strftime(TIMESTAMP '2024-01-01' + to_seconds(i), '%Y-%m-%dT%H:%M:%SZ') AS ts, "
        f"'u' || (i % 5000) AS user_id, 's' || (i // 10) AS session_id, 'p' || (i % 777) AS item_id, "
        f"'view' AS event_type, (i % 100) + 0.5 AS price FROM range({rows}) t(i)) TO '{path}' (HEADER)"
    )
    return path


def holder_script(db: Path, seconds: float, open_db: bool) -> subprocess.Popen[str]:
    code = (
        "import sys, time, duckdb\n"
        "from pathlib import Path\n"
        "from recctl.warehouse.lock import WarehouseLock\n"
        f"lock = WarehouseLock(Path({str(db)!r}), 'test holder'); lock.acquire()\n"
        + (f"con = duckdb.connect({str(db)!r})\n" if open_db else "")
        + "print('ready', flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def cfg(db: Path) -> RecctlConfig:
    return RecctlConfig.model_validate({"warehouse": {"path": str(db)}})


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    p = holder_script(db, 3, open_db=False)
    try:
        with pytest.raises(LockHeldError, match=rf"pid {p.pid} \(test holder\) since"):
            WarehouseLock(db, "me").acquire(wait=0)
        t0 = time.monotonic()
        with WarehouseLock(db, "me") as lock:
            lock.acquire(wait=30)  # waits for the holder to exit
            assert time.monotonic() - t0 > 1
            assert read_holder(lock.path)["command"] == "me"  # type: ignore[index]
    finally:
        p.kill()
        p.wait()


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    p = holder_script(db, 60, open_db=False)
    p.send_signal(signal.SIGKILL)
    p.wait()
    with WarehouseLock(db, "me") as lock:
        lock.acquire(wait=0)


def test_readers_never_take_the_lock_file_and_wait_for_duckdbs(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with open_writer(cfg(db), "setup"):
        pass
    # a writer that holds only the lock file does not block readers
    p = holder_script(db, 30, open_db=False)
    try:
        with open_reader(cfg(db)) as wh:
            assert wh.read_only
    finally:
        p.kill()
        p.wait()
    # a writer with the database open: DuckDB refuses read-only opens; the reader says who and when
    p = holder_script(db, 2, open_db=True)
    try:
        with pytest.raises(LockHeldError, match=rf"being written by pid {p.pid}"), open_reader(cfg(db)):
            pass
        with open_reader(cfg(db), wait=30) as wh:
            assert wh.read_only
    finally:
        p.kill()
        p.wait()


def reader_script(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process with the database open read-only (a serving call) for ``seconds``."""
    code = (
        f"import time, duckdb\ncon = duckdb.connect({str(db)!r}, read_only=True)\n"
        f"print('ready', flush=True)\ntime.sleep({seconds})\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_a_writer_waits_for_readers_then_exits_75(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with open_writer(cfg(db), "setup"):
        pass
    # a short reader: the writer retries its open (default grace) and gets in when the reader is gone
    p = reader_script(db, 1.0)
    try:
        t0 = time.monotonic()
        with open_writer(cfg(db), "after a reader") as wh:
            assert not wh.read_only
        assert time.monotonic() - t0 >= 0.5  # it did wait
    finally:
        p.kill()
        p.wait()
    # a reader that stays longer than the writer's wait and grace: exit 75, naming the reader's pid
    p = reader_script(db, 30)
    try:
        with (
            writer_lock(cfg(db), "blocked"),
            pytest.raises(LockHeldError, match=rf"readers.*PID {p.pid}"),
            reopen_writer(cfg(db), wait=0, grace=0.3),
        ):
            pass
    finally:
        p.kill()
        p.wait()


def test_two_concurrent_ingests(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    a = big_csv(tmp_path / "a.csv", 1_500_000)
    b = tmp_path / "b.csv"
    b.write_text("ts,user_id,item_id,event_type\n2024-02-01T00:00:00Z,u1,p1,view\n")
    first = recctl("--json", "--warehouse", db, "ingest", "events", a)
    wait_for_holder(db, first)
    refused = recctl("--warehouse", db, "ingest", "events", b)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 75, err
    assert f"locked by pid {first.pid} (ingest events)" in err and "--wait" in err
    waiting = recctl("--json", "--warehouse", db, "ingest", "events", b, "--wait", "120")
    out_b, err_b = waiting.communicate(timeout=180)
    out_a, err_a = first.communicate(timeout=180)
    assert first.returncode == 0, err_a
    assert waiting.returncode == 0, err_b
    assert json.loads(out_a)["totals"]["rows_loaded"] == 1_500_000
    assert json.loads(out_b)["totals"]["rows_loaded"] == 1
    assert query(db, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(1_500_001, 1_500_001)]


def test_kill_9_mid_ingest_then_rerun_gives_exact_counts(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    small = tmp_path / "small.csv"
    small.write_text("ts,user_id,item_id,event_type\n2024-02-01T00:00:00Z,u1,p1,view\n")
    assert recctl("--warehouse", db, "ingest", "events", small).wait(timeout=60) == 0
    src = big_csv(tmp_path / "big.csv", 3_000_000)
    victim = recctl("--warehouse", db, "ingest", "events", src)
    wait_for_holder(db, victim)
    time.sleep(0.8)  # inside the file's transaction: sha256 done, staging under way
    assert victim.poll() is None, "the ingest finished before it could be killed: make the file bigger"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # nothing of the killed file is visible, and it is not marked as loaded
    assert query(db, "SELECT count(*) FROM events") == [(1,)]
    assert query(db, "SELECT count(*) FROM ingest_files WHERE path LIKE '%big.csv'") == [(0,)]
    rerun = recctl("--json", "--warehouse", db, "ingest", "events", src)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    f = json.loads(out)["files"][0]
    assert (f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"]) == (
        3_000_000,
        3_000_000,
        0,
        0,
    )
    assert query(db, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(3_000_001, 3_000_001)]


def test_event_keys_are_rebuilt_when_duckdbs_hash_changes(tmp_path: Path) -> None:
    """Keys are DuckDB hashes; a DuckDB release with another hash must not break de-duplication."""
    db = tmp_path / "w.duckdb"
    src = tmp_path / "e.csv"
    src.write_text("ts,user_id,item_id,event_type,price\n2024-02-01T00:00:00Z,u1,p1,view,2.5\n"
                   "2024-02-01T00:01:00Z,u1,p2,view,\n")  # fmt: skip
    assert recctl("--warehouse", db, "ingest", "events", src).wait(timeout=60) == 0
    good = query(db, "SELECT event_key FROM events ORDER BY ts")
    con = duckdb.connect(str(db))
    con.execute("UPDATE recctl_meta SET value = 'from another duckdb' WHERE key = 'event_key_probe'")
    con.execute("UPDATE events SET event_key = event_key + 1")  # what an older hash would have stored
    con.close()
    with open_writer(cfg(db), "test"):  # the writer notices and re-keys
        pass
    assert query(db, "SELECT event_key FROM events ORDER BY ts") == good
    rerun = recctl("--json", "--warehouse", db, "ingest", "events", src, "--force")
    out, _ = rerun.communicate(timeout=60)
    assert json.loads(out)["totals"]["rows_duplicate"] == 2


def test_within_a_file_the_first_copy_of_an_event_wins_and_stored_ones_count_once(tmp_path: Path) -> None:
    """Duplicates of a key within the file (same event_id with other values, or the same content) keep
    the file's first copy; a key the table already holds is a duplicate however often the file repeats it."""
    db = tmp_path / "w.duckdb"
    first = tmp_path / "first.csv"
    first.write_text("event_id,ts,user_id,item_id,event_type\ne9,2024-02-01T00:00:00Z,u9,p9,view\n")
    assert recctl("--warehouse", db, "ingest", "events", first).wait(timeout=60) == 0
    src = tmp_path / "e.csv"
    src.write_text(
        "event_id,ts,user_id,item_id,event_type\n"
        "e1,2024-02-01T00:00:00Z,u1,p1,view\n"
        ",2024-02-01T00:05:00Z,u2,p5,view\n"
        "e1,2024-02-01T00:01:00Z,u1,p2,view\n"  # e1 again, other values: the first copy stays
        ",2024-02-01T00:05:00Z,u2,p5,view\n"  # the same content again
        "e9,2024-02-02T00:00:00Z,u9,p8,view\n"  # e9 is stored already ...
        "e1,2024-02-01T00:02:00Z,u1,p3,view\n"
        "e9,2024-02-03T00:00:00Z,u9,p7,view\n"  # ... and repeated in the file
        "e2,2024-02-01T00:03:00Z,u1,p4,view\n"
    )
    run = recctl("--json", "--warehouse", db, "ingest", "events", src)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    f = json.loads(out)["files"][0]
    # duplicates: e1 twice and the repeated content within the file, e9's two rows (one stored key, one copy)
    assert (f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"]) == (8, 3, 0, 5)
    rows = query(db, "SELECT coalesce(event_id, '-'), item_id FROM events ORDER BY 1, 2")
    assert rows == [("-", "p5"), ("e1", "p1"), ("e2", "p4"), ("e9", "p9")]
