"""Issue 14, points 1 and 2: one window grammar for [evaluate] cutoff and [ranker] label_window, relative
to the data and adapting to short exports; a ranker with too few labels (or nothing learned) is never
served: the pipeline falls back to its generators' blend and says so."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recctl import windows
from recctl.config import CandidateSpec, load_config
from recctl.errors import ConfigError, DataError
from recctl.evaluate.splits import temporal
from recctl.ranking import build_model
from recctl.ranking.dataset import NoLabels, label_split
from recctl.ranking.merge import propose
from recctl.ranking.pipeline import Pipeline

LAST = datetime(2024, 3, 30, 15, 0, 0)
LONG = LAST - timedelta(days=400)  # first event of a long export
SHORT = LAST - timedelta(minutes=20)  # ... of an export of twenty minutes


@pytest.mark.parametrize(
    ("spec", "first", "expected"),
    [
        ("4w", LONG, datetime(2024, 3, 3)),  # d / w: from the midnight after the last event (as before)
        ("last 10 days", LONG, datetime(2024, 3, 21)),
        ("28d", LONG, datetime(2024, 3, 3)),
        ("1.5d", LONG, datetime(2024, 3, 29, 12)),
        ("90s", SHORT, LAST - timedelta(seconds=90)),  # s / m / h: back from the last event itself
        ("30m", LONG, LAST - timedelta(minutes=30)),
        ("5 min", SHORT, LAST - timedelta(minutes=5)),
        ("6h", LONG, LAST - timedelta(hours=6)),
        ("10%", SHORT, LAST - timedelta(minutes=2)),  # a share of the span first → last
        ("50 %", LONG, LAST - timedelta(days=200)),
        ("2024-03-01", LONG, datetime(2024, 3, 1)),  # fixed
        ("auto", LONG, datetime(2024, 3, 3)),  # a long export: four weeks
        ("auto", SHORT, LAST - timedelta(minutes=5)),  # a short one: the last 25 %
        ("auto", LAST - timedelta(weeks=7), LAST - timedelta(weeks=7) * 0.25),
    ],
)
def test_window_grammar(spec: str, first: datetime, expected: datetime) -> None:
    assert windows.cutoff(spec, first, LAST, "[evaluate] cutoff") == expected


def test_auto_keeps_four_weeks_from_eight_weeks_of_data_on() -> None:
    assert windows.resolve("auto", LAST - timedelta(weeks=8), LAST) == "4w"
    assert windows.resolve("auto", LAST - timedelta(weeks=8) + timedelta(seconds=1), LAST) == "25%"


@pytest.mark.parametrize("spec", ["4 weeks ago", "0h", "0%", "100%", "150%", "yesterday", "4mo", ""])
def test_a_bad_window_names_the_key_and_the_grammar(spec: str) -> None:
    with pytest.raises(ConfigError) as exc:
        windows.check(spec, "[ranker] label_window")
    assert "[ranker] label_window" in exc.value.message
    assert "10%" in (exc.value.hint or "")


@pytest.mark.parametrize(
    ("section", "key"), [("ranker", "label_window"), ("evaluate", "cutoff")]
)  # fmt: skip
def test_config_refuses_a_bad_window_naming_its_key(tmp_path: Path, section: str, key: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[{section}]\n{key} = "fortnight"\n')
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key}"):
        load_config(f, environ={})
    f.write_text(f'[{section}]\n{key} = "15m"\n')
    assert getattr(getattr(load_config(f, environ={}), section), key) == "15m"


def minutes_of_events(
    n_users: int = 30, minutes: int = 20, buy_share: float = 0.3, seed: int = 0
) -> pl.DataFrame:
    """Each user views and buys items of one of three groups over ``minutes`` minutes."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 30, 9)
    rows: dict[str, list[Any]] = {"user_id": [], "item_id": [], "ts": [], "event_type": []}
    for u in range(n_users):
        for _ in range(12):
            rows["user_id"].append(f"u{u:02d}")
            rows["item_id"].append(f"i{(u % 3) + 3 * int(rng.integers(0, 6)):02d}")
            rows["ts"].append(start + timedelta(seconds=float(rng.uniform(0, minutes * 60))))
            rows["event_type"].append("purchase" if rng.random() < buy_share else "view")
    return pl.DataFrame(rows).sort("user_id", "ts")


def test_the_split_error_names_the_key_that_decides_it() -> None:
    events = minutes_of_events(buy_share=0.0)  # no purchase at all: no window can hold a target
    with pytest.raises(DataError) as exc:
        temporal(events, "auto", target_events=["purchase"])
    assert "[evaluate] cutoff = 'auto'" in exc.value.message and "0 target events in all" in exc.value.message
    assert "[evaluate] cutoff" in (exc.value.hint or "")
    with pytest.raises(NoLabels, match=r"\[ranker\] label_window"):
        label_split(events, "temporal", "auto", ["purchase"])


