"""The real public datasets in ../shared/datasets through the real CLI, one mapping at a time.

Every mapping in ``configs/mappings`` for a public dataset loads its files with exactly the counts its
``SOURCE.md`` states (events, distinct users, distinct items and the dataset's extras), with no rejected
rows, and running the same command again is a no-op. The data folder is ``<repo>/../shared/datasets``
or ``$RECCTL_DATASETS``; when it is missing these tests fail (``make test`` only selects them when it
exists). The datasets are only read, never copied.

Known, explained differences from SOURCE.md:
- YOOCHOOSE train_full has one exact duplicate line (session 29242, item 214644339, t=1396771501.984,
  twice); events are keyed by content, so 83,846 lines load as 83,845 events + 1 duplicate.
- MovieLens u.item: movie 267 ('unknown') has no release date; 176 movies were released before 1970-01-02 and
  load with their date (min_timestamp bounds event times only).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from recctl.cli import run
from recctl.config import ENV_NOT_CONFIG
from tests.conftest import CliRunner, query, reconciled

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "configs" / "mappings"
DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets() -> Path:
    """The datasets folder; a missing folder is a failure, not a skip."""
    env = os.environ.get("RECCTL_DATASETS")
    folder = Path(env).resolve() if env else DEFAULT_DATASETS
    if not folder.is_dir():
        pytest.fail(
            f"real datasets folder not found: {folder} "
            f"({'from RECCTL_DATASETS' if env else 'default <repo>/../shared/datasets'}); set RECCTL_DATASETS "
            "to the folder, or deselect these tests with -m 'not realdata'",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose mappings_dir is this repo's, so mapping names resolve from any working directory
    (and a configs/recctl.toml in the current directory cannot change the rules)."""
    path = tmp_path_factory.mktemp("cfg") / "recctl.toml"
    path.write_text(f"[ingest]\nmappings_dir = {json.dumps(str(MAPPINGS))}\n", encoding="utf-8")
    return path


def args(config: Path, db: Path, table: str, files: list[Path], mapping: str) -> list[str]:
    return ["--json", "--config", str(config), "--warehouse", str(db), "ingest", table,
            *map(str, files), "--mapping", mapping]  # fmt: skip


def ingest(
    cli: CliRunner, config: Path, db: Path, table: str, files: list[Path], mapping: str
) -> dict[str, Any]:
    """``recctl --json ingest`` in-process (stdout via capsys); exit 0 and a reconciling report."""
    r = cli(*args(config, db, table, files, mapping))
    assert r.code == 0, r.stderr
    return check_report(r.json, files)


@contextlib.contextmanager
def _isolated_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECCTL_") and k not in ENV_NOT_CONFIG]:
            mp.delenv(key)
        yield


def ingest_once(config: Path, db: Path, table: str, files: list[Path], mapping: str) -> dict[str, Any]:
    """The same as ``ingest`` for module-scoped fixtures, where capsys is not available."""
    buf = io.StringIO()
    with _isolated_env(), contextlib.redirect_stdout(buf):
        code = run(args(config, db, table, files, mapping))
    assert code == 0, buf.getvalue()
    return check_report(json.loads(buf.getvalue()), files)


def check_report(report: dict[str, Any], files: list[Path]) -> dict[str, Any]:
    assert report["failed"] == 0, report
    assert [f["path"] for f in report["files"]] == [str(p.resolve()) for p in files]
    assert reconciled(report), report
    for key, total in report["totals"].items():
        assert total == sum(f[key] for f in report["files"]), key
    return report


def loaded(report: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """(read, loaded, rejected, duplicate) per file."""
    return [
        (f["rows_read"], f["rows_loaded"], f["rows_rejected"], f["rows_duplicate"])
        for f in report["files"]
        if f["status"] == "loaded"
    ]


def one(db: Path, sql: str) -> tuple[Any, ...]:
    return query(db, sql)[0]


def snapshot(db: Path) -> tuple[Any, ...]:
    return one(
        db,
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM items), (SELECT count(*) FROM users), "
        "(SELECT count(*) FROM ingest_rejects), (SELECT count(*) FROM ingest_files), "
        "(SELECT max(ingested_at) FROM events), (SELECT max(ingested_at) FROM items), "
        "(SELECT max(ingested_at) FROM users)",
    )


