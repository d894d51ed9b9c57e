#!/usr/bin/env python3
"""Recommendation quality on four public datasets: ``recctl evaluate``'s models and baselines, with timings.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/quality.py                             # everything (`make bench-quality`)
    .venv/bin/python benchmarks/quality.py --datasets ml-100k          # refresh a subset …
    .venv/bin/python benchmarks/quality.py --models popular,random     # … or some models only
    .venv/bin/python benchmarks/quality.py --config my.toml            # its [[candidates]] on every dataset
    .venv/bin/python benchmarks/quality.py --baselines-only            # no generators (about 1½ min)
    .venv/bin/python benchmarks/quality.py --n-boot 100 --out /tmp/q.json --cli-out /tmp/c.json   # quick look

Datasets are read from ``../shared/datasets`` (relative to the repository root) or ``$RECCTL_DATASETS``;
nothing is copied. Each dataset gets a fresh scratch warehouse under ``benchmarks/work/quality/`` (the
Amazon ids overlap, so Beauty and Sports never share one), filled with ``recctl ingest`` subprocesses
(timed apart from the evaluation: ``ingest_s``). Then a child process of this script (``--child``) runs
``recctl.evaluate.service.run_evaluate`` for each protocol / variant / fold of the dataset:

- ``amazon-beauty``, ``amazon-sports``: leave-one-out (last item = target), seen items filtered;
- ``ml-100k``: the ``files`` protocol on the official folds u1…u5 (every test rating is a target, whatever
  its value; u.item is loaded for the catalog and genres); the record holds the mean over the folds, the
  per-fold mean of the CI bounds and every fold's metrics under ``folds``;
- ``completejourney``: temporal, the last 4 weeks are the test period, purchases are targets, variants
  ``all`` and ``new-items``.

K = 10 and 20, full ranking over the catalog, bootstrap CIs over users (1000 resamples). Every model
``run_evaluate`` returns is recorded: the baselines (popular, popular-recent, random) and the candidate
generators of ``benchmarks/generators/<dataset>.toml`` (each dataset's ``[[candidates]]``: every generator
kind of recctl with the parameters that dataset calls for; ``--config FILE`` puts one file's candidates on
every dataset instead). On Complete Journey and Amazon Beauty, stage-1 candidate recall@100 and @300 of each
model and of the union of all but ``random`` are recorded as well (``candidate_recall``, ``stage1_union``).

``wall_s`` is the model's own evaluation time (the result's ``wall_s``: fit + recommend + metrics);
``eval_wall_s`` is the whole ``run_evaluate`` call (loading the events, the split, all models, storing),
shared by the records of that call. ``peak_mb`` is the max RSS of the dataset's evaluation child
(``ru_maxrss`` from ``os.wait4`` on its pid): one figure per dataset, the same on each of its records.
This script never imports DuckDB, polars or recctl, so it stays small (on Linux a child's ``ru_maxrss``
starts from its parent's high-water mark).

Results are MERGED into ``benchmarks/results/quality.json`` (a list of records): a record replaces the one
with the same (dataset, protocol, variant, model); the others stay. When Complete Journey is run, the CLI
is timed as well: ``recctl --warehouse W --json evaluate --models popular,popular-recent,random`` (the
project's config, temporal 4w), written to ``benchmarks/results/quality_cli.json``.

Exits 0 when the targets are met, 1 when one is missed (the JSON is written first): CLI evaluation on
Complete Journey >= 120 s; the merged file lacks a baseline on one of the four datasets; and, for the
generators run: the best single generator on Amazon Beauty below recall@10 0.090 / ndcg@10 0.055 or on
Sports below 0.052 / 0.031, SASRec's fit on Beauty over 20 minutes, another generator's fit on Complete
Journey over 2 minutes. 2 when a run is wrong (an ingest or an evaluation failed, or a result is empty);
nothing is written then.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import resource
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _env import (
    Child,
    cpu_busy,
    git_commit,
    machine,
    recctl_cmd,
)  # benchmarks/_env.py: these scripts run from this folder
from _env import run_child as _run_child

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "quality"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "quality.json"
DEFAULT_CLI_OUT = ROOT / "benchmarks" / "results" / "quality_cli.json"
MAPPINGS = ROOT / "configs" / "mappings"
GENERATORS = ROOT / "benchmarks" / "generators"

KS = [10, 20]
N_BOOT = 1000
BASELINES = ["popular", "popular-recent", "random", "personal-top"]
# the baselines every dataset's records must have (personal-top came with issue 12; older records lack it)
REQUIRED_BASELINES = ["popular", "popular-recent", "random"]
RECENT_DAYS = 7.0
TARGET_CLI_S = 120.0
CANDIDATE_NS = [100, 300]
# issue 4: the best single generator, leave-one-out, full ranking, seen filtered (recall@10, ndcg@10)
TARGET_BEST = {"amazon-beauty": (0.090, 0.055), "amazon-sports": (0.052, 0.031)}
TARGET_PIPELINE = {"amazon-beauty": (0.100, 0.062), "amazon-sports": (0.060, 0.035)}  # issue 5
PIPELINE_LIFT = 0.05  # the pipeline's NDCG@10 over the best single generator of its dataset and variant
TARGET_FIT_S = {("amazon-beauty", "sasrec"): 1200.0, ("completejourney", "*"): 120.0}
VARIANT_ORDER = {"all": 0, "new-items": 1, "repeat": 2}
# issue 12: on the repeat-allowed runs the pipeline must beat the better of these by PIPELINE_LIFT
REPEAT_PEERS = ("personal-top", "buy-again")
ACCURACY = ("recall", "precision", "ndcg", "mrr", "map", "hit")


@dataclass(frozen=True)
class Load:
    table: str  # events | items
    file: str  # relative to the datasets folder
    mapping: str


@dataclass(frozen=True)
class EvalRun:
    """One run_evaluate call."""

    protocol: str
    variant: str = "all"
    cutoff: str | None = None
    fold: str | None = None  # files protocol: u1 … u5
    train: tuple[str, ...] = ()  # files protocol, relative to the datasets folder
    test: tuple[str, ...] = ()
    mapping: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    loads: tuple[Load, ...]
    runs: tuple[EvalRun, ...]
    target_events: tuple[str, ...]
    targets: str  # what a target is, in words
    notes: tuple[str, ...] = ()
    folds: bool = False  # records average the runs of one (protocol, variant) over folds
    candidate_ns: tuple[int, ...] = ()  # stage-1 candidate recall@N


def _amazon(name: str, stem: str) -> Dataset:
    return Dataset(
        name=name,
        loads=(
            Load("events", f"amazon-s3rec/{stem}.txt", "amazon-sequences"),
            Load("items", f"amazon-s3rec/{stem}_item2attributes.json", "amazon-item-attributes"),
        ),
        runs=(EvalRun("leave-one-out"),),
        target_events=("purchase",),
        targets="each user's last item (S3-Rec sequence order); training = everything before it",
        notes=(
            "the S3-Rec files have no times (synthetic: 2000-01-01 + position seconds), so popular-recent's "
            "7-day window spans all training and it equals popular",
            "ild is 0: the items carry anonymous attribute ids only, no category",
        ),
        candidate_ns=tuple(CANDIDATE_NS) if name == "amazon-beauty" else (),
    )


DATASETS: dict[str, Dataset] = {
    "amazon-beauty": _amazon("amazon-beauty", "Beauty"),
    "amazon-sports": _amazon("amazon-sports", "Sports_and_Outdoors"),
    "ml-100k": Dataset(
        name="ml-100k",
        loads=(Load("items", "ml-100k/u.item", "movielens-100k-items"),),
        runs=tuple(
            EvalRun(
                "files",
                fold=f"u{i}",
                train=(f"ml-100k/u{i}.base.gz",),
                test=(f"ml-100k/u{i}.test.gz",),
                mapping="movielens-100k-ratings",
            )
            for i in range(1, 6)
        ),
        target_events=("rating",),
        targets="every rating in the fold's u*.test (any value 1-5, not only high ones); training = u*.base",
        notes=(
            "metrics and ci95 are means over the folds u1..u5 (ci95 = per-fold mean of the lower and upper "
            "bounds); wall_s and eval_wall_s are sums over the folds; per-fold figures are under folds",
            "ild treats each movie's genre combination (e.g. 'Action|Comedy') as one category",
        ),
        folds=True,
    ),
    "completejourney": Dataset(
        name="completejourney",
        loads=(
            Load("events", "completejourney/transactions.parquet", "completejourney-transactions"),
            Load("items", "completejourney/products.parquet", "completejourney-products"),
        ),
        runs=(
            EvalRun("temporal", "all", cutoff="4w"),
            EvalRun("temporal", "new-items", cutoff="4w"),
            EvalRun("temporal", "repeat", cutoff="4w"),
            EvalRun("next-basket", "repeat"),
        ),
        target_events=("purchase",),
        targets="temporal: the (household, product) pairs purchased in the last 4 weeks; new-items: only "
        "products the household had not bought before the cutoff; next-basket: each household's last basket "
        "(basket_id), training = everything of the household before it",
        notes=(
            "variant all with seen items filtered: targets the household already bought before the cutoff "
            "(repeat purchases, see data.targets_seen_in_train) can never be hit, so all differs from "
            "new-items only by a larger denominator",
            "variant repeat: nothing filtered, repurchases count as hits; metrics also split into repeat and "
            "explore targets (repeat_target_share, recall_repeat@K, recall_explore@K, repeat_hit_share@K); "
            "the pipeline runs with [rules] exclude_bought = false (benchmarks/pipeline/completejourney.toml)",
        ),
        candidate_ns=tuple(CANDIDATE_NS),
    ),
}


class BenchError(Exception):
    """The benchmark ran wrong (not merely slow): a failed child, an empty result."""


@dataclass
class DatasetRun:
    name: str
    ingest_s: float = 0.0
    ingest: list[dict[str, Any]] = field(default_factory=list)
    peak_mb: float = 0.0
    child_wall_s: float = 0.0
    child_cpu_s: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def run_child(
    argv: list[str], tag: str, *, env: dict[str, str] | None = None, work: Path | None = None
) -> Child:
    """``_env.run_child`` with its output files named ``tag`` in ``work`` (default: this benchmark's scratch
    folder)."""
    return _run_child(argv, (work or WORK) / f"{tag}.out", env=env)


def last_json(text: str) -> dict[str, Any]:
    """The JSON document a child printed last (DuckDB may draw a progress bar on stdout before it)."""
    parts = [p for p in re.split(r"[\r\n]", text) if p.strip()]
    if not parts:
        raise BenchError("the child printed nothing on stdout")
    try:
        doc: dict[str, Any] = json.loads(parts[-1])
    except json.JSONDecodeError as exc:
        raise BenchError(f"no JSON document at the end of the child's stdout: {exc}\n{text[-2000:]}") from exc
    return doc


def remove_db(path: Path) -> None:
    for p in (path, Path(f"{path}.wal"), Path(f"{path}.lock"), Path(f"{path}.tmp")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def recctl_env() -> dict[str, str]:
    """The environment without RECCTL_* config overrides (the benchmark pins its own settings)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}


