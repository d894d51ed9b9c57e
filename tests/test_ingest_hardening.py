"""Issue 13, ingest: corrupt gzip, honest counts, non-finite numbers, contained mapping SQL, one clear line
per failure with the batch going on, silent misreads, exit codes. Every bad file is made in tmp_path."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import duckdb
import pytest

from recctl.config import RecctlConfig
from recctl.ingest import ingest, resolve_mapping
from recctl.warehouse import open_writer
from tests.conftest import CliRunner, Result, messages, query, reconciled

HEADER = "ts,user_id,session_id,item_id,event_type,price\n"
ROW = "2024-05-01T10:{m:02d}:00Z,u1,s1,p{i},view,{p}\n"


def rows(n: int, start: int = 0) -> str:
    return "".join(ROW.format(m=i % 60, i=i, p=i % 50 + 0.5) for i in range(start, start + n))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def run(cli: CliRunner, wh: Path, table: str, *args: str | Path) -> Result:
    return cli("--json", "--warehouse", wh, "ingest", table, *args)


def error_lines(r: Result) -> list[str]:
    """stderr without hints and warnings: the one line a failure gets."""
    return [ln for ln in messages(r.stderr) if ln.strip() and not ln.startswith(("  hint:", "warning:"))]


def manifest(wh: Path) -> list[tuple[str, str, str | None]]:
    return [
        (Path(p).name, s, m)
        for p, s, m in query(wh, "SELECT path, status, message FROM ingest_files ORDER BY 1")
    ]


def mapping(tmp_path: Path, text: str, name: str = "m") -> Path:
    return write(tmp_path / "maps" / f"{name}.toml", text)


# 1. corrupt gzip: refused whole, nothing loaded, the batch goes on ---------------------------------------


def _gz(n: int = 20000) -> bytes:
    return gzip.compress((HEADER + rows(n)).encode(), mtime=0)


def _flip_middle(data: bytes) -> bytes:
    """Bytes flipped mid-stream until the stream no longer decompresses cleanly (seeded, so the same)."""
    for pos in range(len(data) // 2, len(data) - 8, 97):
        bad = bytearray(data)
        for k in range(4):
            bad[pos + k] ^= 0x5A
        try:
            gzip.decompress(bytes(bad))
        except (OSError, EOFError, zlib.error):
            return bytes(bad)
    raise AssertionError("no damaging flip found")


def _crc(data: bytes) -> bytes:  # the stream itself intact, its CRC-32 wrong: only a CRC check sees it
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]


def _length(data: bytes) -> bytes:
    return data[:-4] + (int.from_bytes(data[-4:], "little") + 1).to_bytes(4, "little")


def _start(data: bytes) -> bytes:  # damaged right after the header: zlib.error on the first read
    return data[:10] + b"\xff\xff\xff\xff" + data[14:]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_flip_middle, "corrupt gzip file"),
        (_crc, "integrity check failed"),
        (_length, "integrity check failed"),
        (_start, "compressed data is damaged"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d + b"trailing garbage", "corrupt gzip file"),
    ],
    ids=["mid-stream", "crc", "length", "start", "truncated", "trailing"],
)
def test_corrupt_gzip_is_refused_whole(
    cli: CliRunner, wh: Path, tmp_path: Path, damage: Callable[[bytes], bytes], why: str
) -> None:
    bad = tmp_path / "in" / "a_bad.csv.gz"
    bad.parent.mkdir()
    bad.write_bytes(damage(_gz()))
    good = write(tmp_path / "in" / "b_good.csv.gz", HEADER + rows(3, start=90000))
    r = run(cli, wh, "events", bad, good)
    assert r.code == 65
    assert len(error_lines(r)) == 1 and why in r.stderr and "a_bad.csv.gz" in r.stderr
    files = {Path(f["path"]).name: f for f in r.json["files"]}
    assert files["a_bad.csv.gz"]["status"] == "failed" and files["a_bad.csv.gz"]["rows_read"] == 0
    assert files["b_good.csv.gz"]["rows_loaded"] == 3
    assert query(wh, "SELECT count(*) FROM events WHERE source_file LIKE '%a_bad%'") == [(0,)]
    assert query(wh, "SELECT count(*) FROM ingest_rejects") == [(0,)]
    (name, status, message), _ = manifest(wh)
    assert (name, status) == ("a_bad.csv.gz", "failed") and why in (message or "")


def test_gzip_is_recognized_by_its_magic_bytes_and_multi_member_streams_load(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    disguised = tmp_path / "disguised.csv"
    disguised.write_bytes(gzip.compress((HEADER + rows(2)).encode()) + gzip.compress(rows(2, 10).encode()))
    r = run(cli, wh, "events", disguised)
    assert r.code == 0 and r.json["files"][0]["rows_loaded"] == 4
    assert query(wh, "SELECT DISTINCT source_file FROM events") == [(str(disguised),)]


def test_counts_that_do_not_reconcile_fail_the_file(
    cli: CliRunner, wh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read is measured, not derived: a miscounted duplicate makes the identity fail, loudly."""
    from recctl.ingest import write as writer

    real = writer.load_events
    monkeypatch.setattr(writer, "load_events", lambda *a: (real(*a)[0], real(*a)[1] + 1))
    f = write(tmp_path / "e.csv", HEADER + rows(5))
    r = run(cli, wh, "events", f)
    assert r.code == 65 and "do not reconcile" in r.stderr and len(error_lines(r)) == 1
    assert query(wh, "SELECT count(*) FROM events") == [(0,)]
    assert manifest(wh)[0][1] == "failed"