def assert_rerun_is_noop(
    cli: CliRunner, config: Path, db: Path, commands: list[tuple[str, list[Path], str]]
) -> None:
    """Every command again: each file 'unchanged', nothing read or added, tables untouched."""
    before = snapshot(db)
    for table, files, mapping in commands:
        report = ingest(cli, config, db, table, files, mapping)
        assert {f["status"] for f in report["files"]} == {"unchanged"}, report
        assert report["totals"] == {"rows_read": 0, "rows_loaded": 0, "rows_rejected": 0, "rows_duplicate": 0}
    after = snapshot(db)
    # the manifest gains nothing either: 'unchanged' files are not recorded again
    assert after == before


def no_rejects(db: Path) -> None:
    assert query(db, "SELECT reason, count(*) FROM ingest_rejects GROUP BY reason") == []


# --- Complete Journey (1.47M lines: loaded once per session) -----------------------------------------


@dataclass
class Loaded:
    db: Path
    commands: list[tuple[str, list[Path], str]]
    reports: list[dict[str, Any]]


@pytest.fixture(scope="module")
def completejourney(datasets: Path, config: Path, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    folder = datasets / "completejourney"
    db = tmp_path_factory.mktemp("cj") / "wh.duckdb"
    commands = [
        ("events", [folder / "transactions.parquet"], "completejourney-transactions"),
        ("items", [folder / "products.parquet"], "completejourney-products"),
        ("users", [folder / "demographics.parquet"], "completejourney-demographics"),
    ]
    reports = [ingest_once(config, db, *c) for c in commands]
    return Loaded(db, commands, reports)


def test_completejourney_transactions(completejourney: Loaded) -> None:
    db = completejourney.db
    assert loaded(completejourney.reports[0]) == [(1_469_307, 1_469_307, 0, 0)]
    n, users, items, baskets, sessions, types = one(
        db,
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), count(DISTINCT order_id), "
        "count(DISTINCT session_id), list(DISTINCT event_type) FROM events",
    )
    assert (n, users, items, baskets, sessions) == (1_469_307, 2_469, 68_509, 155_848, 155_848)
    assert types == ["purchase"]
    assert one(db, "SELECT min(ts), max(ts) FROM events") == (
        datetime(2017, 1, 1, 11, 53, 26),
        datetime(2018, 1, 1, 4, 1, 20),
    )
    # quantity 0 lines load, with a NULL unit price and discount
    assert one(
        db, "SELECT count(*), count(price), count(discount), sum(value) > 0 FROM events WHERE quantity = 0"
    ) == (8_869, 0, 0, True)
    # unit price x quantity = sales value; discounts are >= 0 and per unit
    assert one(
        db,
        "SELECT count(*) FILTER (WHERE abs(price * quantity - value) > 1e-6), min(discount) "
        "FROM events WHERE quantity > 0",
    ) == (0, 0.0)
    no_rejects(db)


def test_completejourney_products(completejourney: Loaded) -> None:
    db = completejourney.db
    assert loaded(completejourney.reports[1]) == [(92_331, 92_331, 0, 0)]
    assert one(db, "SELECT count(*), count(DISTINCT item_id), count(brand), count(category) FROM items") == (
        92_331, 92_331, 92_331, 92_331,
    )  # fmt: skip
    # SOURCE.md: 4,836 transaction lines have a product_id that is not in products
    assert one(db, "SELECT count(*) FROM events e ANTI JOIN items i USING (item_id)") == (4_836,)
    assert one(
        db, "SELECT brand, category, title, attributes->>'$.brand_class' FROM items WHERE item_id = '1000050'"
    ) == ("M1046", "GROCERY > COLD CEREAL > KIDS CEREAL", "COLD CEREAL, KIDS CEREAL, 14.5 OZ", "National")
    assert query(db, "SELECT DISTINCT attributes->>'$.brand_class' AS c FROM items ORDER BY c") == [
        ("National",),
        ("Private",),
    ]
    no_rejects(db)


