"""The events each visitor sent to this server that the warehouse does not hold yet, so that the next list
of the same visit already reflects them ("on the fly" events), bounded in size and age.

Keys are the interaction frame's user key (``user_id``, or ``session:<session_id>`` for an anonymous
visitor), so ``GET /v1/recommend/user/{key}`` finds them; the rows are the accepted item events typed as
ingest types them (``recctl.ingest.inbox.check_events``). Bounds: ``[service] recent_events`` per
visitor (the newest kept), ``recent_visitors`` visitors (the least recently active dropped first) and
``recent_max_age`` seconds. When a new snapshot holds a visitor's events (``ingest --inbox`` loaded
them) they are dropped here, so nothing counts twice. Per process: with ``--workers N`` a visitor's
next request may reach another worker, which knows only the events it received itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import polars as pl


class Recent:
    def __init__(self, max_visitors: int, per_visitor: int, max_age_s: float) -> None:
        self.max_visitors, self.per_visitor, self.max_age_s = max_visitors, per_visitor, max_age_s
        self._lock = threading.Lock()
        self._by: OrderedDict[str, deque[tuple[float, dict[str, Any]]]] = OrderedDict()
        self._schema: Any = None

    def add(self, typed: pl.DataFrame | None) -> None:
        """Accepted item events in the interaction frame's columns (a request's batch: bounded)."""
        if typed is None or typed.height == 0:
            return
        self._schema = typed.schema
        now = time.monotonic()
        with self._lock:
            for row in typed.iter_rows(named=True):
                key = row["user_id"]
                q = self._by.pop(key, None) or deque(maxlen=self.per_visitor)
                q.append((now, row))
                self._by[key] = q
            while len(self._by) > self.max_visitors:
                self._by.popitem(last=False)

    def frame(self, key: str) -> pl.DataFrame | None:
        """The visitor's recent events (interaction frame columns, oldest first), or None."""
        import polars as pl

        young = time.monotonic() - self.max_age_s
        with self._lock:
            rows = [r for t, r in self._by.get(key, ()) if t >= young]
        if not rows:
            return None
        return pl.DataFrame(rows, schema=self._schema).sort("ts", maintain_order=True)

    def __len__(self) -> int:
        return len(self._by)

    def prune(self, con: duckdb.DuckDBPyConnection) -> int:
        """Drop the expired events and those a new snapshot holds (same visitor, item, type and time);
        returns how many were dropped."""
        import polars as pl

        young = time.monotonic() - self.max_age_s
        with self._lock:
            entries = [(key, t, r) for key, q in self._by.items() for t, r in q]
        if not entries:
            return 0
        mine = pl.DataFrame(
            {"i": range(len(entries)), "user_id": [e[0] for e in entries],
             "item_id": [e[2]["item_id"] for e in entries], "event_type": [e[2]["event_type"] for e in entries],
             "ts": [e[2]["ts"] for e in entries]},
            schema_overrides={"ts": pl.Datetime("us")},
        )  # fmt: skip
        held = con.sql(
            "SELECT coalesce(user_id, 'session:' || session_id) AS user_id, item_id, event_type, ts FROM events "
            "WHERE coalesce(user_id, 'session:' || session_id) IN (SELECT unnest(?::VARCHAR[]))",
            params=[mine["user_id"].unique().to_list()],
        ).pl()
        on = ["user_id", "item_id", "event_type", "ts"]
        gone = set(mine.join(held.cast({"ts": pl.Datetime("us")}), on=on, how="semi")["i"].to_list())
        gone |= {i for i, (_, t, _) in enumerate(entries) if t < young}
        if not gone:
            return 0
        drop = {id(entries[i][2]) for i in gone}
        with self._lock:
            for key in list(self._by):
                kept = [(t, r) for t, r in self._by[key] if id(r) not in drop]
                if kept:
                    self._by[key] = deque(kept, maxlen=self.per_visitor)
                else:
                    del self._by[key]
        return len(gone)
