"""The two-stage pipeline (generators → features → LightGBM LambdaRank) under the generators' contract,
and its known answers: point-in-time training data, a ranker that learns which generator to trust."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from recctl.candidates.base import CandidateGenerator
from recctl.config import CandidateSpec, RecctlConfig
from recctl.errors import ConfigError
from recctl.ranking import build_model, pipeline_spec
from recctl.ranking.merge import merge, source_names
from tests.contract import GeneratorContract

TINY_LGBM = {"n_estimators": 20, "min_child_samples": 1, "num_leaves": 4, "threads": 1}
GENERATORS = [{"name": "pop", "kind": "popular"}, {"name": "next", "kind": "cooccur"}]


class TestPipeline(GeneratorContract):
    kind = "pipeline"
    params: ClassVar[dict[str, Any]] = {
        "generators": GENERATORS, "label": "last-item", "valid_share": 0.0, "lgbm": TINY_LGBM,
        "min_label_users": 1, "min_positives": 1,  # tiny data: the ranker itself, not its fallback
    }  # fmt: skip

    def make(self) -> CandidateGenerator:
        return build_model(CandidateSpec(name="ranked", kind="pipeline", params=self.params))


class TestPipelineCandidateFeaturesOnly(TestPipeline):
    params: ClassVar[dict[str, Any]] = {**TestPipeline.params, "features": False}


def test_merge_columns() -> None:
    a = pl.DataFrame(
        {"user_id": ["u", "u"], "item_id": ["x", "y"], "c_a_score": [2.0, 1.0], "c_a_rank": [1.0, 2.0]}
    )
    b = pl.DataFrame({"user_id": ["u"], "item_id": ["y"], "c_b_score": [5.0], "c_b_rank": [1.0]})
    m = merge([a, b], ["a", "b"])
    assert m["item_id"].to_list() == ["x", "y"]
    assert m["c_sources"].to_list() == [1, 2] and m["c_best_rank"].to_list() == [1, 1]
    assert m["c_rrank_sum"].to_list() == pytest.approx([1.0, 1.5])
    assert m["c_b_score"].to_list() == [None, 5.0]


def test_source_names_best_rank_first_ties_in_generator_order() -> None:
    ranked = pl.DataFrame({
        "c_pop_rank": [3.0, 2.0, None, None, 12.0],
        "c_next_item_rank": [1.0, 2.0, None, 5.0, 100.0],
        "c_knn_rank": [None, 1.0, None, 5.0, 99.0],
    })  # fmt: skip
    got = source_names(ranked, ["pop", "next-item", "knn"])
    assert got.dtype == pl.List(pl.String) and got.name == "sources"
    assert got.to_list() == [["next-item", "pop"], ["knn", "pop", "next-item"], [], ["next-item", "knn"],
                             ["pop", "knn", "next-item"]]  # fmt: skip
    assert source_names(ranked.clear(), ["pop"]).to_list() == []
    assert source_names(ranked, []).to_list() == [[]] * 5


def test_pipeline_spec_from_config() -> None:
    cfg = RecctlConfig.model_validate({
        "candidates": [{"name": "pop", "kind": "popular"}, {"name": "rnd", "kind": "random"},
                       {"name": "next", "kind": "cooccur"}],
        "ranker": {"params": {"negatives": 7}},
    })  # fmt: skip
    spec = pipeline_spec(cfg, "leave-one-out")
    assert spec is not None and spec.kind == "pipeline" and spec.name == "ranked"
    # the random baseline is no generator for the ranker; auto labels follow the protocol
    assert [g["name"] for g in spec.params["generators"]] == ["pop", "next"]
    assert spec.params["label"] == "last-item" and spec.params["negatives"] == 7
    assert pipeline_spec(cfg, "temporal").params["label"] == "temporal"  # type: ignore[union-attr]
    off = cfg.model_copy(update={"ranker": cfg.ranker.model_copy(update={"enabled": False})})
    assert pipeline_spec(off) is None
    bad = cfg.model_copy(update={"ranker": cfg.ranker.model_copy(update={"generators": ["nope"]})})
    with pytest.raises(ConfigError, match="nope"):
        pipeline_spec(bad)
    with pytest.raises(ConfigError, match="negatives"):
        build_model(
            CandidateSpec(name="r", kind="pipeline", params={"generators": GENERATORS, "negatives": 0})
        )
    with pytest.raises(ConfigError, match="window_days"):
        build_model(CandidateSpec(name="r", kind="pipeline", params={
            "generators": [{"name": "p", "kind": "popular", "params": {"window_days": -1}}]}))  # fmt: skip


def _two_kinds_of_users(n_users: int = 600, seed: int = 0) -> pl.DataFrame:
    """Half the users ("seq") walk a planted cycle of items (c_k, then c_k+1, …); the other half ("pop") buy
    the five bestsellers. Each generator alone serves one half; the ranker must learn whom to trust."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2024, 1, 1)
    rows = []
    for u in range(n_users):
        seq_user = u % 2 == 0
        hist = [f"i{j}" for j in rng.integers(0, 40, size=4)]
        if seq_user:  # a walk along the planted cycle c0 → c1 → … → c19 → c0
            k = int(rng.integers(0, 20))
            hist += [f"c{(k + j) % 20}" for j in range(4)]
        else:
            hist += [f"top{int(x)}" for x in rng.choice(5, size=3, replace=False)]
        for j, item in enumerate(hist):
            rows.append((f"{'s' if seq_user else 'p'}{u:04d}", item, t0 + timedelta(days=u % 50, minutes=j)))
    # a few thousand bestseller purchases give "popular" its ranking
    for j in range(3000):
        rows.append((f"bulk{j % 300}", f"top{min(int(rng.exponential(1.5)), 4)}", t0 + timedelta(minutes=j)))
    df = pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us")}, orient="row"
    )
    return df.with_columns(
        event_type=pl.lit("purchase"), session_id=pl.col("user_id"), order_id=pl.lit(None, pl.String),
        value=pl.lit(None, pl.Float64), quantity=pl.lit(None, pl.Float64), price=pl.lit(1.0), discount=pl.lit(0.0),
    ).sort("user_id", "ts", maintain_order=True)  # fmt: skip