def test_completejourney_demographics(completejourney: Loaded) -> None:
    db = completejourney.db
    assert loaded(completejourney.reports[2]) == [(801, 801, 0, 0)]
    assert one(db, "SELECT count(*), count(age_group), count(attributes->>'$.income') FROM users") == (
        801, 801, 801,
    )  # fmt: skip
    # every household with demographics is one of the 2,469 purchasing households
    assert one(db, "SELECT count(*) FROM users u SEMI JOIN events e USING (user_id)") == (801,)
    no_rejects(db)


def test_completejourney_rerun_is_noop(completejourney: Loaded, cli: CliRunner, config: Path) -> None:
    assert_rerun_is_noop(cli, config, completejourney.db, completejourney.commands)


# --- Amazon Beauty / Sports (S3-Rec) ----------------------------------------------------------------

AMAZON = {
    # name: (users, items, interactions, attribute ids, avg attrs/item to 1 decimal)
    "Beauty": (22_363, 12_101, 198_502, 637, 3.7),
    "Sports_and_Outdoors": (35_598, 18_357, 296_337, 2_277, 6.0),
}


@pytest.mark.parametrize("name", sorted(AMAZON))
def test_amazon(name: str, datasets: Path, config: Path, cli: CliRunner, tmp_path: Path) -> None:
    users, items, interactions, attr_ids, avg_attrs = AMAZON[name]
    folder, db = datasets / "amazon-s3rec", tmp_path / "wh.duckdb"
    commands = [
        ("events", [folder / f"{name}.txt"], "amazon-sequences"),
        ("items", [folder / f"{name}_item2attributes.json"], "amazon-item-attributes"),
    ]
    ev, it = (ingest(cli, config, db, *c) for c in commands)
    assert loaded(ev) == [(interactions, interactions, 0, 0)]
    assert loaded(it) == [(items, items, 0, 0)]
    assert one(db, "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM events") == (
        interactions, users, items,
    )  # fmt: skip
    # positions are 1, 2, … per user, one synthetic second apart
    assert one(
        db,
        "SELECT count(*) FROM (SELECT user_id, min(ts) AS t0, count(*) AS n, count(DISTINCT ts) AS k, "
        "max(ts) - min(ts) AS span FROM events GROUP BY user_id) "
        "WHERE t0 <> TIMESTAMP '2000-01-01 00:00:01' OR k <> n OR span <> to_seconds(n - 1)",
    ) == (0,)
    got = one(
        db,
        "SELECT count(*), count(DISTINCT a), round(count(a) / count(DISTINCT item_id), 1) FROM "
        "(SELECT item_id, unnest(CAST(attributes->'$.attribute_ids' AS BIGINT[])) AS a FROM items)",
    )
    assert got[1:] == (attr_ids, avg_attrs)
    assert one(db, "SELECT count(*) FROM items") == (items,)
    assert one(db, "SELECT count(*) FROM events ANTI JOIN items USING (item_id)") == (0,)
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, commands)


# --- MovieLens 100K ---------------------------------------------------------------------------------


