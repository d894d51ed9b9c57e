#!/usr/bin/env python3
"""The least ``recommend --all`` can cost on Complete Journey with the shipped pipeline's EASE generator.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/batch_floor.py                 # writes benchmarks/results/batch_floor.json
    .venv/bin/python benchmarks/batch_floor.py --out /tmp/f.json --repeat 5

Issue 15 asks ``recommend --all`` on Complete Journey for ≥ 2,000 users/s with the shipped pipeline
(``benchmarks/pipeline/completejourney.toml``: eight generators, features, a LightGBM ranker) and the same
lists as the per-user path. This measures one necessary part of that work on its own, as fast as the
machine does it: EASE's scores for every household, i.e. each household's history over the EASE
generator's item set (``top_items = 10000``, the most frequent items) times a dense 10,000 × 10,000
weight matrix, then the top 100 per household (``n_per_generator``). The weights are random (the cost of
the product does not depend on their values); the histories are the real ones, read with DuckDB from
``completejourney/transactions.parquet`` under ``../shared/datasets`` or ``$RECCTL_DATASETS``.

Timed, best of ``--repeat``, NumPy's BLAS on every core: the sparse × dense product (what a CSR history
times B costs in SciPy), the dense GEMM of the histories as a dense 0/1 matrix (the fastest way BLAS has),
each in float32 and float64, and the top-100 selection (``argpartition``). ``users_per_s_ceiling`` is the
households divided by the fastest product plus its selection: the rate ``recommend --all`` could not beat
even if the other seven generators, the candidate merge, the features, the ranker, the rules and the
store write cost nothing. Exit 0 always when the run is right (this is a measurement, not a target), 2
when the data set is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _env import cpu_busy, git_commit, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "batch_floor.json"
TOP_ITEMS = 10_000  # benchmarks/pipeline/completejourney.toml: ease params top_items
TOP_N = 100  # [ranker] n_per_generator
TARGET_USERS_PER_S = 2_000.0  # issue 15


def datasets_dir() -> Path:
    env = os.environ.get("RECCTL_DATASETS")
    return Path(env).resolve() if env else (ROOT.parent / "shared" / "datasets").resolve()


def histories(path: Path) -> Any:
    """Households × the TOP_ITEMS most frequent items, 1 where bought (CSR, float32)."""
    import duckdb
    import scipy.sparse as sp

    lit = "'" + str(path).replace("'", "''") + "'"
    con = duckdb.connect()
    u, i = (
        con.execute(
            f"WITH t AS (SELECT household_id AS u, product_id AS i FROM read_parquet({lit})), "
            f"top AS (SELECT i FROM t GROUP BY i ORDER BY count(*) DESC, i LIMIT {TOP_ITEMS}), "
            "pairs AS (SELECT DISTINCT u, i FROM t SEMI JOIN top USING (i)) "
            "SELECT dense_rank() OVER (ORDER BY u) - 1, dense_rank() OVER (ORDER BY i) - 1 FROM pairs"
        )
        .fetchnumpy()
        .values()
    )
    con.close()
    n_users = int(u.max()) + 1
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, TOP_ITEMS))


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="EASE's scoring floor for recommend --all on Complete Journey")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each product; the fastest counts")
    args = ap.parse_args(argv)
    path = datasets_dir() / "completejourney" / "transactions.parquet"
    if not path.exists():
        print(f"missing {path} (set RECCTL_DATASETS)", file=sys.stderr)
        return 2
    busy = cpu_busy()
    x = histories(path)
    n_users = x.shape[0]
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"users": n_users, "items": TOP_ITEMS, "history_nnz": int(x.nnz), "top_n": TOP_N}
    fastest = float("inf")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        b = rng.standard_normal((TOP_ITEMS, TOP_ITEMS)).astype(dtype)
        xs = x.astype(dtype)
        xd = xs.toarray()
        sparse_s, _ = best(lambda xs=xs, b=b: xs @ b, args.repeat)
        dense_s, scores = best(lambda xd=xd, b=b: xd @ b, args.repeat)
        select_s, _ = best(lambda s=scores: np.argpartition(-s, TOP_N, axis=1)[:, :TOP_N], args.repeat)
        result[name] = {"sparse_dense_s": round(sparse_s, 3), "dense_gemm_s": round(dense_s, 3),
                        "top_n_s": round(select_s, 3)}  # fmt: skip
        fastest = min(fastest, min(sparse_s, dense_s) + select_s)
        print(f"{name}: sparse × dense {sparse_s:.2f} s, dense GEMM {dense_s:.2f} s, top {TOP_N} {select_s:.2f} s",
              file=sys.stderr)  # fmt: skip
        del b, xs, xd, scores
    ceiling = n_users / fastest
    result |= {
        "fastest_s": round(fastest, 3),
        "users_per_s_ceiling": round(ceiling, 1),
        "target_users_per_s": TARGET_USERS_PER_S,
        "what": "EASE's scores (history over its 10k items x dense B) and top-100 for every household, "
        "as fast as BLAS does it: the rate recommend --all cannot beat with the shipped pipeline",
        "commit": git_commit(),
        "cpu_busy_at_start": None if busy is None else round(busy, 2),
        "machine": machine(),
        "numpy": np.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n_users:,} households: EASE alone at best {fastest:.2f} s = {ceiling:,.0f} users/s "
          f"(issue 15's target {TARGET_USERS_PER_S:,.0f}) → {args.out}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
