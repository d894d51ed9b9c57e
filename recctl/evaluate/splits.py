"""Evaluation splits: a training view and held-out targets, with nothing of the test period in training.

- ``temporal``: a global cutoff; training = every event before it; targets = each user's target events
  (purchases by default) at or after it. Variant ``new-items`` keeps only targets the user never touched
  before the cutoff; ``repeat`` keeps every target (as ``all``) and the evaluation filters nothing.
- ``leave-one-out``: per user, the last interaction is the test target and the one before it the
  validation target; training for the test = everything but the last.
- ``next-basket``: per user, the last basket of target events is the target (a basket is an order id
  when the data has one, else a session, else a calendar day); training = every event of the user
  before that basket began (before the first event of its session, so the views that led to it are not
  in training either), and everything of the users without a target basket. As in the next-basket
  literature (Li et al. 2023), other users' later events stay in training: the split is per user.
- ``files``: explicit training and test files (e.g. MovieLens u1.base / u1.test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from recctl import windows
from recctl.data import basket_key
from recctl.errors import ConfigError, DataError


@dataclass
class Split:
    protocol: str
    variant: str
    train: pl.DataFrame  # interactions visible to training
    test: pl.DataFrame  # targets: user_id, item_id (unique pairs)
    validation: pl.DataFrame | None = None  # leave-one-out: targets for tuning
    valid_train: pl.DataFrame | None = None  # leave-one-out: training for the validation targets
    cutoff: datetime | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # the training view before [prepare] cleaned it: what users really saw and did (None: not cleaned)
    raw_train: pl.DataFrame | None = None

    def seen(self) -> pl.DataFrame:
        """(user_id, item_id) pairs in training: what "filter seen items" removes. Taken from the raw
        training view: an item a user touched stays seen even when the clean-up dropped that event."""
        return (
            (self.raw_train if self.raw_train is not None else self.train)
            .select("user_id", "item_id")
            .unique()
        )

    def visitor_states(self) -> pl.DataFrame:
        """Each test user's state at the split: new (no history), returning (no purchase yet), buyer."""
        train = self.raw_train if self.raw_train is not None else self.train
        hist = train.group_by("user_id").agg(buyer=(pl.col("event_type") == "purchase").any())
        return (
            self.test.select("user_id")
            .unique()
            .join(hist, on="user_id", how="left")
            .select(
                "user_id",
                group=pl.when(pl.col("buyer").is_null())
                .then(pl.lit("new"))
                .when(pl.col("buyer"))
                .then(pl.lit("buyer"))
                .otherwise(pl.lit("returning")),
            )
        )


def parse_cutoff(
    spec: str, last_ts: datetime, first_ts: datetime | None = None, key: str = "cutoff"
) -> datetime:
    """The start of the window ``spec`` (``recctl.windows``: auto, 30m, 6h, 4w, 10%, an ISO date)."""
    return windows.cutoff(spec, last_ts if first_ts is None else first_ts, last_ts, key)


def _counts(split: Split) -> dict[str, Any]:
    t = split.train
    return {
        "train_events": t.height,
        "train_users": t["user_id"].n_unique(),
        "train_items": t["item_id"].n_unique(),
        "test_users": split.test["user_id"].n_unique(),
        "test_targets": split.test.height,
    }


def temporal(
    events: pl.DataFrame, cutoff: str, *, target_events: list[str], variant: str = "all",
    key: str = "[evaluate] cutoff",
) -> Split:  # fmt: skip
    """``key`` names the setting ``cutoff`` came from, for the error when the split leaves nothing."""
    if events.height == 0:
        raise DataError("no events to evaluate on")
    first, last = events["ts"].min(), events["ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    at = parse_cutoff(cutoff, last, first, key)
    train = events.filter(pl.col("ts") < at)
    after = events.filter(pl.col("ts") >= at)
    test = after.filter(pl.col("event_type").is_in(target_events)).select("user_id", "item_id").unique()
    test = _variant_targets(test, train, variant)
    if train.height == 0 or test.height == 0:
        n_targets = events.filter(pl.col("event_type").is_in(target_events)).height
        raise DataError(
            f"{key} = {cutoff!r} splits at {at:%Y-%m-%d %H:%M:%S}, which leaves {train.height} events before "
            f"it and {test.height} targets ({', '.join(target_events)}) after it; the data runs from "
            f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} with {n_targets} target events in all",
            hint=f'change {key} (e.g. a larger share such as "50%", or a duration such as 6h) or the '
            "target events",
        )
    split = Split("temporal", variant, train, test.sort("user_id", "item_id"), cutoff=at)
    split.info = {
        **_counts(split),
        "cutoff": at.isoformat(),
        "window": windows.resolve(cutoff, first, last),
        "test_start": at.isoformat(),
        "test_end": last.isoformat(),
        "target_events": target_events,
    }
    return split


