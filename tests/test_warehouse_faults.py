"""A damaged or misplaced warehouse is one clear line and exit 2, never an internal error, and it is never
written over: bad settings, paths, non-DuckDB files, an unwritable lock folder, garbage in data blocks, a
WAL DuckDB cannot replay; the writer's liveness after kill -9; concurrent writers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from recctl.warehouse.integrity import classify
from recctl.warehouse.preflight import wal_header_ok
from tests.conftest import CliRunner, Result, messages, query
from tests.test_warehouse import ENV, big_csv, holder_script, recctl, wait_for_holder

BLOCK_AT = 3 * 4096  # DuckDB's main header and two database headers come first


def one_line_error(r: Result, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.stderr)
    first = next(ln for ln in messages(r.stderr) if ln)  # the stage logs of what ran before come first
    assert first.startswith("recctl: error: ") and "internal error" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in first, (needle, first)


def small_csv(path: Path, tag: str, rows: int = 3) -> Path:
    lines = [
        f"2024-02-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z,{tag}u{i},p{i},view"
        for i in range(rows)
    ]
    path.write_text("ts,user_id,item_id,event_type\n" + "\n".join(lines) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- settings, paths and files that are not warehouses ------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('[resources]\nmemory = "lots"', "resources.memory"),
        ('[resources]\nmemory = "-5GB"', "resources.memory"),  # DuckDB would take it as no limit
        ('[resources]\nmemory = "0GB"', "resources.memory"),  # every later query would run out of memory
        ('[resources]\nmemory = "150%"', "resources.memory"),
        ("[resources]\nthreads = 100000", "resources.threads"),  # DuckDB would start them all
        ("[resources]\nthreads = 0", "resources.threads"),
        ('[warehouse]\nmemory_limit = "4GB"', "'warehouse.memory_limit' moved to 'resources.memory'"),
        ("[warehouse]\nthreads = 2", "'warehouse.threads' moved to 'resources.threads'"),
    ],
)
def test_bad_warehouse_settings_exit_2_naming_the_key(
    cli: CliRunner, wh: Path, tmp_path: Path, setting: str, key: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{setting}\n")
    src = small_csv(tmp_path / "e.csv", "a")
    for args in (("ingest", "events", src), ("status",)):
        one_line_error(cli("--config", cfg, "--warehouse", wh, *args), 2, key)


def test_a_warehouse_path_under_a_file(cli: CliRunner, tmp_path: Path) -> None:
    src = small_csv(tmp_path / "somefile.csv", "a")
    for args in (("ingest", "events", src), ("status",), ("init", tmp_path / "proj")):
        one_line_error(
            cli("--warehouse", src / "wh.duckdb", *args), 2, "somefile.csv is a file, not a folder"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "somefile.csv"]


@pytest.mark.parametrize("kind", ["csv", "parquet", "json", "empty", "text"])
def test_a_file_that_is_not_duckdb_is_refused_and_left_alone(
    cli: CliRunner, tmp_path: Path, kind: str
) -> None:
    """DuckDB 2 opens an existing .csv / .parquet / .json as an in-memory database: an ingest into it
    exited 0 and kept nothing."""
    src = small_csv(tmp_path / "events.csv", "a")
    target = {"csv": src, "text": tmp_path / "notes.duckdb"}.get(kind, tmp_path / f"data.{kind}")
    if kind == "parquet":
        duckdb.sql(f"COPY (SELECT * FROM read_csv('{src}')) TO '{target}' (FORMAT parquet)")
    elif kind == "json":
        target.write_text('[{"ts": "2024-02-01T00:00:00Z", "user_id": "u", "item_id": "p"}]')
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "text":
        target.write_text("not a database\n")
    before = sha(target)
    for args in (("ingest", "events", src), ("status",), ("recommend", "--user", "u1")):
        one_line_error(cli("--warehouse", target, *args), 2, "not a DuckDB warehouse")
    assert sha(target) == before
    assert not Path(str(target) + ".lock").exists() and not Path(str(target) + ".wal").exists()


def test_a_fifo_or_a_folder_as_the_warehouse(cli: CliRunner, tmp_path: Path) -> None:
    fifo = tmp_path / "wh.duckdb"
    os.mkfifo(fifo)  # reading its header would block: refused from its type
    for args in (("status",), ("ingest", "events", small_csv(tmp_path / "e.csv", "a"))):
        one_line_error(cli("--warehouse", fifo, *args), 2, "not a DuckDB warehouse", "not a regular file")
        one_line_error(cli("--warehouse", tmp_path, *args), 2, "it is a folder")


def test_unwritable_lock_folder_is_one_line_naming_the_lock_file(
    cli: CliRunner, tmp_path: Path, tmpfs: Path
) -> None:
    """A read-only mount (root ignores permission bits): the writer cannot create or lock
    <warehouse>.lock. Exit 2, not 75: waiting does not make the folder writable."""
    mnt = tmpfs
    db = mnt / "wh.duckdb"
    src = small_csv(tmp_path / "e.csv", "a")
    assert cli("--warehouse", db, "ingest", "events", src).code == 0
    (mnt / "wh.duckdb.lock").unlink()
    assert (
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=False, capture_output=True).returncode
        == 0
    )
    r = cli("--warehouse", db, "ingest", "events", small_csv(tmp_path / "f.csv", "b"))
    one_line_error(r, 2, f"cannot open the writer lock file {db}.lock", "Read-only file system")
    # readers need no lock file: status still answers
    s = cli("--json", "--warehouse", db, "status")
    assert s.code == 0 and s.json["events"]["rows"] == 3


# --- damaged data blocks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_wh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpointed warehouse with 300 000 events (ingest closes its connection: DuckDB checkpoints)."""
    from recctl.cli import run

    work = tmp_path_factory.mktemp("events-wh")
    db = work / "wh.duckdb"
    assert (
        run(["--quiet", "--warehouse", str(db), "ingest", "events", str(big_csv(work / "big.csv", 300_000))])
        == 0
    )
    assert not Path(str(db) + ".wal").exists()
    return db


