"""SASRec under the shared contract, and its known answers: a planted a → b transition is learned."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from recctl.candidates.base import build
from tests.contract import ItemToItemContract

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
TINY: dict[str, Any] = {"epochs": 15, "hidden": 16, "max_len": 8, "layers": 1, "dropout": 0.1, "lr": 0.01,
                        "batch_size": 4, "patience": 15, "threads": 1}  # fmt: skip


class TestSASRec(ItemToItemContract):
    kind = "sasrec"
    params: ClassVar[dict[str, Any]] = TINY


def _frame(users: np.ndarray, items: np.ndarray) -> pl.DataFrame:
    """An interaction frame from parallel arrays of user and item ids, in order within each user."""
    df = pl.DataFrame({"user_id": users, "item_id": items}).with_columns(
        ts=pl.lit(datetime(2024, 1, 1)) + pl.duration(minutes=pl.int_range(pl.len()).over("user_id")),
        event_type=pl.lit("view"), session_id=pl.col("user_id"), order_id=pl.lit(None, pl.String),
        value=pl.lit(None, pl.Float64), quantity=pl.lit(None, pl.Float64), price=pl.lit(1.0), discount=pl.lit(0.0),
    )  # fmt: skip
    return df.sort("user_id", "ts", maintain_order=True)


def test_b_always_follows_a() -> None:
    """300 users browse 30 random items; wherever a appears, b comes next. Users ending in a get b first."""
    rng = np.random.default_rng(0)
    n_users, length = 300, 8
    seqs = np.char.add("i", rng.integers(0, 30, size=(n_users, length)).astype(str))
    at = rng.integers(0, length - 1, size=n_users)
    seqs[np.arange(n_users), at], seqs[np.arange(n_users), at + 1] = "a", "b"
    seqs[:20, -1] = "a"  # 20 test users end with a (their b is still to come)
    users = np.repeat([f"u{u:03d}" for u in range(n_users)], length)
    train = _frame(users, seqs.ravel())
    gen = build("sasrec", "s", {**TINY, "max_len": 10, "hidden": 32, "epochs": 20, "batch_size": 32})
    gen.fit(train, seed=1)
    recs = gen.for_users(pl.Series([f"u{u:03d}" for u in range(20)]), 3)
    top = recs.filter(pl.col("rank") == 1)
    assert top.height == 20 and (top["item_id"] == "b").all()
    seq = gen.for_sequences(pl.DataFrame({"session_id": ["s"], "item_id": ["a"], "position": [0]}), 3)
    assert seq["item_id"][0] == "b"
    related = gen.for_items(pl.Series(["a"]), 3)
    assert related["related_id"][0] == "b" and set(related["item_id"]) == {"a"}


def sample_shop(max_users: int) -> pl.DataFrame:
    """The committed sample shop's item events as an interaction frame (the first ``max_users`` visitors)."""
    raw = pl.read_csv(SAMPLE / "events.csv.gz", schema_overrides={"order_id": pl.String})
    keep = raw.select(pl.col("visitor_id").unique().sort().head(max_users))
    return (
        raw.join(keep, on="visitor_id", how="semi")
        .filter(pl.col("product_id").is_not_null() & (pl.col("action") == "pageview"))
        .select(
            user_id="visitor_id",
            item_id="product_id",
            event_type="action",
            ts=pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ"),
            session_id="session",
            order_id="order_id",
            value=pl.lit(None, pl.Float64),
            quantity=pl.lit(None, pl.Float64),
            price="price",
            discount=pl.lit(0.0),
        )
        .sort("user_id", "ts", maintain_order=True)
    )


def test_sample_shop_planted_pairs() -> None:
    """After a, the planted b is in the next-item top 10 for most of the shop's planted pairs."""
    pairs = json.loads((SAMPLE / "ground_truth.json").read_text())["sequences"]
    train = sample_shop(max_users=2000)
    gen = build("sasrec", "s", {"epochs": 2, "hidden": 32, "max_len": 20, "layers": 1, "dropout": 0.1,
                                "lr": 0.005, "batch_size": 32, "final_epochs": 0, "threads": 1})  # fmt: skip
    gen.fit(train, seed=3)
    firsts = pl.DataFrame({"session_id": [f"s{i}" for i in range(len(pairs))], "item_id": [a for a, _ in pairs],
                           "position": [0] * len(pairs)})  # fmt: skip
    recs = gen.for_sequences(firsts, 10)
    truth = pl.DataFrame({"session_id": firsts["session_id"], "item_id": [b for _, b in pairs]})
    found = recs.join(truth, on=["session_id", "item_id"], how="semi").height
    assert found >= 0.8 * len(pairs), f"{found} of {len(pairs)} planted pairs in the top 10"


