"""recctl.evaluate.metrics: hand-computed answers, sklearn NDCG, a pure-Python reference, bootstrap checks."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from sklearn.metrics import ndcg_score

from recctl.errors import ConfigError, DataError
from recctl.evaluate import metrics
from recctl.evaluate.metrics import (
    beyond_accuracy,
    by_group,
    catalog_deciles,
    per_user_metrics,
    popularity_deciles,
    summarize,
)

LOG2_3 = math.log2(3)  # 1.584962500721156
LOG2_5 = math.log2(5)  # 2.321928094887362


def _recs(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    schema = {"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _targets(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String}, orient="row")


def _row(per_user: pl.DataFrame, user: str) -> dict[str, float]:
    rows = per_user.filter(pl.col("user_id") == user).to_dicts()
    assert len(rows) == 1
    return rows[0]


def _assert_metrics(row: dict[str, float], k: int, **expected: float) -> None:
    for name, value in expected.items():
        assert row[f"{name}@{k}"] == pytest.approx(value, abs=1e-12), f"{name}@{k}"


# ---------------------------------------------------------------------------------------- known answers


def test_one_target_at_rank_3() -> None:
    pu = per_user_metrics(
        _recs([("u", "a", 1), ("u", "b", 2), ("u", "t", 3)]), _targets([("u", "t")]), [2, 5]
    )
    row = _row(pu, "u")
    assert row["n_targets"] == 1
    # K=5: one hit at rank 3. recall 1/1; precision 1/5; DCG 1/log2(4) = 0.5, IDCG 1/log2(2) = 1 -> 0.5;
    # MRR 1/3; MAP (1/3) / min(1, 5) = 1/3.
    _assert_metrics(row, 5, recall=1.0, precision=0.2, ndcg=0.5, mrr=1 / 3, map=1 / 3, hit=1.0)
    # K=2: the hit at rank 3 is outside the cut-off -> a miss, everything 0.
    _assert_metrics(row, 2, recall=0.0, precision=0.0, ndcg=0.0, mrr=0.0, map=0.0, hit=0.0)


def test_two_targets_at_ranks_1_and_4() -> None:
    recs = _recs([("u", "t1", 1), ("u", "x", 2), ("u", "y", 3), ("u", "t2", 4), ("u", "z", 5)])
    row = _row(per_user_metrics(recs, _targets([("u", "t1"), ("u", "t2")]), [3, 5]), "u")
    # K=3: hits {rank 1}. recall 1/2; precision 1/3; DCG = 1/log2(2) = 1;
    # IDCG = 1 + 1/log2(3) = 1.6309297535714575 -> ndcg 0.6131471927654584; MRR 1;
    # MAP = (1/1) / min(2, 3) = 0.5.
    _assert_metrics(row, 3, recall=0.5, precision=1 / 3, mrr=1.0, map=0.5, hit=1.0)
    assert row["ndcg@3"] == pytest.approx(1 / (1 + 1 / LOG2_3), abs=1e-12)
    assert row["ndcg@3"] == pytest.approx(0.6131471927654584, abs=1e-12)
    # K=5: hits {1, 4}. recall 1; precision 2/5; DCG = 1 + 1/log2(5) = 1.4306765580733931;
    # ndcg = 1.4306765580733931 / 1.6309297535714575 = 0.8772153153380493;
    # MAP = (1/1 + 2/4) / min(2, 5) = 0.75.
    _assert_metrics(row, 5, recall=1.0, precision=0.4, mrr=1.0, map=0.75, hit=1.0)
    assert row["ndcg@5"] == pytest.approx((1 + 1 / LOG2_5) / (1 + 1 / LOG2_3), abs=1e-12)
    assert row["ndcg@5"] == pytest.approx(0.8772153153380493, abs=1e-12)


def test_user_without_recs_and_a_miss_get_zeros() -> None:
    recs = _recs([("miss", "a", 1), ("miss", "b", 2), ("stranger", "t", 1)])
    pu = per_user_metrics(recs, _targets([("norecs", "t"), ("norecs", "s"), ("miss", "t")]), [1, 10])
    assert pu["user_id"].to_list() == ["miss", "norecs"]  # "stranger" has no targets: ignored
    assert pu["n_targets"].to_list() == [1, 2]
    for user in ("miss", "norecs"):
        for k in (1, 10):
            _assert_metrics(_row(pu, user), k, recall=0, precision=0, ndcg=0, mrr=0, map=0, hit=0)


def test_more_targets_than_k_caps_idcg() -> None:
    targets = _targets(
        [("u", "t1"), ("u", "t2"), ("u", "t3"), ("u", "t4"), ("v", "t1"), ("v", "t2"), ("v", "t3")]
    )
    recs = _recs([("u", "t1", 1), ("u", "x", 2), ("u", "t2", 3), ("v", "t3", 1), ("v", "t1", 2)])
    pu = per_user_metrics(recs, targets, [2])
    # u, K=2: hits {1}. recall 1/4; precision 1/2; DCG 1; IDCG over min(4, 2) = 2 positions:
    # 1 + 1/log2(3) -> ndcg 0.6131471927654584 (an uncapped IDCG over 4 would give 0.39...);
    # MAP = 1/1 / min(4, 2) = 0.5.
    _assert_metrics(_row(pu, "u"), 2, recall=0.25, precision=0.5, ndcg=0.6131471927654584, mrr=1, map=0.5)
    # v, K=2: both slots are hits with 3 targets: DCG = IDCG -> ndcg 1; MAP (1/1 + 2/2) / 2 = 1; recall 2/3.
    _assert_metrics(_row(pu, "v"), 2, recall=2 / 3, precision=1.0, ndcg=1.0, mrr=1.0, map=1.0, hit=1.0)


def test_map_and_mrr_values() -> None:
    recs = _recs([("u", f"x{r}", r) for r in (1, 4, 5, 7)] + [("u", "t1", 2), ("u", "t2", 3), ("u", "t3", 6)])
    row = _row(per_user_metrics(recs, _targets([("u", "t1"), ("u", "t2"), ("u", "t3")]), [1, 3, 10]), "u")
    # K=10: hits at ranks 2, 3, 6. MRR = 1/2. MAP = (1/2 + 2/3 + 3/6) / min(3, 10) = (5/3) / 3 = 5/9.
    _assert_metrics(row, 10, mrr=0.5, map=5 / 9, recall=1.0, precision=0.3)
    # K=3: hits at 2, 3. MAP = (1/2 + 2/3) / 3 = 7/18; MRR 1/2. K=1: no hit.
    _assert_metrics(row, 3, mrr=0.5, map=7 / 18, recall=2 / 3)
    _assert_metrics(row, 1, mrr=0.0, map=0.0, hit=0.0)


def test_duplicate_recs_keep_best_rank_and_targets_are_deduplicated() -> None:
    recs = _recs([("u", "x", 1), ("u", "t", 2), ("u", "t", 5)])
    row = _row(per_user_metrics(recs, _targets([("u", "t"), ("u", "t")]), [3]), "u")
    # t counts once, at its best rank 2: MRR 1/2, ndcg 1/log2(3), n_targets 1.
    assert row["n_targets"] == 1
    _assert_metrics(row, 3, mrr=0.5, ndcg=1 / LOG2_3, recall=1.0, precision=1 / 3)


def test_output_columns_and_types() -> None:
    pu = per_user_metrics(_recs([("u", "a", 1)]), _targets([("u", "a")]), [10, 1, 10])
    names = [f"{m}@{k}" for k in (10, 1) for m in ("recall", "precision", "ndcg", "mrr", "map", "hit")]
    assert pu.columns == ["user_id", "n_targets", *names]
    assert all(pu.schema[c] == pl.Float64 for c in names)


def test_bad_inputs_raise() -> None:
    targets = _targets([("u", "a")])
    with pytest.raises(ConfigError):
        per_user_metrics(_recs([]), targets, [])
    with pytest.raises(ConfigError):
        per_user_metrics(_recs([]), targets, [0])
    with pytest.raises(DataError, match="unique per user"):
        per_user_metrics(_recs([("u", "a", 1), ("u", "b", 1)]), targets, [5])
    with pytest.raises(DataError, match="1-based"):
        per_user_metrics(_recs([("u", "a", 0)]), targets, [5])
    with pytest.raises(DataError, match="lacks"):
        per_user_metrics(_recs([]).drop("rank"), targets, [5])


# ------------------------------------------------------------------------------ randomized comparisons


def _random_case(
    seed: int, n_users: int = 300, *, contiguous: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, list[tuple[str, int]]], dict[str, set[str]]]:
    """Random recs (0–25 per user; with rank gaps and duplicate items unless contiguous) and 1–5 targets."""
    rng = np.random.default_rng(seed)
    pool = [f"i{j}" for j in range(60)]
    recs: dict[str, list[tuple[str, int]]] = {}
    targets: dict[str, set[str]] = {}
    for u in range(n_users):
        user = f"u{u}"
        length = int(rng.integers(0, 26))
        if contiguous:
            items = rng.choice(pool, size=length, replace=False)
            ranks = np.arange(1, length + 1)
        else:
            items = rng.choice(pool, size=length, replace=True)  # repeats = duplicate (user, item) rows
            ranks = np.sort(rng.choice(np.arange(1, 41), size=length, replace=False))
        recs[user] = [(str(i), int(r)) for i, r in zip(items, ranks, strict=True)]
        if u % 10 != 9:  # every 10th user has recs but no targets
            recommended = [i for i, _ in recs[user]]
            candidates = list(dict.fromkeys(recommended[:8] + pool))  # favour recommended items: more hits
            n_tgt = int(rng.integers(1, 6))
            pick = rng.choice(len(candidates), size=n_tgt, replace=False, p=_favour_first(len(candidates)))
            targets[user] = {candidates[int(p)] for p in pick}
    recs_df = _recs([(u, i, r) for u, rows in recs.items() for i, r in rows])
    tgt_df = _targets([(u, i) for u, items in targets.items() for i in sorted(items)])
    return recs_df, tgt_df, recs, targets


def _favour_first(n: int) -> npt.NDArray[np.float64]:
    weights: npt.NDArray[np.float64] = np.where(np.arange(n) < 8, 6.0, 1.0)
    weights /= weights.sum()
    return weights


def _reference(recs: list[tuple[str, int]], targets: set[str], k: int) -> dict[str, float]:
    """Plain-Python definitions; duplicates keep their best rank."""
    best: dict[str, int] = {}
    for item, rank in recs:
        best[item] = min(rank, best.get(item, rank))
    ranked = sorted((rank, item) for item, rank in best.items() if rank <= k)
    hit_ranks = [rank for rank, item in ranked if item in targets]
    ap = sum((j + 1) / rank for j, rank in enumerate(hit_ranks)) / min(len(targets), k)
    return {
        "recall": len(hit_ranks) / len(targets),
        "precision": len(hit_ranks) / k,
        "hit": float(bool(hit_ranks)),
        "mrr": 1 / hit_ranks[0] if hit_ranks else 0.0,
        "map": ap,
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_against_pure_python_reference(seed: int) -> None:
    recs_df, tgt_df, recs, targets = _random_case(seed)
    ks = [1, 3, 5, 10, 20, 40]
    pu = per_user_metrics(recs_df, tgt_df, ks)
    assert sorted(pu["user_id"].to_list()) == sorted(targets)
    for row in pu.iter_rows(named=True):
        user = row["user_id"]
        assert row["n_targets"] == len(targets[user])
        for k in ks:
            for name, value in _reference(recs.get(user, []), targets[user], k).items():
                assert row[f"{name}@{k}"] == pytest.approx(value, abs=1e-12), (user, name, k)
    assert pu["hit@5"].sum() > 20  # the random case has enough hits to be meaningful


def test_ndcg_against_sklearn() -> None:
    recs_df, tgt_df, recs, targets = _random_case(7, contiguous=True)
    ks = [1, 5, 10, 20]
    pu = per_user_metrics(recs_df, tgt_df, ks)
    n_pad = max(ks)
    for row in pu.iter_rows(named=True):
        user = row["user_id"]
        recommended = recs.get(user, [])
        # Scored set: recommended items (score -rank), n_pad irrelevant fillers below them (so a short
        # list never lets an unrecommended target into sklearn's top K), then every unrecommended target
        # below those (so sklearn's IDCG sees all relevant items, as ours does).
        rec_items = {item for item, _ in recommended}
        missing = sorted(targets[user] - rec_items)
        y_true = (
            [float(item in targets[user]) for item, _ in recommended] + [0.0] * n_pad + [1.0] * len(missing)
        )
        y_score = [-float(rank) for _, rank in recommended]
        y_score += [-1000.0 - j for j in range(n_pad)] + [-10000.0 - j for j in range(len(missing))]
        for k in ks:
            expected = ndcg_score([y_true], [y_score], k=k)
            assert row[f"ndcg@{k}"] == pytest.approx(expected, abs=1e-9), (user, k)
    assert (pu["ndcg@10"] > 0).sum() > 20


# ------------------------------------------------------------------------------------------- summarize


def test_summarize_means_and_ci() -> None:
    recs_df, tgt_df, _, _ = _random_case(3, n_users=500)
    pu = per_user_metrics(recs_df, tgt_df, [5, 20])
    means, cis = summarize(pu, n_boot=500, seed=4)
    assert list(means) == metrics.metric_columns(pu) == list(cis)
    for name, mean in means.items():
        assert mean == pytest.approx(float(pu[name].to_numpy().mean()), abs=1e-12)
        low, high = cis[name]
        assert low <= mean <= high
    assert cis["recall@20"][0] < cis["recall@20"][1]
    assert summarize(pu, n_boot=500, seed=4) == (means, cis)  # deterministic for a seed
    assert summarize(pu, n_boot=500, seed=5)[1] != cis


def test_bootstrap_matches_direct_resampling() -> None:
    values = np.random.default_rng(0).random((37, 3))
    boot = metrics._bootstrap_means(values, 50, 11, 50)
    idx = np.random.default_rng(11).integers(0, 37, size=(50, 37))
    np.testing.assert_allclose(boot, values[idx].mean(axis=1), rtol=1e-12)


def test_ci_shrinks_with_more_users() -> None:
    rng = np.random.default_rng(8)

    def width(n: int) -> float:
        frame = pl.DataFrame({"user_id": [str(i) for i in range(n)], "recall@10": rng.random(n)})
        low, high = summarize(frame, n_boot=400, seed=1)[1]["recall@10"]
        return high - low

    small, large = width(100), width(10_000)
    assert large < small / 5  # about 1/sqrt(100) = 1/10 of the width


def test_chunked_bootstrap_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    frame = pl.DataFrame({"ndcg@10": rng.random(3000), "hit@10": (rng.random(3000) < 0.3).astype(float)})
    whole = summarize(frame, n_boot=300, seed=9)
    # 3000 users × 32 bytes × 7 rows: chunks of 7 replicates (the last one shorter)
    monkeypatch.setattr(metrics, "_BOOT_BUDGET_BYTES", 3000 * 32 * 7)
    chunked = summarize(frame, n_boot=300, seed=9)
    assert chunked[0] == whole[0]
    for name, (low, high) in whole[1].items():
        assert chunked[1][name] == pytest.approx((low, high), rel=1e-12, abs=1e-15)


def test_large_population_is_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = metrics._bootstrap_means

    def spy(values: np.ndarray, n_boot: int, seed: int, chunk_rows: int) -> np.ndarray:
        seen.append(chunk_rows)
        return real(values, n_boot, seed, chunk_rows)

    monkeypatch.setattr(metrics, "_bootstrap_means", spy)
    n = 60_000
    frame = pl.DataFrame({"recall@5": np.random.default_rng(0).random(n)})
    means, cis = summarize(frame, n_boot=200)
    assert seen[0] < 200 and seen[0] * n * metrics._BOOT_BYTES_PER_CELL <= metrics._BOOT_BUDGET_BYTES
    assert cis["recall@5"][0] <= means["recall@5"] <= cis["recall@5"][1]


def test_summarize_empty_and_bad_arguments() -> None:
    empty = per_user_metrics(_recs([]), _targets([]), [5])
    means, cis = summarize(empty)
    assert math.isnan(means["ndcg@5"]) and all(math.isnan(x) for x in cis["ndcg@5"])
    with pytest.raises(ConfigError):
        summarize(empty, ci=1.0)
    with pytest.raises(ConfigError):
        summarize(empty, n_boot=0)


# -------------------------------------------------------------------------- beyond accuracy, deciles


def _popularity(counts: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame({"item_id": list(counts), "count": list(counts.values())})


# 10 catalog items; n_users_train = 64 so that -log2(count / 64) is exact:
# 32 -> 1, 16 -> 2, 8 -> 3, 4 -> 4, 2 -> 5, 1 -> 6, 0 -> max(0, 1) = 1 -> 6.
CATALOG = _popularity(
    {"i0": 32, "i1": 16, "i2": 8, "i3": 8, "i4": 4, "i5": 2, "i6": 1, "i7": 1, "i8": 0, "i9": 0}
)
BEYOND_RECS = _recs(
    [
        *[("u1", "i0", 1), ("u1", "i2", 2), ("u1", "i8", 3), ("u1", "i9", 4)],
        *[("u2", "i0", 1), ("u2", "i1", 2), ("u2", "zz", 3)],  # zz: not in the catalog (count 0)
        *[("u3", "i4", 1), ("u3", "i4", 5)],  # duplicate row: best rank 1
    ]
)
FEATURES = pl.DataFrame({"item_id": ["i0", "i1", "i2", "i4", "i9"], "category": ["a", "a", "b", "b", None]})


def test_beyond_accuracy_hand_made_catalog() -> None:
    out = beyond_accuracy(
        BEYOND_RECS, [1, 3], item_popularity=CATALOG, n_users_train=64, item_features=FEATURES
    )
    # K=1: pairs (u1,i0) (u2,i0) (u3,i4). coverage {i0, i4} / 10 = 0.2. novelty (1 + 1 + 4) / 3 = 2.
    # top 1%: max(1, floor(10 / 100)) = 1 item, i0 -> share 2/3. ILD: nobody has 2 items -> 0.
    assert out["coverage@1"] == pytest.approx(0.2)
    assert out["novelty@1"] == pytest.approx(2.0)
    assert out["top1pct_share@1"] == pytest.approx(2 / 3)
    assert out["ild@1"] == 0.0
    # K=3: 7 pairs: u1 i0 i2 i8, u2 i0 i1 zz, u3 i4. coverage {i0, i1, i2, i4, i8} / 10 = 0.5 (zz is not
    # in the catalog). novelty (1 + 3 + 6 + 1 + 2 + 6 + 4) / 7 = 23/7. share: 2 of 7 pairs are i0.
    # ILD: u1 categories a, b, unknown -> 0 same pairs of 3 -> 1; u2 a, a, unknown -> 1 same of 3 -> 2/3;
    # u3 skipped (1 item): (1 + 2/3) / 2 = 5/6.
    assert out["coverage@3"] == pytest.approx(0.5)
    assert out["novelty@3"] == pytest.approx(23 / 7)
    assert out["top1pct_share@3"] == pytest.approx(2 / 7)
    assert out["ild@3"] == pytest.approx(5 / 6)
    without = beyond_accuracy(BEYOND_RECS, [3], item_popularity=CATALOG, n_users_train=64)
    assert set(without) == {"coverage@3", "novelty@3", "top1pct_share@3"}


def test_ild_unknown_categories_share_one_value() -> None:
    recs = _recs([("u", "i8", 1), ("u", "i9", 2), ("u", "i0", 3), ("v", "i8", 1), ("v", "zz", 2)])
    out = beyond_accuracy(recs, [2, 3], item_popularity=CATALOG, n_users_train=64, item_features=FEATURES)
    # K=2: u has i8 (absent) and i9 (null category): both unknown -> 1 same pair of 1 -> 0; v likewise 0.
    assert out["ild@2"] == 0.0
    # K=3: u = unknown, unknown, a -> 1 same pair of 3 -> 2/3; v unchanged 0 -> mean 1/3.
    assert out["ild@3"] == pytest.approx(1 / 3)


def test_top1pct_ties_broken_by_item_id() -> None:
    counts = {f"z{j:03d}": 0 for j in range(197)} | {"a": 10, "c": 9, "b": 9}
    recs = _recs([("u1", "a", 1), ("u1", "c", 2), ("u2", "b", 1)])
    out = beyond_accuracy(recs, [2], item_popularity=_popularity(counts), n_users_train=100)
    # 200 items -> top 1% = 2 items: a (10), then b before c (tie at 9). Hits: a, b of 3 recs.
    assert out["top1pct_share@2"] == pytest.approx(2 / 3)
    assert out["coverage@2"] == pytest.approx(3 / 200)
    # 150 items -> floor(1.5) = 1 item (a): only u1's a counts.
    counts150 = {f"z{j:03d}": 0 for j in range(147)} | {"a": 10, "c": 9, "b": 9}
    out = beyond_accuracy(recs, [2], item_popularity=_popularity(counts150), n_users_train=100)
    assert out["top1pct_share@2"] == pytest.approx(1 / 3)


def test_beyond_accuracy_without_recs() -> None:
    out = beyond_accuracy(_recs([]), [5], item_popularity=CATALOG, n_users_train=64, item_features=FEATURES)
    assert out == {"coverage@5": 0.0, "novelty@5": 0.0, "top1pct_share@5": 0.0, "ild@5": 0.0}


# 20 items i00..i19 with count 20 - j: decile d holds positions 2(d-1) and 2(d-1)+1.
CATALOG20 = _popularity({f"i{j:02d}": 20 - j for j in range(20)})


def test_popularity_deciles() -> None:
    recs = _recs(
        [
            *[("u1", "i00", 1), ("u1", "i05", 2), ("u1", "i19", 3)],  # rank 3 is outside k = 2
            *[("u2", "i19", 1), ("u2", "i01", 2), ("u3", "i10", 1), ("u3", "zz", 2)],
        ]
    )
    shares = popularity_deciles(recs, 2, CATALOG20)
    # in-catalog top-2 recs: i00 (d1), i05 (d3), i19 (d10), i01 (d1), i10 (d6); zz is left out -> 5 recs.
    assert shares == pytest.approx([0.4, 0, 0.2, 0, 0, 0.2, 0, 0, 0, 0.2])
    assert sum(shares) == pytest.approx(1.0)
    assert popularity_deciles(_recs([]), 2, CATALOG20) == [0.0] * 10


def test_deciles_with_ties_and_small_catalog() -> None:
    pop = _popularity({"b": 5, "a": 5, "c": 5, "d": 9})
    # order d, a, b, c (ties by item_id); decile = floor(10 p / 4) + 1 -> d: 1, a: 3, b: 6, c: 8.
    assert popularity_deciles(_recs([("u", "a", 1)]), 1, pop) == [0, 0, 1.0, 0, 0, 0, 0, 0, 0, 0]
    # interactions 9 + 5 + 5 + 5 = 24
    assert catalog_deciles(pop) == pytest.approx([9 / 24, 0, 5 / 24, 0, 0, 5 / 24, 0, 5 / 24, 0, 0])


def test_catalog_deciles() -> None:
    # decile d = counts (20 - 2(d-1)) + (19 - 2(d-1)) = 39 - 4(d-1); total 20·21/2 = 210
    assert catalog_deciles(CATALOG20) == pytest.approx([(39 - 4 * d) / 210 for d in range(10)])
    assert catalog_deciles(_popularity({"a": 0, "b": 0})) == [0.0] * 10


# ------------------------------------------------------------------------------------------- by_group


def test_by_group() -> None:
    recs = _recs([("u1", "t", 1), ("u2", "x", 1), ("u2", "t", 2), ("u3", "x", 1)])
    pu = per_user_metrics(recs, _targets([("u1", "t"), ("u2", "t"), ("u3", "t")]), [2])
    # recall@2: u1 1, u2 1, u3 0; mrr@2: u1 1, u2 1/2, u3 0
    groups = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u2", "u9", "u1", "u1"],
            "group": ["new", "returning", "returning", "buyer", "new", None, "new"],
        }
    )
    out = by_group(pu, groups)
    assert list(out) == ["buyer", "new", "returning"]
    assert out["new"]["users"] == 1 and out["new"]["recall@2"] == 1.0  # u9 has no row, u1 counted once
    assert out["returning"]["users"] == 2
    assert out["returning"]["recall@2"] == pytest.approx(0.5)
    assert out["returning"]["mrr@2"] == pytest.approx(0.25)
    assert out["buyer"] == {"users": 1, **{c: _row(pu, "u2")[c] for c in metrics.metric_columns(pu)}}
