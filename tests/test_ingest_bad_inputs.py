"""The bad-input corpus in tests/data/bad: clear reasons, record numbers, reconciled counts, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BAD, CliRunner, query, reconciled


def ingest(cli: CliRunner, wh: Path, *files: str, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    r = cli("--json", "--warehouse", wh, "ingest", "events", *[BAD / f for f in files], *extra)
    report = r.json
    assert reconciled(report), report
    return r.code, report


def rejects(wh: Path, name: str) -> dict[int, tuple[str, str]]:
    rows = query(wh, f"SELECT line, raw, reason FROM ingest_rejects WHERE source_file LIKE '%/{name}'")
    return {int(line): (raw, reason) for line, raw, reason in rows}


def counts(report: dict, i: int = 0) -> tuple[int, int, int, int]:
    f = report["files"][i]
    return f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"]


def test_broken_quoting_keeps_every_byte_in_rejects(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "broken_quoting.csv")
    assert code == 0
    # records: header, b1, b2 (its open quote runs into b3's line), b4, b5, b6
    assert counts(report) == (5, 2, 3, 0)
    rej = rejects(wh, "broken_quoting.csv")
    # the unterminated quote swallows the next line into one record: its raw text keeps both
    assert "unterminated quote" in rej[3][1]
    assert rej[3][0].startswith("b2,") and '"p3",view,12.00' in rej[3][0]
    assert "TOO MANY COLUMNS" in rej[4][1] and rej[4][0].endswith("13.00,extra")
    assert "MISSING COLUMNS" in rej[6][1] and rej[6][0] == "b6,2024-03-01T10:05:00Z,u1"
    # a correctly quoted value with a comma and escaped quotes is read right
    assert query(wh, "SELECT event_id, item_id FROM events ORDER BY 1") == [
        ("b1", "p1"),
        ("b5", 'p5, the "best"'),
    ]


def test_wrong_types_each_get_their_reason_and_line(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "wrong_types.csv")
    assert code == 0
    assert counts(report) == (9, 2, 7, 0)
    rej = rejects(wh, "wrong_types.csv")
    assert rej[3][1] == "price is not a number: 'ten'"
    assert rej[4][1] == "price is negative: -5.0"
    assert rej[5][1] == "unparseable ts: 'yesterday'"
    assert rej[6][1] == "quantity is not a number: 'two'"
    assert rej[7][1] == "unknown event type 'teleport'"
    assert rej[8][1] == "missing user_id and session_id"
    assert rej[9][1] == "missing item_id"
    assert '"event_id":"w2"' in rej[3][0]  # raw record as JSON
    # a search needs no item
    assert query(wh, "SELECT event_id, item_id FROM events ORDER BY 1") == [("w1", "p1"), ("w9", None)]


def test_missing_required_column_stops_the_file_with_65(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "missing_column.csv", "future.csv")
    assert code == 65
    failed = report["files"][0]
    assert failed["status"] == "failed"
    assert "item_id" in failed["message"] and "missing_column.csv" in failed["message"]
    # the other file still loads, and the failure is in the manifest for the next run to retry
    assert report["files"][1]["status"] == "loaded"
    assert query(wh, "SELECT status FROM ingest_files WHERE path LIKE '%missing_column.csv'") == [("failed",)]


def test_missing_column_message_on_stderr(cli: CliRunner, wh: Path) -> None:
    r = cli("--warehouse", wh, "ingest", "events", BAD / "missing_column.csv")
    assert r.code == 65
    assert "required column item_id missing" in r.stderr and "missing_column.csv" in r.stderr
    # stdout has the report as data (TSV), never the error line
    assert "recctl: error" not in r.stdout
    assert r.stdout.splitlines()[1].split("\t")[1] == "failed"


def test_non_utf8_line_is_rejected_others_load(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "non_utf8.csv")
    assert code == 0 and counts(report) == (3, 2, 1, 0)
    rej = rejects(wh, "non_utf8.csv")
    assert "INVALID ENCODING" in rej[3][1]


@pytest.mark.parametrize(
    ("name", "message"), [("empty.csv", "empty file"), ("header_only.csv", "no records")]
)
def test_empty_and_header_only(cli: CliRunner, wh: Path, name: str, message: str) -> None:
    code, report = ingest(cli, wh, name)
    assert code == 0 and counts(report) == (0, 0, 0, 0)
    assert message in report["files"][0]["message"]


def test_duplicates_within_a_file(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "dup_within.csv")
    assert code == 0 and counts(report) == (4, 2, 0, 2)
    assert query(wh, "SELECT count(*) FROM events") == [(2,)]


def test_duplicates_across_files_and_formats(cli: CliRunner, wh: Path) -> None:
    # the same events as CSV text and as JSON numbers / epoch seconds are the same events
    code, report = ingest(cli, wh, "dup_across_a.csv", "dup_across_b.ndjson")
    assert code == 0
    assert counts(report, 0) == (3, 3, 0, 0)
    assert counts(report, 1) == (3, 1, 0, 2)
    assert query(wh, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(4, 4)]


def test_json_lines_with_nested_junk(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "nested_junk.ndjson")
    assert code == 0 and counts(report) == (9, 2, 7, 0)
    rej = rejects(wh, "nested_junk.ndjson")
    assert rej[2][1] == "user_id is a nested JSON value"
    assert rej[3][1] == "item_id is a nested JSON value"
    assert rej[4] == ("not json at all", "invalid JSON")
    assert rej[5] == ("[1, 2, 3]", "record is not a JSON object")
    assert rej[6] == ("42", "record is not a JSON object")
    assert "price is a nested JSON value" in rej[7][1]
    assert rej[8][1] == "invalid JSON"
    # an unrelated nested field does not hurt a good record
    assert query(wh, "SELECT event_id FROM events ORDER BY 1") == [("j1",), ("j6",)]


def test_json_array_with_nested_junk(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "nested_junk_array.json")
    assert code == 0 and counts(report) == (4, 2, 2, 0)
    rej = rejects(wh, "nested_junk_array.json")
    assert rej[2] == ('"a string"', "record is not a JSON object")
    assert rej[3][1] == "session_id is a nested JSON value"


def test_timestamps_far_in_the_future_or_past(cli: CliRunner, wh: Path) -> None:
    code, report = ingest(cli, wh, "future.csv")
    assert code == 0 and counts(report) == (3, 1, 2, 0)
    rej = rejects(wh, "future.csv")
    assert "2099-01-01 00:00:00 is in the future" in rej[3][1]
    assert "before min_timestamp" in rej[4][1]


def test_whole_corpus_nothing_lost(cli: CliRunner, wh: Path) -> None:
    """Every record of every file is loaded, rejected or a counted duplicate; rejects keep raw text."""
    files = sorted(p.name for p in BAD.iterdir() if p.name != "missing_column.csv")
    code, report = ingest(cli, wh, *files)
    assert code == 0
    t = report["totals"]
    assert t["rows_read"] == t["rows_loaded"] + t["rows_rejected"] + t["rows_duplicate"]
    assert query(wh, "SELECT count(*) FROM events") == [(t["rows_loaded"],)]
    assert query(wh, "SELECT count(*) FROM ingest_rejects") == [(t["rows_rejected"],)]
    assert query(
        wh, "SELECT count(*) FROM ingest_rejects WHERE raw IS NULL OR reason IS NULL OR line IS NULL"
    ) == [(0,)]
