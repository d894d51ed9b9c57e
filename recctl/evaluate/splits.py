"""Evaluation splits: a training view and held-out targets, with nothing of the test period in training.

- ``temporal``: a global cutoff; training = every event before it; targets = each user's target events
  (purchases by default) at or after it. Variant ``new-items`` keeps only targets the user never touched
  before the cutoff.
- ``leave-one-out``: per user, the last interaction is the test target and the one before it the
  validation target; training for the test = everything but the last.
- ``files``: explicit training and test files (e.g. MovieLens u1.base / u1.test).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from recctl.errors import ConfigError, DataError

_LAST = re.compile(r"^\s*(?:last\s+)?(\d+)\s*(d|w|days?|weeks?)\s*$", re.IGNORECASE)


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


def parse_cutoff(spec: str, last_ts: datetime) -> datetime:
    """'4w', '28d', 'last 4 weeks' → that long before the last event (at midnight); else an ISO date/time."""
    m = _LAST.match(spec)
    if m:
        n, unit = int(m.group(1)), m.group(2).lower()
        days = n * 7 if unit.startswith("w") else n
        end = datetime(last_ts.year, last_ts.month, last_ts.day) + timedelta(days=1)
        return end - timedelta(days=days)
    try:
        return datetime.fromisoformat(spec).replace(tzinfo=None)
    except ValueError as exc:
        raise ConfigError(
            f"cutoff {spec!r} is neither 'last N days/weeks' (e.g. 4w) nor an ISO date"
        ) from exc


def _counts(split: Split) -> dict[str, Any]:
    t = split.train
    return {
        "train_events": t.height,
        "train_users": t["user_id"].n_unique(),
        "train_items": t["item_id"].n_unique(),
        "test_users": split.test["user_id"].n_unique(),
        "test_targets": split.test.height,
    }


def temporal(events: pl.DataFrame, cutoff: str, *, target_events: list[str], variant: str = "all") -> Split:
    if events.height == 0:
        raise DataError("no events to evaluate on")
    last = events["ts"].max()
    assert isinstance(last, datetime)
    at = parse_cutoff(cutoff, last)
    train = events.filter(pl.col("ts") < at)
    after = events.filter(pl.col("ts") >= at)
    test = after.filter(pl.col("event_type").is_in(target_events)).select("user_id", "item_id").unique()
    if variant == "new-items":
        test = test.join(train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="anti")
    elif variant != "all":
        raise ConfigError(f"unknown temporal variant {variant!r}: use all or new-items")
    if train.height == 0 or test.height == 0:
        raise DataError(
            f"temporal split at {at:%Y-%m-%d %H:%M} leaves {train.height} training events and "
            f"{test.height} targets ({', '.join(target_events)}); choose another cutoff or target events"
        )
    split = Split("temporal", variant, train, test.sort("user_id", "item_id"), cutoff=at)
    split.info = {
        **_counts(split),
        "cutoff": at.isoformat(),
        "test_start": at.isoformat(),
        "test_end": last.isoformat(),
        "target_events": target_events,
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
    test = test_events.select("user_id", "item_id").unique().sort("user_id", "item_id")
    if variant == "new-items":
        test = test.join(train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="anti")
    split = Split("files", variant, train, test)
    split.info = _counts(split)
    return split
