"""What the ``recommend`` command calls: one function per surface, each returning its JSON document.

- ``recommend_user``: the online store when fresh (no polars, no models: the fast path), else
  ``recctl.serving.user.recommend_users`` on the fly;
- ``recommend_item``: related items for a product page (``recctl.serving.item``);
- ``recommend_session``: an anonymous visitor's events → in-session recommendations; no events →
  trending for the context;
- ``recommend_all``: the batch into the online store (``recctl.serving.store.serve_batch``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from recctl.serving.served import promoted
from recctl.serving.store import stored

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path

    import polars as pl

    from recctl.config import RecctlConfig
    from recctl.serving.served import Served
    from recctl.warehouse import Warehouse

SESSION_USER = "session:-"  # the key of the anonymous visitor of recommend --session


LISTS = ("main", "buy-again")


def recommend_user(
    wh: Warehouse, cfg: RecctlConfig, user_id: str, *, k: int | None = None, explain: bool = False,
    category: str | None = None, current_item: str | None = None, live: bool = False,
    list_name: str = "main", now: datetime | None = None, served: Served | None = None,
    recent: pl.DataFrame | None = None, store: Callable[[str, str, str, int], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One user's list: from the online store when it is fresh and no context is given (and not
    ``live``), else ranked now. ``list_name`` ``buy-again``: the bought items the user is due to re-buy
    (always live), the document's ``list`` says which list it is. ``now``: the time to rank at (default:
    the clock; the demo ranks at the end of the sample data). ``served``: the run to answer from
    (default: the promoted one, read now; the HTTP service passes the run of its snapshot). ``recent``: the
    user's events not in the warehouse yet (the service's events of this visit, interaction frame columns):
    the list is then ranked now with them in the history and the visitor's state. ``store``: how the
    online store is read (user, run, max_age, k → ``recctl.serving.store.stored``'s result; default: that
    query; the HTTP service passes its snapshot's in-memory index)."""
    k = k or cfg.serving.k
    served = served or promoted(cfg.runs_dir)
    if list_name not in LISTS:
        from recctl.errors import ConfigError

        raise ConfigError(f"unknown list {list_name!r}: use {' or '.join(LISTS)}")
    if list_name == "buy-again":
        from recctl.serving.user import as_document, buy_again_users, load_inputs, with_recent

        inputs = load_inputs(wh.con, [user_id], cache_key=str(wh.path))
        if recent is not None:
            inputs = with_recent(inputs, recent)
        frame = buy_again_users(wh.con, cfg, served, inputs, k, now=now)
        return {**as_document(frame, user_id, served.run_id, "live", explain), "list": list_name}
    fresh = recent is not None and recent.height > 0
    if not (live or explain or category or current_item or fresh):
        found = (store or functools.partial(stored, wh.con))(user_id, served.run_id, cfg.serving.max_age, k)
        if found is not None:
            return {"user_id": user_id, "run_id": served.run_id, "state": found["state"],
                    "strategy": found["strategy"], "source": "store", "items": found["items"]}  # fmt: skip
    from recctl.serving.user import as_document, load_inputs, recommend_users, with_recent

    inputs = load_inputs(wh.con, [user_id], cache_key=str(wh.path))
    if fresh:
        assert recent is not None
        inputs = with_recent(inputs, recent)
    frame = recommend_users(
        wh.con, cfg, served, inputs, k, category=category, current_item=current_item, now=now
    )
    return as_document(frame, user_id, served.run_id, "live", explain)


def recommend_item(wh: Warehouse, cfg: RecctlConfig, item_id: str, *, strategy: str = "similar",
                   k: int | None = None, served: Served | None = None) -> dict[str, Any]:  # fmt: skip
    from recctl.serving.item import related
    from recctl.serving.served import catalog

    items = catalog(wh.con, str(wh.path))
    return related(served or promoted(cfg.runs_dir), cfg, items, item_id, strategy, k or cfg.serving.k)


def recommend_session(
    wh: Warehouse, cfg: RecctlConfig, text: str, *, k: int | None = None, explain: bool = False,
    category: str | None = None, current_item: str | None = None, mapping: str | None = None,
    served: Served | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An anonymous visitor's events (JSON lines) → in-session recommendations, ranked with the
    session's context; a visitor without events gets trending items (in ``category`` when given).
    ``mapping`` (default: ``[ingest] default_mapping.events``): the events mapping whose event names and
    field names the lines may use."""
    import polars as pl

    from recctl.serving.served import catalog as cached_catalog
    from recctl.serving.served import items_of
    from recctl.serving.session import parse_events
    from recctl.serving.user import Inputs, as_document, recommend_users

    k = k or cfg.serving.k
    served = served or promoted(cfg.runs_dir)
    names, columns = _session_mapping(cfg, mapping)
    ev = parse_events(
        text, extra_types=tuple(cfg.ingest.extra_event_types), event_names=names, columns=columns
    )
    n_items = ev["item_id"].n_unique()
    state = "new" if ev.height == 0 else "returning"
    visitors = pl.DataFrame(
        {"user_id": [SESSION_USER], "state": [state], "n_items": [n_items], "n_events": [ev.height]},
        schema={"user_id": pl.String, "state": pl.String, "n_items": pl.Int64, "n_events": pl.Int64},
    )
    events = ev.select(
        user_id=pl.lit(SESSION_USER), item_id="item_id", event_type="event_type",
        ts=pl.col("ts").fill_null(pl.datetime(1970, 1, 1)) + pl.duration(microseconds=pl.col("position")),
    )  # fmt: skip
    catalog = cached_catalog(wh.con, str(wh.path))
    known = items_of(catalog, ev["item_id"])["item_id"]
    unknown = (
        ev.filter(~pl.col("item_id").is_in(known.implode()))["item_id"].unique(maintain_order=True).to_list()
    )
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(
        update={"strategies": cfg.serving.strategies.model_copy(update={"returning": "session"})})})  # fmt: skip
    frame = recommend_users(wh.con, cfg, served, Inputs(catalog, events, visitors), k, category=category,
                            current_item=current_item)  # fmt: skip
    doc = as_document(frame, SESSION_USER, served.run_id, "live", explain)
    doc.pop("user_id")
    return {"session_events": ev.height, "unknown_items": unknown, **doc}


def _session_mapping(cfg: RecctlConfig, name: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The events mapping's ``[event_types]`` and ``[columns]`` (none without a mapping)."""
    name = name or cfg.ingest.default_mapping.get("events")
    if not name:
        return {}, {}
    from recctl.errors import ConfigError
    from recctl.ingest.mapping import load_mapping

    m = load_mapping(name, cfg.ingest.mappings_dir)
    if m.target != "events":
        raise ConfigError(f"mapping {name} is for {m.target}, not events: a session file holds events")
    return dict(m.event_types), dict(m.columns)


def recommend_all(
    cfg: RecctlConfig, *, k: int | None = None, out: Path | None = None, wait: float | None = None
) -> dict[str, Any]:
    """`recommend --all`: takes the writer lock itself and ranks through a read-only connection, so that
    serving goes on until the one-transaction write (``recctl.serving.store.serve_batch``)."""
    from recctl.serving.store import serve_batch

    return serve_batch(cfg, k=k, out=out, wait=wait)
