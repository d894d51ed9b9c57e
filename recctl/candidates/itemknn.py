"""``itemknn``: item–item similarity on the user–item matrix, user scores from their recent history.

The user–item matrix X holds, per (user, item), log(1 + Σ event-type weight × time decay) of the user's
events with the item (``event_weights``, ``other_weight`` for unlisted types, ``half_life_days``: an event
counts half for every half-life before the end of training). Two weightings of X:

- ``cosine``: X as it is;
- ``bm25``: each item is a document whose terms are its users: x' = x (k1 + 1) / (x + k1 (1 - b + b
  len_i / mean len)) · idf_u with len_i the item's column sum and idf_u = log(#items / #items of u), so
  ``k1`` saturates repeated interactions, ``b`` normalizes popular items and heavy users weigh less.

The similarity of items i and j is the dot product of their (weighted) columns, divided by
(‖x_i‖ ‖x_j‖ + ``shrinkage``) when ``normalize`` (default: yes for cosine; no for bm25, as implicit's
BM25Recommender does, where ``shrinkage`` only rescales). Each item keeps its ``neighbors`` most similar
items; the products run in blocks of items whose partial products stay under ``BLOCK_WORK``, so a large
grocery catalogue never builds the full items × items product at once.

A user's scores sum the neighbour rows of their last ``history`` distinct items, the k-th most recent one
weighted ``history_decay ** (k - 1)`` and, with ``recency_half_life_days``, halved for every half-life
between the user's last event with it and the end of training; ``popularity_prior`` adds that share of
the item's popularity (distinct users, time-decayed like X) to scores scaled to a maximum of 1 per user.
Users without history get no rows. ``for_items`` gives an item's most similar items (relation
``similar-items``).

Defaults (bm25, k1 = 0.5, b = 0.3, unnormalized, 100 neighbours, history 10 with decay 0.6) were tuned on
the Amazon Beauty leave-one-out validation targets (second-to-last item). For grocery baskets (Complete
Journey) a long, slowly decaying history with recent popularity works better: ``history=100``,
``history_decay=0.98``, ``half_life_days=30``, ``popularity_prior=3``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates.base import Params, register
from recctl.candidates.cooccur import DEFAULT_WEIGHTS, ITEM_COLUMNS, ItemModel, keep_top, weighted_events

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

#: Upper bound on the partial products (user-item pairs) of one block of the similarity computation.
BLOCK_WORK = 20_000_000


class ItemKNNParams(Params):
    neighbors: int = Field(100, ge=1)
    weighting: Literal["cosine", "bm25"] = "bm25"
    k1: float = Field(0.5, ge=0)
    b: float = Field(0.3, ge=0, le=1)
    shrinkage: float = Field(0.0, ge=0)
    normalize: bool | None = None  # divide by the norms; None: yes for cosine, no for bm25 (implicit-style)
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    other_weight: float = Field(1.0, ge=0)  # event types not in event_weights (0 drops them)
    half_life_days: float = Field(0.0, ge=0)  # time decay of the interactions in X (0 = none)
    history: int = Field(10, ge=1)
    history_decay: float = Field(0.6, gt=0, le=1)
    recency_half_life_days: float = Field(0.0, ge=0)  # time decay of the user profile (0 = none)
    popularity_prior: float = Field(0.0, ge=0)


def bm25_weight(x: csr_matrix, k1: float, b: float) -> csr_matrix:
    """BM25 weighting of a users × items matrix, items as documents and users as terms."""
    from scipy.sparse import csr_matrix

    coo = x.tocoo()
    n_items = x.shape[1]
    items_per_user = np.bincount(coo.row, minlength=x.shape[0]).astype(np.float64)
    idf = np.log(n_items / np.maximum(items_per_user, 1.0))
    length = np.bincount(coo.col, weights=coo.data, minlength=n_items)
    mean_length = float(length.mean()) if n_items else 1.0
    norm = k1 * (1.0 - b + b * length / max(mean_length, 1e-12))
    data = coo.data * (k1 + 1.0) / (coo.data + norm[coo.col]) * idf[coo.row]
    return csr_matrix((data, (coo.row, coo.col)), shape=x.shape)


def blocked_top_similarity(
    x: csr_matrix, neighbors: int, denom: np.ndarray | None, shrinkage: float
) -> csr_matrix:
    """Items × items top-``neighbors`` of xᵀx / (denom_i denom_j + shrinkage), diagonal excluded.

    Items are split into consecutive blocks whose partial products stay under ``BLOCK_WORK``; each block
    is one sparse product and one vectorized top-k (a loop over a handful of blocks, not over items).
    """
    from scipy.sparse import csr_matrix, diags, vstack

    n_items = x.shape[1]
    xt = csr_matrix(x.T)
    user_len = np.diff(x.indptr).astype(np.float64)
    work = np.asarray(xt.sign() @ user_len).ravel()
    block_of = np.floor(np.cumsum(work) / BLOCK_WORK).astype(np.int64)
    cuts = np.flatnonzero(np.diff(block_of)) + 1
    bounds: list[int] = [0, *cuts.tolist(), n_items] if n_items else []
    parts = []
    for start, stop in itertools.pairwise(bounds):  # a handful of blocks
        block = csr_matrix(xt[start:stop] @ x)
        block.setdiag(0, k=start)  # item i sits at column start + its row in the block
        block.eliminate_zeros()
        if denom is not None:
            coo = block.tocoo()
            d = denom[coo.row + start] * denom[coo.col] + shrinkage
            block = csr_matrix((coo.data / d, (coo.row, coo.col)), shape=block.shape)
        elif shrinkage > 0:
            block = csr_matrix(diags(np.full(block.shape[0], 1.0 / (1.0 + shrinkage))) @ block)
        parts.append(keep_top(block, neighbors))
    if not parts:
        return csr_matrix((n_items, n_items))
    return csr_matrix(vstack(parts))


@register("itemknn")
class ItemKNN(ItemModel):
    kind = "itemknn"
    Params = ItemKNNParams
    params: ItemKNNParams
    relation = "similar-items"

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        from scipy.sparse import csr_matrix

        p = self.params
        ev = weighted_events(train, p.event_weights, p.other_weight, p.half_life_days, ITEM_COLUMNS)
        if p.recency_half_life_days > 0 and ev.height:
            age = (pl.lit(ev["ts"].max()) - pl.col("ts")).dt.total_seconds(fractional=True) / 86400.0
            ev = ev.with_columns(hdec=(0.5 ** (age / p.recency_half_life_days)).cast(pl.Float64))
        ev = self.fit_common(ev, p.history, p.history_decay)
        cells = (
            ev.group_by("user_id", "idx")
            .agg(v=(pl.col("w") * pl.col("dec")).sum().log1p())
            .sort("user_id", "idx")
            .with_columns(u=pl.col("user_id").rank("dense").cast(pl.Int64) - 1)
        )
        n_users = cells["user_id"].n_unique()
        x = csr_matrix(
            (cells["v"].to_numpy(), (cells["u"].to_numpy(), cells["idx"].to_numpy().astype(np.int64))),
            shape=(n_users, len(self.item_ids)),
        )
        if p.weighting == "bm25":
            x = bm25_weight(x, p.k1, p.b)
        normalize = p.weighting == "cosine" if p.normalize is None else p.normalize
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()) if normalize else None
        self.sim = blocked_top_similarity(x, p.neighbors, norms, p.shrinkage)
