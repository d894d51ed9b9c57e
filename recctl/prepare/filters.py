"""The clean-up filters of ``recctl prepare``, each a vectorized step over the interaction frame.

Every step receives the frame sorted by (user_id, ts, input row) and returns it in the same order, with
a :class:`FilterReport` of what it did. Sorting once up front lets ``diff().over(...)`` read each
partition in time order without a Python loop over events; ``prepare`` restores the input order.
Removal counts are measured from the frames before and after a step, so the report always adds up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl

from recctl.config import PrepareConfig, parse_duration

PURCHASE = "purchase"


@dataclass
class FilterReport:
    """What one filter did. ``events_before - events_removed`` is what the next filter receives."""

    filter: str
    enabled: bool
    params: dict[str, Any]
    events_before: int
    events_removed: int = 0
    users_removed: int = 0
    items_removed: int = 0
    purchases_removed: int = 0
    events_changed: int = 0  # kept events whose values changed (sessionize: session ids given)
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_after(self) -> int:
        return self.events_before - self.events_removed

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_after": self.events_after}


Step = Callable[[pl.DataFrame, PrepareConfig], tuple[pl.DataFrame, FilterReport]]


def _counts(ev: pl.DataFrame) -> tuple[int, int, int, int]:
    """Events, distinct users, distinct items, purchases: the quantities every report compares."""
    row = ev.select(
        pl.len(),
        pl.col("user_id").n_unique(),
        pl.col("item_id").n_unique(),
        (pl.col("event_type") == PURCHASE).fill_null(False).sum(),
    ).row(0)
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def measured(
    name: str, enabled: bool, params: dict[str, Any], before: pl.DataFrame, after: pl.DataFrame
) -> FilterReport:
    """The report of a step, its removal counts measured from the frames themselves."""
    # the steps only remove rows (sessionize only renames sessions): the same height is the same events,
    # and nothing was removed; only then are the distinct counts (a hash of every id: seconds at 10 M
    # events) skipped
    if after is before or after.height == before.height:
        b = a = (before.height, 0, 0, 0)
    else:
        b, a = _counts(before), _counts(after)
    return FilterReport(
        filter=name, enabled=enabled, params=params, events_before=b[0], events_removed=b[0] - a[0],
        users_removed=b[1] - a[1], items_removed=b[2] - a[2], purchases_removed=b[3] - a[3],
    )  # fmt: skip


def window(text: str) -> timedelta:
    """A duration setting where "0" means off."""
    return timedelta(0) if text.strip() == "0" else parse_duration(text)


def _off(name: str, params: dict[str, Any], ev: pl.DataFrame, why: str) -> tuple[pl.DataFrame, FilterReport]:
    report = measured(name, False, params, ev, ev)
    report.detail = why
    return ev, report


# ---------------------------------------------------------------------------------------------- sessionize


def _made(prefix: str, number: str, sep: str) -> pl.Expr:
    return pl.concat_str([pl.col(prefix), pl.lit(sep), pl.col(number).cast(pl.String)])


def _free_separator(marks: pl.DataFrame, prefix: str, number: str, base: str, taken: pl.Series) -> str:
    """The shortest repetition of ``base`` for which no made id ``<prefix><sep><number>`` already exists.

    Made ids end in ``<sep><digits>`` and a longer separator eventually escapes every existing id. The
    loop is over separator lengths (almost always one round), never over events.
    """
    parts = marks.select(prefix, number).drop_nulls()
    sep = base
    while parts.select(_made(prefix, number, sep).is_in(taken.implode()).any()).item():
        sep += base
    return sep


def _session_marks(ev: pl.DataFrame, gap: timedelta, resplit: bool) -> pl.DataFrame:
    """Per event: the parts of a made session id (prefix and number), null where none is made."""
    missing = pl.col("session_id").is_null()
    step = pl.col("ts").diff().over("user_id", missing)
    exprs = [
        pl.col("session_id"),
        pl.when(missing).then(pl.col("user_id")).alias("fill_prefix"),
        (step.is_null() | (step > gap)).cast(pl.UInt32).cum_sum().over("user_id", missing).alias("fill_n"),
    ]
    if resplit:
        step_s = pl.col("ts").diff().over("user_id", "session_id")
        piece = (step_s > gap).fill_null(False).cast(pl.UInt32).cum_sum().over("user_id", "session_id")
        exprs += [
            pl.when(~missing & (piece > 0)).then(pl.col("session_id")).alias("split_prefix"),
            (piece + 1).alias("split_n"),
        ]
    else:
        exprs += [pl.lit(None, pl.String).alias("split_prefix"), pl.lit(None, pl.UInt32).alias("split_n")]
    return ev.select(exprs)


def sessionize(ev: pl.DataFrame, cfg: PrepareConfig) -> tuple[pl.DataFrame, FilterReport]:
    """Give session-less events a session from inactivity gaps; optionally split long real sessions.

    Events without a session_id get ``<user>#<n>``: a user's session-less events in time order, a new
    session after each gap longer than ``session_gap``. With ``resplit_sessions`` a real session is cut
    at such gaps too (per user of the frame); its later pieces are named ``<session>~<k>`` (k = 2, 3, …;
    the first piece keeps the id). A separator is lengthened ("##", "~~") when a made id would equal an
    existing one, so no two visits are merged; "#" ids never equal "~" ids, as the character before the
    trailing number differs. Nothing is removed.
    """
    name = "sessionize"
    params = {"session_gap": cfg.session_gap, "resplit_sessions": cfg.resplit_sessions}
    if not cfg.sessionize:
        return _off(name, params, ev, "off")
    n_missing = ev["session_id"].null_count()
    if n_missing == 0 and not cfg.resplit_sessions:  # nothing to give or split: no marks, no id is made
        out, fill_sep, split_sep, n_filled, n_split, n_sessions, n_pieces = ev, "#", "~", 0, 0, 0, 0
    else:
        marks = _session_marks(ev, parse_duration(cfg.session_gap), cfg.resplit_sessions)
        taken = ev["session_id"].drop_nulls().unique()
        fill_sep = _free_separator(marks, "fill_prefix", "fill_n", "#", taken)
        split_sep = _free_separator(marks, "split_prefix", "split_n", "~", taken)
        made = marks.select(
            _made("fill_prefix", "fill_n", fill_sep).alias("filled"),
            _made("split_prefix", "split_n", split_sep).alias("split"),
            pl.col("session_id"),
        )
        out = ev.with_columns(made.select(pl.coalesce("filled", "split", "session_id").alias("session_id")))
        n_filled, n_split = made["filled"].count(), made["split"].count()
        n_sessions, n_pieces = made["filled"].drop_nulls().n_unique(), made["split"].drop_nulls().n_unique()

    report = measured(name, True, params, ev, out)
    report.events_changed = n_filled + n_split
    report.extra = {
        "events_sessionized": n_filled, "sessions_made": n_sessions, "events_resplit": n_split,
        "sessions_split_off": n_pieces, "separators": [fill_sep, split_sep],
    }  # fmt: skip
    still = n_missing - n_filled
    filled = f"{n_filled:,} events without a session got one ({n_sessions:,} sessions)"
    report.detail = (
        (filled if n_missing else "every event has a session")
        + (f", {still:,} stay without (no user id)" if still else "")
        + (f"; {n_split:,} events moved to {n_pieces:,} split-off sessions" if cfg.resplit_sessions else "")
    )
    return out, report


# ---------------------------------------------------------------------------------------- collapse_repeats


def collapse_repeats(ev: pl.DataFrame, cfg: PrepareConfig) -> tuple[pl.DataFrame, FilterReport]:
    """Drop an event that repeats the same (user, item, event type) within ``repeat_window`` of the
    previous one: a burst of reloads or double clicks keeps its first event. Chains count as one burst
    (each repeat is measured from the one before it). Purchases are never collapsed, whatever the
    config says: two purchases a second apart are two units sold.
    """
    name = "collapse_repeats"
    types = [t for t in cfg.repeat_event_types if t != PURCHASE]
    params = {"repeat_window": cfg.repeat_window, "repeat_event_types": types}
    win = window(cfg.repeat_window)
    if not cfg.collapse_repeats or win <= timedelta(0) or not types:
        return _off(name, params, ev, "off")
    since = pl.col("ts").diff().over("user_id", "item_id", "event_type")
    repeat = (pl.col("event_type").is_in(types) & (since <= win)).fill_null(False)
    flagged = ev.with_columns(repeat.alias("_repeat"))
    by_type = flagged.filter("_repeat").group_by("event_type").len().sort("event_type")
    out = flagged.filter(~pl.col("_repeat")).drop("_repeat")
    report = measured(name, True, params, ev, out)
    report.extra = {"removed_by_type": dict(by_type.iter_rows())}
    kinds = ", ".join(f"{t} {n:,}" for t, n in by_type.iter_rows())
    report.detail = (
        f"repeats within {cfg.repeat_window} dropped ({kinds}); the first of each burst stays" if kinds
        else f"no repeats within {cfg.repeat_window}"
    )  # fmt: skip
    return out, report


# ------------------------------------------------------------------------------------------------------ bots


def _bot_rules(cfg: PrepareConfig) -> dict[str, pl.Expr]:
    """Per event: does it sit in a window that exceeds a bot threshold? (Only the thresholds set.)"""
    rules: dict[str, pl.Expr] = {}
    if cfg.bot_max_events_per_hour:
        hour = pl.col("ts").dt.truncate("1h")
        rules["events/hour"] = pl.len().over("user_id", hour) > cfg.bot_max_events_per_hour
    if cfg.bot_max_events_per_day:
        day = pl.col("ts").dt.truncate("1d")
        rules["events/day"] = pl.len().over("user_id", day) > cfg.bot_max_events_per_day
    if cfg.bot_max_distinct_items_per_session:
        items = pl.col("item_id").n_unique().over("user_id", "session_id")
        busy = pl.col("session_id").is_not_null() & (items > cfg.bot_max_distinct_items_per_session)
        rules["items/session"] = busy
    return {k: v.fill_null(False) for k, v in rules.items()}


def bots(ev: pl.DataFrame, cfg: PrepareConfig) -> tuple[pl.DataFrame, FilterReport]:
    """Remove users whose activity no person produces: more events than the limit in any clock hour
    (UTC) or calendar day, or a session with more distinct items than the limit. ALL their events go,
    purchases included (a scraper's test orders are no signal either); the report counts the purchases
    removed so that a too-low threshold is noticed.
    """
    name = "bots"
    params = {
        "bot_max_events_per_hour": cfg.bot_max_events_per_hour,
        "bot_max_events_per_day": cfg.bot_max_events_per_day,
        "bot_max_distinct_items_per_session": cfg.bot_max_distinct_items_per_session,
    }
    rules = _bot_rules(cfg)
    if not cfg.bots or not rules:
        return _off(name, params, ev, "off")
    names = list(rules)
    flags = (
        ev.select(pl.col("user_id"), *[expr.alias(n) for n, expr in rules.items()])
        .group_by("user_id")
        .agg(pl.col(names).any())
        .filter(pl.any_horizontal(names))
        .sort("user_id")
    )
    is_bot = pl.col("user_id").is_in(flags["user_id"].implode()).fill_null(False)
    out = ev.filter(~is_bot)
    report = measured(name, True, params, ev, out)
    by_rule = {n: int(flags[n].sum()) for n in names}
    examples = flags["user_id"].head(5).to_list()
    report.extra = {"bot_users_by_rule": by_rule, "examples": examples}
    if flags.height == 0:
        report.detail = "no user over the limits"
    else:
        rules_text = ", ".join(f"{n} {k:,}" for n, k in by_rule.items() if k)
        report.detail = (
            f"{flags.height:,} bot users ({rules_text}) removed with all {report.events_removed:,} of "
            f"their events, {report.purchases_removed:,} of them purchases; e.g. {', '.join(map(str, examples))}"
        )
    return out, report


# ------------------------------------------------------------------------------------------------ min counts


def min_counts(ev: pl.DataFrame, cfg: PrepareConfig) -> tuple[pl.DataFrame, FilterReport]:
    """Drop users with fewer than ``min_user_events`` events and items with fewer than ``min_item_users``
    distinct users, both judged on the same frame in one pass. Removing items can push users below
    their minimum (and the reverse), so with ``k_core`` the passes repeat until one removes nothing:
    every user and item left then meets its minimum. Values 0 and 1 switch a minimum off.
    """
    name = "min_counts"
    mu, mi = cfg.min_user_events, cfg.min_item_users
    params = {"min_user_events": mu, "min_item_users": mi, "k_core": cfg.k_core}
    conds: list[pl.Expr] = []
    if mu > 1:
        conds.append(pl.len().over("user_id") >= mu)
    if mi > 1:
        conds.append(pl.col("user_id").n_unique().over("item_id") >= mi)
    if not cfg.min_counts or not conds:
        return _off(name, params, ev, "off" if not cfg.min_counts else "off (minimums of 1)")
    keep = pl.all_horizontal(conds)
    out, passes = ev, 0
    while True:  # one round per pass over the frame; each round but the last removes events
        passes += 1
        nxt = out.filter(keep)
        done = nxt.height == out.height
        out = nxt
        if done or not cfg.k_core:
            break
    report = measured(name, True, params, ev, out)
    report.extra = {"passes": passes}
    how = f"k-core stable after {passes} passes" if cfg.k_core else "one pass"
    report.detail = (
        f"{report.users_removed:,} users and {report.items_removed:,} items removed (at least {mu} events "
        f"per user, {mi} users per item; {how})"
    )
    return out, report


STEPS: tuple[Step, ...] = (sessionize, collapse_repeats, bots, min_counts)
