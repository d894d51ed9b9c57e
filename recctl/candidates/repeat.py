"""``repeat``: next-basket repurchase — TIFU-KNN (Hu et al., SIGIR 2020, "Modeling Personalized Item
Frequency Information for Next-basket Recommendation") lifted by the repurchase-cycle model.

User vectors (TIFU). A user's baskets (``recctl.data.basket_key``: order id, else session id, else the day,
over events of ``event_types``) are multi-hot vectors over items, in time order. They are split into
``groups`` groups of consecutive baskets of nearly equal size, the older groups taking the smaller share
when it does not divide (as TIFU-KNN's group_size argument; a user with fewer baskets than groups has one
basket per group). In a group of size s the basket at position j (0 = oldest) weighs
within_decay^(s−1−j) / s; group g of G (0 = oldest) weighs group_decay^(G−1−g) / G; the user vector is the
weighted sum of the baskets — the personalized item frequency, recent baskets counting most. All weights
are polars window expressions over the baskets; the vectors are one scipy.sparse CSR (users × items).

Neighbours. The k = min(``neighbors``, users − 1) nearest other users by Euclidean distance between the
vectors (TIFU's choice) or cosine distance, found chunk by chunk: a chunk of users times the transpose
(sparse), distances from the norms, ``np.argpartition`` for the k-th distance, ties at the boundary by the
lower user index — so the answer does not depend on the chunk size. A chunk is at most ``chunk_users``
rows and at most ``NEIGHBOR_CELLS`` dense distances.

Prediction. alpha·own vector + (1 − alpha)·mean of the k neighbours' vectors (with k = 0: the own vector).
Then the cycle (``_cycles``): the score of an item the user bought is multiplied by
(1 + cycle_weight·due_score), due_score taken at the end of training (``as_of``), so an item whose cycle
has come round beats an equally frequent one bought yesterday; items only the neighbours bought are
unchanged. ``cycle_weight = 0`` is plain TIFU-KNN. ``due`` lists a user's bought items by due score, for
"time to buy again" shelves.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates import _cycles
from recctl.candidates.base import RECS_SCHEMA, Params, max_excluded, rank_top, register
from recctl.candidates.ease import positions
from recctl.data import basket_key

NEIGHBOR_CELLS = 20_000_000  # dense float64 distances per neighbour chunk (~160 MB)
_EMPTY_EVENTS = pl.Schema(
    {
        "user_id": pl.String(), "item_id": pl.String(), "event_type": pl.String(), "ts": pl.Datetime("us"),
        "session_id": pl.String(), "order_id": pl.String(),
    }
)  # fmt: skip


class RepeatParams(Params):
    event_types: list[str] = Field(default_factory=lambda: ["purchase"], min_length=1)
    groups: int = Field(3, ge=1)  # TIFU group_size: groups of consecutive baskets per user
    within_decay: float = Field(0.9, gt=0, le=1)  # decay of the older baskets inside a group
    group_decay: float = Field(0.6, gt=0, le=1)  # decay of the older groups
    alpha: float = Field(0.2, ge=0, le=1)  # weight of the own vector; 1 − alpha for the neighbours' mean
    neighbors: int = Field(900, ge=0)  # capped at users − 1; 0 = own vector only
    metric: Literal["euclidean", "cosine"] = "euclidean"
    cycle_weight: float = Field(1.0, ge=0)  # score × (1 + cycle_weight · due_score); 0 = pure TIFU-KNN
    prior: float = Field(5.0, ge=0)  # pseudo-gaps of the item → category → shop cycle shrinkage
    user_prior: float = Field(1.0, ge=0)  # pseudo-gaps of a customer's own cycle toward the item's
    min_sigma: float = Field(0.25, gt=0)  # floor of the cycles' log-sigma
    chunk_users: int = Field(2000, ge=1)  # users per neighbour / scoring chunk


def user_vectors(ev: pl.DataFrame, p: RepeatParams) -> pl.DataFrame:
    """user_id, item_id, weight: the TIFU vector cells, summed over baskets (sorted by user, item)."""
    events = ev.select("user_id", "item_id", "ts", basket_key())
    cells = events.select("user_id", "basket", "item_id").unique()
    baskets = (
        events.group_by("user_id", "basket")
        .agg(pl.col("ts").min())
        .sort("user_id", "ts", "basket")
        .with_columns(j=pl.int_range(pl.len()).over("user_id"), b=pl.len().over("user_id"))
        .with_columns(big_g=pl.min_horizontal(pl.lit(p.groups), pl.col("b")))
        .with_columns(
            base=pl.col("b") // pl.col("big_g"), n_small=pl.col("big_g") - pl.col("b") % pl.col("big_g")
        )
        .with_columns(cut=pl.col("n_small") * pl.col("base"))
    )
    # the first n_small groups hold base baskets, the newer ones base + 1
    small, base, cut, n_small = pl.col("j") < pl.col("cut"), pl.col("base"), pl.col("cut"), pl.col("n_small")
    g = pl.when(small).then(pl.col("j") // base).otherwise(n_small + (pl.col("j") - cut) // (base + 1))
    baskets = baskets.with_columns(g=g, s=pl.when(small).then(base).otherwise(base + 1))
    start = pl.when(small).then(pl.col("g") * base).otherwise(cut + (pl.col("g") - n_small) * (base + 1))
    within = pl.lit(p.within_decay).pow(pl.col("s") - 1 - (pl.col("j") - start)) / pl.col("s")
    group = pl.lit(p.group_decay).pow(pl.col("big_g") - 1 - pl.col("g")) / pl.col("big_g")
    baskets = baskets.select("user_id", "basket", "j", w=(within * group).cast(pl.Float64))
    return cells.join(baskets, on=["user_id", "basket"]).sort("user_id", "item_id", "j")


def nearest(x: Any, k: int, metric: str, chunk: int) -> np.ndarray:
    """(users, k) indices of each row's k nearest other rows of the CSR ``x``, nearest first (ties: lower
    index), by Euclidean or cosine distance, ``chunk`` rows at a time."""
    import scipy.sparse as sp

    n = x.shape[0]
    out = np.zeros((n, k), dtype=np.int64)
    if k == 0 or n == 0:
        return out
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    if metric == "cosine":
        x = sp.csr_matrix(sp.diags(1.0 / np.sqrt(sq)) @ x)
        sq = np.ones(n)
    xt = x.T.tocsr()
    step = max(1, min(chunk, NEIGHBOR_CELLS // n))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(lo + step, n))
        s = (x[rows] @ xt).toarray()
        d = 1.0 - s if metric == "cosine" else np.maximum(sq[rows, None] + sq[None, :] - 2.0 * s, 0.0)
        d[np.arange(len(rows)), rows] = np.inf  # never one's own neighbour
        kth = np.take_along_axis(d, np.argpartition(d, k - 1, axis=1)[:, k - 1 : k], axis=1)
        less, tie = d < kth, d == kth
        need = k - less.sum(axis=1, keepdims=True)
        chosen = less | (tie & (np.cumsum(tie, axis=1) <= need))  # the lowest-index ties fill up to k
        cols = np.nonzero(chosen)[1].reshape(len(rows), k)
        order = np.argsort(np.take_along_axis(d, cols, axis=1), axis=1, kind="stable")
        out[rows] = np.take_along_axis(cols, order, axis=1)
    return out


DENSE_CELLS = 16_000_000  # a dense block of the predictions for the per-row cut: 128 MB of float64


def _block_tops(d: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of each row's ``keep`` largest positive entries of the dense block ``d``,
    and every entry tied with the keep-th (rank_top then breaks the ties by item id, as on the full
    rows). np.partition: the neighbours' mean fills most of the catalog per row, where sorting every
    entry cost 25 ms per user on Complete Journey."""
    mask = d > 0
    if keep < d.shape[1]:
        kth = -np.partition(-d, keep - 1, axis=1)[:, keep - 1]
        mask &= d >= kth[:, None]
    r, c = np.nonzero(mask)
    return r, c, d[r, c]


