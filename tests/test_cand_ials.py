"""``ials`` under the shared contract, and its known answers (CG = direct solve, loss, block structure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recctl.candidates import ials
from recctl.candidates.base import build
from tests.contract import GeneratorContract, PairScorerContract


class TestIALS(PairScorerContract):
    kind = "ials"
    params: ClassVar[dict[str, Any]] = {"factors": 4, "iterations": 6, "regularization": 0.1}


class TestIALSTorch(GeneratorContract):
    kind = "ials"
    params: ClassVar[dict[str, Any]] = {"factors": 4, "iterations": 6, "use_torch": True}


def tiny_problem(seed: int, dtype: Any) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = (rng.random((7, 11)) < 0.35) * rng.integers(1, 4, (7, 11))
    dense[3] = 0  # a user without interactions: its solution is 0
    r = sp.csr_matrix(dense.astype(dtype))
    return r, rng.normal(size=(7, 3)).astype(dtype), rng.normal(size=(11, 3)).astype(dtype)


@pytest.mark.parametrize("use_torch", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cg_matches_a_direct_solve(use_torch: bool, dtype: Any) -> None:
    r, x0, y = tiny_problem(5, dtype)
    alpha, reg = 2.0, 0.5
    cm1 = ials.confidence(r.data, alpha, "linear")
    got = ials.solve_rows(r.indptr, r.indices, cm1, x0, y, reg, cg_steps=12, use_torch=use_torch)
    assert got.dtype == dtype
    dense = r.toarray().astype(np.float64)
    y64 = y.astype(np.float64)
    for u in range(dense.shape[0]):  # the per-user normal equations, directly
        c = 1.0 + alpha * dense[u]
        a = y64.T @ (c[:, None] * y64) + reg * np.eye(3)
        b = y64.T @ (c * (dense[u] > 0))
        np.testing.assert_allclose(got[u], np.linalg.solve(a, b), atol=1e-4)
    # a few CG steps (the default 3) warm-started from the answer stay at the answer
    exact = got.astype(np.float64)
    again = ials.solve_rows(r.indptr, r.indices, cm1.astype(np.float64), exact, y64, reg, cg_steps=3)
    np.testing.assert_allclose(again, exact, atol=1e-5)


def test_loss_equals_a_dense_computation() -> None:
    r, x, y = tiny_problem(6, np.float64)
    cm1 = ials.confidence(r.data, 3.0, "log")
    c = np.ones(r.shape)
    c[r.nonzero()] += 3.0 * np.log1p(r.data)
    pref = (r.toarray() > 0).astype(np.float64)
    dense = float(np.sum(c * (pref - x @ y.T) ** 2) + 0.7 * (np.sum(x * x) + np.sum(y * y)))
    assert ials.loss(r, cm1, x, y, 0.7) == pytest.approx(dense, rel=1e-10)


def shop(groups: int = 2, users: int = 12, items: int = 8, per_user: int = 4) -> pl.DataFrame:
    """Groups of users with disjoint items: user g-u sees items G(u..u+per_user-1 mod items)."""
    rows = [
        (f"{g}{u:02d}", f"{g.upper()}{(u + j) % items}")
        for g in "ab"[:groups]
        for u in range(users)
        for j in range(per_user)
    ]
    return pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row").with_columns(
        event_type=pl.lit("purchase"), ts=pl.lit(datetime(2024, 1, 1))
    )


def test_loss_decreases_over_iterations() -> None:
    params = {"factors": 3, "iterations": 12, "alpha": 5.0, "regularization": 0.5, "track_loss": True}
    gen: Any = build("ials", "i", params)
    gen.fit(shop(), seed=1)
    losses = np.array(gen.loss_history)
    assert len(losses) == 12
    assert np.all(np.diff(losses) <= 1e-6 * losses[:-1])  # every CG step lowers the loss
    assert losses[-1] < 0.8 * losses[0]


def test_block_structure_stays_within_the_group() -> None:
    train = shop()
    gen: Any = build("ials", "i", {"factors": 4, "iterations": 10, "regularization": 0.1})
    gen.fit(train, seed=3)
    users = pl.Series(["a00", "a05", "b03", "b11"])
    recs = gen.for_users(users, 3, exclude=train.select("user_id", "item_id"))
    assert recs.height == 12
    assert (recs["item_id"].str.slice(0, 1) == recs["user_id"].str.slice(0, 1).str.to_uppercase()).all()
    related = gen.for_items(pl.Series(["A0", "B0"]), 2)
    assert (related["related_id"].str.slice(0, 1) == related["item_id"].str.slice(0, 1)).all()


def test_torch_and_numpy_agree() -> None:
    r, x0, y = tiny_problem(5, np.float64)
    cm1 = ials.confidence(r.data, 2.0, "linear")
    a3 = ials.solve_rows(r.indptr, r.indices, cm1, x0 * 0.01, y, 0.5, 3)  # 3 steps: not converged yet
    b3 = ials.solve_rows(r.indptr, r.indices, cm1, x0 * 0.01, y, 0.5, 3, use_torch=True)
    np.testing.assert_allclose(a3, b3, atol=1e-12)
    train = shop()
    params = {"factors": 4, "iterations": 8, "regularization": 0.1, "track_loss": True}
    a: Any = build("ials", "i", params)
    b: Any = build("ials", "i", params | {"use_torch": True})
    a.fit(train, seed=9)
    b.fit(train, seed=9)
    # in float32 the rounding differs (and the tiny start amplifies it); the two reach the same loss
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-2)


def test_seeds_change_the_start() -> None:
    train = shop()
    a: Any = build("ials", "i", {"factors": 4, "iterations": 1})
    b: Any = build("ials", "i", {"factors": 4, "iterations": 1})
    a.fit(train, seed=1)
    b.fit(train, seed=2)
    assert not np.allclose(a.user_factors, b.user_factors)


def test_blocks_of_rows_solve_like_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    r, x0, y = tiny_problem(8, np.float64)
    cm1 = ials.confidence(r.data, 1.0, "linear")
    whole = ials.solve_rows(r.indptr, r.indices, cm1, x0, y, 0.3, 3)
    monkeypatch.setattr(ials, "BLOCK_CELLS", 7)  # about two users per block
    np.testing.assert_allclose(ials.solve_rows(r.indptr, r.indices, cm1, x0, y, 0.3, 3), whole, atol=1e-12)
