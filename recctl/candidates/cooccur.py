"""``cooccur``: item-to-item co-occurrence (next-item, viewed-together, bought-together), normalized.

Three ways to count a pair (``mode``, which is also the relation ``for_items`` serves, see ``relation``):

- ``sequential`` (relation ``next-item``): within each user's (or, ``sequence_by="session"``, session's)
  ordered history, item a at position k and item b at position k + d (d <= ``window``, and at most
  ``window_minutes`` apart when set) count ``distance_decay ** (d - 1)`` for a → b and ``backward_weight``
  times that for b → a. Consecutive repeats of an item (view, cart, purchase of it) are merged first.
- ``session`` (``viewed-together``): every pair of items in the same session.
- ``basket`` (``bought-together``): every pair of items in the same order; purchases without an order id
  are grouped per user, a new group starting after a gap of more than ``gap_minutes`` (sessions likewise).

A pair's count is weighted by its events' type weights (``event_weights``; geometric mean in sequential
mode, product of the per-group maxima otherwise) and, with ``half_life_days``, halved for every half-life
before the end of training. Counts below ``min_count`` are dropped; then, with n the items' weighted
frequencies, s(a, b) = c(a, b) / ((n_a ** α + ``shrinkage``) · n_b ** (β + ``target_pop_power``)), where
(α, β) is (1, 0) for ``conditional`` (P(b | a)), (½, ½) for ``cosine`` and (1, 1) for ``lift`` (times the
total N). ``two_hop`` adds that share of the two-step paths a → x → b (through the 50 best x of a). Each
item keeps its ``neighbors`` best.

A user's scores sum the rows of their last ``history`` distinct items, the k-th most recent weighted
``history_decay ** (k - 1)``. ``popularity_prior`` adds that share of the item's popularity (distinct users,
time-decayed like the counts, at most 1) to scores scaled to a maximum of 1 per user; it also fills short
lists. Users without history get no rows.

Defaults were tuned on the Amazon Beauty / Sports leave-one-out validation targets (second-to-last item).
For grocery baskets (Complete Journey) use ``mode="basket"``, a long history (``history=100``,
``history_decay=0.98``), ``half_life_days=14`` and ``popularity_prior=1``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates import base
from recctl.candidates.base import RECS_SCHEMA, Params, in_user_blocks, max_excluded, rank_top, register
from recctl.data import by_key, rows_of

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

RELATIONS = {"sequential": "next-item", "session": "viewed-together", "basket": "bought-together"}
DEFAULT_WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0, "rating": 1.0}
HOP_NEIGHBORS = 50  # neighbours per item kept for the two-step paths
TOP_CELLS = 4_000_000  # nonzeros ranked at once by keep_top (~0.3 GB of polars frame)
HOP_CELLS = 8_000_000  # partial products of the two-step paths summed per block of items
RELATED_SCHEMA = {"item_id": pl.String, "related_id": pl.String, "score": pl.Float64, "rank": pl.Int32}


class CooccurParams(Params):
    mode: Literal["sequential", "session", "basket"] = "sequential"
    sequence_by: Literal["user", "session"] = "user"  # sequential: whose ordered history
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    other_weight: float = Field(1.0, ge=0)  # event types not in event_weights (0 drops them)
    window: int = Field(5, ge=1)  # sequential: how many following items count
    distance_decay: float = Field(0.7, gt=0, le=1)  # weight of the item d ahead: decay ** (d - 1)
    backward_weight: float = Field(0.25, ge=0)  # b → a counts this much of a → b (1 = symmetric)
    window_minutes: float = Field(0.0, ge=0)  # sequential: ignore pairs further apart (0 = no limit)
    gap_minutes: float = Field(30.0, gt=0)  # session / basket: grouping of events without an id
    normalization: Literal["cosine", "lift", "conditional"] = "conditional"
    target_pop_power: float = 0.0
    half_life_days: float = Field(0.0, ge=0)  # 0 = no time decay
    min_count: float = Field(0.0, ge=0)
    shrinkage: float = Field(30.0, ge=0)  # added to the normalizing denominator (damps rare items)
    two_hop: float = Field(1.0, ge=0)  # weight of two-step paths a → x → b added to a → b
    neighbors: int = Field(200, ge=1)
    history: int = Field(10, ge=1)
    history_decay: float = Field(0.5, gt=0, le=1)
    popularity_prior: float = Field(0.0, ge=0)


ITEM_COLUMNS = ("user_id", "item_id", "event_type", "ts", "session_id", "order_id")  # what item models read


def weighted_events(
    train: pl.DataFrame, weights: dict[str, float], other: float, half_life_days: float,
    columns: tuple[str, ...] | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Events with a positive type weight ``w``, a time-decay factor ``dec`` and their position ``pos``;
    only ``columns`` of ``train`` (all when None): the filter copies what it keeps, 10 M events of every
    column of the interaction frame are gigabytes."""
    if columns is not None:
        train = train.select(c for c in columns if c in train.columns)
    end = train["ts"].max() if train.height else None
    type_w = pl.col("event_type").replace_strict(weights, default=other, return_dtype=pl.Float64)
    if half_life_days > 0 and end is not None:
        age_days = (pl.lit(end) - pl.col("ts")).dt.total_seconds(fractional=True) / 86400.0
        dec = (0.5 ** (age_days / half_life_days)).cast(pl.Float64)
    else:
        dec = pl.lit(1.0, pl.Float64)
    return (
        train.with_row_index("pos").with_columns(w=type_w.fill_null(other), dec=dec).filter(pl.col("w") > 0)
    )


