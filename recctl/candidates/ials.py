"""``ials``: implicit-feedback matrix factorization (Hu, Koren & Volinsky 2008) by alternating least squares.

Each (user, item) cell holds r = the sum of its events' weights; the preference is p = 1 where r > 0 and
the confidence c = 1 + α·r (``scaling = "log"``: c = 1 + α·log(1 + r)). The loss is

    Σ_u,i c_ui (p_ui − x_u·y_i)² + λ (‖X‖² + ‖Y‖²),

minimized by alternately solving every user row, then every item row, each from the normal equations
(YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u. As in the ``implicit`` library, each solve is a few
conjugate-gradient steps warm-started from the previous factors — here run for a whole block of users at
once: the sparse term Yᵀ(C_u − I)Y·v is a gather of the block's nonzeros (y_i·v_u per cell) and a sparse
row sum, so no Python loop touches a user or an item. Every CG step lowers the loss, so it decreases
from iteration to iteration (``loss_history``).

The backend is numpy + scipy.sparse (default) or torch (``use_torch``: multi-threaded, but slower than
numpy on a shared 2-core machine); both start from factors drawn by a numpy Generator from the ``seed``,
so a seed gives the same model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates.base import register
from recctl.candidates.ease import (
    WeightedParams,
    interaction_matrix,
    load_ids,
    matrix_pair_scores,
    recommend,
    related,
    save_ids,
)

if TYPE_CHECKING:
    import scipy.sparse as sp

BLOCK_CELLS = 16_000_000  # gathered factor cells (nonzeros × factors) per CG block (~64 MB float32)


class IALSParams(WeightedParams):
    factors: int = Field(64, ge=1)
    regularization: float = Field(100.0, ge=0)  # λ (sums over all cells: scale with the data)
    alpha: float = Field(10.0, ge=0)  # confidence = 1 + alpha · r
    scaling: Literal["linear", "log"] = "linear"  # r or log(1 + r) in the confidence
    iterations: int = Field(15, ge=0)
    cg_steps: int = Field(3, ge=1)
    init_scale: float = Field(0.01, gt=0)  # initial factors uniform in [0, init_scale)
    use_torch: bool = False  # torch (multi-threaded) or numpy + scipy.sparse (faster on a busy 2-core box)
    track_loss: bool = False  # compute the loss after each iteration into loss_history (a little slower)


class _Ops:
    """The few array operations the CG needs, for numpy (+ scipy.sparse) or torch."""

    def __init__(self, use_torch: bool) -> None:
        self.torch = use_torch

    def asarray(self, a: np.ndarray) -> Any:
        if self.torch:
            import torch

            return torch.from_numpy(np.ascontiguousarray(a))
        return a

    def numpy(self, a: Any) -> np.ndarray:
        return a.numpy() if self.torch else np.asarray(a)

    def rowdot(self, a: Any, b: Any) -> Any:
        return (a * b).sum(1) if self.torch else np.einsum("ij,ij->i", a, b)

    def rowsum(self, indptr: Any, nz_rows: Any, weights: Any, per_nz: Any) -> Any:
        """out[r] = Σ weights[j] · per_nz[j] over the nonzeros j of row r (CSR ``indptr``, ``nz_rows``)."""
        n = len(indptr) - 1
        if self.torch:
            import torch

            out = torch.zeros((n, per_nz.shape[1]), dtype=per_nz.dtype)
            return out.index_add_(0, nz_rows, per_nz * weights[:, None])
        import scipy.sparse as sp

        cols = np.arange(per_nz.shape[0])
        return sp.csr_matrix((weights, cols, indptr), shape=(n, per_nz.shape[0])) @ per_nz

    def where_pos(self, num: Any, den: Any) -> Any:
        """num / den where den > 0, else 0."""
        if self.torch:
            import torch

            return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
        safe = np.where(den > 0, den, 1.0)
        return np.where(den > 0, num / safe, 0.0).astype(num.dtype)


def confidence(r: np.ndarray, alpha: float, scaling: str) -> np.ndarray:
    """c − 1 for each nonzero: α·r, or α·log(1 + r)."""
    return (alpha * (np.log1p(r) if scaling == "log" else r)).astype(r.dtype)


def solve_rows(
    indptr: np.ndarray, indices: np.ndarray, cm1: np.ndarray, x: np.ndarray, y: np.ndarray,
    regularization: float, cg_steps: int, *, use_torch: bool = False,
) -> np.ndarray:  # fmt: skip
    """CG steps on every row u of (YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u 1, warm-started from ``x``.

    The rows' nonzeros are CSR (``indptr``, ``indices``) with ``cm1`` = c − 1 per nonzero. Rows are solved
    together, in blocks of about ``BLOCK_CELLS`` gathered cells; returns the new ``x`` (same dtype).
    """
    ops = _Ops(use_torch)
    yt = ops.asarray(y)
    yty = yt.T @ yt + regularization * ops.asarray(np.eye(y.shape[1], dtype=y.dtype))
    out = np.empty_like(x)
    cost = np.asarray(indptr[1:], dtype=np.int64) * y.shape[1]
    start = 0
    while start < len(indptr) - 1:
        done = int(cost[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(cost, done + BLOCK_CELLS, side="right")))
        lo, hi = int(indptr[start]), int(indptr[end])
        ptr = ops.asarray((indptr[start : end + 1] - lo).astype(np.int64))
        cols = ops.asarray(indices[lo:hi].astype(np.int64))
        nz_rows = ops.asarray(np.repeat(np.arange(end - start), np.diff(indptr[start : end + 1])))
        w = ops.asarray(cm1[lo:hi])
        yg = yt[cols]  # the block's item factors, one row per nonzero

        def matvec(v: Any, w: Any = w, yg: Any = yg, ptr: Any = ptr, nz_rows: Any = nz_rows) -> Any:
            d = ops.rowdot(v[nz_rows], yg) * w  # (c − 1)·(y_i · v_u) per nonzero
            return v @ yty + ops.rowsum(ptr, nz_rows, d, yg)

        xb = ops.asarray(x[start:end].copy())
        rhs = ops.rowsum(ptr, nz_rows, w + 1.0, yg)  # Σ_i c_ui y_i
        r = rhs - matvec(xb)
        p = r
        rs = ops.rowdot(r, r)
        for _ in range(cg_steps):
            ap = matvec(p)
            step = ops.where_pos(rs, ops.rowdot(p, ap))
            xb = xb + step[:, None] * p
            r = r - step[:, None] * ap
            rs_new = ops.rowdot(r, r)
            p = r + ops.where_pos(rs_new, rs)[:, None] * p
            rs = rs_new
        out[start:end] = ops.numpy(xb)
        start = end
    return out


def loss(x_csr: sp.csr_matrix, cm1: np.ndarray, users: np.ndarray, items: np.ndarray, reg: float) -> float:
    """The iALS objective Σ c (p − x·y)² + λ(‖X‖² + ‖Y‖²), in float64."""
    u, i = users.astype(np.float64), items.astype(np.float64)
    rows = np.repeat(np.arange(x_csr.shape[0]), np.diff(x_csr.indptr))
    s = np.einsum("ij,ij->i", u[rows], i[x_csr.indices])
    every = float(np.sum((u.T @ u) * (i.T @ i)))  # Σ over all cells of (x·y)², as if p = 0, c = 1
    nonzero = float(np.sum((cm1 + 1.0) * (1.0 - s) ** 2 - s**2))
    return every + nonzero + reg * float(np.sum(u * u) + np.sum(i * i))


@register("ials")
class IALS:
    kind = "ials"
    Params = IALSParams

    def __init__(self, name: str, params: IALSParams) -> None:
        self.name = name
        self.params = params
        self.users = pl.Series("users", [], dtype=pl.String)
        self.items = pl.Series("items", [], dtype=pl.String)
        self.user_factors = np.zeros((0, params.factors), dtype=np.float32)
        self.item_factors = np.zeros((0, params.factors), dtype=np.float32)
        self.loss_history: list[float] = []

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        users, item_ids, x = interaction_matrix(train, p.event_weights, p.other_weight, p.half_life_days)
        cm1 = confidence(x.data, p.alpha, p.scaling)
        xt = x.T.tocsr()  # items × users; its data order differs, so recompute c − 1 for it
        cm1_t = confidence(xt.data, p.alpha, p.scaling)
        rng = np.random.default_rng(seed)
        uf = rng.random((x.shape[0], p.factors), dtype=np.float32) * np.float32(p.init_scale)
        itf = rng.random((x.shape[1], p.factors), dtype=np.float32) * np.float32(p.init_scale)
        history = []
        reg, steps, use_torch = p.regularization, p.cg_steps, p.use_torch
        for _ in range(p.iterations):
            uf = solve_rows(x.indptr, x.indices, cm1, uf, itf, reg, steps, use_torch=use_torch)
            itf = solve_rows(xt.indptr, xt.indices, cm1_t, itf, uf, reg, steps, use_torch=use_torch)
            if p.track_loss:
                history.append(loss(x, cm1, uf, itf, p.regularization))
        self.users, self.items = users.alias("users"), item_ids.alias("items")
        self.user_factors, self.item_factors, self.loss_history = uf, itf, history

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        """Dot products accumulated in float64: a float32 GEMM's rounding depends on how many rows it is
        given (OpenBLAS picks other kernels on some CPUs), so a user's scores, and near-tied lists, would
        depend on the block of users asked together; the float64 sums differ by ~1e-16 at most, which
        almost never crosses a float32 rounding boundary, so the stored float32 scores agree."""
        uf, itf = self.user_factors, self.item_factors.astype(np.float64)
        return recommend(
            users, n, exclude, self.users, self.items, lambda rows: uf[rows].astype(np.float64) @ itf.T
        )

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """The items whose factors are closest in cosine (accumulated in float64, as in ``for_users``)."""
        unit = self._unit().astype(np.float64)
        return related(items, n, self.items, lambda rows: unit[rows] @ unit.T)

    def pair_scores(self, anchors: pl.Series, items: pl.Series) -> np.ndarray:
        unit = self._unit()
        return matrix_pair_scores(
            anchors, items, self.items, lambda a, b: np.einsum("ij,ij->i", unit[a], unit[b])
        )

    def _unit(self) -> np.ndarray:
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        return self.item_factors / np.where(norms > 0, norms, 1.0).astype(np.float32)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_ids(path, users=self.users, items=self.items)
        np.save(path / "user_factors.npy", self.user_factors, allow_pickle=False)
        np.save(path / "item_factors.npy", self.item_factors, allow_pickle=False)
        state = {"params": self.params.model_dump(), "loss_history": self.loss_history}
        (path / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, IALSParams.model_validate(params))
        gen.users, gen.items = load_ids(path, "users"), load_ids(path, "items")
        gen.user_factors = np.load(path / "user_factors.npy", allow_pickle=False)
        gen.item_factors = np.load(path / "item_factors.npy", allow_pickle=False)
        gen.loss_history = list(json.loads((path / "state.json").read_text())["loss_history"])
        return gen