def data_blocks(db: Path, table: str, avoid: tuple[str, ...] = ()) -> list[int]:
    """Blocks holding ``table``'s column segments, without any segment of the ``avoid`` columns."""
    rows = query(db, f"SELECT column_name, block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0")
    avoided = {b for c, b in rows if c in avoid}
    return sorted({b for _, b in rows} - avoided)


def damage(src: Path, dst: Path, block: int, at: float = 0.4) -> Path:
    """64 KiB of garbage inside ``block`` of a copy of ``src``."""
    shutil.copy(src, dst)
    size = query(src, "SELECT block_size FROM pragma_database_size()")[0][0]
    with dst.open("r+b") as fh:
        fh.seek(BLOCK_AT + block * size + int(size * at))
        fh.write(os.urandom(64 * 1024))
    return dst


def test_garbage_in_data_blocks_is_exit_2_and_never_written_over(
    cli: CliRunner, events_wh: Path, tmp_path: Path
) -> None:
    """Blocks ingest itself would not read (no event_key segment): before, ingest exited 0 and wrote."""
    blocks = data_blocks(events_wh, "events", avoid=("event_key",))
    assert len(blocks) >= 4
    more = small_csv(tmp_path / "more.csv", "x")
    for i, block in enumerate(
        [blocks[0], blocks[len(blocks) // 3], blocks[2 * len(blocks) // 3], blocks[-1]]
    ):
        db = damage(events_wh, tmp_path / f"d{i}.duckdb", block)
        before = sha(db)
        for args in (("status",), ("ingest", "events", more), ("init", tmp_path / "proj")):
            r = cli("--warehouse", db, *args)
            one_line_error(
                r, 2, "warehouse is corrupt", "Corrupt database file", "does not match stored checksum"
            )
            assert (
                "restore the warehouse file from a backup" in r.stderr
                and "re-ingest the raw files" in r.stderr
            )
        assert sha(db) == before, "a write landed in the damaged file"
        assert not Path(str(db) + ".wal").exists()


def test_garbage_in_the_metadata_block_is_exit_2(cli: CliRunner, events_wh: Path, tmp_path: Path) -> None:
    (meta,) = query(events_wh, "SELECT block_id FROM pragma_metadata_info()")[0][:1]
    db = damage(events_wh, tmp_path / "m.duckdb", meta, at=0.0)
    for args in (("status",), ("ingest", "events", small_csv(tmp_path / "e.csv", "x"))):
        one_line_error(cli("--warehouse", db, *args), 2, "warehouse is corrupt")


def test_readers_and_train_on_a_damaged_demo(cli: CliRunner, quick_demo: Path, tmp_path: Path) -> None:
    """`recommend` exits 2 as soon as it reads a damaged block (DuckDB checks every block it loads);
    `train` refuses before fitting."""
    demo_toml = (quick_demo / "configs" / "recctl.toml").read_text()
    assert 'runs_dir = "runs"' in demo_toml
    demo_cfg = tmp_path / "serve.toml"  # the demo's promoted run, read only
    demo_cfg.write_text(demo_toml.replace('runs_dir = "runs"', f'runs_dir = "{quick_demo / "runs"}"'))
    src = quick_demo / "recctl.duckdb"
    shutil.copy(src, tmp_path / "clean.duckdb")  # a private copy: other tests read the demo
    recs = damage(tmp_path / "clean.duckdb", tmp_path / "recs.duckdb", data_blocks(src, "recs")[0])
    user = query(src, "SELECT user_id FROM recs LIMIT 1")[0][0]
    one_line_error(
        cli("--config", demo_cfg, "--warehouse", recs, "recommend", "--user", user), 2, "warehouse is corrupt"
    )
    events = tmp_path / "events.duckdb"
    shutil.copy(tmp_path / "clean.duckdb", events)
    with events.open("r+b") as fh:  # every events block: whatever the new-visitor path reads
        size = query(src, "SELECT block_size FROM pragma_database_size()")[0][0]
        for block in data_blocks(src, "events"):
            fh.seek(BLOCK_AT + block * size + size // 2)
            fh.write(os.urandom(4096))
    one_line_error(
        cli("--config", demo_cfg, "--warehouse", events, "recommend", "--user", "a-new-visitor"),
        2,
        "warehouse is corrupt",
    )
    cfg = tmp_path / "train.toml"
    cfg.write_text(demo_toml.replace('runs_dir = "runs"', f'runs_dir = "{tmp_path / "runs"}"'))
    one_line_error(
        cli("--config", cfg, "--warehouse", events, "train", "--no-ranker"), 2, "warehouse is corrupt"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_classify_reads_duckdbs_wording() -> None:
    corrupt = duckdb.Error(
        "Corrupt database file: computed checksum 1 does not match stored checksum 2 in block"
    )
    err = classify(corrupt, Path("w.duckdb"))
    assert err is not None and err.message.startswith(
        "warehouse is corrupt (w.duckdb): Corrupt database file"
    )
    assert err.exit_code == 2 and err.hint and "re-ingest" in err.hint
    wal = duckdb.Error(
        'Failure while replaying WAL file "/x/w.duckdb.wal": Corrupt WAL file: entry at byte 9'
    )
    err = classify(wal, Path("/x/w.duckdb"))
    assert err is not None and "write-ahead log cannot be replayed" in err.message
    assert err.hint and "/x/w.duckdb.wal" in err.hint
    assert classify(duckdb.FatalException("FATAL Error: database has been invalidated")) is not None
    assert classify(duckdb.ConversionException("Could not convert string 'x' to INT32")) is None
    assert classify(ValueError("Corrupt database file")) is None


# --- the write-ahead log ----------------------------------------------------------------------------


def wal_warehouse(cli: CliRunner, tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A warehouse whose last two commits live only in its WAL (a writer that died before its checkpoint)."""
    db = tmp_path / "wal.duckdb"
    assert cli("--warehouse", db, "ingest", "events", small_csv(tmp_path / "a.csv", "a")).code == 0
    con = duckdb.connect(str(db))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("INSERT INTO ingest_rejects (source_file, reason) VALUES ('in-the-wal', 'one')")
    con.execute("INSERT INTO ingest_rejects (source_file, reason) VALUES ('in-the-wal', 'two')")
    con.close()
    wal = Path(str(db) + ".wal")
    assert wal.stat().st_size > 0 and wal_header_ok(wal.read_bytes()[:256])
    return db, db.read_bytes(), wal.read_bytes()


def test_wal_damage_is_exit_2_with_what_is_lost_and_the_wal_is_kept(cli: CliRunner, tmp_path: Path) -> None:
    db, data, log = wal_warehouse(cli, tmp_path)
    wal = Path(str(db) + ".wal")
    more = small_csv(tmp_path / "b.csv", "b")
    cases = {
        "garbage at the start (DuckDB would skip it all)": os.urandom(64) + log[64:],
        "garbage everywhere": os.urandom(len(log)),
        "cut inside its header": log[:10],
        "garbage in an entry (checksum)": log[: len(log) // 2] + os.urandom(512) + log[len(log) // 2 + 512 :],
    }
    for name, damaged in cases.items():
        for args in (("status",), ("ingest", "events", more)):
            db.write_bytes(data)
            wal.write_bytes(damaged)
            r = cli("--warehouse", db, *args)
            one_line_error(r, 2, "write-ahead log cannot be replayed")
            assert "committed since the last checkpoint" in r.stderr and f"move {wal} away" in r.stderr, name
            assert wal.read_bytes() == damaged, f"{name}: the WAL was changed"
    # the recovery the hint gives: without the WAL the file holds everything up to its last checkpoint
    wal.unlink()
    r = cli("--json", "--warehouse", db, "status")
    assert r.code == 0 and r.json["events"]["rows"] == 3 and r.json["ingest"]["rejects"] == {}
    # an intact WAL is replayed, as before
    db.write_bytes(data)
    wal.write_bytes(log)
    assert query(db, "SELECT count(*) FROM ingest_rejects WHERE source_file = 'in-the-wal'") == [(2,)]
    r = cli("--json", "--warehouse", db, "ingest", "events", more)
    assert r.code == 0 and r.json["totals"]["rows_loaded"] == 3
    assert query(db, "SELECT count(*) FROM events") == [(6,)]


# --- the writer after kill -9, and concurrent writers --------------------------------------------------


def test_status_and_readers_do_not_name_a_killed_writer(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    assert cli("--warehouse", wh, "ingest", "events", small_csv(tmp_path / "a.csv", "a")).code == 0
    live = holder_script(wh, 60, open_db=False)
    try:
        s = cli("--json", "--warehouse", wh, "status").json
        assert s["writer"]["pid"] == live.pid and s["stale_lock"] is None
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    s = cli("--json", "--warehouse", wh, "status").json
    assert s["writer"] is None
    assert s["stale_lock"]["pid"] == live.pid and s["stale_lock"]["command"] == "test holder"
    # a process with the file open read-write but without the recctl lock: the reader names it, not the
    # dead pid the lock file still records
    other = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time\nc = duckdb.connect({str(wh)!r})\nprint('ready', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        r = cli("--warehouse", wh, "status")
        one_line_error(r, 75, f"being written by pid {other.pid}")
        assert f"pid {live.pid}" not in r.stderr
    finally:
        other.kill()
        other.wait()


def test_kill_9_of_a_real_ingest_leaves_no_writer_in_status(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    assert (
        recctl("--warehouse", db, "ingest", "events", small_csv(tmp_path / "a.csv", "a")).wait(timeout=60)
        == 0
    )
    victim = recctl("--warehouse", db, "ingest", "events", big_csv(tmp_path / "big.csv", 1_000_000))
    wait_for_holder(db, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out = subprocess.run([sys.executable, "-m", "recctl", "--json", "--warehouse", str(db), "status"],
                         check=False, capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["writer"] is None and s["stale_lock"]["pid"] == victim.pid
    assert s["events"]["rows"] == 3  # and nothing of the killed load


def test_six_concurrent_writers_serialize(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    files = [small_csv(tmp_path / f"f{i}.csv", f"w{i}-", rows=200 + i) for i in range(6)]
    # --wait 0: each either loads its file or exits 75 (locked), nothing else
    procs = [recctl("--json", "--warehouse", db, "ingest", "events", f, "--wait", "0") for f in files]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, _, err in outcomes:
        assert code in (0, 75), err
        if code == 75:
            assert "locked by" in err or "open in other processes" in err, err  # pid, or "another process"
    loaded = {files[i].name for i, (code, _, _) in enumerate(outcomes) if code == 0}
    assert loaded
    expected = sum(200 + i for i in range(6) if files[i].name in loaded)
    assert query(db, "SELECT count(*) FROM events") == [(expected,)]
    # --wait 60: all of them queue and load; the ones already loaded are skipped as unchanged
    procs = [recctl("--json", "--warehouse", db, "ingest", "events", f, "--wait", "60") for f in files]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    total = sum(200 + i for i in range(6))
    assert query(db, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(total, total)]
    assert query(db, "SELECT count(DISTINCT source_file) FROM events") == [(6,)]


def test_a_lock_record_that_cannot_be_written_is_one_line(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the lock file's holder record: exit 2 naming the lock file, not an internal error."""
    import errno

    from recctl.warehouse import lock

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock.os, "pwrite", full)
    r = cli("--warehouse", tmp_path / "w.duckdb", "init")
    assert r.code == 2, r.stderr
    assert "cannot write the writer lock file" in r.stderr and "No space left on device" in r.stderr
    assert "internal error" not in r.stderr


def test_a_warehouse_being_created_by_another_writer_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six writers of a new warehouse: one creates the file under the lock while the others check its
    header before queueing; a file still empty then is given a moment to get DuckDB's header (under load
    one writer exited 2, "not a DuckDB warehouse (an empty file)", instead of waiting or exiting 75)."""
    import threading

    from recctl.errors import WarehouseError
    from recctl.warehouse import preflight

    monkeypatch.setattr(preflight, "CREATING_GRACE", 2.0)
    real = tmp_path / "real.duckdb"
    duckdb.connect(str(real)).close()
    target = tmp_path / "w.duckdb"
    target.write_bytes(b"")
    timer = threading.Timer(0.3, lambda: target.write_bytes(real.read_bytes()))
    timer.start()
    try:
        preflight.check_location(target, create=True, being_created=True)  # waits for the header
    finally:
        timer.join()
    still = tmp_path / "still.duckdb"
    still.write_bytes(b"")
    monkeypatch.setattr(preflight, "CREATING_GRACE", 0.2)
    with pytest.raises(WarehouseError, match="an empty file"):
        preflight.check_location(still, create=True, being_created=True)
    with pytest.raises(WarehouseError, match="an empty file"):  # after the lock: no grace
        preflight.check_location(still, create=True)