def test_ranker_learns_which_generator_to_trust() -> None:
    """Leave-one-out on users of two kinds: the pipeline's hit@1 beats both of its generators alone."""
    from recctl.evaluate.splits import leave_one_out

    split = leave_one_out(_two_kinds_of_users())
    split_test = split.test.filter(~pl.col("user_id").str.starts_with("bulk"))
    users = split_test["user_id"]
    seen = split.seen()
    params = {
        **TestPipeline.params,
        "features": False,
        "lgbm": {"n_estimators": 60, "min_child_samples": 5, "threads": 1},
    }
    pipe = build_model(CandidateSpec(name="ranked", kind="pipeline", params=params))
    pipe.fit(split.train, seed=1)

    def hit1(recs: pl.DataFrame, kind: str) -> float:
        mine = split_test.filter(pl.col("user_id").str.starts_with(kind))
        top = recs.filter(pl.col("rank") == 1).join(mine, on=["user_id", "item_id"], how="semi")
        return top.height / mine.height

    alone = {}
    for g in GENERATORS:
        gen = build_model(CandidateSpec.model_validate(g))
        gen.fit(split.train, seed=1)
        recs = gen.for_users(users, 5, exclude=seen)
        alone[g["name"]] = {"s": hit1(recs, "s"), "p": hit1(recs, "p")}
    recs = pipe.for_users(users, 5, exclude=seen)
    ranked = {"s": hit1(recs, "s"), "p": hit1(recs, "p")}
    # popularity alone never serves the walkers; the ranker keeps the transitions for them and is at
    # least as good as the better generator on the bestseller buyers
    assert alone["pop"]["s"] < 0.1 and ranked["s"] >= alone["next"]["s"] - 0.02, (ranked, alone)
    assert ranked["p"] >= max(a["p"] for a in alone.values()) - 0.02, (ranked, alone)
    total = {name: a["s"] + a["p"] for name, a in alone.items()}
    assert ranked["s"] + ranked["p"] > max(total.values()), (ranked, alone)


def _leaky_shop(n_users: int = 300, seed: int = 0) -> pl.DataFrame:
    """Eight weeks of random views, then a last week in which every user views one item five times and
    buys it. The repeated views exist only after the label cutoff: a feature that saw them would give
    the label away; from the history alone the bought item is unpredictable."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2024, 1, 1)
    rows = []
    for u in range(n_users):
        for j, it in enumerate(rng.integers(0, 60, size=12)):
            rows.append(
                (f"u{u:03d}", f"i{it}", "view", t0 + timedelta(days=int(rng.integers(0, 56)), minutes=j))
            )
        target = f"i{int(rng.integers(0, 60))}"
        for j in range(5):
            rows.append((f"u{u:03d}", target, "view", t0 + timedelta(days=57, hours=u % 20, minutes=j)))
        rows.append((f"u{u:03d}", target, "purchase", t0 + timedelta(days=58, hours=u % 20)))
    df = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "event_type": pl.String,
                                    "ts": pl.Datetime("us")}, orient="row")  # fmt: skip
    return df.with_columns(
        session_id=pl.col("user_id"), order_id=pl.lit(None, pl.String), value=pl.lit(None, pl.Float64),
        quantity=pl.lit(None, pl.Float64), price=pl.lit(1.0), discount=pl.lit(0.0),
    ).sort("user_id", "ts", maintain_order=True)  # fmt: skip


def test_point_in_time_no_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranker's features are computed as of the label cutoff, so the label-window views cannot help it
    (validation NDCG near chance); the same pipeline fed a leaky history that includes the label window
    finds the bought item almost always: the signal is real, and the point-in-time split hides it."""
    from recctl.ranking import dataset as D
    from tests.contract import tiny_catalog

    shop = _leaky_shop()
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(60)]}).join(
        tiny_catalog().drop("item_id").head(1), how="cross"
    )
    params = {"generators": [{"name": "pop", "kind": "popular"}], "label": "temporal", "label_window": "1w",
              "n_per_generator": 60, "filter_seen": False, "valid_share": 0.3,
              "lgbm": {"n_estimators": 50, "min_child_samples": 5, "threads": 1}}  # fmt: skip

    def valid_ndcg() -> float:
        pipe = build_model(CandidateSpec(name="ranked", kind="pipeline", params=params))
        pipe.fit(shop, seed=4, items=items)
        return float(pipe.info["valid_ndcg"])  # type: ignore[attr-defined]

    honest = valid_ndcg()
    real_split = D.label_split

    def leaky(train: pl.DataFrame, how: str, window: str, target_events: list[str]) -> D.LabelSplit:
        s = real_split(train, how, window, target_events)
        return D.LabelSplit(s.how, train, s.labels, train["ts"].max() + timedelta(seconds=1))  # type: ignore[operator]

    monkeypatch.setattr(D, "label_split", leaky)
    leaked = valid_ndcg()
    assert honest < 0.35 and leaked > 0.9, (honest, leaked)