def test_movielens_100k(datasets: Path, config: Path, cli: CliRunner, tmp_path: Path) -> None:
    folder, db = datasets / "ml-100k", tmp_path / "wh.duckdb"
    commands = [
        ("events", [folder / "u.data"], "movielens-100k-ratings"),
        ("items", [folder / "u.item"], "movielens-100k-items"),
        ("users", [folder / "u.user"], "movielens-100k-users"),
    ]
    ev, it, us = (ingest(cli, config, db, *c) for c in commands)
    assert loaded(ev) == [(100_000, 100_000, 0, 0)]
    assert loaded(it) == [(1_682, 1_682, 0, 0)]
    assert loaded(us) == [(943, 943, 0, 0)]
    assert one(
        db,
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), min(value), max(value), "
        "list(DISTINCT event_type), min(ts)::DATE, max(ts)::DATE FROM events",
    ) == (100_000, 943, 1_682, 1.0, 5.0, ["rating"],
          datetime(1997, 9, 20).date(), datetime(1998, 4, 22).date())  # fmt: skip
    assert one(db, "SELECT count(*), count(created_at), count(attributes->>'$.release_date') FROM items") == (
        1_682, 1_682 - 1, 1_682 - 1,
    )  # fmt: skip
    assert one(db, "SELECT count(*) FROM items WHERE created_at < TIMESTAMP '1970-01-02'") == (176,)
    assert one(db, "SELECT title, category, created_at FROM items WHERE item_id = '1'") == (
        "Toy Story (1995)", "Animation|Children's|Comedy", datetime(1995, 1, 1),
    )  # fmt: skip
    assert one(db, "SELECT count(*) FROM items WHERE title LIKE '%Véronique%'") == (1,)  # latin-1 decoded
    assert one(db, "SELECT count(*), count(DISTINCT gender), count(attributes->>'$.occupation') FROM users") == (
        943, 2, 943,
    )  # fmt: skip
    assert one(db, "SELECT age_group, gender, attributes->>'$.zip' FROM users WHERE user_id = '1'") == (
        "24", "M", "85711",
    )  # fmt: skip
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, commands)


SPLITS = {f"u{i}": (80_000, 20_000) for i in range(1, 6)} | {"ua": (90_570, 9_430), "ub": (90_570, 9_430)}


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_movielens_100k_split(
    split: str, datasets: Path, config: Path, cli: CliRunner, tmp_path: Path
) -> None:
    """The ratings mapping reads the official splits too; base + test together are exactly u.data."""
    folder, db = datasets / "ml-100k", tmp_path / "wh.duckdb"
    base, test = SPLITS[split]
    files = [folder / f"{split}.base.gz", folder / f"{split}.test.gz"]
    report = ingest(cli, config, db, "events", files, "movielens-100k-ratings")
    assert loaded(report) == [(base, base, 0, 0), (test, test, 0, 0)]
    assert one(db, "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM events") == (
        100_000, 943, 1_682,
    )  # fmt: skip
    if split == "u1":
        whole = ingest(cli, config, db, "events", [folder / "u.data"], "movielens-100k-ratings")
        assert loaded(whole) == [(100_000, 0, 0, 100_000)]
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, [("events", files, "movielens-100k-ratings")])


# --- REES46, YOOCHOOSE, DIGINETICA ------------------------------------------------------------------


def test_rees46(datasets: Path, config: Path, cli: CliRunner, tmp_path: Path) -> None:
    file, db = datasets / "rees46-sample-1k" / "2019-Oct-sample.csv", tmp_path / "wh.duckdb"
    commands = [("events", [file], "rees46-events"), ("items", [file], "rees46-items")]
    ev, it = (ingest(cli, config, db, *c) for c in commands)
    assert loaded(ev) == [(1_000, 1_000, 0, 0)]
    assert loaded(it) == [(1_000, 534, 0, 466)]  # one row per product; older rows are superseded
    assert one(
        db,
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), count(DISTINCT session_id), "
        "count(price), min(ts), max(ts) FROM events",
    ) == (1_000, 330, 534, 372, 1_000, datetime(2019, 10, 1), datetime(2019, 10, 1, 0, 17, 26))
    assert query(db, "SELECT event_type, count(*) FROM events GROUP BY ALL ORDER BY ALL") == [
        ("add_to_cart", 3), ("purchase", 10), ("view", 987),
    ]  # fmt: skip
    assert one(db, "SELECT count(*), count(price), count(attributes->>'$.category_id') FROM items") == (
        534, 534, 534,
    )  # fmt: skip
    assert one(db, "SELECT brand, category, price FROM items WHERE item_id = '3900821'") == (
        "aqua", "appliances > environment > water_heater", 33.2,
    )  # fmt: skip
    # the item's updated_at is the time of its latest event
    assert one(
        db,
        "SELECT count(*) FROM items i JOIN (SELECT item_id, max(ts) AS t FROM events GROUP BY ALL) e "
        "USING (item_id) WHERE i.updated_at <> e.t",
    ) == (0,)
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, commands)