def test_a_twenty_minute_export_splits_with_the_defaults() -> None:
    events = minutes_of_events()
    split = temporal(events, "auto", target_events=["purchase"])
    assert split.info["window"] == "25%"
    assert split.train.height > split.test.height > 0
    labels = label_split(split.train, "temporal", "auto", ["purchase"])
    assert labels.labels.height > 0 and labels.history["ts"].max() < labels.as_of


GENS = [{"name": "pop", "kind": "popular"}, {"name": "next", "kind": "cooccur"}]
LGBM = {"n_estimators": 20, "min_child_samples": 1, "num_leaves": 4, "threads": 1}


def pipeline(**params: Any) -> Pipeline:
    spec = CandidateSpec(
        name="ranked",
        kind="pipeline",
        params={"generators": GENS, "valid_share": 0.0, "lgbm": LGBM, **params},
    )
    model = build_model(spec)
    assert isinstance(model, Pipeline)
    return model


def test_too_few_labels_serve_the_blend_and_say_so() -> None:
    events = minutes_of_events(n_users=8)
    pipe = pipeline(min_label_users=20, fallback="blend")
    pipe.fit(events, seed=1)
    assert pipe.ranker is None and pipe.fallback == "blend"
    assert "below the minimum of 20 users" in pipe.info["fallback_reason"]
    users = pl.Series(["u00", "u01", "u02"])
    got = pipe.for_users(users, 5)
    # the blend: the generators' lists merged by the sum of reciprocal ranks
    merged = propose(pipe.generators, users, pipe.params.n_per_generator, None)
    want = (
        merged.sort(["user_id", "c_rrank_sum", "item_id"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(5)
    )
    assert got.select("user_id", "item_id").equals(want.select("user_id", "item_id"))


def test_the_fallback_can_be_one_generator_and_survives_save_and_load(tmp_path: Path) -> None:
    events = minutes_of_events(n_users=8)
    pipe = pipeline(min_label_users=20, fallback="next")
    pipe.fit(events, seed=1)
    users = pl.Series(["u00", "u03"])
    nxt = pipe.generators["next"].for_users(users, 3)
    got = pipe.for_users(users, 3)
    assert nxt["user_id"].n_unique() == 2  # the chosen generator's own list comes first, in its order
    for user in ("u00", "u03"):
        own = nxt.filter(pl.col("user_id") == user)["item_id"].to_list()
        assert got.filter(pl.col("user_id") == user)["item_id"].to_list()[: len(own)] == own
    pipe.save(tmp_path / "m")
    assert not (tmp_path / "m" / "ranker.txt").exists()
    back = Pipeline.load(tmp_path / "m", "ranked", pipe.params.model_dump())
    assert back.fallback == "next" and back.for_users(users, 3).equals(got)


def test_a_fallback_that_is_not_a_generator_is_refused() -> None:
    from recctl.config import RecctlConfig
    from recctl.ranking import pipeline_spec

    cfg = RecctlConfig.model_validate({"candidates": GENS, "ranker": {"fallback": "nxt"}})
    with pytest.raises(
        ConfigError, match="fallback = 'nxt' is not one of the ranker's generators: best, blend, pop, next"
    ):
        pipeline_spec(cfg)


def test_the_best_fallback_is_the_generator_that_finds_most_labels() -> None:
    """Each user's label is an item of their own group: the co-occurrence generator finds them, the
    global popularity list (the same for everyone) cannot find most."""
    events = minutes_of_events(n_users=12)
    pipe = pipeline(min_label_users=50, label="last-item")
    pipe.fit(events, seed=1)
    hits = pipe.info["fallback_hits@10"]
    assert set(hits) == {"pop", "next"} and hits["next"] != hits["pop"]
    assert pipe.fallback == max(hits, key=hits.__getitem__)
    tie = pipeline(min_label_users=50, label="temporal", label_window="1s")  # no label at all: the blend
    tie.fit(events, seed=1)
    assert tie.fallback == "blend" and "[ranker] label_window" in tie.info["fallback_reason"]


def test_a_ranker_that_learned_nothing_is_not_served() -> None:
    events = minutes_of_events(n_users=30)
    pipe = pipeline(min_label_users=1, min_positives=1, lgbm={**LGBM, "min_child_samples": 100_000})
    pipe.fit(events, seed=1)
    assert pipe.ranker is None and "learned nothing" in pipe.info["fallback_reason"]
    assert pipe.for_users(pl.Series(["u00"]), 4).height == 4


def test_lightgbm_errors_become_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import recctl.ranking.training as T

    def broken(*a: Any, **k: Any) -> None:
        raise ValueError("Number of rows in group > 10000")

    monkeypatch.setattr(T, "train_ranker", broken)
    pipe = pipeline(min_label_users=1, min_positives=1, fallback="blend")
    pipe.fit(minutes_of_events(), seed=1)
    assert (
        pipe.fallback == "blend" and "LightGBM could not fit: Number of rows" in pipe.info["fallback_reason"]
    )


def test_enough_labels_train_the_ranker() -> None:
    pipe = pipeline(min_label_users=5, min_positives=5)
    pipe.fit(minutes_of_events(n_users=40), seed=1)
    assert pipe.ranker is not None and pipe.fallback is None and "fallback" not in pipe.info
