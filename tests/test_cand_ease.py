"""``ease`` under the shared contract, and its known answers (closed form, refusal, block structure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from recctl.candidates import ease
from recctl.candidates.base import build
from recctl.errors import ConfigError
from tests.contract import PairScorerContract, tiny_shop


class TestEASE(PairScorerContract):
    kind = "ease"
    params: ClassVar[dict[str, Any]] = {"l2": 5.0}


def frame(pairs: list[tuple[str, str]], event_type: str = "view") -> pl.DataFrame:
    """A training frame with one event per (user, item) pair."""
    users, items = zip(*pairs, strict=True)
    return pl.DataFrame(
        {"user_id": list(users), "item_id": list(items), "event_type": event_type, "ts": datetime(2024, 1, 1)}
    )


def random_pairs(n_users: int, n_items: int, density: float, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    x = rng.random((n_users, n_items)) < density
    x[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has an item
    x[rng.integers(0, n_users, n_items), np.arange(n_items)] = True  # every item has a user
    u, i = np.nonzero(x)
    return [(f"u{a:02d}", f"i{b:02d}") for a, b in zip(u, i, strict=True)]


def test_weights_equal_the_closed_form() -> None:
    pairs = random_pairs(40, 12, 0.3, seed=1)
    gen: Any = build("ease", "e", {"l2": 3.0})
    gen.fit(frame(pairs), seed=0)
    x = np.zeros((40, 12))
    for u, i in pairs:
        x[int(u[1:]), int(i[1:])] = 1.0
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]  # B = I − P·diag(1/diag(P))
    assert gen.items.to_list() == [f"i{j:02d}" for j in range(12)]
    np.testing.assert_allclose(gen.b, b, atol=1e-4)
    assert np.all(np.diag(gen.b) == 0.0)
    # scores are x_u B
    recs = gen.for_users(pl.Series(["u03"]), 12)
    best = int(np.argmax(x[3] @ b))
    assert recs["item_id"][0] == f"i{best:02d}"
    assert recs["score"][0] == pytest.approx(float((x[3] @ b)[best]), abs=1e-4)


def test_gram_in_blocks_equals_the_dense_product(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, x = ease.interaction_matrix(frame(random_pairs(30, 9, 0.4, seed=2)), {}, 1.0)
    monkeypatch.setattr(ease, "GRAM_PAIRS", 5)  # several users per block, one user alone when long
    np.testing.assert_allclose(ease.gram(x), (x.T @ x).toarray(), atol=1e-6)


def test_event_weights_and_binarize() -> None:
    df = pl.concat([frame([("u1", "a"), ("u1", "b")]), frame([("u1", "a"), ("u2", "b")], "purchase")])
    _, _, x = ease.interaction_matrix(df, {"view": 1.0, "purchase": 4.0}, 1.0)
    assert x.toarray().tolist() == [[5.0, 1.0], [0.0, 4.0]]
    _, items, x = ease.interaction_matrix(df, {"view": 0.0}, 2.0)  # views dropped, purchases weigh 2
    assert x.toarray().tolist() == [[2.0, 0.0], [0.0, 2.0]] and items.to_list() == ["a", "b"]


def test_refuses_a_catalog_above_max_items() -> None:
    gen = build("ease", "e", {"max_items": 5})
    with pytest.raises(ConfigError) as err:
        gen.fit(tiny_shop(), seed=0)  # 7 items
    assert "catalog of 7 items" in err.value.message and "GB" in err.value.message
    assert "max_items = 5" in err.value.message
    assert err.value.hint is not None and "ials" in err.value.hint and "itemknn" in err.value.hint


def test_check_fits_names_the_memory() -> None:
    with pytest.raises(ConfigError, match=r"68,509 items.*56\.3 GB"):
        ease.check_fits(68_509, 30_000)  # Complete Journey's purchased items
    ease.check_fits(1_000, 30_000)  # 12 MB: fine


def test_top_items_restricts_the_catalog() -> None:
    gen: Any = build("ease", "e", {"max_items": 5, "top_items": 4})
    gen.fit(tiny_shop(), seed=0)  # p0 (12 users), then a and x (6 each), then b and y (5 each): ties by id
    assert gen.items.to_list() == ["a", "b", "p0", "x"]
    recs = gen.for_users(pl.Series(["u0", "u5", "u11"]), 10)
    assert set(recs["item_id"]) <= {"a", "b", "p0", "x"}


def test_block_structure_stays_within_the_group() -> None:
    # group A: users a0..a9 on items A0..A5; group B: users b0..b9 on items B0..B5; each user has 4 of 6
    pairs = [
        (f"{g}{u}", f"{g.upper()}{(u + j) % 6}") for g in ("a", "b") for u in range(10) for j in range(4)
    ]
    train = frame(pairs)
    gen = build("ease", "e", {"l2": 1.0})
    gen.fit(train, seed=0)
    recs = gen.for_users(pl.Series(["a0", "a3", "b1", "b7"]), 2, exclude=train.select("user_id", "item_id"))
    assert recs.height == 8
    assert (recs["item_id"].str.slice(0, 1) == recs["user_id"].str.slice(0, 1).str.to_uppercase()).all()
    related = gen.for_items(pl.Series(["A0", "B0"]), 3)  # type: ignore[attr-defined]
    assert (related["related_id"].str.slice(0, 1) == related["item_id"].str.slice(0, 1)).all()


def test_batched_scoring_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    train = frame(random_pairs(50, 20, 0.2, seed=3))
    gen = build("ease", "e", {"l2": 2.0})
    gen.fit(train, seed=0)
    users = pl.Series([f"u{j:02d}" for j in range(50)] + ["nobody"])
    exclude = train.select("user_id", "item_id")
    whole = gen.for_users(users, 5, exclude=exclude)
    monkeypatch.setattr(ease, "SCORE_CELLS", 60)  # 3 users per batch
    batched = gen.for_users(users, 5, exclude=exclude)
    assert batched.equals(whole) and whole["user_id"].n_unique() == 50
    assert batched.join(exclude, on=["user_id", "item_id"], how="semi").height == 0


def test_positions_binary_search_a_sorted_index_like_the_join() -> None:
    """The models' sorted ids are binary searched (a chunk's cost); an unflagged index is joined; both
    give every key's position, -1 for unknown and null keys."""
    raw = pl.Series([f"u{j:03d}" for j in range(0, 300, 3)])
    flagged = raw.sort()
    assert flagged.flags["SORTED_ASC"] and not raw.flags["SORTED_ASC"]
    keys = pl.Series(["u000", "u001", None, "u297", "u299", "zz", "a", "u150", "u000"])
    want = [0, -1, -1, 99, -1, -1, -1, 50, 0]
    assert ease.positions(keys, flagged).tolist() == want
    assert ease.positions(keys, raw).tolist() == want
    assert ease.positions(keys, flagged.head(0)).tolist() == [-1] * len(keys)


