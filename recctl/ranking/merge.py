"""Stage 1 → stage 2: the candidates of every generator merged into one row per (user, item).

Each generator contributes its score and rank as columns ``c_<name>_score`` / ``c_<name>_rank`` (null
where it did not propose the item) and the merge adds how many generators proposed the item, its best
rank and the sum of reciprocal ranks. These are the ranker's candidate features.
"""

from __future__ import annotations

import re

import polars as pl

from recctl.candidates.base import CandidateGenerator


def column_stem(name: str) -> str:
    """A generator name as a feature-name part: ``next-item`` → ``c_next_item``."""
    return "c_" + re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def candidate_columns(names: list[str]) -> list[str]:
    cols = [f"{column_stem(n)}_{k}" for n in names for k in ("score", "rank")]
    return [*cols, "c_sources", "c_best_rank", "c_rrank_sum"]


def propose(
    generators: dict[str, CandidateGenerator], users: pl.Series, n: int, exclude: pl.DataFrame | None
) -> pl.DataFrame:
    """Every generator's top ``n`` for ``users`` merged: user_id, item_id and the candidate columns."""
    parts = [proposals(gen, name, users, n, exclude) for name, gen in generators.items()]
    return merge(parts, list(generators))


def proposals(
    gen: CandidateGenerator, name: str, users: pl.Series, n: int, exclude: pl.DataFrame | None
) -> pl.DataFrame:
    """One generator's top ``n`` for ``users``: user_id, item_id, ``c_<name>_score``, ``c_<name>_rank``
    (what :func:`merge` joins)."""
    recs = gen.for_users(users, n, exclude=exclude)
    stem = column_stem(name)
    return recs.select(
        "user_id",
        "item_id",
        pl.col("score").cast(pl.Float32).alias(f"{stem}_score"),
        pl.col("rank").cast(pl.Float32).alias(f"{stem}_rank"),
    )


def merge(parts: list[pl.DataFrame], names: list[str]) -> pl.DataFrame:
    """Full outer union of per-generator (user_id, item_id, score, rank) frames, sorted by user and item."""
    keys = pl.concat([p.select("user_id", "item_id") for p in parts]).unique() if parts else None
    if keys is None or keys.height == 0:
        schema = {"user_id": pl.String, "item_id": pl.String} | dict.fromkeys(
            candidate_columns(names), pl.Float32
        )
        return pl.DataFrame(schema=schema)
    out = keys
    for part in parts:
        out = out.join(part, on=["user_id", "item_id"], how="left")
    ranks = [pl.col(f"{column_stem(n)}_rank").cast(pl.Float64) for n in names]
    return out.with_columns(
        c_sources=pl.sum_horizontal([r.is_not_null() for r in ranks]).cast(pl.Float32),
        c_best_rank=pl.min_horizontal(ranks).cast(pl.Float32),
        c_rrank_sum=pl.sum_horizontal([(1.0 / r).fill_null(0.0) for r in ranks]).cast(pl.Float32),
    ).sort("user_id", "item_id")


def source_names(ranked: pl.DataFrame, names: list[str]) -> pl.Series:
    """Over :func:`merge`'s output (its ``c_<name>_rank`` columns), the names of the generators that proposed
    each item, the one that ranked it highest first (ties in ``names`` order): the ``sources`` of an
    explanation. Sorted per row in numpy (a row has at most len(names) keys), twenty times faster than
    polars' list sort over a chunk's candidates."""
    import numpy as np
    import pyarrow as pa

    n_names = len(names)
    if n_names == 0 or ranked.height == 0:
        return pl.Series("sources", [[]] * ranked.height, dtype=pl.List(pl.String))
    # rank × len(names) + position keeps the order stable; missing ranks sort last and are dropped
    keys = np.column_stack([
        ranked[f"{column_stem(n)}_rank"].cast(pl.Float64).fill_null(np.inf).to_numpy() * n_names + i
        for i, n in enumerate(names)
    ])  # fmt: skip
    order = np.argsort(keys, axis=1, kind="stable")
    present = np.isfinite(np.take_along_axis(keys, order, axis=1))
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int64)
    labels = pl.Series(order[present]).replace_strict(list(range(n_names)), names, return_dtype=pl.String)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), labels.to_arrow())
    return pl.Series("sources", lists, dtype=pl.List(pl.String))
