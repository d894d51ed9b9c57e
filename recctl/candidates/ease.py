"""``ease``: Embarrassingly Shallow Autoencoder (Steck 2019), an item-item model in closed form.

With X the users × items interaction matrix and P = (XᵀX + λI)⁻¹, the item-item weights are
B = I − P·diag(1/diag(P)): off the diagonal B_ij = −P_ij / P_jj, and B_ii = 0. A user's scores are x_u B.

The Gram matrix, its inverse and B are dense items × items float32 matrices, so the catalog must fit in
memory: ``fit`` estimates the memory first and refuses (``ConfigError``) a catalog above ``max_items`` or
above the memory available, with a hint (``ials`` / ``itemknn``, or ``top_items`` to keep only the most
popular items). The inverse is a Cholesky factorization (torch, float32).

This module also holds the helpers shared with ``ials``: the weighted interaction matrix and the batched
top-n scorer (dense scores for a block of users at a time, exclusions masked, ``torch.topk``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates.base import Params, rank_top, register
from recctl.errors import ConfigError

if TYPE_CHECKING:
    import scipy.sparse as sp

DEFAULT_WEIGHTS: dict[str, float] = {
    "view": 1.0, "click": 1.0, "like": 2.0, "add_to_cart": 3.0, "purchase": 4.0, "rating": 1.0,
    "remove_from_cart": 0.0, "search": 0.0,
}  # fmt: skip
SCORE_CELLS = 20_000_000  # float32 cells scored at once (~80 MB): sets the user batch size
GRAM_PAIRS = 20_000_000  # item pairs (Σ per-user history²) accumulated per Gram block
EASE_COPIES = 3  # dense items × items float32 matrices alive at the peak (Gram, Cholesky factor, inverse)


class WeightedParams(Params):
    """Event-type weights: a (user, item) cell holds the sum of its events' weights."""

    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    other_weight: float = Field(1.0, ge=0)  # event types not in event_weights; 0 drops them
    half_life_days: float = Field(0.0, ge=0)  # > 0: an event's weight halves every so many days before
    # the last training event (recency); 0 = no decay


class EASEParams(WeightedParams):
    l2: float = Field(200.0, gt=0)  # λ on the Gram diagonal
    binarize: bool = True  # 1 for every (user, item) with a positive weight, else the weight sum
    max_items: int = Field(30_000, ge=1)  # refuse larger catalogs (dense items² matrices)
    top_items: int = Field(0, ge=0)  # keep only the N items with most users (0 = the whole catalog)


# ---------------------------------------------------------------------------------------------- helpers


