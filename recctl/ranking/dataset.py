"""Point-in-time training data for the ranker.

The training events are split once more, the way the evaluation splits them: ``temporal`` (labels are
the target events of the last ``label_window`` of training, everything before is history),
``last-item`` (each user's last interaction is the label, the rest is history: leave-one-out data) or
``last-basket`` (each user's last basket of target events is the label: next-basket data, so every
user with two baskets contributes, however long ago they last shopped).
The generators are fitted on the history only and the features are computed as of the label cutoff,
so nothing of the label window reaches a feature (``tests/test_ranking.py`` plants a signal that exists
only after the cutoff and shows that the ranker cannot use it). A user's group holds the merged
candidates of every generator; labelled candidates are positives, the others negatives; users without
any positive among their candidates teach LambdaRank nothing and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from recctl.errors import DataError
from recctl.evaluate.splits import leave_one_out, next_basket, temporal
from recctl.ranking.ranker import LABEL


class NoLabels(DataError):
    """The ranker's label split leaves no history or no labels (the pipeline then serves its fallback)."""


@dataclass
class LabelSplit:
    how: str
    history: pl.DataFrame  # interactions before the labels (generators and features see only these)
    labels: pl.DataFrame  # (user_id, item_id) unique
    as_of: datetime  # features are computed from events strictly before this


def label_split(train: pl.DataFrame, how: str, window: str, target_events: list[str]) -> LabelSplit:
    """History and labels; ``NoLabels`` naming the setting when one of them is empty."""
    try:
        if how == "last-item":
            s = leave_one_out(train)
        elif how == "last-basket":
            s = next_basket(train, target_events=target_events)
        else:
            s = temporal(
                train, window, target_events=target_events, variant="all", key="[ranker] label_window"
            )
    except NoLabels:
        raise
    except DataError as exc:
        raise NoLabels(exc.message, hint=exc.hint) from exc
    history, labels = s.train, s.test
    if history.height == 0 or labels.height == 0:
        raise NoLabels(
            f"the ranker's {how} label split leaves {history.height} history events and {labels.height} labels"
        )
    last = history["ts"].max()
    assert isinstance(last, datetime)
    as_of = s.cutoff if s.cutoff is not None else last + timedelta(microseconds=1)
    return LabelSplit(how, history, labels.unique(), as_of)


def label_candidates(cands: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """``cands`` with a 0/1 ``label``; only users with at least one positive candidate."""
    pos = labels.select("user_id", "item_id").unique().with_columns(pl.lit(1, pl.Int32).alias(LABEL))
    out = cands.join(pos, on=["user_id", "item_id"], how="left").with_columns(pl.col(LABEL).fill_null(0))
    keep = out.group_by("user_id").agg(pl.col(LABEL).max().alias("_any")).filter(pl.col("_any") > 0)
    return out.join(keep.select("user_id"), on="user_id", how="semi")


def sample_negatives(frame: pl.DataFrame, *, hard_rank: int, negatives: int, seed: int) -> pl.DataFrame:
    """Keep every positive, every candidate some generator ranked within ``hard_rank`` (the hard
    negatives the ranker must sort out) and a seeded random sample of the rest, at most ``negatives``
    negatives per user in all."""
    rng = np.random.default_rng(seed)
    noise = pl.Series("_r", rng.random(frame.height))
    ranked = frame.with_columns(noise).with_columns(
        _order=pl.when(pl.col(LABEL) > 0)
        .then(-2.0)
        .when(pl.col("c_best_rank") <= hard_rank)
        .then(-1.0 + pl.col("_r") * 1e-3)
        .otherwise(pl.col("_r"))
    )
    ranked = ranked.with_columns(_k=pl.col("_order").rank("ordinal").over("user_id"))
    npos = pl.col(LABEL).sum().over("user_id")
    return ranked.filter(pl.col("_k") <= npos + negatives).drop("_r", "_order", "_k")


def sample_users(users: pl.Series, limit: int, seed: int) -> pl.Series:
    """At most ``limit`` users, a seeded sample (sorted, so the result does not depend on input order)."""
    users = users.unique().sort()
    if limit <= 0 or users.len() <= limit:
        return users
    idx = np.sort(np.random.default_rng(seed).choice(users.len(), size=limit, replace=False))
    return users.gather(idx)


def split_users(users: pl.Series, valid_share: float, seed: int) -> tuple[pl.Series, pl.Series]:
    """A seeded split of ``users`` into (train, validation) for early stopping."""
    users = users.unique().sort()
    n_valid = round(users.len() * valid_share)
    if n_valid == 0 or n_valid >= users.len():
        return users, users.clear()
    perm = np.random.default_rng(seed).permutation(users.len())
    return users.gather(np.sort(perm[n_valid:])), users.gather(np.sort(perm[:n_valid]))
