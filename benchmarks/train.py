#!/usr/bin/env python3
"""``recctl train`` on Complete Journey: wall time and peak memory of the whole command, as cron runs it.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/train.py                      # `make bench-train`
    .venv/bin/python benchmarks/train.py --config my.toml     # other [[candidates]] / [ranker]
    .venv/bin/python benchmarks/train.py --out /tmp/t.json --keep

A fresh scratch warehouse under ``benchmarks/work/train/`` is filled with ``recctl ingest`` subprocesses
(Complete Journey transactions and products, read from ``../shared/datasets`` or ``$RECCTL_DATASETS``;
nothing is copied), exactly as ``benchmarks/quality.py`` does. Then one subprocess runs
``recctl --json --config <cfg> train``: [prepare], every generator of the config fitted on all 1.47M
events, then the LightGBM ranker (its point-in-time training data, early stopping) and the promotion of the
run folder. The config is ``benchmarks/pipeline/completejourney.toml`` (the generators and ranker whose
quality ``quality.py --generators benchmarks/pipeline`` measures) with ``runs_dir`` and the warehouse
pointed into the scratch folder.

Recorded in ``benchmarks/results/train.json`` (one JSON object): ``wall_s`` of the train process (Python
start-up to exit), its ``cpu_s`` and ``peak_mb`` (``ru_maxrss`` of that child from ``os.wait4``: the
whole command, generators and ranker in one process), each model's ``fit_s`` from the command's own JSON,
the ranker's training summary, and where it ran (commit, machine, ``cpu_busy_at_start``).

Exits 0 when ``wall_s`` <= 600 s (issue 5: ten minutes on two cores), 1 when it is over (the JSON is
written first), 2 when the run is wrong (an ingest or the train failed, or a model is missing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import quality as Q  # benchmarks/quality.py: the datasets, ingest and child-process helpers
from _env import cpu_busy, git_commit, machine, recctl_cmd

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "train"
DEFAULT_CONFIG = ROOT / "benchmarks" / "pipeline" / "completejourney.toml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train.json"
TARGET_WALL_S = 600.0
DATASET = "completejourney"


def write_config(source: Path, wh: Path, runs_dir: Path, dest: Path) -> None:
    """``source``'s tables with the scratch warehouse and runs folder put first (top-level keys must
    precede tables in TOML). ``source`` must not set them itself."""
    text = source.read_text()
    dest.write_text(
        f'# written by benchmarks/train.py from {source.name}\nruns_dir = "{runs_dir}"\n\n'
        f'[warehouse]\npath = "{wh}"\n\n{text}'
    )


def summary(doc: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Each model's fit seconds and the ranker's training summary from ``recctl --json train``."""
    models = doc.get("models") or {}
    fits = {name: float(m.get("fit_s") or 0.0) for name, m in models.items()}
    ranker: dict[str, Any] = next((m for m in models.values() if m.get("kind") == "pipeline"), {})
    return fits, {k: ranker[k] for k in ("training", "top_features") if k in ranker}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="[[candidates]] and [ranker] to train"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    ap.add_argument(
        "--keep", action="store_true", help="keep the scratch warehouse and runs in benchmarks/work/train/"
    )
    args = ap.parse_args(argv)

    data_dir = Q.datasets_dir()
    if not data_dir.is_dir():
        Q.log(f"datasets folder {data_dir} not found (set RECCTL_DATASETS)")
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    wh, runs_dir, cfg = WORK / f"{DATASET}.duckdb", WORK / "runs", WORK / "train.toml"
    busy = cpu_busy()
    if busy is not None and busy > 0.25:
        Q.log(f"note: the CPUs were {busy:.0%} busy just before the start: timings are noisy")
    try:
        Q.log(f"{DATASET}:")
        loaded = Q.ingest(Q.DATASETS[DATASET], wh, data_dir, work=WORK)
        shutil.rmtree(runs_dir, ignore_errors=True)
        write_config(args.config, wh, runs_dir, cfg)
        Q.log(
            f"  recctl train with {args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}"
        )
        argv_ = [*recctl_cmd(), "--quiet", "--json", "--config", str(cfg), "train"]
        child = Q.run_child(argv_, "train", env=Q.recctl_env(), work=WORK)
        if child.code != 0:
            raise Q.BenchError(f"recctl train failed (exit {child.code}):\n{child.stderr.strip()[-3000:]}")
        doc = Q.last_json(child.stdout)
        fits, ranker = summary(doc)
        if not fits:
            raise Q.BenchError(f"recctl train reported no models: {doc}")
    except Q.BenchError as exc:
        Q.log(f"benchmark failed: {exc}")
        return 2
    finally:
        if not args.keep:
            Q.remove_db(wh)
            shutil.rmtree(runs_dir, ignore_errors=True)

    result = {
        "dataset": DATASET,
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "events": (doc.get("data") or {}).get("events"),
        "users": (doc.get("data") or {}).get("users"),
        "items": (doc.get("data") or {}).get("items"),
        "wall_s": round(child.wall_s, 2),
        "cpu_s": round(child.cpu_s, 2),
        "peak_mb": round(child.peak_mb, 1),
        "target_wall_s": TARGET_WALL_S,
        "met": child.wall_s <= TARGET_WALL_S,
        "fit_s": fits,
        "ranker": ranker,
        "ingest_s": round(loaded.ingest_s, 2),
        "peak_method": "ru_maxrss of the recctl train child process (os.wait4 on its pid)",
        "commit": git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": Q.versions(),
        "cpu_busy_at_start": None if busy is None else round(busy, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    Q.log(
        f"recctl train on {DATASET} ({result['events']:,} events): {child.wall_s:.1f} s wall "
        f"(target <= {TARGET_WALL_S:.0f} s), {child.cpu_s:.1f} s CPU, peak {child.peak_mb:,.0f} MB → {args.out}"
    )
    for name, s in fits.items():
        Q.log(f"  {name:12} fit {s:8.1f} s")
    if not result["met"]:
        Q.log(f"target missed: {child.wall_s:.1f} s > {TARGET_WALL_S:.0f} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
