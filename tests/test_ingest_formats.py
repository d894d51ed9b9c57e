"""Readers, mappings, timestamps, upserts and the manifest: known answers on small files."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tests.conftest import CliRunner, query, reconciled

HEADER = "ts,user_id,session_id,item_id,event_type,price\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def mapping(tmp_path: Path, name: str, text: str) -> Path:
    return write(tmp_path / "maps" / f"{name}.toml", text)


def ingest(cli: CliRunner, wh: Path, table: str, *args: str | Path) -> dict:
    r = cli("--json", "--warehouse", wh, "ingest", table, *args)
    assert r.code == 0, r.stderr
    assert reconciled(r.json)
    return r.json


def test_csv_gz_tsv_and_parquet_read_alike(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    rows = "2024-05-01T10:00:00Z,u1,s1,p1,view,9.5\n2024-05-01T10:05:00Z,u1,s1,p2,purchase,20\n"
    a = write(tmp_path / "in" / "a.csv.gz", HEADER + rows)
    b = write(
        tmp_path / "in" / "b.tsv", (HEADER + rows).replace(",", "\t").replace("p1", "p3").replace("p2", "p4")
    )
    pq = tmp_path / "in" / "c.parquet"
    duckdb.sql(
        "COPY (SELECT TIMESTAMP '2024-05-02 08:00:00' AS ts, 'u2' AS user_id, 's9' AS session_id, "
        f"42 AS item_id, 'view' AS event_type, 3.25 AS price) TO '{pq}' (FORMAT parquet)"
    )
    report = ingest(cli, wh, "events", a, b, pq)
    assert [f["rows_loaded"] for f in report["files"]] == [2, 2, 1]
    got = query(wh, "SELECT item_id, price, ts FROM events ORDER BY ts, item_id")
    assert got[0] == ("p1", 9.5, datetime(2024, 5, 1, 10, 0))
    assert ("p4", 20.0, datetime(2024, 5, 1, 10, 5)) in got
    assert got[-1] == ("42", 3.25, datetime(2024, 5, 2, 8, 0))


def test_mapping_renames_maps_types_derives_and_sets_constants(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    src = write(
        tmp_path / "shop.csv",
        "when;visitor;sku;action;sales;qty;basket\n"
        "2024-05-01 12:00:00+02:00;v1;A;pv;;;\n"
        "2024-05-01 12:01:00+02:00;v1;B;ADDTOCART;;;\n"
        "1714557780;v1;B;buy;30.00;3;o1\n"
        "1714557790000;v1;C;buy;5;0;o1\n",
    )
    m = mapping(
        tmp_path,
        "shop",
        """
target = "events"
[columns]
ts = "when"
user_id = "visitor"
item_id = "sku"
event_type = "action"
value = "sales"
quantity = "qty"
price = "try_cast(sales AS DOUBLE) / NULLIF(try_cast(qty AS DOUBLE), 0)"
order_id = "basket"
[constants]
page = "product"
[event_types]
pv = "view"
addtocart = "add_to_cart"
buy = "purchase"
""",
    )
    report = ingest(cli, wh, "events", src, "--mapping", m)
    assert report["files"][0]["rows_loaded"] == 4
    got = query(
        wh, "SELECT ts, item_id, event_type, price, quantity, order_id, page FROM events ORDER BY ts, item_id"
    )
    assert got == [
        (datetime(2024, 5, 1, 10, 0), "A", "view", None, None, None, "product"),  # +02:00 → UTC
        (datetime(2024, 5, 1, 10, 1), "B", "add_to_cart", None, None, None, "product"),
        (datetime(2024, 5, 1, 10, 3), "B", "purchase", 10.0, 3.0, "o1", "product"),  # epoch seconds
        (datetime(2024, 5, 1, 10, 3, 10), "C", "purchase", None, 0.0, "o1", "product"),  # epoch ms, qty 0
    ]


def test_timestamp_format_timezone_and_declared_unit(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t.csv", "t,u,i\n01/02/2024 09:30,u1,p1\n")
    m = mapping(
        tmp_path,
        "t",
        """
