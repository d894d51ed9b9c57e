"""Diversity: caps per brand and category within the top of each list, and optional MMR re-ranking.

Both work on the candidates of :func:`recctl.rules.apply` sorted by customer (``_r_u``) and score
(:func:`order_by_score`), with the item codes of :func:`item_codes`, and give the new order as a
permutation of the rows plus an explanation code per row (:func:`reorder`). Per customer the work is
sequential by nature (each choice depends on the earlier ones), so it runs in numpy over all customers
at once: step ``j`` looks at every customer's ``j``-th item (caps) or picks every customer's next item
(MMR, in a customers × list-length grid), and stops as soon as every window is full.

**Caps** (``max_per_brand``, ``max_per_category``; 0 = off): walking a list in its order, an item is taken
into the window when fewer than the cap of its brand (and of its category, compared on the first
``category_depth`` levels of the path; 0 = the whole path) were taken before it; the window holds
``window`` items (``[rules.diversity] window``, else the final k, else the whole list). Items over a cap
are **moved down, never dropped**: they follow the window in their original order, so when a list has
too few other items they still fill it (a list of only one brand stays as it was), and when k cuts the
list they are what goes. Items without a brand (or category) are not counted against that cap. An item
is labelled "diversity: moved down (brand cap 3)" when it ends up lower than before.

**MMR** (``mmr = true``): the window is filled greedily with the item maximising
``λ·relevance − (1 − λ)·max similarity to the items already chosen``, where relevance is the score scaled
to [0, 1] within the user's list and similarity = ``mmr_brand_weight``·(same brand) + (1 −
``mmr_brand_weight``)·(shared leading category levels / the longer path's levels). λ = 1 is the input
order. The rest of the list follows in its order. MMR runs before the caps, so the caps hold in the end.
Items moved by MMR are labelled "diversity: mmr". Its cost is users × list length × window, chunked
so that memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from recctl.config import DiversityConfig
from recctl.rules.filters import SEP

IntArr = npt.NDArray[np.int64]
_GRID = 2_000_000  # cells of one grid (customers × longest list) in the sort and MMR
_MAX_LEVELS = 8
MMR = 4


def enabled(d: DiversityConfig) -> bool:
    return bool(d.max_per_brand or d.max_per_category or d.mmr)


def item_codes(d: DiversityConfig) -> dict[str, pl.Expr]:
    """Integer codes per catalog item (over ``_r_brand``, ``_r_cat``; -1 = unknown): ``_r_bid`` brand,
    ``_r_cid`` category at the cap's depth and, for MMR, ``_r_lv0``... one code per leading path level
    (up to 8) plus ``_r_depth``."""
    levels = pl.col("_r_cat").str.split(SEP)
    key = levels.list.head(d.category_depth).list.join(SEP) if d.category_depth else pl.col("_r_cat")

    def code(e: pl.Expr) -> pl.Expr:
        return (e.rank("dense").cast(pl.Int64) - 1).fill_null(-1)

    out = {"_r_bid": code(pl.col("_r_brand")), "_r_cid": code(key)}
    if d.mmr:
        depth = levels.list.len().fill_null(0).clip(0, _MAX_LEVELS)
        out["_r_depth"] = depth.cast(pl.Int64)
        for j in range(_MAX_LEVELS):
            out[f"_r_lv{j}"] = code(pl.when(depth > j).then(levels.list.head(j + 1).list.join(SEP)))
    return out


def reorder(
    frame: pl.DataFrame, d: DiversityConfig, window: int | None
) -> tuple[IntArr, npt.NDArray[np.int8]]:
    """The new order of ``frame``'s rows (sorted by customer ``_r_u``, then order; a permutation of row
    indices) and per row 0 = untouched or a code of :func:`labels` (1 brand cap, 2 category cap, 3 both,
    4 moved by MMR; caps win)."""
    n = frame.height
    perm = np.arange(n, dtype=np.int64)
    why = np.zeros(n, dtype=np.int8)
    if n == 0 or not enabled(d):
        return perm, why
    uid = frame["_r_u"].rle_id().to_numpy().astype(np.int64)
    lens = np.bincount(uid).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    wins = lens if window is None else np.minimum(lens, window)
    if d.mmr:
        perm = _mmr(frame, d, starts, lens, wins)
        why[perm] = np.where(perm != np.arange(n), MMR, 0)
    if d.max_per_brand or d.max_per_category:
        bid = frame["_r_bid"].fill_null(-1).to_numpy()[perm]
        cid = frame["_r_cid"].fill_null(-1).to_numpy()[perm]
        step, deferred = _caps(uid, starts, lens, wins, bid, cid, d.max_per_brand, d.max_per_category)
        why[perm] = np.where(
            deferred > 0, deferred, why[perm]
        )  # non-zero only for rows now lower than before
        perm = perm[step]
    return perm, why


def labels(d: DiversityConfig) -> dict[int, str]:
    """The explanation of each ``_r_div`` code."""
    caps = {1: f"brand cap {d.max_per_brand}", 2: f"category cap {d.max_per_category}"}
    caps[3] = f"{caps[1]}, {caps[2]}"
    return {MMR: "diversity: mmr", **{c: f"diversity: moved down ({text})" for c, text in caps.items()}}


def _caps(
    uid: IntArr, starts: IntArr, lens: IntArr, wins: IntArr, bid: IntArr, cid: IntArr, cap_b: int, cap_c: int
) -> tuple[IntArr, npt.NDArray[np.int8]]:
    """The greedy: (permutation of the rows, per row of the input 1/2/3 when moved down by the brand /
    category / both caps, else 0)."""
    n = uid.shape[0]
    pairs_b = _pairs(uid, bid, cap_b)
    pairs_c = _pairs(uid, cid, cap_c)
    count_b = np.zeros(n + 1, dtype=np.int64)  # slot n: items without a brand, never capped
    count_c = np.zeros(n + 1, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    why = np.zeros(n, dtype=np.int8)
    n_taken = np.zeros(lens.shape[0], dtype=np.int64)
    for j in range(int(lens.max())):
        users = np.flatnonzero((lens > j) & (n_taken < wins))
        if users.size == 0:
            break
        rows = starts[users] + j
        over_b = (
            (count_b[pairs_b[rows]] >= cap_b) & (pairs_b[rows] < n) if cap_b else np.zeros(rows.size, bool)
        )
        over_c = (
            (count_c[pairs_c[rows]] >= cap_c) & (pairs_c[rows] < n) if cap_c else np.zeros(rows.size, bool)
        )
        ok = ~(over_b | over_c)
        taken[rows[ok]] = True
        n_taken[users[ok]] += 1
        count_b[pairs_b[rows[ok]]] += 1
        count_c[pairs_c[rows[ok]]] += 1
        why[rows[~ok]] = over_b[~ok] * 1 + over_c[~ok] * 2
    pos = np.arange(n, dtype=np.int64) - starts[uid]
    step = np.lexsort((pos, ~taken, uid)).astype(np.int64)  # window first, then the rest in order
    moved = np.zeros(n, dtype=bool)
    moved[step] = np.arange(n) > step  # new position after the old one
    return step, np.where(moved, why, 0).astype(np.int8)


def _pairs(uid: IntArr, code: IntArr, cap: int) -> IntArr:
    """A dense id per (user, code) pair; ``len(uid)`` for unknown codes or when the cap is off."""
    n = uid.shape[0]
    if not cap:
        return np.full(n, n, dtype=np.int64)
    known = code >= 0
    out = np.full(n, n, dtype=np.int64)
    key = uid[known] * (int(code.max()) + 1) + code[known]
    out[known] = np.unique(key, return_inverse=True)[1]
    return out


def order_by_score(u: IntArr, score: npt.NDArray[np.float64]) -> IntArr:
    """The permutation that sorts rows by customer code ``u``, then score descending (NaN last), ties in
    row order. Sorting each customer's short list in a (customers × list length) grid is several times
    faster than one sort of all rows."""
    n = u.shape[0]
    by_u = np.argsort(u, kind="stable")
    su = u[by_u]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]]) if n else np.zeros(0, dtype=np.int64)
    lens = np.diff(np.r_[starts, n])
    key = -score[by_u]
    key[np.isnan(key)] = np.inf
    out = np.empty(n, dtype=np.int64)
    for chunk, width in _grid_chunks(lens):
        cols = np.arange(width)
        valid = cols[None, :] < lens[chunk, None]
        idx = np.where(valid, starts[chunk, None] + cols[None, :], 0)
        grid = np.where(valid, key[idx], np.inf)
        srt = np.take_along_axis(idx, np.argsort(grid, axis=1, kind="stable"), axis=1)
        out[idx[valid]] = srt[valid]  # padding sorts last, so the valid cells come first in each row
    return by_u[out]


def _grid_chunks(lens: IntArr) -> list[tuple[IntArr, int]]:
    """Consecutive groups of customers (their indices) and the longest list in each, so that a grid of
    customers × longest list stays within ``_GRID`` cells."""
    out = []
    at = 0
    while at < lens.size:
        width, size = int(lens[at]), 1
        while at + size < lens.size and (size + 1) * max(width, int(lens[at + size])) <= _GRID:
            width = max(width, int(lens[at + size]))
            size += 1
        out.append((np.arange(at, at + size), width))
        at += size
    return out


def _mmr(frame: pl.DataFrame, d: DiversityConfig, starts: IntArr, lens: IntArr, wins: IntArr) -> IntArr:
    """The MMR permutation of the rows (users stay in place, each user's rows reordered)."""
    n = frame.height
    own = -1 - np.arange(n, dtype=np.int64)  # a code of its own for an unknown brand / missing level
    score = frame["score"].cast(pl.Float64).fill_null(float("-inf")).to_numpy()
    bid = frame["_r_bid"].fill_null(-1).to_numpy().astype(np.int64)
    bid = np.where(bid >= 0, bid, own)
    n_lv = int(frame["_r_depth"].fill_null(0).to_numpy().max(initial=0))  # deeper level columns: all unknown
    lv = frame.select(pl.col(f"_r_lv{j}").fill_null(-1) for j in range(n_lv)).to_numpy().astype(np.int64)
    lv = lv.reshape(n, n_lv)
    lv = np.where(lv >= 0, lv, own[:, None])
    depth = frame["_r_depth"].fill_null(0).to_numpy().astype(np.float32)
    lam, wb = np.float32(d.mmr_lambda), np.float32(d.mmr_brand_weight)
    perm = np.arange(n, dtype=np.int64)
    users = np.flatnonzero(wins > 1)
    for part, width in _grid_chunks(lens[users]):
        chunk = users[part]
        rows = np.arange(chunk.size)
        cols = np.arange(width)
        valid = cols[None, :] < lens[chunk, None]
        idx = np.where(valid, starts[chunk, None] + cols[None, :], 0)
        s = score[idx]
        finite = valid & np.isfinite(s)
        lo, hi = np.where(finite, s, np.inf).min(axis=1), np.where(finite, s, -np.inf).max(axis=1)
        span = np.where(hi > lo, hi - lo, 1.0)
        lo = np.where(np.isfinite(lo), lo, 0.0)
        rel = np.where(finite, (s - lo[:, None]) / span[:, None], -1.0)  # null scores last
        gain = np.where(valid, lam * rel, -np.inf).astype(np.float32)  # -inf once taken
        b, lvs = bid[idx], lv[idx]
        dep = np.maximum(depth[idx], np.float32(1))
        maxsim = np.zeros(idx.shape, dtype=np.float32)
        sim = np.empty_like(maxsim)
        rank = np.full(idx.shape, np.inf)
        for t in range(int(wins[chunk].max())):
            live = rows[t < wins[chunk]]
            j = (gain - (1 - lam) * maxsim).argmax(axis=1)
            gain[live, j[live]] = -np.inf
            rank[live, j[live]] = t
            # similarity to the item just chosen: same brand, shared leading category levels / longer path
            np.equal(lvs, lvs[rows, j][:, None, :]).sum(axis=2, out=sim, dtype=np.float32)
            sim /= np.maximum(dep, dep[rows, j][:, None])
            sim *= 1 - wb
            sim += wb * (b == b[rows, j][:, None])
            np.maximum(maxsim, sim, out=maxsim)
        key = np.where(np.isfinite(rank), rank, width + cols[None, :])
        key = np.where(valid, key, np.inf)
        order = np.take_along_axis(idx, np.argsort(key, axis=1, kind="stable"), axis=1)
        perm[idx[valid]] = order[valid]
    return perm