def versions() -> dict[str, str]:
    out = {}
    # the libraries whose builds decide the models' floats (the ranked rows differ between machines)
    for pkg in ("recctl", "duckdb", "polars", "numpy", "scipy", "lightgbm", "scikit-learn", "torch"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def datasets_dir() -> Path:
    env = os.environ.get("RECCTL_DATASETS")
    return Path(env).resolve() if env else (ROOT.parent / "shared" / "datasets").resolve()


# --------------------------------------------------------------------------- the child: run_evaluate


def child_main(spec_path: Path) -> int:
    """Evaluate one dataset (every run of its spec) in this process; write the results as JSON."""
    from recctl.config import RecctlConfig
    from recctl.evaluate.service import run_evaluate
    from recctl.warehouse import open_writer

    spec = json.loads(spec_path.read_text())
    cfg = RecctlConfig.model_validate(spec["config"])
    kinds = {c.name: c.kind for c in cfg.candidates} | {"popular": "popular", "popular-recent": "popular",
                                                         "personal-top": "personal"}  # fmt: skip
    kinds["random"] = "random"
    if cfg.ranker.enabled:
        kinds[cfg.ranker.name] = "pipeline"
    out: list[dict[str, Any]] = []
    for run in spec["runs"]:
        t0 = time.perf_counter()
        with open_writer(cfg, "bench-quality") as wh:
            result, _ = run_evaluate(
                wh,
                cfg,
                protocol=run["protocol"],
                variant=run["variant"],
                ks=spec["ks"],
                cutoff=run["cutoff"],
                models=spec["models"],
                train_files=[Path(p) for p in run["train"]] or None,
                test_files=[Path(p) for p in run["test"]] or None,
                mapping=run["mapping"],
                dataset=spec["dataset"],
            )
        eval_wall = time.perf_counter() - t0
        out.append(
            {
                "run": run,
                "eval_wall_s": round(eval_wall, 3),
                "protocol": result["protocol"],
                "variant": result["variant"],
                "settings": result["settings"],
                "data": result["data"],
                "models": {
                    name: {
                        k: r[k]
                        for k in (
                            "metrics",
                            "ci95",
                            "wall_s",
                            "fit_s",
                            "recommend_s",
                            "candidate_recall",
                            "lift",
                            "training",
                            "sampling",
                        )
                        if k in r
                    }
                    | {"kind": kinds.get(name)}
                    for name, r in result["models"].items()
                },
                "stage1_union": (
                    {"of": result["candidate_union_of"], **result["candidate_union_recall"]}
                    if "candidate_union_recall" in result
                    else None
                ),
            }
        )
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- the parent


def ingest(ds: Dataset, wh: Path, data_dir: Path, *, work: Path | None = None) -> DatasetRun:
    """A fresh warehouse ``wh`` filled with the dataset's files by ``recctl ingest`` subprocesses."""
    run = DatasetRun(ds.name)
    remove_db(wh)
    for load in ds.loads:
        path = data_dir / load.file
        argv = [
            *recctl_cmd(),
            "--quiet",
            "--json",
            "--warehouse",
            str(wh),
            "ingest",
            load.table,
            str(path),
            "--mapping",
            str(MAPPINGS / f"{load.mapping}.toml"),
        ]
        child = run_child(argv, f"{ds.name}-ingest", env=recctl_env(), work=work)
        if child.code != 0:
            raise BenchError(
                f"{ds.name}: ingest of {load.file} failed (exit {child.code}):\n{child.stderr.strip()}"
            )
        files = last_json(child.stdout).get("files") or []
        if len(files) != 1 or files[0]["status"] != "loaded" or int(files[0]["rows_loaded"]) == 0:
            raise BenchError(f"{ds.name}: ingest of {load.file} did not load: {files}")
        f = files[0]
        run.ingest_s += child.wall_s
        run.ingest.append(
            {
                "table": load.table,
                "file": load.file,
                "mapping": load.mapping,
                "rows_read": f["rows_read"],
                "rows_loaded": f["rows_loaded"],
                "rows_rejected": f["rows_rejected"],
                "rows_duplicate": f["rows_duplicate"],
                "wall_s": round(child.wall_s, 3),
                "peak_mb": round(child.peak_mb, 1),
            }
        )
        log(f"  ingest {load.table} {load.file}: {int(f['rows_loaded']):,} rows in {child.wall_s:.2f} s")
    return run


def evaluate(
    ds: Dataset, run: DatasetRun, wh: Path, data_dir: Path, args: argparse.Namespace, user_cfg: dict[str, Any]
) -> None:
    config = {
        "seed": user_cfg.get("seed", 42),
        "warehouse": {"path": str(wh)},
        "ingest": {"mappings_dir": str(MAPPINGS)},
        "evaluate": {
            "target_events": list(ds.target_events),
            "ks": KS,
            "filter_seen": True,  # the repeat runs turn it off (their variant)
            "n_boot": args.n_boot,
            "baselines": BASELINES,
            "recent_days": RECENT_DAYS,
            "candidate_ns": list(ds.candidate_ns),
        },
        "candidates": user_cfg.get("candidates", []),
        # the two-stage pipeline only where the file configures it ([ranker]), with its [rules]
        "ranker": user_cfg.get("ranker", {"enabled": False}),
        "rules": user_cfg.get("rules", {}),
    }
    runs = [
        {
            "protocol": r.protocol,
            "variant": r.variant,
            "cutoff": r.cutoff,
            "fold": r.fold,
            "train": [str(data_dir / p) for p in r.train],
            "test": [str(data_dir / p) for p in r.test],
            "mapping": r.mapping,
        }
        for r in ds.runs
        if not args.runs or f"{r.protocol}:{r.variant}" in args.runs or r.variant in args.runs
    ]
    if not runs:
        raise BenchError(f"{ds.name}: --runs {','.join(args.runs)} selects none of its runs")
    spec_path, out_path = WORK / f"{ds.name}-spec.json", WORK / f"{ds.name}-result.json"
    out_path.unlink(missing_ok=True)
    spec = {
        "dataset": ds.name,
        "config": config,
        "runs": runs,
        "ks": KS,
        "models": args.models,
        "out": str(out_path),
    }
    spec_path.write_text(json.dumps(spec, indent=1))
    child = run_child(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
        f"{ds.name}-eval",
        env=recctl_env(),
    )
    if child.code != 0 or not out_path.exists():
        raise BenchError(f"{ds.name}: evaluation failed (exit {child.code}):\n{child.stderr.strip()[-4000:]}")
    run.results = json.loads(out_path.read_text())
    run.peak_mb, run.child_wall_s, run.child_cpu_s = child.peak_mb, child.wall_s, child.cpu_s
    spec_path.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)
    for res in run.results:
        if not res["models"]:
            raise BenchError(f"{ds.name}: no model was evaluated")
        if res["data"].get("test_users", 0) == 0:
            raise BenchError(f"{ds.name} {res['variant']}: no test users")
        for name, m in res["models"].items():
            bad = [k for k, v in m["metrics"].items() if not isinstance(v, int | float) or math.isnan(v)]
            if bad:
                raise BenchError(f"{ds.name} {res['variant']} {name}: NaN metrics {bad}")
        fold = f" {res['run']['fold']}" if res["run"]["fold"] else ""
        log(
            f"  {res['protocol']} {res['variant']}{fold}: {', '.join(res['models'])} in {res['eval_wall_s']:.1f} s"
        )
    log(
        f"  evaluation child: {child.wall_s:.1f} s wall, {child.cpu_s:.1f} s CPU, peak {child.peak_mb:,.0f} MB"
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sig(x: Any) -> Any:
    """Floats to 6 significant digits, recursively (the JSON stays readable; nothing meaningful is lost)."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _sig(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_sig(v) for v in x]
    return x


def records(ds: Dataset, run: DatasetRun, common: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (protocol, variant, model); folds are averaged."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for res in run.results:
        groups.setdefault((res["protocol"], res["variant"]), []).append(res)
    seen_targets: int | None = None
    if ("temporal", "all") in groups and ("temporal", "new-items") in groups:
        seen_targets = (
            groups["temporal", "all"][0]["data"]["test_targets"]
            - groups["temporal", "new-items"][0]["data"]["test_targets"]
        )
    out = []
    for (protocol, variant), results in groups.items():
        settings = results[0]["settings"]
        data = dict(results[0]["data"])
        if protocol == "temporal" and variant == "all" and seen_targets is not None:
            data["targets_seen_in_train"] = seen_targets
        if ds.folds:  # mean counts per fold
            data = {"folds": len(results)} | {
                k: round(_mean([r["data"][k] for r in results]), 1)
                for k, v in data.items()
                if isinstance(v, int | float)
            }
        models = list(dict.fromkeys(name for r in results for name in r["models"]))
        for model in models:
            per = [r for r in results if model in r["models"]]
            m0 = per[0]["models"][model]
            rec: dict[str, Any] = {
                "dataset": ds.name,
                "protocol": protocol,
                "variant": variant,
                "model": model,
            }
            rec["kind"] = m0.get("kind")
            if not ds.folds:
                rec |= {
                    "metrics": m0["metrics"],
                    "ci95": m0["ci95"],
                    "wall_s": m0["wall_s"],
                    "fit_s": m0.get("fit_s"),
                    "recommend_s": m0.get("recommend_s"),
                    "eval_wall_s": per[0]["eval_wall_s"],
                }
                if m0.get("candidate_recall"):
                    rec["candidate_recall"] = m0["candidate_recall"]
                if m0.get("lift"):  # the pipeline's paired-bootstrap lift over each other model
                    rec["lift"] = m0["lift"]
                if m0.get("training"):  # what the pipeline's ranker learned from
                    rec["training"] = m0["training"]
                if m0.get("sampling"):  # what a sampling generator trained on (SASRec's users per epoch)
                    rec["sampling"] = m0["sampling"]
                if per[0].get("stage1_union"):
                    rec["stage1_union"] = per[0]["stage1_union"]
            else:
                metrics = {k: _mean([r["models"][model]["metrics"][k] for r in per]) for k in m0["metrics"]}
                ci95 = {
                    k: [_mean([r["models"][model]["ci95"][k][i] for r in per]) for i in (0, 1)]
                    for k in m0["ci95"]
                }
                rec |= {
                    "metrics": metrics,
                    "ci95": ci95,
                    "wall_s": round(sum(r["models"][model]["wall_s"] for r in per), 3),
                    "fit_s": round(sum(r["models"][model].get("fit_s") or 0.0 for r in per), 3),
                    "recommend_s": round(sum(r["models"][model].get("recommend_s") or 0.0 for r in per), 3),
                    "eval_wall_s": round(sum(r["eval_wall_s"] for r in per), 3),
                    "folds": [
                        {
                            "fold": r["run"]["fold"],
                            "metrics": r["models"][model]["metrics"],
                            "ci95": r["models"][model]["ci95"],
                            "wall_s": r["models"][model]["wall_s"],
                            "fit_s": r["models"][model].get("fit_s"),
                            "eval_wall_s": r["eval_wall_s"],
                            "data": r["data"],
                        }
                        for r in per
                    ],
                }
            rec |= {
                "peak_mb": round(run.peak_mb, 1),
                "ingest_s": round(run.ingest_s, 3),
                "commit": common["commit"],
                "cpu_busy_at_start": common["cpu_busy_at_start"],
                "eval_child": {"wall_s": round(run.child_wall_s, 3), "cpu_s": round(run.child_cpu_s, 2)},
                "ingest": run.ingest,
                "date": common["date"],
                "targets": ds.targets,
                "settings": settings,
                "data": data,
                "notes": list(ds.notes),
                "machine": common["machine"],
                "versions": common["versions"],
                "timing": {
                    "wall_s": "this model in run_evaluate: fit + recommend + metrics + bootstrap",
                    "fit_s": "this model's fit alone (training; for ml-100k the sum over the five folds)",
                    "recommend_s": "ranking the catalog for every test user (for_users)",
                    "eval_wall_s": "the whole run_evaluate call (load events, split, every model, store), "
                    "shared by the models of that call",
                    "peak_mb": "max RSS of the dataset's evaluation child process (every model, variant and "
                    "fold of the dataset), os.wait4 ru_maxrss; the same on all records of the dataset",
                    "ingest_s": "recctl ingest subprocesses that filled the scratch warehouse (not in wall_s)",
                    "eval_child": "the dataset's whole evaluation child process (start-up, imports, every call)",
                },
            }
            for k in ("metrics", "ci95", "folds", "candidate_recall", "stage1_union", "lift"):
                if k in rec:
                    rec[k] = _sig(rec[k])
            out.append(rec)
    return out


def _sort_key(rec: dict[str, Any]) -> tuple[int, str, str, int, str]:
    names = list(DATASETS)
    d = rec["dataset"]
    return (
        names.index(d) if d in names else len(names),
        d,
        rec["protocol"],
        VARIANT_ORDER.get(rec["variant"], 9),
        rec["model"],
    )


def merge(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        return (r["dataset"], r["protocol"], r["variant"], r["model"])

    old: list[dict[str, Any]] = []
    if path.exists():
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, list):
            raise BenchError(f"{path} is not a JSON list of records; move it away first")
        old = loaded
    fresh = {key(r) for r in new}
    return sorted([r for r in old if key(r) not in fresh] + new, key=_sort_key)


def run_cli(wh: Path, repeat: int, common: dict[str, Any]) -> dict[str, Any]:
    """Time the real CLI on the Complete Journey warehouse: baselines, the project's config (temporal 4w)."""
    # --json is a global option: it goes before the command (`recctl evaluate --json` is a usage error)
    argv = [*recctl_cmd(), "--warehouse", str(wh), "--json", "evaluate", "--models", ",".join(BASELINES)]
    runs = []
    doc: dict[str, Any] = {}
    for k in range(repeat):
        child = run_child(argv, "cli-eval", env=recctl_env())
        if child.code != 0:
            raise BenchError(
                f"CLI evaluation failed (exit {child.code}): {' '.join(argv)}\n{child.stderr.strip()}"
            )
        doc = last_json(child.stdout)
        runs.append(child)
        log(
            f"  [{k + 1}/{repeat}] {child.wall_s:.2f} s wall, {child.cpu_s:.1f} s CPU, peak {child.peak_mb:,.0f} MB"
        )
    best = min(runs, key=lambda c: c.wall_s)
    shown = ["recctl", *argv[1:]]
    shown[shown.index(str(wh))] = f"benchmarks/work/quality/{wh.name}"
    return {
        "dataset": "completejourney",
        "command": " ".join(shown),
        "wall_s": round(best.wall_s, 3),
        "commit": common["commit"],
        "target_s": TARGET_CLI_S,
        "met": best.wall_s < TARGET_CLI_S,
        "what": "wall time of the whole recctl process (start-up, config, warehouse open, loading 1.47M events, "
        "temporal 4w split, the three baselines with 1000 bootstrap resamples, storing eval_runs); "
        f"best of {repeat}",
        "runs_s": [round(c.wall_s, 3) for c in runs],
        "cpu_s": round(best.cpu_s, 2),
        "peak_mb": round(best.peak_mb, 1),
        "protocol": doc.get("protocol"),
        "variant": doc.get("variant"),
        "settings": doc.get("settings"),
        "data": doc.get("data"),
        "models_wall_s": {name: r.get("wall_s") for name, r in (doc.get("models") or {}).items()},
        "date": common["date"],
        "cpu_busy_at_start": common["cpu_busy_at_start"],
        "machine": common["machine"],
    }


def target_misses(recs: list[dict[str, Any]]) -> list[str]:
    """Issue 4's targets for the generators in ``recs`` (baselines are not generators here), issue 5's for
    the pipelines (checked against the generators of the same dataset and variant in ``recs``)."""
    gens = [r for r in recs if r["model"] not in BASELINES and r.get("kind") != "pipeline"]
    misses = []
    for p in (r for r in recs if r.get("kind") == "pipeline"):
        where = f"{p['dataset']} {p['protocol']} {p['variant']} {p['model']}"
        same = [
            r
            for r in recs
            if (r["dataset"], r["protocol"], r["variant"]) == (p["dataset"], p["protocol"], p["variant"])
        ]
        peers = [r for r in same if r in gens or r["model"] == "personal-top"]
        n10 = p["metrics"]["ndcg@10"]
        if peers:
            best = max(peers, key=lambda r: r["metrics"]["ndcg@10"])
            if n10 < (1 + PIPELINE_LIFT) * best["metrics"]["ndcg@10"]:
                misses.append(f"{where}: ndcg@10 {n10:.4f} not {PIPELINE_LIFT:.0%} over {best['model']} "
                              f"{best['metrics']['ndcg@10']:.4f}")  # fmt: skip
        if p["variant"] == "repeat":  # issue 12: over the better of personal-top and the repeat generator
            rivals = [r for r in same if r["model"] in REPEAT_PEERS]
            if len(rivals) < len(REPEAT_PEERS):
                misses.append(f"{where}: {', '.join(REPEAT_PEERS)} not both evaluated beside it")
            for r in rivals:
                if n10 < (1 + PIPELINE_LIFT) * r["metrics"]["ndcg@10"]:
                    misses.append(f"{where}: ndcg@10 {n10:.4f} not {PIPELINE_LIFT:.0%} over "
                                  f"{r['model']} {r['metrics']['ndcg@10']:.4f}")  # fmt: skip
                lift = (p.get("lift") or {}).get(r["model"], {}).get("ndcg@10")
                if lift is None or not lift[1] > 0:  # the paired interval of the lift must exclude 0
                    misses.append(f"{where}: the paired 95% interval of its lift over {r['model']} is {lift}")
        if p["dataset"] in TARGET_PIPELINE:
            tr, tn = TARGET_PIPELINE[p["dataset"]]
            if p["metrics"]["recall@10"] < tr or n10 < tn:
                misses.append(f"{where}: recall@10 {p['metrics']['recall@10']:.4f} / ndcg@10 {n10:.4f} "
                              f"(target {tr} / {tn})")  # fmt: skip
    for d, (r10, n10) in TARGET_BEST.items():
        mine = [r for r in gens if r["dataset"] == d]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["metrics"]["ndcg@10"])
        m = best["metrics"]
        if m["recall@10"] < r10 or m["ndcg@10"] < n10:
            misses.append(
                f"{d}: best generator {best['model']} recall@10 {m['recall@10']:.4f} / ndcg@10 "
                f"{m['ndcg@10']:.4f} (target {r10} / {n10})"
            )
    for r in gens:
        limit = TARGET_FIT_S.get((r["dataset"], r.get("kind") or "")) or (
            TARGET_FIT_S.get((r["dataset"], "*")) if r.get("kind") != "sasrec" else None
        )
        if limit is not None and (r.get("fit_s") or 0.0) > limit:
            misses.append(
                f"{r['dataset']} {r['variant']} {r['model']}: fit {r['fit_s']:.0f} s > {limit:.0f} s"
            )
    return misses