def user_cells(ev: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, item) of ``ev``: the most recent (largest) time decay ``dec``, the position of
    the last event ``last`` and, when ``ev`` has an ``hdec`` column (a time decay for the profile), its
    value at that event (``hdec``, else 1). One group-by serves the popularity and the histories."""
    hdec = pl.col("hdec").max() if "hdec" in ev.columns else pl.lit(1.0, pl.Float64)
    return ev.group_by("user_id", "idx").agg(pl.col("dec").max(), last=pl.col("pos").max(), hdec=hdec)


def user_histories(cells: pl.DataFrame, history: int, decay: float) -> pl.DataFrame:
    """Each user's last ``history`` distinct items (``cells`` from ``user_cells``): user_id, idx, weight =
    decay ** (recency rank - 1) times the profile's time decay at the user's last event with the item."""
    return (
        cells.with_columns(k=pl.col("last").rank("ordinal", descending=True).over("user_id"))
        .filter(pl.col("k") <= history)
        .select(
            "user_id",
            "idx",
            weight=pl.lit(decay, pl.Float64) ** (pl.col("k") - 1).cast(pl.Float64) * pl.col("hdec"),
        )
        .sort("user_id", "idx")
    )


def top_per_row(mat: csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``n`` largest positive entries: row, col, value and 0-based rank (ties by column)."""
    coo = mat.tocoo()
    top = (
        pl.DataFrame({"r": coo.row, "c": coo.col, "v": coo.data.astype(np.float64)})
        .filter(pl.col("v") > 0)
        .group_by("r")
        .agg(pl.col("c", "v").top_k_by(["v", "c"], k=n, reverse=[False, True]))
        .explode("c", "v")
        .sort(["r", "v", "c"], descending=[False, True, False])
        .with_columns(k=pl.int_range(pl.len()).over("r"))
    )
    return (
        top["r"].to_numpy().astype(np.int64),
        top["c"].to_numpy().astype(np.int64),
        top["v"].to_numpy(),
        top["k"].to_numpy().astype(np.int64),
    )


