"""Dataset clean-up before training (``recctl prepare``): sessions, repeat bursts, bots, minimum counts.

:func:`prepare` is a pure function over the interaction frame of :mod:`recctl.data`; the filters run in
a fixed order (sessionize → collapse_repeats → bots → min_counts), each switchable, each reporting what
it removed. The defaults change nothing on ordinary shop data: a shop raises them knowingly, reading the
report. :func:`run_prepare` is the warehouse side (load, prepare, store ``events_prepared``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from recctl.config import PrepareConfig
from recctl.errors import DataError
from recctl.prepare.filters import STEPS, FilterReport

__all__ = ["FilterReport", "PrepareResult", "prepare", "run_prepare"]

#: Columns the filters read; every other column of the frame is carried through untouched.
REQUIRED = ("user_id", "item_id", "event_type", "ts", "session_id")
_ROW = "__recctl_prepare_row"


@dataclass
class PrepareResult:
    """The kept events (input columns, dtypes and order) and one report per filter, in order."""

    events: pl.DataFrame
    report: list[FilterReport]

    @property
    def events_before(self) -> int:
        return self.report[0].events_before if self.report else self.events.height

    @property
    def events_after(self) -> int:
        return self.events.height

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_before": self.events_before,
            "events_after": self.events_after,
            "events_removed": self.events_before - self.events_after,
            "filters": [r.as_dict() for r in self.report],
        }


def _checked(events: pl.DataFrame) -> pl.DataFrame:
    """The frame as the filters need it, or a DataError that names what is wrong."""
    missing = [c for c in REQUIRED if c not in events.columns]
    if missing:
        raise DataError(
            f"the interaction frame lacks column(s) {', '.join(missing)}",
            hint="load it with recctl.data.load_interactions",
        )
    if _ROW in events.columns:
        raise DataError(f"the interaction frame has a column named {_ROW}, which prepare uses itself")
    if not isinstance(events.schema["ts"], pl.Datetime):
        raise DataError(f"the interaction frame's ts is {events.schema['ts']}, not a timestamp")
    for col in ("user_id", "session_id"):
        if events.schema[col] not in (pl.String, pl.Null):
            raise DataError(f"the interaction frame's {col} is {events.schema[col]}, not text")
    return events


def _in_user_time_order(frame: pl.DataFrame) -> bool:
    """Whether the rows already are in (user_id, ts) order with null user ids last and no null ts (then
    the stable sort by (user_id, ts, row) is the identity): one vectorized pass, no sort."""
    if frame.height < 2:
        return True
    u, t = pl.col("user_id"), pl.col("ts")
    pu, pt = u.shift(1), t.shift(1)
    step = (
        pu.is_null() & u.is_null()  # both null: ordered by ts among the null users
        & (t >= pt)
    ) | (pu.is_not_null() & (u.is_null() | (u > pu) | ((u == pu) & (t >= pt))))  # fmt: skip
    ok = frame.select((t.null_count() == 0) & step.slice(1).fill_null(False).all()).item()
    return bool(ok)


def prepare(events: pl.DataFrame, cfg: PrepareConfig) -> PrepareResult:
    """Run the configured filters over ``events`` (the interaction frame of ``recctl.data``).

    The result keeps the input's columns, dtypes and the order of the kept rows; only ``session_id``
    may change (sessionize), and an all-null ``session_id`` of dtype Null comes back as String. Every
    step is polars expressions over the whole frame: no Python loop touches single events.
    """
    frame = _checked(events)
    schema = frame.schema
    if schema["session_id"] == pl.Null:
        frame = frame.with_columns(pl.col("session_id").cast(pl.String))
    # the frames of recctl.data come sorted by (user_id, ts): then both sorts (a copy of every column
    # each, 10 M string keys) are the identity and are skipped
    ordered = _in_user_time_order(frame)
    ev = frame.with_row_index(_ROW)
    if not ordered:
        ev = ev.sort("user_id", "ts", _ROW, nulls_last=True)
    reports: list[FilterReport] = []
    for step in STEPS:
        ev, report = step(ev, cfg)
        reports.append(report)
    out = (ev if ordered else ev.sort(_ROW)).drop(_ROW)
    expected = {k: (pl.String if k == "session_id" and v == pl.Null else v) for k, v in schema.items()}
    if dict(out.schema) != expected:  # a step that changed a dtype is a bug, not a data problem
        raise AssertionError(f"prepare changed the frame's schema: {dict(out.schema)} != {expected}")
    return PrepareResult(out, reports)


from recctl.prepare.service import run_prepare  # noqa: E402  (the warehouse side imports the above)
