"""Visitor states, decided from the data: new, returning (anonymous), signed-in, buyer.

- ``new``: no item events at all (an id the shop has never seen, or a fresh anonymous session);
- ``returning``: item events but no purchase, and not a registered user (no row in ``users``);
- ``signed_in``: a registered user (a row in ``users``) without a purchase;
- ``buyer``: at least one purchase.

Users are keyed as in the interaction frame (``recctl.data``): a customer id, or ``session:<id>`` for
an anonymous session's events. ``n_items`` (distinct items touched) is the evidence the
over-personalization guard weighs ([serving] min_items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import duckdb
    import polars as pl

State = Literal["new", "returning", "signed_in", "buyer"]
STATES: tuple[State, ...] = ("new", "returning", "signed_in", "buyer")

_KEY = "coalesce(user_id, 'session:' || session_id)"
_PER_USER = f"""
    SELECT {_KEY} AS user_id,
           count(DISTINCT item_id) AS n_items,
           count(*) AS n_events,
           bool_or(event_type = 'purchase') AS bought
    FROM events
    WHERE item_id IS NOT NULL {{where}}
    GROUP BY 1
"""


@dataclass(frozen=True)
class Visitor:
    user_id: str
    state: State
    n_items: int  # distinct items touched
    n_events: int


def _state(bought: bool | None, registered: bool, n_events: int) -> State:
    if bought:
        return "buyer"
    if registered:
        return "signed_in"
    return "returning" if n_events else "new"


def visitor(con: duckdb.DuckDBPyConnection, user_id: str) -> Visitor:
    """One visitor's state from the warehouse (two indexed-by-scan queries; no polars: the fast path)."""
    where = f"AND {_KEY} = ?"
    rows = con.sql(_PER_USER.format(where=where), params=[user_id]).fetchall()
    registered = bool(
        con.sql("SELECT count(*) FROM users WHERE user_id = ?", params=[user_id]).fetchall()[0][0]
    )
    if not rows:
        return Visitor(user_id, _state(None, registered, 0), 0, 0)
    _, n_items, n_events, bought = rows[0]
    return Visitor(user_id, _state(bought, registered, int(n_events)), int(n_items), int(n_events))


def visitors(con: duckdb.DuckDBPyConnection, user_ids: list[str] | None = None) -> pl.DataFrame:
    """user_id, state, n_items, n_events for ``user_ids`` (every id given, unknown ones ``new``) or, when
    None, for every user with events and every registered user."""
    import polars as pl

    if user_ids is None:
        per_user = con.sql(_PER_USER.format(where="")).pl()
        registered = con.sql("SELECT DISTINCT user_id FROM users WHERE user_id IS NOT NULL").pl()
    else:  # only these users' rows (a request asks for one: the shop's other events are not read)
        given = f"AND {_KEY} IN (SELECT unnest(?::VARCHAR[]))"
        per_user = con.sql(_PER_USER.format(where=given), params=[user_ids]).pl()
        registered = con.sql(
            "SELECT DISTINCT user_id FROM users WHERE user_id IN (SELECT unnest(?::VARCHAR[]))",
            params=[user_ids],
        ).pl()
    if user_ids is None:
        ids = pl.concat([per_user.select("user_id"), registered.select("user_id")]).unique()
    else:
        ids = pl.DataFrame({"user_id": pl.Series(user_ids, dtype=pl.String)}).unique(maintain_order=True)
    frame = ids.join(per_user, on="user_id", how="left").join(
        registered.with_columns(registered=pl.lit(True)), on="user_id", how="left"
    )
    out: pl.DataFrame = frame.select(
        "user_id",
        state=pl.when(pl.col("bought").fill_null(False))
        .then(pl.lit("buyer"))
        .when(pl.col("registered").fill_null(False))
        .then(pl.lit("signed_in"))
        .when(pl.col("n_events").fill_null(0) > 0)
        .then(pl.lit("returning"))
        .otherwise(pl.lit("new")),
        n_items=pl.col("n_items").fill_null(0).cast(pl.Int64),
        n_events=pl.col("n_events").fill_null(0).cast(pl.Int64),
    )
    return out