def test_rules_apply_after_ranking_and_explain() -> None:
    """[rules] run on the ranked list: a brand boost lifts Zeta items past Acme items that outscored them
    and says so; an out-of-stock item never appears; bought items stay out."""
    from recctl.config import RulesConfig
    from tests.contract import tiny_catalog, tiny_shop

    rules = RulesConfig.model_validate(
        {"business": [{"name": "zeta-week", "action": "boost", "brands": ["Zeta"], "factor": 1000.0}]}
    )
    catalog = tiny_catalog().with_columns(in_stock=pl.col("item_id") != "y")
    params = {**TestPipeline.params, "rules": rules.model_dump(mode="json")}
    pipe = build_model(CandidateSpec(name="ranked", kind="pipeline", params=params))
    pipe.fit(tiny_shop(), seed=3, items=catalog)
    recs = pipe.for_users(pl.Series(["u5", "u0"]), 4, explain=True)  # type: ignore[call-arg]
    assert "y" not in recs["item_id"].to_list()
    u5 = recs.filter(pl.col("user_id") == "u5").sort("rank")
    brand = dict(zip(catalog["item_id"], catalog["brand"], strict=True))
    assert all(
        ("boost: zeta-week" in r) == (brand[i] == "Zeta")
        for i, r in zip(u5["item_id"], u5["rules"], strict=True)
    )
    # without the rules p0 and a outrank both Zeta items for u5; boosted, x and z pass them
    plain = pipe.for_users(pl.Series(["u5"]), 8, explain=False)  # type: ignore[call-arg]
    pipe.rules = None  # type: ignore[attr-defined]
    unboosted = pipe.for_users(pl.Series(["u5"]), 8)["item_id"].to_list()
    assert unboosted.index("p0") < unboosted.index("x") and unboosted.index("a") < unboosted.index("z")
    assert {"x", "z"} <= set(u5["item_id"]) and not {"p0", "a"} & set(u5["item_id"])
    assert "rules" not in plain.columns
    # u0 bought c: excluded by the default exclude_bought
    assert "c" not in recs.filter(pl.col("user_id") == "u0")["item_id"].to_list()


def test_lightgbms_messages_never_reach_stdout() -> None:
    """LightGBM prints its native warnings on stdout, which carries the --json document: routed to stderr."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from recctl.ranking.ranker import lightgbm\n"
        "lgb = lightgbm()\n"
        "X, y = np.zeros((50, 3)), np.zeros(50)\n"
        "lgb.train({'objective': 'regression', 'min_data_in_leaf': 100}, lgb.Dataset(X, y), 2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "lightgbm: [Warning] There are no meaningful features" in done.stderr


def test_training_candidates_in_user_blocks_and_sampled_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training proposes candidates one generator and one block of label users at a time (bounded
    memory): the rows are the same as in one block. ``max_users`` caps the users the ranker learns from,
    and training.json reports the cap and the sample's size."""
    from recctl.evaluate.splits import leave_one_out
    from recctl.ranking import training as T

    train = leave_one_out(_two_kinds_of_users()).train
    params = {**TestPipeline.params, "features": False}

    def data(**extra: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
        pipe = build_model(CandidateSpec(name="ranked", kind="pipeline", params=params | extra))
        _, cands, rows = T.training_data(pipe, train, seed=1, items=None)  # type: ignore[arg-type]
        return cands, rows

    monkeypatch.setattr(T, "CANDIDATE_USERS", 10**9)
    whole = data()
    monkeypatch.setattr(T, "CANDIDATE_USERS", 7)
    blocked = data()
    assert whole[0].height > 1000 and whole[0]["user_id"].n_unique() > 100
    assert whole[0].equals(blocked[0]) and whole[1].equals(blocked[1])

    pipe = build_model(CandidateSpec(name="ranked", kind="pipeline", params=params | {"max_users": 40}))
    pipe.fit(train, seed=1)
    info = pipe.info  # type: ignore[attr-defined]
    assert info["label_users"] > 100 and info["max_users"] == 40 and info["sampled_users"] == 40
    assert info["learning_users"] <= 40 < whole[1]["user_id"].n_unique()