def test_weights_are_row_major_when_fitted_and_when_loaded(tmp_path: Any) -> None:
    """scipy's sparse x dense product reads B's rows: B is kept C-ordered (torch's inverse comes out
    column-major, five times slower to score), also when a run saved it column-major; same scores."""
    train = frame(random_pairs(60, 25, 0.2, seed=4))
    gen: Any = build("ease", "e", {"l2": 2.0})
    gen.fit(train, seed=0)
    assert gen.b.flags["C_CONTIGUOUS"]
    users = pl.Series([f"u{j:02d}" for j in range(60)])
    want = gen.for_users(users, 7)
    gen.save(tmp_path / "e")
    np.save(tmp_path / "e" / "b.npy", np.asfortranarray(gen.b), allow_pickle=False)  # as runs saved it
    assert not np.load(tmp_path / "e" / "b.npy").flags["C_CONTIGUOUS"]
    loaded: Any = ease.EASE.load(tmp_path / "e", "e", {"l2": 2.0})
    assert loaded.b.flags["C_CONTIGUOUS"] and np.array_equal(loaded.b, gen.b)
    assert loaded.for_users(users, 7).equals(want)


def test_half_life_decays_older_events() -> None:
    df = frame([("u1", "a"), ("u1", "b"), ("u2", "a")]).with_columns(
        ts=pl.Series([datetime(2024, 1, 1), datetime(2024, 1, 3), datetime(2024, 1, 5)])
    )
    _, _, x = ease.interaction_matrix(df, {}, 1.0, half_life_days=2.0)
    assert x.toarray().tolist() == [[0.25, 0.5], [1.0, 0.0]]  # 4 and 2 days before the last event