def test_duplicates_are_counted_not_derived(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", HEADER + rows(4) + rows(2))  # 2 repeated within the file
    assert run(cli, wh, "events", a).json["files"][0]["rows_duplicate"] == 2
    b = write(tmp_path / "b.csv", HEADER + rows(6) + "bad,u1,s1,p1,view,1\n")  # 4 stored, 2 new, 1 reject
    f = run(cli, wh, "events", b).json["files"][0]
    assert (f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"]) == (7, 2, 1, 4)


def test_a_file_changed_while_duckdb_reads_it_is_not_loaded(
    cli: CliRunner, wh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is hashed once before the load; one appended to during the load (after the hash) must not be
    recorded under the old hash: the whole file is rolled back and the next run loads it."""
    from recctl.ingest import write as writer

    f = write(tmp_path / "e.csv", HEADER + rows(5))
    real = writer.load_events

    def appending(*a: Any) -> tuple[int, int]:
        with f.open("a") as out:
            out.write(rows(1, start=5))
        return real(*a)

    monkeypatch.setattr(writer, "load_events", appending)
    r = run(cli, wh, "events", f)
    assert r.code == 65 and "changed while it was being read" in r.stderr and len(error_lines(r)) == 1
    assert query(wh, "SELECT count(*) FROM events") == [(0,)]
    monkeypatch.setattr(writer, "load_events", real)
    r = run(cli, wh, "events", f)
    assert r.code == 0 and r.json["files"][0]["rows_loaded"] == 6


def test_mixed_line_endings_are_found_in_gzip_and_after_a_clean_scan(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    """The CR check rides on the hashing pass (plain files) or the decompression (gzip): a CR anywhere
    still sends the file through the line-ending pass, an LF file without one loads as before."""
    text = HEADER + rows(2) + rows(1, start=2).replace("\n", "\r") + rows(1, start=3)
    for name in ("mixed.csv", "mixed.csv.gz"):
        r = run(cli, wh, "events", write(tmp_path / name, text))
        assert r.code == 65 and "mixed line endings" in r.stderr and "line 4" in r.stderr, r.stderr
    r = run(cli, wh, "events", write(tmp_path / "clean.csv.gz", HEADER + rows(4)))
    assert r.code == 0 and r.json["files"][0]["rows_loaded"] == 4


# 2. non-finite numbers ------------------------------------------------------------------------------------


def test_non_finite_numbers_are_rejected_in_every_format_and_table(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    csv = write(
        tmp_path / "e.csv",
        "ts,user_id,item_id,event_type,price,value,quantity\n"
        "2024-05-01T10:00:00Z,u1,p1,view,NaN,,\n2024-05-01T10:00:00Z,u1,p2,view,inf,,\n"
        "2024-05-01T10:00:00Z,u1,p3,view,-inf,,\n2024-05-01T10:00:00Z,u1,p4,view,1e309,,\n"
        "2024-05-01T10:00:00Z,u1,p5,purchase,1,nan,\n2024-05-01T10:00:00Z,u1,p6,purchase,1,,-Infinity\n"
        "2024-05-01T10:00:00Z,u1,p7,view,-0,,\n",
    )
    js = write(
        tmp_path / "e.ndjson",
        '{"ts": "2024-05-01T10:00:00Z", "user_id": "u1", "item_id": "j1", "event_type": "view", "price": NaN}\n'
        '{"ts": "2024-05-01T10:00:00Z", "user_id": "u1", "item_id": "j2", "event_type": "view", "price": 1e309}\n'
        '{"ts": "2024-05-01T10:00:00Z", "user_id": "u1", "item_id": "j3", "event_type": "view", "price": Infinity}\n',
    )
    pq = tmp_path / "e.parquet"
    duckdb.sql(
        "COPY (SELECT TIMESTAMP '2024-05-01 10:00:00' AS ts, 'u1' AS user_id, 'q' || i AS item_id, "
        "'view' AS event_type, [1.5, 'nan'::DOUBLE, 'inf'::DOUBLE][i + 1] AS price FROM range(3) t(i)) "
        f"TO '{pq}' (FORMAT parquet)"
    )
    r = run(cli, wh, "events", csv, js, pq)
    assert r.code == 65 and reconciled(r.json)  # e.ndjson: every row rejected ([ingest] max_reject_share)
    assert [f["rows_rejected"] for f in r.json["files"]] == [6, 3, 2]
    reasons = {row[0] for row in query(wh, "SELECT reason FROM ingest_rejects")}
    assert (
        "price is not a finite number: 'NaN'" in reasons
        and "price is not a finite number: '1e309'" in reasons
    )
    assert (
        "value is not a finite number: 'nan'" in reasons
        and "quantity is not a finite number: '-Infinity'" in reasons
    )
    assert "price is not a finite number: 'inf'" in reasons  # the parquet double
    assert not any("negative" in x for x in reasons)  # -inf is not finite, not "negative"
    assert query(wh, "SELECT item_id, price FROM events ORDER BY 1") == [("p7", -0.0), ("q0", 1.5)]
    items = write(
        tmp_path / "i.csv",
        "item_id,price,rating,original_price\ni1,NaN,,\ni2,1,inf,\ni3,1,4,1e400\ni4,2,4,3\n",
    )
    r = run(cli, wh, "items", items)
    assert r.json["files"][0]["rows_rejected"] == 3
    assert query(wh, "SELECT item_id FROM items") == [("i4",)]


# 3. mapping expressions are contained ------------------------------------------------------------------


PWNED = "price; COMMIT; CREATE TABLE pwned AS SELECT 1; --"


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        (PWNED, "not a single expression"),
        ("price); CREATE TABLE pwned AS SELECT (1", "not a single expression"),
        ("price) FROM read_csv('/etc/passwd') t, (SELECT 2", "more than one scalar expression"),
        ("read_text('/etc/passwd')", "read_text() reads files"),
        ("(SELECT max(price) FROM events)", "subquery"),
        ("price + (SELECT count(*) FROM glob('/etc/*'))", "subquery"),
        ("length(query('SELECT 1'))", "query() reads files"),
        ("nextval('seq')", "nextval() reads or changes state"),
        ("current_setting('temp_directory')", "current_setting()"),
        ("price) ORDER BY (1", "more than one scalar expression"),
    ],
)
def test_mapping_expressions_run_nothing_but_one_expression(
    cli: CliRunner, wh: Path, tmp_path: Path, expr: str, why: str
) -> None:
    f = write(tmp_path / "e.csv", HEADER + rows(2))
    m = mapping(tmp_path, f'target = "events"\n[columns]\nprice = {json.dumps(expr)}\n')
    r = run(cli, wh, "events", f, "--mapping", m)
    assert r.code == 2 and why in r.stderr and "[columns] price" in r.stderr and str(m) in r.stderr
    assert len(error_lines(r)) == 1
    con = duckdb.connect(str(wh), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'pwned'").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM ingest_files").fetchall() == [(0,)]  # refused before any file
    finally:
        con.close()


def test_attributes_are_checked_too_and_the_flag_allows_file_functions(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    side = write(tmp_path / "side.txt", "from a file")
    f = write(tmp_path / "i.csv", "sku,name\np1,Shoe\n")
    text = (
        'target = "items"\n[columns]\nitem_id = "sku"\ntitle = "name"\n[attributes]\n'
        f'note = "(SELECT content FROM read_text({json.dumps(str(side))[1:-1]!r}))"\n'
    )
    m = mapping(tmp_path, text)
    r = run(cli, wh, "items", f, "--mapping", m)
    assert r.code == 2 and "[attributes] note" in r.stderr and "allow_file_functions" in r.stderr
    cfg = write(tmp_path / "c.toml", "[ingest]\nallow_file_functions = true\n")
    r = cli("--json", "--config", cfg, "--warehouse", wh, "ingest", "items", f, "--mapping", m)
    assert r.code == 0
    assert json.loads(query(wh, "SELECT attributes FROM items")[0][0]) == {"note": "from a file"}
    # statements stay refused with the flag
    m2 = mapping(tmp_path, f'target = "events"\n[columns]\nprice = {json.dumps(PWNED)}\n', "m2")
    r = cli(
        "--config", cfg, "--warehouse", wh, "ingest", "events", write(tmp_path / "e.csv", HEADER), "-m", m2
    )
    assert r.code == 2 and "not a single expression" in r.stderr


def test_ordinary_expressions_and_odd_column_names_still_work(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "e.csv", "when,who,Sales Value,what;it is,kind\n2024-05-01T10:00:00Z,u1,12.5,p1,view\n"
    )
    m = mapping(  # a name with ';' is given as a quoted identifier: bare, it would be refused as statements
        tmp_path,
        'target = "events"\n[columns]\nts = "when"\nuser_id = "who"\nprice = "Sales Value"\n'
        'item_id = \'"what;it is"\'\nevent_type = "kind"\n'
        "query = \"concat_ws(';', who, kind) -- a comment\"\npage = 'current_date::VARCHAR'\n",
    )
    r = run(cli, wh, "events", f, "--mapping", m)
    assert r.code == 0, r.stderr
    got = query(wh, "SELECT item_id, price, query, page IS NOT NULL FROM events")
    assert got == [("p1", 12.5, "u1;view", True)]


# 4. every failure one clear line, the batch goes on ------------------------------------------------------


def test_cr_only_line_endings_are_read(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "mac.csv", (HEADER + rows(3) + "x,u1,s1,p9,view,1\n").replace("\n", "\r"))
    r = run(cli, wh, "events", f)
    assert r.code == 0 and reconciled(r.json)
    assert (r.json["files"][0]["rows_loaded"], r.json["files"][0]["rows_rejected"]) == (3, 1)
    assert query(wh, "SELECT line, reason FROM ingest_rejects") == [(5, "unparseable ts: 'x'")]


def test_mixed_line_endings_are_refused_but_line_breaks_in_quoted_values_load(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    """DuckDB reads one line ending per file: rows ending otherwise ran together into one reject."""
    q = '"2024-05-01T10:00:00Z","u1","p{}","view"'
    mixed = write(tmp_path / "mixed.csv", '"ts","user_id","item_id","event_type"\n' + q.format(1) + "\n"
                  + q.format(2) + "\r" + q.format(3) + "\n")  # fmt: skip
    r = run(cli, wh, "events", mixed)
    assert r.code == 65 and "mixed line endings" in r.stderr and "line 3" in r.stderr
    stray = write(
        tmp_path / "stray.csv",
        "ts,user_id,item_id,event_type\n2024-05-01T10:00:00Z,u1,p1,view\r2024-05-01T10:00:00Z,u1,p2,view\n",
    )
    r = run(cli, wh, "events", stray)
    assert r.code == 65 and "mixed line endings" in r.stderr and "line 2 ends in another" in r.stderr
    excel = write(  # CRLF rows, LF inside a quoted value, a rejected row holding one: all as written
        tmp_path / "excel.csv",
        'ts,user_id,item_id,event_type,query\r\n2024-05-01T10:00:00Z,u1,p1,view,"two\nlines"\r\n'
        '2024-05-01T10:00:00Z,u1,p2,view,"a\nb",extra\r\n2024-05-01T10:00:00Z,u1,p3,view,x\r\n',
    )
    r = run(cli, wh, "events", excel)
    assert r.code == 0 and reconciled(r.json), r.stderr
    f = r.json["files"][0]
    assert (f["rows_read"], f["rows_loaded"], f["rows_rejected"]) == (3, 2, 1)
    assert query(wh, "SELECT query FROM events WHERE item_id = 'p1'") == [("two\nlines",)]


def test_unreadable_file_is_a_failed_row_and_the_batch_goes_on(
    cli: CliRunner, wh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = write(tmp_path / "a_locked.csv", HEADER + rows(2))
    good = write(tmp_path / "b_good.csv", HEADER + rows(2, 10))
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == locked.name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)  # root reads a chmod 000 file, so the denial is simulated
    r = run(cli, wh, "events", locked, good)
    assert r.code == 65 and error_lines(r) == [f"recctl: error: cannot read {locked}: Permission denied"]
    assert [f["status"] for f in r.json["files"]] == ["failed", "loaded"]
    assert manifest(wh)[0][:2] == ("a_locked.csv", "failed")


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def boom(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("the FIFO was opened")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_is_reported_not_read(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "a_pipe.csv"
    os.mkfifo(fifo)
    good = write(tmp_path / "b_good.csv", HEADER + rows(1))
    with _alarm(20):
        r = run(cli, wh, "events", fifo, good)
    assert r.code == 65 and error_lines(r) == [f"recctl: error: {fifo} is a FIFO, not a regular file"]
    assert [f["status"] for f in r.json["files"]] == ["failed", "loaded"]
    with _alarm(20):  # in a folder it is reported too, not skipped
        r = run(cli, wh, "events", tmp_path)
    assert "is a FIFO" in r.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('target = "events"\n[read]\ndelimiter = ";;"\n', "'read.delimiter': the delimiter is one character"),
        (
            'target = "events"\n[read]\nheader = "yes please"\n',
            "'read.header': Input should be a valid boolean",
        ),
        ('target = "events"\ncolumns = 3\n', "'columns': Input should be a valid dictionary"),
        ('target = "events"\n[read]\nencoding = "klingon"\n', "'read.encoding': unknown encoding"),
        ('target = "events"\n[constants]\nprice = nan\n', "[constants] price = nan is not a finite number"),
        ('target = "events"\n[columns]\nprice = "a\\u0000b"\n', "'columns.price' contains a NUL character"),
        ('target = "events"\n[timestamp]\ntimezone = "Mars/Olympus_Mons"\n', "is not a known time zone"),
    ],
)
def test_mapping_errors_name_the_key_and_exit_2(
    cli: CliRunner, wh: Path, tmp_path: Path, text: str, message: str
) -> None:
    f = write(tmp_path / "e.csv", HEADER + rows(1))
    r = run(cli, wh, "events", f, "--mapping", mapping(tmp_path, text))
    assert r.code == 2 and message in r.stderr and len(error_lines(r)) == 1, r.stderr


def test_format_xml_is_a_usage_error_before_anything(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", HEADER + rows(1))
    r = run(cli, wh, "events", f, "--format", "xml")
    assert r.code == 2 and "unknown format 'xml'" in r.stderr and not wh.exists()


def test_disk_full_shows_no_space_not_the_rollback(cli: CliRunner, tmp_path: Path, tmpfs: Path) -> None:
    disk = tmpfs
    wh = disk / "w.duckdb"
    assert run(cli, wh, "events", write(tmp_path / "first.csv", HEADER + rows(1))).code == 0
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:  # fill the disk, then leave room for the lock file only
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
        out.truncate(max(out.tell() - (16 << 10), 0))
    duckdb.sql(
        "COPY (SELECT '2024-05-01T10:00:00Z' AS ts, 'u' || i AS user_id, 's1' AS session_id, 'p' || i AS "
        f"item_id, 'view' AS event_type, 1.5 AS price FROM range(20000) t(i)) TO '{tmp_path / 'big.csv'}' (HEADER)"
    )
    r = run(cli, wh, "events", tmp_path / "big.csv")
    assert r.code in (2, 65)
    assert "No space left on device" in r.stderr and "cannot rollback" not in r.stderr
    assert "internal error" not in r.stderr and len(error_lines(r)) == 1
    filler.unlink()
    assert query(wh, "SELECT count(*) FROM events") == [(1,)]  # nothing of the big file


@pytest.mark.parametrize(
    "exc", [duckdb.InterruptException("INTERRUPT Error: Interrupted!"), KeyboardInterrupt()]
)
def test_an_interrupt_rolls_back_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    from recctl.ingest import write as writer

    real = writer.insert_stage_rejects
    calls = []

    def interrupted(*a: Any) -> int:
        calls.append(1)
        real(*a)
        raise exc

    monkeypatch.setattr(writer, "insert_stage_rejects", interrupted)
    a = write(tmp_path / "a.csv", HEADER + rows(3) + "bad,u1,s1,p1,view,1\n")
    b = write(tmp_path / "b.csv", HEADER + rows(3, 10))
    cfg = RecctlConfig.model_validate({"warehouse": {"path": str(tmp_path / "w.duckdb")}})
    with open_writer(cfg, "test") as wh, pytest.raises(type(exc)):
        ingest(wh, cfg, "events", [a, b], mapping=resolve_mapping(cfg, "events", None))
    assert calls == [1]  # b was never started
    db = tmp_path / "w.duckdb"
    assert query(db, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM ingest_rejects), "
                     "(SELECT count(*) FROM ingest_files)") == [(0, 0, 0)]  # fmt: skip
    monkeypatch.setattr(writer, "insert_stage_rejects", real)
    with open_writer(cfg, "test") as wh:  # the connection was left usable, outside any transaction
        report = ingest(wh, cfg, "events", [a, b], mapping=resolve_mapping(cfg, "events", None))
    assert [f.rows_loaded for f in report.files] == [3, 3]


# 8. silent misreads -----------------------------------------------------------------------------------


def test_yyyymmdd_integers_are_dates(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(
        tmp_path / "d.csv",
        "ts,user_id,item_id,event_type\n20240301,u1,p1,view\n20241399,u1,p2,view\n1714557780,u1,p3,view\n",
    )
    j = write(
        tmp_path / "d.ndjson", '{"ts": 20240302, "user_id": "u1", "item_id": "p4", "event_type": "view"}\n'
    )
    r = run(cli, wh, "events", f, j)
    assert r.code == 0
    assert query(wh, "SELECT item_id, ts FROM events ORDER BY 1") == [
        ("p1", datetime(2024, 3, 1)), ("p3", datetime(2024, 5, 1, 10, 3)), ("p4", datetime(2024, 3, 2)),
    ]  # fmt: skip
    assert query(wh, "SELECT reason FROM ingest_rejects") == [("unparseable ts: '20241399'",)]
    berlin = mapping(tmp_path, 'target = "events"\n[timestamp]\ntimezone = "Europe/Berlin"\n')
    g = write(tmp_path / "g.csv", "ts,user_id,item_id,event_type\n20240601,u2,p1,view\n")
    assert run(cli, wh, "events", g, "-m", berlin).code == 0
    assert query(wh, "SELECT ts FROM events WHERE user_id = 'u2'") == [(datetime(2024, 5, 31, 22),)]


def test_a_header_wider_than_64_kib_is_read_whole(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    extra = [f"extra_column_{i:05d}" for i in range(6000)]  # about 110 KB of header
    f = write(
        tmp_path / "wide.csv",
        ",".join(["ts", "user_id", "item_id", "event_type", *extra, "price"]) + "\n"
        + ",".join(["2024-05-01T10:00:00Z", "u1", "p1", "view", *("x" * len(extra)), "7.5"]) + "\n",
    )  # fmt: skip
    r = run(cli, wh, "events", f)
    assert r.code == 0, r.stderr
    assert query(wh, "SELECT price FROM events") == [(7.5,)]


def test_a_nul_byte_in_a_header_name_is_refused(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(
        tmp_path / "nul.csv", "ts,user_id,item_id,event_type,pr\0ice\n2024-05-01T10:00:00Z,u1,p1,view,1\n"
    )
    r = run(cli, wh, "events", f)
    assert r.code == 65 and "has a NUL byte in its name" in r.stderr and "column 5" in r.stderr


def test_json_keys_are_keys_not_paths(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    rec = {"ts": "2024-05-01T10:00:00Z", "user_id": "u1", "item_id": "p1", "event_type": "view",
           "$price": 4.5, "a.b": 1, "0": 2, "/x": 3}  # fmt: skip
    f = write(tmp_path / "k.ndjson", json.dumps(rec) + "\n")
    m = mapping(tmp_path, 'target = "events"\n[columns]\nprice = "$price"\nquantity = "a.b"\nvalue = "/x"\n')
    r = run(cli, wh, "events", f, "-m", m)
    assert r.code == 0, r.stderr
    assert query(wh, "SELECT price, quantity, value FROM events") == [(4.5, 1.0, 3.0)]
    dup = write(tmp_path / "dup.ndjson", '{"ts": "2024-05-01T10:00:00Z", "user_id": "u1", "item_id": "p2", '
                '"event_type": "view", "price": 1, "price": 2}\n')  # fmt: skip
    r = run(cli, wh, "events", dup)
    assert query(wh, "SELECT reason FROM ingest_rejects") == [("a key appears twice in the record: price",)]


def test_an_events_file_given_as_items_is_refused(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "events.csv", "ts,user_id,item_id,event_type\n2024-05-01T10:00:00Z,u1,p1,view\n")
    r = run(cli, wh, "items", f)
    assert r.code == 65 and "is it an events file?" in r.stderr
    assert query(wh, "SELECT count(*) FROM items") == [(0,)]
    ids = write(tmp_path / "ids.csv", "item_id\np1\np2\n")  # a bare list of ids is an items file
    assert run(cli, wh, "items", ids).code == 0


def test_a_misspelled_mapped_column_is_refused_unless_stored_before(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    typo = mapping(tmp_path, 'target = "events"\n[columns]\nprice = "prise"\n', "typo")
    f = write(tmp_path / "e.csv", HEADER + rows(2))
    r = run(cli, wh, "events", f, "-m", typo)
    assert r.code == 65 and "mapped column not in the file: [columns] price = 'prise'" in r.stderr
    assert query(wh, "SELECT count(*) FROM events") == [(0,)]
    # once prices are stored, a file without the column is a partial export: loaded, said on stderr
    assert run(cli, wh, "events", f).code == 0
    g = write(tmp_path / "g.csv", "ts,user_id,item_id,event_type\n2024-05-01T11:00:00Z,u9,p1,view\n")
    r = run(cli, wh, "events", g, "-m", typo)
    assert r.code == 0 and "warning: g.csv: [columns] price = 'prise' is not in this file" in r.stderr
    assert r.json["files"][0]["warnings"]


def test_a_column_empty_in_every_row_is_said_on_stderr(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", "ts,user_id,item_id,event_type,price\n2024-05-01T10:00:00Z,u1,p1,view,\n")
    r = run(cli, wh, "events", f)
    assert r.code == 0 and "warning: e.csv: price (from 'price') is empty in every loaded row" in r.stderr


# 9. status after --force ----------------------------------------------------------------------------


def test_status_counts_files_once_after_force(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", HEADER + rows(3))
    assert run(cli, wh, "events", f).code == 0
    assert run(cli, wh, "events", f, "--force").code == 0
    ok = cli("--json", "--warehouse", wh, "status").json["ingest"]["files"]["ok"]
    assert (ok["files"], ok["reads"], ok["read"], ok["loaded"], ok["duplicate"]) == (1, 2, 6, 3, 3)


def test_a_keyed_json_value_that_is_not_an_object_refuses_the_file(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    """keyed_json rows are an object's keys: a top-level array has none and was skipped without a trace."""
    mapping = tmp_path / "kj.toml"
    mapping.write_text(
        'target = "items"\n[read]\nformat = "keyed_json"\n[columns]\nitem_id = "key"\n'
        '[attributes]\nids = "CAST(value AS JSON)"\n'
    )
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"p1": [1, 2], "p2": [3]}')
    bad.write_text('{"p3": [4]}\n[5, 6]\n')
    r = cli("--json", "--warehouse", wh, "ingest", "items", good, bad, "--mapping", mapping)
    assert r.code == 65, r.stderr
    files = {Path(f["path"]).name: f for f in r.json["files"]}
    assert files["good.json"]["rows_loaded"] == 2
    assert files["bad.json"]["status"] == "failed" and "not objects" in files["bad.json"]["message"]
    assert query(wh, "SELECT item_id FROM items ORDER BY 1") == [("p1",), ("p2",)]