target = "events"
[columns]
ts = "t"
user_id = "u"
item_id = "i"
[constants]
event_type = "view"
[timestamp]
format = "%d/%m/%Y %H:%M"
timezone = "Europe/Berlin"
""",
    )
    ingest(cli, wh, "events", src, "--mapping", m)
    assert query(wh, "SELECT ts FROM events") == [(datetime(2024, 2, 1, 8, 30),)]  # CET = UTC+1

    src2 = write(tmp_path / "t2.csv", "t,u,i\n1714557780000,u1,p1\n")
    m2 = mapping(
        tmp_path,
        "t2",
        'target = "events"\n[columns]\nts = "t"\nuser_id = "u"\nitem_id = "i"\n'
        '[constants]\nevent_type = "view"\n[timestamp]\nunit = "ms"\n',
    )
    ingest(cli, wh, "events", src2, "--mapping", m2)
    assert (datetime(2024, 5, 1, 10, 3),) in query(wh, "SELECT ts FROM events")


def test_sequences_reader(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "seq.txt", "1 10 11 12\n2 11 10\n3\n")
    m = mapping(
        tmp_path,
        "seq",
        'target = "events"\n[read]\nformat = "sequences"\n[constants]\nevent_type = "purchase"\n',
    )
    report = ingest(cli, wh, "events", src, "--mapping", m)
    f = report["files"][0]
    assert (f["rows_read"], f["rows_loaded"], f["rows_rejected"]) == (6, 5, 1)
    got = query(wh, "SELECT user_id, item_id FROM events ORDER BY user_id, ts")
    assert got == [("1", "10"), ("1", "11"), ("1", "12"), ("2", "11"), ("2", "10")]
    assert query(wh, "SELECT line, reason FROM ingest_rejects") == [(3, "missing item_id")]


def test_items_upsert_latest_updated_at_wins_and_nulls_keep_values(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    m = mapping(
        tmp_path,
        "items",
        'target = "items"\n[columns]\nitem_id = "sku"\nattributes = "attrs"\n',
    )
    first = [
        {"sku": "p1", "title": "Red shoe", "brand": "Acme", "price": 50, "updated_at": "2024-05-01T00:00:00Z",
         "attrs": {"color": "red"}},
        {"sku": "p2", "title": "Blue hat", "brand": "Hatco", "price": 20, "updated_at": "2024-05-01T00:00:00Z"},
        {"sku": "p2", "title": "Blue hat v2", "price": 22, "updated_at": "2024-05-03T00:00:00Z"},
    ]  # fmt: skip
    a = write(tmp_path / "items1.ndjson", "\n".join(json.dumps(r) for r in first) + "\n")
    report = ingest(cli, wh, "items", a, "--mapping", m)
    assert report["files"][0]["rows_loaded"] == 2 and report["files"][0]["rows_duplicate"] == 1
    second = [
        {"sku": "p1", "price": 45, "in_stock": "no", "updated_at": "2024-05-04T00:00:00Z"},  # newer, partial
        {"sku": "p2", "title": "stale", "price": 1, "updated_at": "2024-04-01T00:00:00Z"},  # older: ignored
        {"sku": "p3", "title": "New", "price": "12.5", "in_stock": "yes"},
    ]
    b = write(tmp_path / "items2.json", json.dumps(second))
    report = ingest(cli, wh, "items", b, "--mapping", m)
    assert (report["files"][0]["rows_loaded"], report["files"][0]["rows_duplicate"]) == (2, 1)
    got = {
        r[0]: r[1:] for r in query(wh, "SELECT item_id, title, brand, price, in_stock, attributes FROM items")
    }
    assert got["p1"][:4] == ("Red shoe", "Acme", 45.0, False)
    assert json.loads(got["p1"][4]) == {"color": "red"}
    assert got["p2"][:3] == ("Blue hat v2", "Hatco", 22.0)
    assert got["p3"][:4] == ("New", None, 12.5, True)


def test_users_upsert(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    a = write(tmp_path / "u.csv", "user_id,city,signup_at\nu1,Berlin,2023-01-01\nu2,Paris,2023-02-01\n")
    ingest(cli, wh, "users", a)
    b = write(tmp_path / "u2.csv", "user_id,city\nu1,Munich\n")
    ingest(cli, wh, "users", b)
    assert query(wh, "SELECT user_id, city, signup_at FROM users ORDER BY 1") == [
        ("u1", "Munich", datetime(2023, 1, 1)),
        ("u2", "Paris", datetime(2023, 2, 1)),
    ]


def test_manifest_makes_reruns_noops_force_rereads_changed_files_reread(
    cli: CliRunner, wh: Path, tmp_path: Path
) -> None:
    src = write(tmp_path / "in" / "e.csv", HEADER + "2024-05-01T10:00:00Z,u1,s1,p1,view,1\n")
    assert ingest(cli, wh, "events", tmp_path / "in")["files"][0]["rows_loaded"] == 1
    again = ingest(cli, wh, "events", tmp_path / "in")["files"][0]
    assert again["status"] == "unchanged" and again["rows_read"] == 0
    forced = ingest(cli, wh, "events", src, "--force")["files"][0]
    assert (forced["status"], forced["rows_read"], forced["rows_duplicate"]) == ("loaded", 1, 1)
    src.write_text(src.read_text() + "2024-05-01T10:01:00Z,u1,s1,p2,view,2\n")  # appended export
    changed = ingest(cli, wh, "events", str(tmp_path / "in" / "*.csv"))["files"][0]
    assert (changed["rows_read"], changed["rows_loaded"], changed["rows_duplicate"]) == (2, 1, 1)
    assert query(wh, "SELECT count(*) FROM events") == [(2,)]
    assert query(wh, "SELECT count(*), sum(rows_loaded) FROM ingest_files WHERE status = 'ok'") == [(3, 2)]


def test_missing_input_exits_66_and_unknown_mapping_exits_2(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    r = cli("--warehouse", wh, "ingest", "events", tmp_path / "nope.csv")
    assert r.code == 66 and "input not found" in r.stderr
    r = cli("--warehouse", wh, "ingest", "events", str(tmp_path / "*.nothing"))
    assert r.code == 66
    f = write(tmp_path / "x.csv", HEADER)
    r = cli("--warehouse", wh, "ingest", "events", f, "--mapping", "no-such-mapping")
    assert r.code == 2 and "mapping not found" in r.stderr
    bad = mapping(tmp_path, "bad", 'target = "events"\n[columns]\nuser = "u"\n')
    r = cli("--warehouse", wh, "ingest", "events", f, "--mapping", bad)
    assert r.code == 2 and "'user' is not a column of events" in r.stderr
    typo = mapping(tmp_path, "typo", 'target = "events"\n[colums]\nuser_id = "u"\n')
    r = cli("--warehouse", wh, "ingest", "events", f, "--mapping", typo)
    assert r.code == 2 and "unknown key 'colums'" in r.stderr
    r = cli(
        "--warehouse", wh, "ingest", "events", f, "--mapping", mapping(tmp_path, "it", 'target = "items"\n')
    )
    assert r.code == 2 and "is for items, not events" in r.stderr
    r = cli("--warehouse", wh, "ingest", "orders", f)
    assert r.code == 2 and "unknown table" in r.stderr


def test_bad_mapping_expression_fails_the_file_with_65(cli: CliRunner, wh: Path, tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", HEADER + "2024-05-01T10:00:00Z,u1,s1,p1,view,1\n")
    m = mapping(tmp_path, "expr", 'target = "events"\n[columns]\nprice = "no_such_col * 2"\n')
    r = cli("--json", "--warehouse", wh, "ingest", "events", f, "--mapping", m)
    assert r.code == 65
    assert "a mapping expression fails" in r.json["files"][0]["message"]
    assert query(wh, "SELECT count(*) FROM events") == [(0,)]


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (Path(__file__).parents[1] / "configs/mappings").glob("*.toml"))
)
def test_shipped_mappings_are_valid(name: str) -> None:
    from recctl.ingest.mapping import load_mapping

    m = load_mapping(name, Path(__file__).parents[1] / "configs" / "mappings")
    assert m.target in ("events", "items", "users")