def interaction_matrix(
    train: pl.DataFrame, weights: dict[str, float], other_weight: float, half_life_days: float = 0.0
) -> tuple[pl.Series, pl.Series, sp.csr_matrix]:
    """(user ids, item ids, users × items CSR float32 of summed event weights), ids sorted."""
    import scipy.sparse as sp

    w = pl.col("event_type").replace_strict(weights, default=other_weight, return_dtype=pl.Float64)
    if half_life_days > 0 and train.height:
        age_days = (pl.col("ts").max() - pl.col("ts")).dt.total_seconds(fractional=True) / 86_400.0
        w = w * (0.5 ** (age_days / half_life_days))
    cells = (
        train.select("user_id", "item_id", w=w)
        .filter(pl.col("w") > 0)
        .group_by("user_id", "item_id")
        .agg(pl.col("w").sum())
    )
    users = cells["user_id"].unique().sort()
    items = cells["item_id"].unique().sort()
    rows = positions(cells["user_id"], users)
    cols = positions(cells["item_id"], items)
    x = sp.csr_matrix(
        (cells["w"].to_numpy().astype(np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    x.sort_indices()
    return users, items, x


def positions(keys: pl.Series, index: pl.Series) -> np.ndarray:
    """The position in ``index`` of each key (-1 when absent), in the order of ``keys``. An ``index``
    flagged sorted (``recctl.data.by_key``; ``unique().sort()`` sets the flag) without nulls is binary
    searched, so a chunk of keys costs the chunk, not the index (the models' user ids are sorted)."""
    if index.flags["SORTED_ASC"] and not index.has_nulls() and index.len():
        probe = keys.cast(index.dtype)
        at = index.search_sorted(probe, side="left").cast(pl.Int64)
        hit = (at < index.len()) & (index.gather(at.clip(0, index.len() - 1)) == probe)
        return np.where(hit.fill_null(False).to_numpy(), at.to_numpy(), -1)
    found = (
        pl.DataFrame({"k": keys})
        .with_row_index("_q")
        .join(pl.DataFrame({"k": index}).with_row_index("_r"), on="k", how="left")
        .sort("_q")["_r"]
    )
    return found.fill_null(-1).cast(pl.Int64).to_numpy()


def top_n(
    labels: pl.Series, query: pl.Series, n: int, item_ids: pl.Series,
    scores: Callable[[np.ndarray], np.ndarray], masked: tuple[np.ndarray, np.ndarray] | None = None,
) -> pl.DataFrame:  # fmt: skip
    """(query label, item id, score) of the ``n`` best items per known query row, scored in row batches.

    ``labels`` are the model's row ids (sorted); ``scores(rows)`` gives a dense (len(rows), items) block;
    ``masked`` holds (row, item) pairs that are never returned (set to −inf before the top-n, so a row
    gets exactly its ``n`` best allowed items, fewer only when fewer are allowed).
    """
    import torch

    rows = np.unique(positions(query.unique(), labels))
    rows = rows[rows >= 0]
    n_items = len(item_ids)
    k = min(n, n_items)
    empty = pl.DataFrame(schema={"key": pl.String, "item_id": pl.String, "score": pl.Float64})
    if k <= 0 or len(rows) == 0:
        return empty
    if masked is not None:  # keep the pairs of requested rows, sorted by row
        keep = np.isin(masked[0], rows) & (masked[1] >= 0)
        order = np.argsort(masked[0][keep], kind="stable")
        masked = (masked[0][keep][order], masked[1][keep][order])
    batch = int(np.clip(SCORE_CELLS // max(n_items, 1), 1, 5000))
    parts = []
    for start in range(0, len(rows), batch):
        block = rows[start : start + batch]
        s = np.array(scores(block), dtype=np.float32)  # a writable copy
        if masked is not None:
            lo = np.searchsorted(masked[0], block[0], side="left")
            hi = np.searchsorted(masked[0], block[-1], side="right")
            s[np.searchsorted(block, masked[0][lo:hi]), masked[1][lo:hi]] = -np.inf
        top = torch.topk(torch.from_numpy(s), k, dim=1)  # ~5x faster than np.argpartition here
        vals, idx = top.values.numpy(), top.indices.numpy()
        ok = np.isfinite(vals)
        parts.append(
            pl.DataFrame(
                {
                    "key": labels.gather(np.broadcast_to(block[:, None], idx.shape)[ok]),
                    "item_id": item_ids.gather(idx[ok]),
                    "score": vals[ok].astype(np.float64),
                }
            )
        )
    return pl.concat(parts) if parts else empty


def recommend(
    users: pl.Series, n: int, exclude: pl.DataFrame | None, user_ids: pl.Series, item_ids: pl.Series,
    scores: Callable[[np.ndarray], np.ndarray],
) -> pl.DataFrame:  # fmt: skip
    """``for_users`` of a matrix model: masked exclusions, batched top-n, then ``rank_top``."""
    masked = None
    if exclude is not None and exclude.height:
        masked = (positions(exclude["user_id"], user_ids), positions(exclude["item_id"], item_ids))
    top = top_n(user_ids, users, n, item_ids, scores, masked).rename({"key": "user_id"})
    return rank_top(top, n, exclude)


def related(
    items: pl.Series, n: int, item_ids: pl.Series, scores: Callable[[np.ndarray], np.ndarray]
) -> pl.DataFrame:
    """``for_items`` of a matrix model: the ``n`` best other items per known item."""
    rows = np.arange(len(item_ids))
    top = top_n(item_ids, items, n, item_ids, scores, (rows, rows)).rename(
        {"item_id": "related_id", "key": "item_id"}
    )
    return (
        top.sort(["item_id", "score", "related_id"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("item_id").cast(pl.Int32))
        .filter(pl.col("rank") <= n)
    )


def matrix_pair_scores(
    anchors: pl.Series,
    items: pl.Series,
    item_ids: pl.Series,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """``pair_scores`` of a matrix model: ``score(anchor rows, item rows)`` for the pairs of known, different
    items, NaN for the others."""
    a, b = positions(anchors, item_ids), positions(items, item_ids)
    ok = (a >= 0) & (b >= 0) & (a != b)
    out = np.full(len(a), np.nan)
    if ok.any():
        out[ok] = np.asarray(score(a[ok], b[ok]), dtype=np.float64).ravel()
    return out


def save_ids(path: Path, **series: pl.Series) -> None:
    for name, s in series.items():
        pl.DataFrame({"id": s}).write_parquet(path / f"{name}.parquet")


def load_ids(path: Path, name: str) -> pl.Series:
    """The ids ``save_ids`` wrote, flagged sorted when they are (so that ``positions`` searches them)."""
    ids = pl.read_parquet(path / f"{name}.parquet")["id"].alias(name)
    return ids.set_sorted() if ids.is_sorted() else ids


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------------------------------------- EASE


def check_fits(n_items: int, max_items: int) -> None:
    """Refuse a catalog whose dense item-item matrices exceed ``max_items`` or the memory available."""
    need = EASE_COPIES * n_items * n_items * 4
    avail = available_memory()
    reason = None
    if n_items > max_items:
        reason = f"above max_items = {max_items:,}"
    elif avail is not None and need > avail:
        reason = f"more than the {avail / 1e9:.1f} GB available"
    if reason:
        raise ConfigError(
            f"ease cannot fit a catalog of {n_items:,} items: its dense item × item matrices need about "
            f"{need / 1e9:.1f} GB ({EASE_COPIES} × {n_items:,}² float32), {reason}",
            hint="use ials or itemknn for a catalog this large, or restrict the catalog (params "
            "top_items = N keeps the N items with most users) or raise max_items",
        )


def gram(x: sp.csr_matrix) -> np.ndarray:
    """XᵀX as a dense float32 matrix, accumulated over blocks of users (bounded sparse intermediates)."""
    n_items = x.shape[1]
    g = np.zeros((n_items, n_items), dtype=np.float32)
    pairs = np.cumsum(np.diff(x.indptr).astype(np.int64) ** 2)
    start = 0
    while start < x.shape[0]:
        done = int(pairs[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(pairs, done + GRAM_PAIRS, side="right")))
        block = x[start:end]
        prod = (block.T @ block).tocoo()
        g[prod.row, prod.col] += prod.data.astype(np.float32)  # (row, col) unique within a product
        start = end
    return g


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, with a zero diagonal (float32)."""
    import torch

    g = torch.from_numpy(gram(x))
    g.diagonal().add_(l2)
    chol = torch.linalg.cholesky(g)
    del g
    p = torch.cholesky_inverse(chol)
    del chol
    b = p.div_(-p.diagonal().clone())  # column j divided by −P_jj
    b.fill_diagonal_(0.0)
    return row_major(b.numpy())


def row_major(b: np.ndarray) -> np.ndarray:
    """B in C (row-major) order: torch's inverse comes out column-major, and scipy's sparse × dense
    product reads B's rows, five times slower when they are strided (recommend's main cost). Same values."""
    return np.ascontiguousarray(b)


@register("ease")
class EASE:
    kind = "ease"
    Params = EASEParams

    def __init__(self, name: str, params: EASEParams) -> None:
        self.name = name
        self.params = params
        self.users = pl.Series("users", [], dtype=pl.String)
        self.items = pl.Series("items", [], dtype=pl.String)
        self.x: Any = None  # users × items CSR (the histories scored at recommendation time)
        self.b = np.zeros((0, 0), dtype=np.float32)

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        users, item_ids, x = interaction_matrix(train, p.event_weights, p.other_weight, p.half_life_days)
        if p.binarize:
            x.data[:] = 1.0
        if p.top_items and x.shape[1] > p.top_items:
            # the most users first, ties by item id (ids are sorted, the stable sort keeps that order)
            keep = np.sort(np.argsort(-x.getnnz(axis=0), kind="stable")[: p.top_items])
            x, item_ids = x[:, keep].tocsr(), item_ids.gather(keep)
            active = np.flatnonzero(x.getnnz(axis=1))  # users left without an item are unknown
            x, users = x[active], users.gather(active)
        check_fits(x.shape[1], p.max_items)
        self.users, self.items, self.x = users.alias("users"), item_ids.alias("items"), x
        self.b = ease_weights(x, p.l2) if x.shape[1] else np.zeros((0, 0), dtype=np.float32)

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        return recommend(users, n, exclude, self.users, self.items, lambda rows: self.x[rows] @ self.b)

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """Items an item's presence in a history raises most (its row of B)."""
        return related(items, n, self.items, lambda rows: self.b[rows])

    def pair_scores(self, anchors: pl.Series, items: pl.Series) -> np.ndarray:
        return matrix_pair_scores(anchors, items, self.items, lambda a, b: self.b[a, b])

    def save(self, path: Path) -> None:
        import scipy.sparse as sp

        path.mkdir(parents=True, exist_ok=True)
        save_ids(path, users=self.users, items=self.items)
        np.save(path / "b.npy", self.b, allow_pickle=False)
        sp.save_npz(path / "x.npz", self.x if self.x is not None else sp.csr_matrix((0, 0), dtype=np.float32))
        (path / "params.json").write_text(json.dumps(self.params.model_dump()))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        import scipy.sparse as sp

        gen = cls(name, EASEParams.model_validate(params))
        gen.users, gen.items = load_ids(path, "users"), load_ids(path, "items")
        gen.b = row_major(np.load(path / "b.npy", allow_pickle=False))  # runs saved column-major before
        gen.x = sp.load_npz(path / "x.npz").tocsr()
        return gen
