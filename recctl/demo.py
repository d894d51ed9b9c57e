"""``recctl demo``: the whole pipeline on the sample shop, in a folder of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recctl import progress
from recctl.config import RecctlConfig, load_config
from recctl.errors import InputMissingError
from recctl.evaluate.report import write_report
from recctl.evaluate.service import run_evaluate
from recctl.ingest import IngestReport, ingest, resolve_mapping
from recctl.rules.segments import apply_segments
from recctl.scaffold import scaffold
from recctl.serving.service import recommend_item, recommend_user
from recctl.serving.store import batch
from recctl.status import warehouse_status
from recctl.train import run_train
from recctl.warehouse import Warehouse, open_writer

SAMPLE_FILES = {"events": "events.csv.gz", "items": "items.ndjson", "users": "users.csv"}
QUICK_GENERATORS = ("trending", "next-item", "itemknn", "buy-again")
# the sample shop is a fashion shop with a care range (socks, tights, shoe care): consumables may come back
DEMO_CONFIG = "fashion.toml"


def run_demo(data_dir: Path, workdir: Path, *, quick: bool = False) -> dict[str, Any]:
    """Scaffold ``workdir``, ingest the sample shop with its shipped mappings, train the configured
    generators and the ranker into ``workdir/runs``, evaluate them beside the baselines and write
    ``workdir/report.html``. ``quick``: only the generators of ``QUICK_GENERATORS`` (and the ranker over
    them) and 200 bootstrap resamples, for tests and a first look.

    Safe to rerun: unchanged files are skipped by the ingest manifest; each rerun trains a new run.
    """
    missing = [n for n in SAMPLE_FILES.values() if not (data_dir / n).exists()]
    if missing:
        raise InputMissingError(
            f"sample data not found in {data_dir}: {', '.join(missing)}",
            hint=f"generate it with `recctl sample {data_dir}`",
        )
    scaffold(workdir)
    cfg = load_config(
        workdir / "configs" / DEMO_CONFIG,
        overrides={
            "warehouse": {"path": str(workdir / "recctl.duckdb")},
            "ingest": {"mappings_dir": str(workdir / "configs" / "mappings")},
            "runs_dir": str(workdir / "runs"),
            "serving": {"segments_file": str(workdir / "configs" / "segments.toml")},
        },
    )
    if quick:
        quick_candidates = [c for c in cfg.candidates if c.name in QUICK_GENERATORS] or cfg.candidates[:1]
        cfg = cfg.model_copy(
            update={
                "candidates": quick_candidates,
                "ranker": cfg.ranker.model_copy(update={"generators": []}),
                "evaluate": cfg.evaluate.model_copy(update={"n_boot": min(cfg.evaluate.n_boot, 200)}),
            }
        )
    reports: list[IngestReport] = []
    with open_writer(cfg, "demo") as wh:
        for table, name in SAMPLE_FILES.items():
            mapping = resolve_mapping(cfg, table, f"sample-shop-{table}")
            with progress.stage(f"ingest {table}"):
                reports.append(ingest(wh, cfg, table, [(data_dir / name).resolve()], mapping=mapping))
        status = warehouse_status(wh)
        with progress.stage("train"):
            trained = run_train(wh, cfg)
        with progress.stage("evaluate"):
            evaluation, _ = run_evaluate(wh, cfg, dataset="sample-shop")
        with progress.stage("segments apply"):
            segments = apply_segments(wh, cfg)
        with progress.stage("recommend --all"):
            stored = batch(wh, cfg)
        examples = _examples(wh, cfg, data_dir)
    with progress.stage("HTML report"):
        report = write_report(evaluation, workdir / "report.html")
    return {
        "workdir": str(workdir),
        "ingest": reports,
        "status": status,
        "train": trained,
        "evaluation": evaluation,
        "report": str(report),
        "segments": segments,
        "online_store": stored,
        "examples": examples,
    }


def _habit_customer(data_dir: Path) -> str | None:
    """The ground truth's planted consumable buyer who is due at the end of the data (the first by id)."""
    path = data_dir / "ground_truth.json"
    habits = json.loads(path.read_text()).get("consumable_habits", {}) if path.exists() else {}
    due = sorted(u for u, h in habits.items() if h.get("due_at_end"))
    return due[0] if due else None


def _examples(wh: Warehouse, cfg: RecctlConfig, data_dir: Path) -> dict[str, Any]:
    """What the tour ends with: lists with reasons for a new visitor and a loyal buyer (the ground
    truth's brand-loyal customer with most purchases), the buy-again list of a planted consumable buyer,
    and the items related to the most bought product."""
    loyal = list(json.loads((data_dir / "ground_truth.json").read_text())["brand_loyal"]) if (
        data_dir / "ground_truth.json").exists() else []  # fmt: skip
    rows = wh.con.sql(
        "SELECT user_id FROM events WHERE event_type = 'purchase' AND user_id IN (SELECT unnest(?)) "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        params=[loyal],
    ).fetchall()
    product = wh.con.sql(
        "SELECT item_id FROM events WHERE event_type = 'purchase' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchall()
    out: dict[str, Any] = {
        "new_visitor": recommend_user(wh, cfg, "first-time-visitor", k=5, live=True),
    }
    if rows:
        out["loyal_buyer"] = recommend_user(wh, cfg, rows[0][0], k=5, live=True)
    habit = _habit_customer(data_dir)
    if habit is not None:  # ranked at the end of the sample data: the clock is weeks past it
        end = wh.con.sql("SELECT max(ts) FROM events").fetchall()[0][0]
        out["buy_again"] = recommend_user(wh, cfg, habit, k=5, list_name="buy-again", now=end)
    if product:
        out["product"] = recommend_item(wh, cfg, product[0][0], strategy="similar", k=5)
    return out