def test_yoochoose(datasets: Path, config: Path, cli: CliRunner, tmp_path: Path) -> None:
    folder, db = datasets / "yoochoose-100k", tmp_path / "wh.duckdb"
    full, test = (folder / f"yoochoose-clicks-100k_{p}.txt.gz" for p in ("train_full", "test"))
    commands = [("events", [full, test], "yoochoose-clicks")]
    report = ingest(cli, config, db, *commands[0])
    # train_full repeats one line exactly (session 29242, item 214644339, t=1396771501.984): 1 duplicate
    assert loaded(report) == [(70_278, 70_277, 0, 1), (13_568, 13_568, 0, 0)]
    assert one(
        db,
        "SELECT count(*), count(user_id), count(DISTINCT session_id), count(DISTINCT item_id), "
        "list(DISTINCT event_type) FROM events",
    ) == (83_845, 0, 21_210, 2_933, ["click"])
    per_file = query(
        db,
        "SELECT count(*), count(DISTINCT session_id), count(DISTINCT item_id) FROM events "
        "GROUP BY source_file ORDER BY source_file",
    )
    assert per_file == [(13_568, 3_416, 1_771), (70_277, 17_794, 2_933)]  # test, train_full
    assert one(db, "SELECT min(ts)::DATE, max(ts)::DATE FROM events") == (
        datetime(2014, 4, 1).date(), datetime(2014, 4, 8).date(),
    )  # fmt: skip
    # milliseconds survive
    assert one(
        db, "SELECT count(*) FROM events WHERE session_id = '29242' AND ts = make_timestamp(1396771501984000)"
    ) == (1,)
    # train_tr + train_valid re-split train_full: nothing new
    resplit = [folder / f"yoochoose-clicks-100k_{p}.txt.gz" for p in ("train_tr", "train_valid")]
    again = ingest(cli, config, db, "events", resplit, "yoochoose-clicks")
    assert loaded(again) == [(53_254, 0, 0, 53_254), (16_539, 0, 0, 16_539)]
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, commands)


def test_diginetica(datasets: Path, config: Path, cli: CliRunner, tmp_path: Path) -> None:
    file, db = datasets / "diginetica-sample" / "sample_train-item-views.csv", tmp_path / "wh.duckdb"
    commands = [("events", [file], "diginetica-views")]
    report = ingest(cli, config, db, *commands[0])
    assert loaded(report) == [(12_391, 12_391, 0, 0)]
    assert one(
        db,
        "SELECT count(*), count(DISTINCT session_id), count(DISTINCT item_id), count(DISTINCT user_id), "
        "count(*) FILTER (WHERE user_id = 'NA'), list(DISTINCT event_type), min(ts)::DATE, max(ts)::DATE "
        "FROM events",
    ) == (12_391, 2_986, 7_139, 1_270, 0, ["view"],
          datetime(2016, 1, 3).date(), datetime(2016, 6, 1).date())  # fmt: skip
    # first line: 1;NA;81766;526309;2016-05-09 → 2016-05-09 00:08:46.309
    assert one(db, "SELECT ts, user_id FROM events WHERE session_id = '1' AND item_id = '81766'") == (
        datetime(2016, 5, 9, 0, 8, 46, 309000), None,
    )  # fmt: skip
    no_rejects(db)
    assert_rerun_is_noop(cli, config, db, commands)