@register("repeat")
class Repeat:
    kind = "repeat"
    Params = RepeatParams

    def __init__(self, name: str, params: RepeatParams) -> None:
        import scipy.sparse as sp

        self.name = name
        self.params = params
        self.users = pl.Series("user_id", [], dtype=pl.String)
        self.items = pl.Series("item_id", [], dtype=pl.String)
        self.vectors: Any = sp.csr_matrix((0, 0))
        self.neighbors = np.zeros((0, 0), dtype=np.int64)
        self.cycles = _cycles.purchase_cycles(pl.DataFrame(schema=_EMPTY_EVENTS), None)
        self._boost: Any = sp.csr_matrix((0, 0))
        self._nb: Any = sp.csr_matrix((0, 0))
        self._vt: Any = None  # the vectors as items × users (``_by_item``)

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        ev = train.filter(pl.col("event_type").is_in(p.event_types))
        cells = user_vectors(ev, p)
        self.users = cells["user_id"].unique().sort()
        self.items = cells["item_id"].unique().sort()
        self.vectors = self._matrix(cells["user_id"], cells["item_id"], cells["w"].to_numpy())
        k = min(p.neighbors, max(len(self.users) - 1, 0))
        self.neighbors = nearest(self.vectors, k, p.metric, p.chunk_users)
        self.cycles = _cycles.purchase_cycles(
            train,
            items,
            event_types=p.event_types,
            prior=p.prior,
            user_prior=p.user_prior,
            min_sigma=p.min_sigma,
        )
        self._derive()

    def _matrix(self, users: pl.Series, items: pl.Series, values: np.ndarray) -> Any:
        """users × items CSR of ``values`` (duplicates summed in the given order), indices sorted."""
        import scipy.sparse as sp

        shape = (len(self.users), len(self.items))
        rows, cols = positions(users, self.users), positions(items, self.items)
        m = sp.csr_matrix((values.astype(np.float64), (rows, cols)), shape=shape)
        m.sum_duplicates()
        m.sort_indices()
        return m

    def _derive(self) -> None:
        """The neighbour matrix and the cycle boost of each bought (user, item), at the model's as_of."""
        import scipy.sparse as sp

        self._vt = None
        n, k = self.neighbors.shape
        rows = np.repeat(np.arange(n), k)
        self._nb = sp.csr_matrix((np.ones(n * k), (rows, self.neighbors.ravel())), shape=(n, n))
        self._nb.sort_indices()
        due = _cycles.due(self.cycles.user_item, self.cycles.as_of)
        r, c = positions(due["user_id"], self.users), positions(due["item_id"], self.items)
        ok = (r >= 0) & (c >= 0)
        score = due["due_score"].to_numpy()[ok]
        self._boost = sp.csr_matrix((score, (r[ok], c[ok])), shape=self.vectors.shape)

    def _sparse_pred(self, rows: np.ndarray) -> Any:
        """The predictions of the user rows ``rows`` as a sparse matrix: alpha·own vector + (1 − alpha)·the
        neighbours' mean, times (1 + cycle_weight·due_score)."""
        p = self.params
        pred = self.vectors[rows]
        k = self.neighbors.shape[1]
        if k and p.alpha < 1:
            pred = p.alpha * pred + (1 - p.alpha) * (self._nb[rows] @ self.vectors) / k
        if p.cycle_weight > 0:
            pred = pred + p.cycle_weight * pred.multiply(self._boost[rows])
        return pred

    def _top_scores(self, rows: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_sparse_pred``'s entries each row keeps (``_block_tops``), computed in dense blocks of rows:
        the same operations in the same order on every entry (so the same floats), but the neighbours'
        sum as items × users CSR times the dense 0/1 neighbour rows (4-5x faster than the sparse product,
        whose result is nearly dense) and no sparse passes over nearly dense matrices."""
        p = self.params
        k = self.neighbors.shape[1]
        mix = bool(k and p.alpha < 1)
        by_item = self._by_item() if mix else None
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        step = max(1, DENSE_CELLS // max(1, self.vectors.shape[1]))
        for lo in range(0, len(rows), step):
            block = rows[lo : lo + step]
            d = self.vectors[block].toarray()
            if mix:
                near = np.ascontiguousarray((by_item @ self._nb[block].toarray().T).T)
                # scipy's sparse `/ k` multiplies by 1 / k
                d = p.alpha * d + ((1 - p.alpha) * near) * (1 / k)
            if p.cycle_weight > 0:
                d = d + (d * self._boost[block].toarray()) * p.cycle_weight
            r, c, v = _block_tops(d, keep)
            parts.append((r + lo, c, v))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        r, c, v = (np.concatenate(x) for x in zip(*parts, strict=True))
        return r, c, v

    def _by_item(self) -> Any:
        """The user vectors as items × users CSR with sorted indices (each entry's neighbour sum then adds
        the users in index order, as the users × items product does), built once per loaded model."""
        if self._vt is None:
            vt = self.vectors.T.tocsr()
            vt.sort_indices()
            self._vt = vt
        return self._vt

    def _scores(self, rows: np.ndarray, keep: int | None = None) -> pl.DataFrame:
        """(user_id, item_id, score) of the items with a positive score for the user rows ``rows``: every
        one, or each row's best ``keep`` (ties by item id, as rank_top breaks them). The cut is made in
        numpy on dense blocks of rows (``_top_scores``): the neighbours' mean touches tens of thousands of
        items per user, and a frame of them all cost 45 ms per user on Complete Journey."""
        import scipy.sparse as sp

        if keep is not None:
            r, c, v = self._top_scores(rows, keep)
        else:
            coo = sp.coo_matrix(self._sparse_pred(rows))
            r, c, v = coo.row, coo.col, coo.data
        return pl.DataFrame(
            {
                "user_id": self.users.gather(rows[r]),
                "item_id": self.items.gather(c),
                "score": v.astype(np.float64),
            }
        ).filter(pl.col("score") > 0)

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        rows = np.unique(positions(users.unique(), self.users))
        rows = rows[rows >= 0]
        step = self.params.chunk_users
        keep = n + max_excluded(exclude)
        parts = [
            rank_top(self._scores(rows[lo : lo + step], keep), n, exclude) for lo in range(0, len(rows), step)
        ]
        return pl.concat(parts) if parts else pl.DataFrame(schema=RECS_SCHEMA)

    def due(self, users: pl.Series, now: datetime | None = None) -> pl.DataFrame:
        """The users' bought items by due score at ``now`` (default: the end of training): user_id, item_id,
        n_baskets, last_ts, cycle_days, days_since, due_ratio, due_score."""
        ui = self.cycles.user_item.join(
            pl.DataFrame({"user_id": users.cast(pl.String)}), on="user_id", how="semi"
        )
        cols = [
            "user_id",
            "item_id",
            "n_baskets",
            "last_ts",
            "cycle_days",
            "days_since",
            "due_ratio",
            "due_score",
        ]
        out = _cycles.due(ui, self.cycles.as_of if now is None else now).select(cols)
        return out.sort(["user_id", "due_score", "item_id"], descending=[False, True, False])

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        coo = self.vectors.tocoo()
        pl.DataFrame(
            {"user_id": self.users.gather(coo.row), "item_id": self.items.gather(coo.col), "weight": coo.data}
        ).write_parquet(path / "vectors.parquet")
        n, k = self.neighbors.shape
        pl.DataFrame(
            {
                "user_id": self.users.gather(np.repeat(np.arange(n), k)),
                "neighbor_id": self.users.gather(self.neighbors.ravel()),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            }
        ).write_parquet(path / "neighbors.parquet")
        self.cycles.item.write_parquet(path / "cycles_item.parquet")
        self.cycles.user_item.write_parquet(path / "cycles_user_item.parquet")
        (path / "params.json").write_text(json.dumps(self.params.model_dump()))
        state = {"as_of": self.cycles.as_of.isoformat(), "neighbors": k}
        (path / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, RepeatParams.model_validate(params))
        vec = pl.read_parquet(path / "vectors.parquet")
        nb = pl.read_parquet(path / "neighbors.parquet")
        state = json.loads((path / "state.json").read_text())
        gen.cycles = _cycles.Cycles(
            item=pl.read_parquet(path / "cycles_item.parquet"),
            user_item=pl.read_parquet(path / "cycles_user_item.parquet"),
            as_of=datetime.fromisoformat(state["as_of"]),
        )
        gen.users, gen.items = vec["user_id"].unique().sort(), vec["item_id"].unique().sort()
        vec = vec.sort("user_id", "item_id")
        gen.vectors = gen._matrix(vec["user_id"], vec["item_id"], vec["weight"].to_numpy())
        k = int(state["neighbors"])
        nb = nb.sort("user_id", "rank")
        gen.neighbors = positions(nb["neighbor_id"], gen.users).reshape(len(gen.users), k)
        gen._derive()
        return gen
