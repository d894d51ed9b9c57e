#!/usr/bin/env python3
"""Serving latency on Complete Journey: cold CLI, in-process lookups, re-ranking, sessions, batch.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/latency.py            # `make bench-latency`: ingest, train, measure
    .venv/bin/python benchmarks/latency.py --keep     # keep the trained project in benchmarks/work/latency/
    .venv/bin/python benchmarks/latency.py --reuse    # measure again on the kept project (no training)

Set-up: a scratch project under ``benchmarks/work/latency/`` — Complete Journey transactions and products
ingested with ``recctl ingest`` (as ``benchmarks/quality.py`` does; read from ``../shared/datasets`` or
``$RECCTL_DATASETS``), ``recctl train`` with ``benchmarks/pipeline/completejourney.toml`` (seven generators
and the ranker), then ``recctl --json recommend --all`` (timed: ``batch_all``, users per second).

Measured (records of ``benchmarks/results/latency.json``, a JSON list):

- ``import_duckdb``: wall time of ``python -c "import duckdb"`` (a fresh process, ``--cold-runs`` times):
  the floor any Python CLI over DuckDB pays;
- ``cold_recommend_user``: wall time of a fresh ``recctl --json recommend --user U`` process answered from
  the online store, for ``--cold-runs`` random users (target p50 <= 300 ms);
- in this process, after one warm-up call each: ``lookup`` (``recctl.serving.store.stored``, the stored
  top 10 of a user; target p99 <= 5 ms), ``rerank_100`` (``recctl.serving.rerank.run_rerank`` of 100 items
  for a user with the catalog held in memory, as a service would: the user's events, profile, facts,
  scoring; p99 <= 30 ms), ``session_10``
  (``recctl.serving.service.recommend_session`` for an anonymous visitor's 10 events: sequence-free here,
  co-occurrence candidates, context, rules, reasons; p99 <= 50 ms);
- ``batch_all``: ``recommend --all`` over every household, users per second.

Each record: name, n, p50_ms, p99_ms (or per_s), target, met, commit. Exits 0 when every target is met,
1 when one is missed (the JSON is written first), 2 when the run is wrong.
"""

from __future__ import annotations

import argparse
import compileall
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import quality as Q  # benchmarks/quality.py: the datasets, ingest and child-process helpers
from _env import cpu_busy, git_commit, machine, recctl_cmd

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "latency"
DEFAULT_CONFIG = ROOT / "benchmarks" / "pipeline" / "completejourney.toml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latency.json"
DATASET = "completejourney"
TARGETS = {"cold_recommend_user": ("p50_ms", 300.0), "lookup": ("p99_ms", 5.0), "rerank_100": ("p99_ms", 30.0),
           "session_10": ("p99_ms", 50.0)}  # fmt: skip


def pct(samples: list[float]) -> dict[str, float]:
    """p50 / p99 in milliseconds of samples in seconds (nearest rank)."""
    xs = sorted(samples)

    def at(q: float) -> float:
        return round(1000.0 * xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))], 3)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99)}