def test_top_items_limits_the_vocabulary() -> None:
    """top_items keeps the items with most users: the rare ones are never proposed and are skipped in
    histories, while the planted a → b transition (both popular) is still learned."""
    rng = np.random.default_rng(5)
    n_users, length = 200, 6
    seqs = np.char.add("i", rng.integers(0, 10, size=(n_users, length)).astype(str)).astype(object)
    seqs[:, -2], seqs[:, -1] = "a", "b"
    seqs[:40, -1] = np.char.add("rare", np.arange(40).astype(str))  # 40 items with one user each
    seqs[:20, -2:] = [["a", "rare-x"]] * 20  # ... and one with 20 users, still fewer than the others
    users = np.repeat([f"u{u:03d}" for u in range(n_users)], length)
    gen = build("sasrec", "s", {**TINY, "max_len": 6, "hidden": 16, "epochs": 15, "batch_size": 32,
                                "top_items": 12})  # fmt: skip
    gen.fit(_frame(users, seqs.ravel()), seed=2)
    assert gen.vocab.height == 12 and set(gen.vocab["item_id"]) == {f"i{k}" for k in range(10)} | {"a", "b"}
    recs = gen.for_users(pl.Series([f"u{u:03d}" for u in range(20)]), 12)
    assert not recs["item_id"].str.starts_with("rare").any()
    # these users' histories end in a (rare-x is unknown to the model and skipped): b comes next (for 18+ of 20)
    assert (recs.filter(pl.col("rank") == 1)["item_id"] == "b").sum() >= 18


def _planted(n_users: int, seed: int) -> pl.DataFrame:
    """``n_users`` users browse 8 of 30 random items with a → b planted; users u000…u019 end in a."""
    rng = np.random.default_rng(seed)
    length = 8
    seqs = np.char.add("i", rng.integers(0, 30, size=(n_users, length)).astype(str))
    at = rng.integers(0, length - 1, size=n_users)
    seqs[np.arange(n_users), at], seqs[np.arange(n_users), at + 1] = "a", "b"
    seqs[:20, -1] = "a"
    return _frame(np.repeat([f"u{u:03d}" for u in range(n_users)], length), seqs.ravel())


def test_users_per_epoch_at_or_above_the_users_changes_nothing() -> None:
    """A cap the data does not reach draws nothing: the same lists as no cap, and the fit says so."""
    train = _planted(120, seed=4)
    params = {**TINY, "max_len": 4, "epochs": 4, "batch_size": 16}  # 8 items over 4: older windows too
    users = pl.Series([f"u{u:03d}" for u in range(40)])
    lists = []
    for cap in (0, 120, 5000):
        gen = build("sasrec", "s", {**params, "users_per_epoch": cap})
        gen.fit(train, seed=1)
        assert gen.sampling["users"] == 120 and gen.sampling["users_per_epoch"] == 120
        assert not gen.sampling["sampled"] and gen.sampling["sequences"] > 120
        lists.append(gen.for_users(users, 5))
    assert lists[0].equals(lists[1]) and lists[0].equals(lists[2])


def test_users_per_epoch_draws_whole_users() -> None:
    """Each epoch trains on every row (newest and older windows) of exactly the drawn users."""
    from recctl.candidates._seq import TrainSpec, _sample

    rows = np.arange(12, dtype=np.int64)[:, None] * np.ones((1, 3), dtype=np.int64)
    owner = np.array([0, 1, 2, 3, 4, 5, 0, 0, 2, 5, 5, 5], dtype=np.int64)
    tr = TrainSpec(1, 0.1, 4, 1, 1, 0, 0.0, 1, users_per_epoch=2)
    picked = _sample(rows, owner, 6, tr, np.random.default_rng(0))
    chosen = set(owner[picked[:, 0]].tolist())
    assert len(chosen) == 2
    assert sorted(picked[:, 0].tolist()) == [r for r in range(12) if owner[r] in chosen]
    again = _sample(rows, owner, 6, tr, np.random.default_rng(0))
    assert np.array_equal(picked, again)  # seeded
    assert _sample(rows, owner, 2, tr, np.random.default_rng(0)) is rows  # not fewer than the users: all


def test_users_per_epoch_below_the_users_samples_and_still_learns() -> None:
    """300 users, 100 per epoch: the fit reports the sample, and the planted a → b is still learned."""
    train = _planted(300, seed=0)
    gen = build("sasrec", "s", {**TINY, "max_len": 10, "hidden": 32, "epochs": 40, "batch_size": 32,
                                "users_per_epoch": 100})  # fmt: skip
    gen.fit(train, seed=1)
    assert gen.sampling == {"users": 300, "sequences": 300, "users_per_epoch": 100, "sampled": True,
                            "max_len": 10, "windows": 0}  # fmt: skip
    top = gen.for_users(pl.Series([f"u{u:03d}" for u in range(20)]), 3).filter(pl.col("rank") == 1)
    assert top.height == 20 and (top["item_id"] == "b").sum() >= 18