VARIANTS = ("all", "new-items", "repeat")


def _variant_targets(test: pl.DataFrame, train: pl.DataFrame, variant: str) -> pl.DataFrame:
    """``new-items``: only the targets the user never touched in ``train``; ``all`` / ``repeat``: all."""
    if variant == "new-items":
        return test.join(train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="anti")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
    return test


def next_basket(events: pl.DataFrame, *, target_events: list[str], variant: str = "all") -> Split:
    """Each user's last basket of ``target_events`` is the target; everything of the user before it is
    training. Users with only one basket and no other earlier event have nothing to learn from and are left
    out of the test (their events stay in training)."""
    if events.height == 0:
        raise DataError("no events to evaluate on")
    events = events.with_columns(
        pl.lit(None, pl.String).alias(c) for c in ("order_id", "session_id") if c not in events.columns
    )
    buys = events.filter(pl.col("event_type").is_in(target_events))
    key = basket_key()
    how = "order id, else session, else day"
    baskets = (
        buys.with_columns(_b=key)
        .group_by("user_id", "_b")
        .agg(_start=pl.col("ts").min(), _end=pl.col("ts").max(), _sessions=pl.col("session_id").drop_nulls())
        .sort("user_id", "_end", "_b")
    )
    last = baskets.group_by("user_id", maintain_order=True).last()
    # the visit that led to the basket starts at the first event of the basket's sessions
    visit = (
        last.select("user_id", "_sessions").explode("_sessions").drop_nulls()
        .join(events.select("user_id", _sessions=pl.col("session_id"), _ts=pl.col("ts")),
              on=["user_id", "_sessions"])
        .group_by("user_id").agg(_visit=pl.col("_ts").min())
    )  # fmt: skip
    cut = last.join(visit, on="user_id", how="left").select(
        "user_id", "_b", _cut=pl.min_horizontal("_start", "_visit")
    )
    # only users with something before their last basket are test users; the others keep all their events
    has_past = events.join(cut, on="user_id").filter(pl.col("ts") < pl.col("_cut")).select("user_id").unique()
    cut = cut.join(has_past, on="user_id", how="semi")
    marked = events.join(cut, on="user_id", how="left", maintain_order="left")
    in_test = pl.col("_cut").is_not_null() & (pl.col("ts") >= pl.col("_cut"))
    train = marked.filter(~in_test).drop("_b", "_cut")
    target = (
        buys.with_columns(_b=key).join(cut, on=["user_id", "_b"], how="semi").select("user_id", "item_id")
    )
    target = target.unique()
    test = _variant_targets(target, train, variant)
    if train.height == 0 or test.height == 0:
        raise DataError(
            f"the next-basket split leaves {train.height} training events and {test.height} targets "
            f"({', '.join(target_events)}): users need two baskets of target events"
        )
    split = Split("next-basket", variant, train, test.sort("user_id", "item_id"))
    sizes = target.group_by("user_id").len()["len"]
    split.info = {
        **_counts(split),
        "basket": how,
        "target_events": target_events,
        "mean_basket_size": round(float(sizes.mean() or 0.0), 3),  # type: ignore[arg-type]
        "test_start": str(cut["_cut"].min()),
        "test_end": str(events["ts"].max()),
    }
    return split


def leave_one_out(events: pl.DataFrame) -> Split:
    """Events must be ordered by user then time (``load_interactions`` does this)."""
    pos = events.with_columns(
        _back=pl.int_range(pl.len(), 0, -1).over("user_id"),  # 1 = last interaction of the user
    )
    test = pos.filter(pl.col("_back") == 1).select("user_id", "item_id")
    validation = pos.filter(pl.col("_back") == 2).select("user_id", "item_id")
    train = pos.filter(pl.col("_back") >= 2).drop("_back")
    valid_train = pos.filter(pl.col("_back") >= 3).drop("_back")
    # users with a single interaction have nothing to learn from: they stay out of the test
    test = test.join(train.select("user_id").unique(), on="user_id", how="semi")
    split = Split("leave-one-out", "all", train, test, validation=validation, valid_train=valid_train)
    split.info = {**_counts(split), "validation_users": validation.height}
    return split


def from_frames(train: pl.DataFrame, test_events: pl.DataFrame, *, variant: str = "all") -> Split:
    """The ``files`` protocol: every test interaction is a target."""
    test = _variant_targets(test_events.select("user_id", "item_id").unique(), train, variant)
    test = test.sort("user_id", "item_id")
    split = Split("files", variant, train, test)
    split.info = _counts(split)
    return split