def row_blocks(work: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed ``work`` (per row) stays under ``limit`` (a row above it
    alone is one range): the handful of blocks a large sparse step runs in."""
    if len(work) == 0:
        return []
    block_of = np.floor(np.cumsum(work, dtype=np.float64) / max(limit, 1)).astype(np.int64)
    cuts = np.flatnonzero(np.diff(block_of)) + 1
    bounds = [0, *cuts.tolist(), len(work)]
    return list(itertools.pairwise(bounds))


def keep_top(mat: csr_matrix, n: int) -> csr_matrix:
    """The matrix with only each row's ``n`` largest positive entries, ranked in blocks of rows of at most
    ``TOP_CELLS`` nonzeros (the ranking frame of 76 M nonzeros at once was 4 GB)."""
    from scipy.sparse import csr_matrix, vstack

    mat = csr_matrix(mat)
    parts = []
    for lo, hi in row_blocks(np.diff(mat.indptr), TOP_CELLS):
        row, col, val, _ = top_per_row(mat[lo:hi], n)
        parts.append(csr_matrix((val, (row, col)), shape=(hi - lo, mat.shape[1])))
    if len(parts) == 1:
        return parts[0]
    return csr_matrix(vstack(parts, format="csr")) if parts else csr_matrix(mat.shape)


class ItemModel:
    """What the item-to-item generators share: the item index (sorted ids), the similarity (items × items,
    scipy CSR), each user's weighted recent items, the item popularity, and scoring, saving and loading."""

    Params: ClassVar[type[base.Params]]
    params: Any  # the subclass's Params, with at least ``popularity_prior``

    def __init__(self, name: str, params: Any) -> None:
        from scipy.sparse import csr_matrix

        self.name = name
        self.params = params
        self.set_items(pl.Series("item_id", [], dtype=pl.String))
        self.sim = csr_matrix((0, 0))
        self.history = pl.DataFrame(schema={"user_id": pl.String, "idx": pl.UInt32, "weight": pl.Float64})
        self.popularity = np.zeros(0)

    def set_items(self, item_ids: pl.Series) -> None:
        self.item_ids = item_ids.rename("item_id")
        self.index = pl.DataFrame({"item_id": self.item_ids}).with_row_index("idx")

    def fit_common(self, ev: pl.DataFrame, history: int, decay: float) -> pl.DataFrame:
        """Index the items of ``ev``; store histories and popularity; ``ev`` with its ``idx`` column."""
        self.set_items(ev["item_id"].unique().sort())
        ev = ev.join(self.index, on="item_id", maintain_order="left")
        cells = user_cells(ev)
        # distinct users per item, each counting its most recent (time-decayed) interaction (summed in a
        # fixed order: the group-by's is not)
        pairs = cells.select("idx", "user_id", "dec").sort("idx", "user_id")
        users = np.bincount(
            pairs["idx"].to_numpy(), weights=pairs["dec"].to_numpy(), minlength=len(self.item_ids)
        )
        del pairs
        self.popularity = users / max(1e-12, float(users.max(initial=0)))
        self.history = by_key(user_histories(cells, history, decay), "user_id")
        return ev

    @in_user_blocks
    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        """History rows times the similarity (+ prior × popularity), excluded items removed, best ``n``."""
        from scipy.sparse import csr_matrix, diags

        prior = float(self.params.popularity_prior)
        q = pl.DataFrame({"user_id": users.unique().sort()}).with_row_index("row")
        # the users' rows of the (user-sorted) histories, in (row, item) order whatever the join returns
        h = q.join(rows_of(self.history, "user_id", q["user_id"]), on="user_id").sort("row", "idx")
        if h.height == 0 or self.item_ids.len() == 0:
            return rank_top(
                pl.DataFrame(schema={k: RECS_SCHEMA[k] for k in ("user_id", "item_id", "score")}), n, None
            )
        rows, cols = h["row"].to_numpy().astype(np.int64), h["idx"].to_numpy().astype(np.int64)
        profile = csr_matrix((h["weight"].to_numpy(), (rows, cols)), shape=(q.height, self.item_ids.len()))
        scores = csr_matrix(profile @ self.sim)
        if prior > 0:
            # the prior reaches every item, but only the n + (most excluded) most popular can make a list
            top = np.argsort(-self.popularity, kind="stable")[: n + max_excluded(exclude)]
            has = np.unique(rows)
            fill = csr_matrix(
                (np.ones(len(has) * len(top)), (np.repeat(has, len(top)), np.tile(top, len(has)))),
                shape=scores.shape,
            )
            support = ((scores != 0).astype(np.float64) + fill).sign()
            # each user's scores scaled to a maximum of 1: the prior's weight does not depend on the scale
            best = scores.max(axis=1).toarray().ravel()
            scale = np.divide(1.0, best, out=np.zeros_like(best), where=best > 0)
            scores = csr_matrix(diags(scale) @ scores + support.multiply(prior * self.popularity[None, :]))
        if exclude is not None and exclude.height:
            ex = exclude.select("user_id", "item_id").join(q, on="user_id").join(self.index, on="item_id")
            if ex.height:
                mask = csr_matrix(
                    (np.ones(ex.height), (ex["row"].to_numpy(), ex["idx"].to_numpy())), shape=scores.shape
                ).sign()
                scores = csr_matrix(scores - scores.multiply(mask))
        r, c, v, _ = top_per_row(scores, n)
        out = pl.DataFrame(
            {"user_id": q["user_id"].gather(r), "item_id": self.item_ids.gather(c), "score": v}
        )
        return rank_top(out, n, None)

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """Each known item's ``n`` best other items (item_id, related_id, score, rank); unknown: no rows."""
        q = pl.DataFrame({"item_id": items.unique().sort()}).join(self.index, on="item_id")
        if q.height == 0:
            return pl.DataFrame(schema=RELATED_SCHEMA)
        r, c, v, k = top_per_row(self.sim[q["idx"].to_numpy()], n)
        return pl.DataFrame(
            {
                "item_id": q["item_id"].gather(r),
                "related_id": self.item_ids.gather(c),
                "score": v,
                "rank": k + 1,
            },
            schema=RELATED_SCHEMA,
        ).filter(pl.col("item_id") != pl.col("related_id"))

    def save(self, path: Path) -> None:
        """Plain data: items.parquet (ids, popularity), history.parquet, similarity.npz, params.json."""
        from scipy.sparse import save_npz

        path.mkdir(parents=True, exist_ok=True)
        items = pl.DataFrame({"item_id": self.item_ids, "popularity": self.popularity})
        items.write_parquet(path / "items.parquet")
        self.history.write_parquet(path / "history.parquet")
        save_npz(path / "similarity.npz", self.sim.tocsr(), compressed=True)
        (path / "params.json").write_text(json.dumps(self.params.model_dump()))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        from scipy.sparse import csr_matrix, load_npz

        gen = cls(name, cls.Params.model_validate(params))
        items = pl.read_parquet(path / "items.parquet")
        gen.set_items(items["item_id"])
        gen.popularity = items["popularity"].to_numpy().astype(np.float64)
        gen.history = by_key(pl.read_parquet(path / "history.parquet"), "user_id")
        gen.sim = csr_matrix(load_npz(path / "similarity.npz"))
        return gen


@register("cooccur")
class Cooccur(ItemModel):
    kind = "cooccur"
    Params = CooccurParams
    params: CooccurParams

    @property
    def relation(self) -> str:
        """The strategy name of what ``for_items`` returns (next-item, viewed-together, bought-together)."""
        return RELATIONS[self.params.mode]

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        ev = weighted_events(train, p.event_weights, p.other_weight, p.half_life_days, ITEM_COLUMNS)
        ev = self.fit_common(ev, p.history, p.history_decay)
        # the events die before the normalization and the counts inside it (no frame of fit holds them):
        # at 10 M events each is gigabytes
        held = [self._sequential(ev) if p.mode == "sequential" else self._grouped(ev)]
        del ev
        self.sim = self._normalize(held)

    def _sequential(self, ev: pl.DataFrame) -> tuple[csr_matrix, np.ndarray]:
        from scipy.sparse import coo_matrix, csr_matrix

        p = self.params
        if p.sequence_by == "user":
            group = pl.col("user_id").rank("dense")
        else:
            user = pl.lit("u:") + pl.col("user_id")
            group = pl.coalesce(pl.lit("s:") + pl.col("session_id"), user).rank("dense")
        # only the numbers travel through the sort (the ids are gigabytes at 10 M events)
        ev = ev.select(g=group, pos="pos", idx="idx", w="w", dec="dec", ts="ts").sort("g", "pos")
        # merge consecutive repeats of an item within a group (view, cart, purchase of one item)
        new_run = (pl.col("idx") != pl.col("idx").shift(1)) | (pl.col("g") != pl.col("g").shift(1))
        runs = (
            ev.with_columns(run=new_run.fill_null(True).cum_sum())
            .group_by("run", maintain_order=True)
            .agg(
                pl.col("g").first(),
                pl.col("idx").first(),
                pl.col("w").max(),
                pl.col("dec").max(),
                t=pl.col("ts").last().dt.epoch("ms"),
                t0=pl.col("ts").first().dt.epoch("ms"),
            )
        )
        del ev
        g, idx = runs["g"].to_numpy(), runs["idx"].to_numpy().astype(np.int32)
        w, dec = runs["w"].to_numpy(), runs["dec"].to_numpy()
        t, t0 = runs["t"].to_numpy(), runs["t0"].to_numpy()
        del runs
        n = len(self.item_ids)
        freq = np.bincount(idx, weights=w * dec, minlength=n)
        # one offset at a time, its pairs summed into the matrix: the pairs of all offsets at once (and
        # their COO → CSR copy) were the peak of the fit (12 GB at 10 M events)
        counts = csr_matrix((n, n))
        for d in range(1, p.window + 1):  # a handful of offsets, each fully vectorized
            same = g[:-d] == g[d:]
            if p.window_minutes > 0:
                same &= (t0[d:] - t[:-d]) <= p.window_minutes * 60_000
            a, b = idx[:-d][same], idx[d:][same]
            v = (np.sqrt(w[:-d] * w[d:]) * dec[d:])[same] * p.distance_decay ** (d - 1)
            step = coo_matrix(
                (
                    np.concatenate([v, v * p.backward_weight]),
                    (np.concatenate([a, b]), np.concatenate([b, a])),
                ),
                shape=(n, n),
            ).tocsr()
            del a, b, v, same
            counts = step if counts.nnz == 0 else csr_matrix(counts + step)
        return counts, freq

    def _grouped(self, ev: pl.DataFrame) -> tuple[csr_matrix, np.ndarray]:
        from scipy.sparse import csr_matrix

        p = self.params
        gap = pl.duration(milliseconds=int(p.gap_minutes * 60_000))
        if p.mode == "basket":
            ev = ev.filter(pl.col("order_id").is_not_null() | (pl.col("event_type") == "purchase"))
            explicit = pl.col("order_id")
        else:
            explicit = pl.col("session_id")
        # events without an id: per user, a new group after a gap
        implicit = pl.format(
            "{}#{}", "user_id", ((pl.col("ts").diff() > gap).fill_null(True).cum_sum().over("user_id"))
        )
        ev = ev.sort("user_id", "pos").with_columns(
            g=pl.when(explicit.is_not_null()).then(pl.lit("e:") + explicit).otherwise(pl.lit("i:") + implicit)
        )
        cells = ev.group_by("g", "idx").agg(pl.col("w").max(), pl.col("dec").max()).sort("g", "idx")
        cells = cells.with_columns(code=pl.col("g").rank("dense") - 1)
        values = cells["w"].to_numpy() * np.sqrt(cells["dec"].to_numpy())
        b = csr_matrix(
            (values, (cells["code"].to_numpy(), cells["idx"].to_numpy())),
            shape=(cells["g"].n_unique(), len(self.item_ids)),
        )
        counts = csr_matrix(b.T @ b)
        freq = counts.diagonal().astype(np.float64)
        counts.setdiag(0)
        return counts, freq

    def _normalize(self, held: list[tuple[csr_matrix, np.ndarray]]) -> csr_matrix:
        """The normalized similarity with the two-step paths, each item's ``neighbors`` best kept, from
        the (counts, item frequencies) that ``held`` hands over (taken out of it: freed once used)."""
        from scipy.sparse import csr_matrix, diags, vstack

        p = self.params
        counts, freq = held.pop()
        counts = csr_matrix(counts)
        counts.setdiag(0)
        if p.min_count > 0:
            counts.data[counts.data < p.min_count] = 0
        counts.eliminate_zeros()
        f = np.maximum(freq, 1e-12)
        a, b = {"cosine": (0.5, 0.5), "lift": (1.0, 1.0), "conditional": (1.0, 0.0)}[p.normalization]
        b += p.target_pop_power
        scale = float(f.sum()) if p.normalization == "lift" else 1.0
        sim = csr_matrix(diags(scale / (f**a + p.shrinkage)) @ counts @ diags(1.0 / f**b))
        del counts
        if p.two_hop <= 0:
            return keep_top(sim, p.neighbors)
        first = keep_top(sim, min(p.neighbors, HOP_NEIGHBORS))
        # the paths a → x → b, added and cut to the best neighbours per block of items: all at once, the
        # sum held 76 M nonzeros on Complete Journey (5.8 GB at the peak); each row is computed as before
        links = csr_matrix((np.ones(first.nnz), first.indices, first.indptr), shape=first.shape)
        work = np.diff(sim.indptr) + np.asarray(links @ np.diff(first.indptr).astype(np.float64)).ravel()
        parts = []
        for lo, hi in row_blocks(work, HOP_CELLS):
            block = csr_matrix(sim[lo:hi] + p.two_hop * (first[lo:hi] @ first))
            block.setdiag(0, k=lo)  # item i sits at column lo + its row in the block
            block.eliminate_zeros()
            parts.append(keep_top(block, p.neighbors))
        shape = sim.shape
        del sim, first, links
        if not parts:
            return csr_matrix(shape)
        return parts[0] if len(parts) == 1 else csr_matrix(vstack(parts, format="csr"))
