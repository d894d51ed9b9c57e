"""One grammar for the time windows of the settings: ``[evaluate] cutoff`` and ``[ranker] label_window``.

A window is measured back from the data's last event, so a nightly job rolls forward by itself:

- ``auto`` (the default): ``4w`` when four weeks are at most half of the data's span, else ``25%``; a
  long export gets the usual four weeks, an export of a few minutes still has history and a window.
- a duration ``N`` + unit: ``s`` (seconds), ``m`` / ``min`` (minutes), ``h`` (hours) are counted back from
  the last event itself; ``d`` and ``w`` (also ``days`` / ``weeks`` / ``last 4 weeks``) from the midnight
  after the last event, so that daily windows hold whole days (``N`` may be a decimal: ``1.5h``).
- a share of the span between the first and the last event: ``10%`` (more than 0, less than 100).
- a fixed ISO date or time (``2026-09-01``): the cutoff itself, which never moves.

``cutoff(spec, first, last)`` is the moment the window starts: events at or after it are in the window,
the ones before it are the history. ``check(spec, key)`` validates the text alone (config load time), with
an error naming the setting.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from recctl.errors import ConfigError

_DURATION = re.compile(
    r"^\s*(?:last\s+)?(\d+(?:\.\d+)?)\s*"
    r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\s*$",
    re.IGNORECASE,
)
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
AUTO_DEFAULT = "4w"  # what ``auto`` is on data long enough
AUTO_SHORT = "25%"  # ... and on data shorter than twice that
GRAMMAR = (
    "auto, a duration (90s, 30m, 6h, 7d, 4w: d and w end at the midnight after the last event), "
    "a share of the data's span (10%) or an ISO date"
)


def _unit_seconds(unit: str) -> float | None:
    """Seconds per unit for s/m/h; None for the calendar units d/w."""
    u = unit.lower()
    if u.startswith("s"):
        return 1.0
    if u == "m" or u.startswith("min"):
        return 60.0
    if u.startswith("h"):
        return 3600.0
    return None


def check(spec: str, key: str) -> str:
    """``spec`` if it is a window in the grammar, else a ConfigError naming ``key``."""
    text = spec.strip()
    if text.lower() == "auto" or _DURATION.match(text):
        m = _DURATION.match(text)
        if m and float(m.group(1)) <= 0:
            raise ConfigError(f"{key} = {spec!r}: a window must be longer than 0", hint=f"use {GRAMMAR}")
        return spec
    share = _SHARE.match(text)
    if share:
        if not 0 < float(share.group(1)) < 100:
            raise ConfigError(
                f"{key} = {spec!r}: a share of the span is more than 0% and less than 100%",
                hint=f"use {GRAMMAR}",
            )
        return spec
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{key} = {spec!r} is not a window", hint=f"use {GRAMMAR}") from None
    return spec


def resolve(spec: str, first: datetime, last: datetime) -> str:
    """``auto`` made concrete for data from ``first`` to ``last``; any other spec as it is."""
    if spec.strip().lower() != "auto":
        return spec
    span = last - first
    return AUTO_DEFAULT if timedelta(weeks=4) * 2 <= span else AUTO_SHORT


def cutoff(spec: str, first: datetime, last: datetime, key: str = "window") -> datetime:
    """Where the window ``spec`` starts on data from ``first`` to ``last`` (see the module docstring)."""
    check(spec, key)
    text = resolve(spec, first, last).strip()
    m = _DURATION.match(text)
    if m:
        n, unit = float(m.group(1)), m.group(2)
        per = _unit_seconds(unit)
        if per is not None:
            return last - timedelta(seconds=n * per)
        days = n * 7 if unit.lower().startswith("w") else n
        end = datetime(last.year, last.month, last.day) + timedelta(days=1)
        return end - timedelta(days=days)
    share = _SHARE.match(text)
    if share:
        return last - (last - first) * (float(share.group(1)) / 100.0)
    return datetime.fromisoformat(text).replace(tzinfo=None)
