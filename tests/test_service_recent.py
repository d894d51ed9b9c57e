"""The service's per-visitor recent events: bounds, pruning against a snapshot, and the state they give."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import duckdb
import polars as pl

from recctl.data import INTERACTION_COLUMNS as FRAME
from recctl.service.recent import Recent
from recctl.serving.user import Inputs, with_recent

T0 = datetime(2025, 6, 1, 10, 0, 0)


def _typed(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    """(user key, item, event type, seconds after T0) → the interaction frame's columns."""
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "event_type": [r[2] for r in rows],
         "ts": [T0 + timedelta(seconds=r[3]) for r in rows]},
        schema_overrides={"ts": pl.Datetime("us")},
    ).with_columns(**{c: pl.lit(None, dtype=pl.Float64 if c in ("value", "quantity", "price", "discount")
                                else pl.String) for c in FRAME[4:]}).select(FRAME)  # fmt: skip


def test_bounds_per_visitor_visitors_and_age() -> None:
    r = Recent(max_visitors=2, per_visitor=3, max_age_s=3600)
    r.add(_typed([("a", f"i{k}", "view", k) for k in range(5)]))
    assert r.frame("a")["item_id"].to_list() == ["i2", "i3", "i4"], "the newest 3 kept, oldest first"
    r.add(_typed([("b", "x", "view", 1)]))
    r.add(_typed([("a", "i9", "view", 9)]))  # a is now the most recently active
    r.add(_typed([("c", "y", "view", 1)]))
    assert r.frame("b") is None and r.frame("a") is not None and r.frame("c") is not None
    old = Recent(max_visitors=10, per_visitor=10, max_age_s=0.05)
    old.add(_typed([("a", "i1", "view", 1)]))
    time.sleep(0.1)
    assert old.frame("a") is None


def test_prune_drops_what_the_snapshot_holds() -> None:
    r = Recent(max_visitors=10, per_visitor=10, max_age_s=3600)
    r.add(_typed([("a", "i1", "view", 1), ("a", "i2", "view", 2), ("session:s", "i3", "view", 3)]))
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE events (user_id VARCHAR, session_id VARCHAR, item_id VARCHAR, event_type VARCHAR, ts TIMESTAMP)"
    )
    con.execute("INSERT INTO events VALUES ('a', NULL, 'i1', 'view', ?), (NULL, 's', 'i3', 'view', ?), "
                "('a', NULL, 'i2', 'view', ?)", [T0 + timedelta(seconds=1), T0 + timedelta(seconds=3), T0])  # fmt: skip
    assert r.prune(con) == 2
    assert r.frame("a")["item_id"].to_list() == ["i2"], "same item at another time is another event"
    assert r.frame("session:s") is None


def test_with_recent_moves_the_state_on() -> None:
    catalog = pl.DataFrame({"item_id": ["i1"]})
    events = _typed([("old", "i1", "view", 0)]).select(FRAME)
    visitors = pl.DataFrame({"user_id": ["old", "nobody", "viewer"], "state": ["returning", "new", "new"],
                             "n_items": [1, 0, 0], "n_events": [1, 0, 0]})  # fmt: skip
    recent = _typed([("old", "i2", "purchase", 5), ("viewer", "i1", "view", 5), ("viewer", "i2", "view", 6)])
    out = with_recent(Inputs(catalog, events, visitors), recent)
    got = {
        r["user_id"]: (r["state"], r["n_items"], r["n_events"]) for r in out.visitors.iter_rows(named=True)
    }
    assert got == {"old": ("buyer", 2, 2), "nobody": ("new", 0, 0), "viewer": ("returning", 2, 2)}
    assert out.events.filter(pl.col("user_id") == "viewer")["item_id"].to_list() == ["i1", "i2"]
    assert with_recent(Inputs(catalog, events, visitors), recent.head(0)).visitors.equals(visitors)