def wall(argv: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, env=Q.recctl_env())
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise Q.BenchError(
            f"{' '.join(argv[:6])}… failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return took, proc.stdout


def setup(args: argparse.Namespace, cfg: Path, work: Path = WORK) -> None:
    """Ingest Complete Journey and train into ``work`` (skipped with --reuse when the project is there);
    benchmarks/serve.py builds its project the same way."""
    wh, runs = work / f"{DATASET}.duckdb", work / "runs"
    if args.reuse and wh.exists() and (runs / "PROMOTED").exists():
        Q.log(f"reusing the project in {work}")
        return
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(runs, ignore_errors=True)
    Q.ingest(Q.DATASETS[DATASET], wh, Q.datasets_dir(), work=work)
    (work / "configs").mkdir(exist_ok=True)
    cfg.write_text(
        f'runs_dir = "{runs}"\n\n[warehouse]\npath = "{wh}"\n\n[serving]\nsegments_file = "{work / "none.toml"}"\n\n'
        + args.config.read_text()
    )
    Q.log(f"  recctl train ({args.config.name}) …")
    took, _ = wall([*recctl_cmd(), "--quiet", "--config", str(cfg), "train"], work)
    Q.log(f"  trained in {took:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="[[candidates]] and [ranker] to train"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cold-runs", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300, help="in-process calls per measurement")
    ap.add_argument("--keep", action="store_true", help="keep the project in benchmarks/work/latency/")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept project (no ingest, no training)")
    args = ap.parse_args(argv)
    if not Q.datasets_dir().is_dir():
        Q.log(f"datasets folder {Q.datasets_dir()} not found (set RECCTL_DATASETS)")
        return 2
    cfg = WORK / "configs" / "recctl.toml"
    busy = cpu_busy()
    if busy is not None and busy > 0.25:
        Q.log(f"note: the CPUs were {busy:.0%} busy just before the start: timings are noisy")
    recs: list[dict[str, Any]] = []
    try:
        Q.log(f"{DATASET}:")
        setup(args, cfg)
        recctl = [*recctl_cmd(), "--config", str(cfg)]
        took, out = wall([*recctl, "--json", "recommend", "--all"], WORK)
        batch = json.loads(out)
        recs.append({"name": "batch_all", "n": batch["users"], "per_s": round(batch["users"] / took, 1),
                     "wall_s": round(took, 2), "inner_per_s": batch["users_per_s"]})  # fmt: skip
        Q.log(f"  recommend --all: {batch['users']:,} users in {took:.1f} s")
        recs += measure(args, cfg, recctl)
    except Q.BenchError as exc:
        Q.log(f"benchmark failed: {exc}")
        return 2
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(WORK, ignore_errors=True)
    common = {"commit": git_commit(), "dataset": DATASET, "machine": machine(),
              "cpu_busy_at_start": None if busy is None else round(busy, 2)}  # fmt: skip
    missed = []
    for r in recs:
        if r["name"] in TARGETS:
            key, limit = TARGETS[r["name"]]
            r["target"] = {key: limit}
            r["met"] = r[key] <= limit
            if not r["met"]:
                missed.append(f"{r['name']} {key} {r[key]} > {limit}")
        r.update(common)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(recs, indent=1, default=str) + "\n")
    for r in recs:
        figures = (
            f"p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms" if "p50_ms" in r else f"{r['per_s']} /s"
        )
        Q.log(f"  {r['name']:22} {figures}  (n {r['n']})")
    for m in missed:
        Q.log(f"target missed: {m}")
    return 1 if missed else 0


def measure(args: argparse.Namespace, cfg: Path, recctl: list[str]) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from recctl.config import load_config
    from recctl.serving import service
    from recctl.serving.profile import catalog_index
    from recctl.serving.rerank import run_rerank
    from recctl.serving.served import promoted
    from recctl.serving.store import stored
    from recctl.warehouse import open_reader

    conf = load_config(cfg, environ={})
    rng = random.Random(42)
    with open_reader(conf) as wh:
        users = [r[0] for r in wh.con.sql("SELECT DISTINCT user_id FROM recs ORDER BY 1").fetchall()]
        popular = [r[0] for r in wh.con.sql(
            "SELECT item_id FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2000").fetchall()]  # fmt: skip
    out: list[dict[str, Any]] = []
    # As installed by pip, which writes bytecode: without it every cold start compiles recctl's modules
    # again (this machine sets PYTHONDONTWRITEBYTECODE, so nothing would ever be cached).
    compileall.compile_dir(str(ROOT / "recctl"), quiet=1)
    times = []
    for _ in range(args.cold_runs):
        took, _ = wall([sys.executable, "-c", "import duckdb"], WORK)
        times.append(took)
    out.append({"name": "import_duckdb", "n": len(times), **pct(times)})
    times = []
    for u in rng.sample(users, min(args.cold_runs, len(users))):
        took, text = wall([*recctl, "--json", "recommend", "--user", u], WORK)
        if json.loads(text)["source"] != "store":
            raise Q.BenchError(f"recommend --user {u} was not answered from the store")
        times.append(took)
    out.append({"name": "cold_recommend_user", "n": len(times), **pct(times), "bytecode": "precompiled"})
    with open_reader(conf) as wh:
        run_id = promoted(conf.runs_dir).run_id

        def timed(fn: Any, calls: list[Any]) -> dict[str, Any]:
            fn(calls[0])  # warm-up: models, caches
            ts = []
            for c in calls:
                t0 = time.perf_counter()
                fn(c)
                ts.append(time.perf_counter() - t0)
            return {"n": len(ts), **pct(ts)}

        sample = [rng.choice(users) for _ in range(args.calls)]
        out.append(
            {"name": "lookup", **timed(lambda u: stored(wh.con, u, run_id, conf.serving.max_age, 10), sample)}
        )
        lists = [(rng.choice(users), rng.sample(popular, 100)) for _ in range(args.calls)]
        index = catalog_index(wh.con, str(wh.path))  # a long-lived caller holds the catalog in memory
        out.append(
            {
                "name": "rerank_100",
                **timed(lambda a: run_rerank(wh.con, conf, a[0], a[1], index=index), lists),
            }
        )
        sessions = [
            "\n".join(json.dumps({"item_id": i, "event_type": "view"}) for i in rng.sample(popular[:500], 10))
            for _ in range(max(30, args.calls // 3))
        ]
        out.append(
            {"name": "session_10", **timed(lambda s: service.recommend_session(wh, conf, s), sessions)}
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