def sanity(recs: list[dict[str, Any]]) -> list[str]:
    """Warnings about implausible figures (they do not fail the run)."""
    warn = []
    by = {(r["dataset"], r["variant"], r["model"]): r for r in recs}
    for r in recs:
        where = f"{r['dataset']} {r['variant']} {r['model']}"
        m, ci = r["metrics"], r["ci95"]
        for k, v in m.items():
            if k.split("@")[0] in ACCURACY and not 0.0 <= v <= 1.0:
                warn.append(f"{where}: {k} = {v} outside [0, 1]")
            if k in ci and not ci[k][0] - 1e-12 <= v <= ci[k][1] + 1e-12:
                warn.append(f"{where}: {k} = {v:.5f} outside its CI {ci[k]}")
        for metric in ("recall", "hit"):
            if m.get(f"{metric}@20", 1.0) + 1e-12 < m.get(f"{metric}@10", 0.0):
                warn.append(f"{where}: {metric}@20 < {metric}@10")
    for (d, v, model), r in by.items():
        rnd = by.get((d, v, "random"))
        if model == "popular" and rnd is not None and r["ci95"]["ndcg@10"][0] <= rnd["ci95"]["ndcg@10"][1]:
            warn.append(f"{d} {v}: popular's ndcg@10 CI overlaps random's")
    # public reference points (full ranking, seen items filtered)
    beauty = by.get(("amazon-beauty", "all", "popular"))
    if beauty and not (
        0.006 <= beauty["metrics"]["hit@10"] <= 0.02 and 0.003 <= beauty["metrics"]["ndcg@10"] <= 0.009
    ):
        warn.append("amazon-beauty popular: HR@10 / NDCG@10 far from the published ~0.01 / ~0.005")
    ml_pop, ml_rnd = by.get(("ml-100k", "all", "popular")), by.get(("ml-100k", "all", "random"))
    if ml_pop and ml_rnd and ml_pop["metrics"]["precision@10"] < 3 * ml_rnd["metrics"]["precision@10"]:
        warn.append("ml-100k: popular precision@10 is not far above random's")
    return warn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="recctl evaluate on four public datasets → results/quality.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--datasets", help=f"comma-separated subset of {', '.join(DATASETS)} (default: all)")
    ap.add_argument(
        "--models", help="only these models (baselines or configured candidates), comma-separated"
    )
    ap.add_argument(
        "--config",
        type=Path,
        help="a recctl TOML whose [[candidates]] (and seed) are evaluated on every dataset, instead of "
        "benchmarks/generators/<dataset>.toml",
    )
    ap.add_argument(
        "--generators",
        type=Path,
        default=GENERATORS,
        help="folder of <dataset>.toml files with each dataset's [[candidates]] (default %(default)s)",
    )
    ap.add_argument("--baselines-only", action="store_true", help="evaluate no generator, only the baselines")
    ap.add_argument(
        "--runs",
        help="only these runs of each dataset: variants (repeat) or protocol:variant (next-basket:repeat), "
        "comma-separated",
    )
    ap.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples (default {N_BOOT})")
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="records JSON, merged into (default %(default)s)"
    )
    ap.add_argument(
        "--cli-out", type=Path, default=DEFAULT_CLI_OUT, help="CLI timing JSON (default %(default)s)"
    )
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI timing on Complete Journey")
    ap.add_argument("--cli-repeat", type=int, default=1, help="CLI timing runs; the best counts (default 1)")
    ap.add_argument(
        "--keep", action="store_true", help="keep the scratch warehouses in benchmarks/work/quality/"
    )
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    names = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else list(DATASETS)
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    if args.n_boot < 1 or args.cli_repeat < 1:
        ap.error("--n-boot and --cli-repeat must be at least 1")

    def user_config(name: str) -> dict[str, Any]:
        if args.baselines_only:
            return {}
        path = args.config if args.config is not None else args.generators / f"{name}.toml"
        if not path.exists():
            return {}
        conf = tomllib.loads(path.read_text(encoding="utf-8"))
        return {k: conf[k] for k in ("seed", "candidates", "ranker", "rules") if k in conf}

    data_dir = datasets_dir()
    if not data_dir.is_dir():
        log(f"datasets folder {data_dir} not found (set RECCTL_DATASETS)")
        return 2

    WORK.mkdir(parents=True, exist_ok=True)
    busy = cpu_busy()
    if busy is not None and busy > 0.25:
        log(
            f"note: the CPUs were {busy:.0%} busy just before the start: other jobs share them, timings are noisy"
        )
    common = {
        "commit": git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "cpu_busy_at_start": None if busy is None else round(busy, 2),
    }
    new: list[dict[str, Any]] = []
    cli: dict[str, Any] | None = None
    warehouses: list[Path] = []
    try:
        for name in names:
            ds = DATASETS[name]
            wh = WORK / f"{name}.duckdb"
            warehouses.append(wh)
            log(f"{name}:")
            run = ingest(ds, wh, data_dir)
            evaluate(ds, run, wh, data_dir, args, user_config(name))
            new += records(ds, run, common)
            if (
                name == "completejourney"
                and not args.no_cli
                and (args.models is None or set(args.models) & set(BASELINES))
            ):
                log("completejourney: timing the CLI: recctl --json evaluate (baselines, temporal 4w)")
                cli = run_cli(wh, args.cli_repeat, common)
        merged = merge(args.out, new)
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 2
    finally:
        if not args.keep:
            for wh in warehouses:
                remove_db(wh)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    if cli is not None:
        args.cli_out.parent.mkdir(parents=True, exist_ok=True)
        args.cli_out.write_text(json.dumps(cli, indent=1) + "\n")

    log("")
    log(f"quality benchmark ({common['commit']}, n_boot {args.n_boot}): {len(new)} records → {args.out}")
    log(
        f"  {'dataset':16} {'variant':9} {'model':15} {'R@10':>7} {'N@10':>7} {'R@20':>7} {'N@20':>7} "
        f"{'fit s':>7} {'wall s':>7} {'peak MB':>8}"
    )
    for r in new:
        m = r["metrics"]
        log(
            f"  {r['dataset']:16} {r['variant']:9} {r['model']:15} {m['recall@10']:7.4f} {m['ndcg@10']:7.4f} "
            f"{m['recall@20']:7.4f} {m['ndcg@20']:7.4f} {r.get('fit_s') or 0.0:7.2f} {r['wall_s']:7.2f} "
            f"{r['peak_mb']:8,.0f}"
        )
    ok = True
    stage1 = [r for r in new if r.get("candidate_recall")]
    if stage1:
        ns = list(stage1[0]["candidate_recall"])
        log(f"  stage-1 candidate {' / '.join(ns)} (mean share of each test user's targets in the top N):")
        for r in stage1:
            log(
                f"  {r['dataset']:16} {r['variant']:9} {r['model']:15} "
                + " ".join(f"{r['candidate_recall'][n]:7.4f}" for n in ns)
            )
        unions = {(r["dataset"], r["variant"]): r["stage1_union"] for r in stage1 if r.get("stage1_union")}
        for (d, v), u in unions.items():
            log(
                f"  {d:16} {v:9} {'union':15} "
                + " ".join(f"{u[n]:7.4f}" for n in ns)
                + f"  (of {', '.join(u['of'])})"
            )
    for miss in target_misses(new):
        log(f"  TARGET MISSED: {miss}")
        ok = False
    if cli is not None:
        log(
            f"  CLI on completejourney: {cli['wall_s']:.1f} s (target < {TARGET_CLI_S:.0f} s) "
            f"{'ok' if cli['met'] else 'MISSED'} → {args.cli_out}"
        )
        ok = ok and cli["met"]
    missing = [
        f"{d} {v} {b}"
        for d, variants in (
            ("amazon-beauty", ["all"]),
            ("amazon-sports", ["all"]),
            ("ml-100k", ["all"]),
            ("completejourney", ["all", "new-items"]),
        )
        for v in variants
        for b in REQUIRED_BASELINES
        if not any(r["dataset"] == d and r["variant"] == v and r["model"] == b for r in merged)
    ]
    if missing:
        log(f"  MISSING baselines in {args.out.name}: {'; '.join(missing)}")
        ok = False
    for w in sanity(new):
        log(f"  check: {w}")
    log(f"  parent peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
