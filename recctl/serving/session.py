"""In-session recommendations: a visitor's recent events → what to show next, and trending by context.

``session_candidates`` fuses two kinds of evidence over each visitor's ordered items:

- the run's **sequence model** (SASRec, ``for_sequences``): the next items after the whole sequence;
- every **co-occurrence** generator of the run (next-item, viewed-together, bought-together,
  ``for_items``): each session item's related items, the k-th most recent item weighted
  ``RECENCY ** (k - 1)``.

Each source's list is fused by weighted reciprocal rank (``1 / (RRF_K + rank)``), then ranked with the
session's context: items in the category of the current item (the last one viewed, or ``current_item``)
and items within the price band of what the visitor viewed (± ``PRICE_BAND`` around the median, the
write-ups' "about ±$100") gain ``CATEGORY_BOOST`` and ``PRICE_BOOST`` (relative). The session's own items
are never proposed. ``trending`` gives popular items, within a category when the context has one.

``parse_events`` reads an anonymous visitor's events (JSON lines with the fields of ``events``, or the
shop's own field and event names through its events mapping); bad lines are errors that name the line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from recctl import schema
from recctl.errors import DataError

if TYPE_CHECKING:
    from recctl.serving.served import Served

RRF_K = 20.0
RECENCY = 0.7  # weight of the k-th most recent session item: RECENCY ** (k - 1)
MAX_ITEMS = 20  # the session's last items that count
CATEGORY_BOOST = 0.25
PRICE_BOOST = 0.10
PRICE_BAND = 100.0
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "score": pl.Float64(),
    "sources": pl.List(pl.String()),
}


def parse_events(
    text: str, *, extra_types: tuple[str, ...] = (), event_names: dict[str, str] | None = None,
    columns: dict[str, str] | None = None,
) -> pl.DataFrame:  # fmt: skip
    """JSON lines (one event per line, the fields of ``events``: item_id, event_type, ts, price, page, …)
    → item_id, event_type, ts, position. Lines without a timestamp keep their order (position).

    ``event_names`` and ``columns`` come from the shop's events mapping (``[event_types]``, ``[columns]``):
    the shop's own event names (case-insensitive, as ingest reads them: ``pageview`` → ``view``) and field
    names (``product_id`` for item_id) are accepted; canonical ones always are."""
    known = set(schema.EVENT_TYPES) | set(extra_types)
    names = {k.strip().lower(): v for k, v in (event_names or {}).items()}
    renames = [(canon, src) for canon, src in (columns or {}).items() if canon != src]
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"session event line {n} is not JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"session event line {n} is not a JSON object")
        for canon, src in renames:  # the shop's field names (a mapping expression is no field: ignored)
            if canon not in obj and src in obj:
                obj[canon] = obj[src]
        item, raw = obj.get("item_id"), obj.get("event_type", "view")
        low = str(raw).strip().lower()
        kind = names.get(low, low)
        if kind not in known:
            raise DataError(
                f"session event line {n}: unknown event_type {raw!r}",
                hint=", ".join(sorted(known | set(names))),
            )
        if kind in schema.ITEMLESS_EVENT_TYPES:
            continue  # a search names no item: nothing to recommend from (its query is not used here)
        if not isinstance(item, str | int) or str(item) == "":
            raise DataError(f"session event line {n}: item_id is missing")
        ts = obj.get("ts")
        try:
            when = datetime.fromisoformat(str(ts).replace("Z", "+00:00")) if ts else None
        except ValueError:
            raise DataError(f"session event line {n}: ts {ts!r} is not an ISO date-time") from None
        if when is not None and when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        rows.append({"item_id": str(item), "event_type": str(kind), "ts": when, "position": len(rows)})
    schema_: dict[str, pl.DataType] = {
        "item_id": pl.String(), "event_type": pl.String(), "ts": pl.Datetime("us"), "position": pl.Int64()
    }  # fmt: skip
    frame = pl.DataFrame(rows, schema=schema_)
    if frame["ts"].null_count() == 0:  # all timed: time order (ties in line order); else line order
        frame = frame.sort("ts", "position")
    return frame.with_columns(position=pl.int_range(pl.len(), dtype=pl.Int64))


def session_candidates(
    served: Served, events: pl.DataFrame, n: int, catalog: pl.DataFrame, *, current_item: str | None = None
) -> pl.DataFrame:
    """user_id, item_id, score, sources for every visitor of ``events`` (user_id, item_id, position)."""
    ev = (
        events.select("user_id", "item_id", "position")
        .sort("user_id", "position")
        .with_columns(back=pl.int_range(pl.len(), 0, -1).over("user_id"))  # 1 = the latest
        .filter(pl.col("back") <= MAX_ITEMS)
    )
    if ev.height == 0:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    lists: list[tuple[str, pl.DataFrame]] = []
    for name in served.names_of_kind("sasrec"):
        seq = served.generator(name).for_sequences(  # type: ignore[attr-defined]
            ev.select(session_id="user_id", item_id="item_id", position="position"), n
        )
        lists.append((name, seq.select(user_id="session_id", item_id="item_id", rank="rank")))
    items = ev["item_id"].unique()
    for name in served.names_of_kind("cooccur"):
        rel = served.generator(name).for_items(items, n)  # type: ignore[attr-defined]
        scored = (
            ev.join(rel.select("item_id", "related_id", "score"), on="item_id")
            .group_by("user_id", "related_id")
            .agg(score=(pl.col("score") * RECENCY ** (pl.col("back") - 1)).sum())
            .sort(["user_id", "score", "related_id"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"))
            .filter(pl.col("rank") <= n)
        )
        lists.append((name, scored.select("user_id", item_id="related_id", rank="rank")))
    if not lists:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    fused = fuse(lists).join(ev.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    return _top(_with_context(fused, ev, catalog, current_item), n)


def fuse(lists: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame:
    """Weighted reciprocal-rank fusion of (user_id, item_id, rank) lists → score and ``sources`` (the
    lists that had the item, best rank first)."""
    long = pl.concat(
        [
            f.select("user_id", "item_id", pl.col("rank").cast(pl.Float64), source=pl.lit(name))
            for name, f in lists
        ]
    )
    return long.group_by("user_id", "item_id").agg(
        score=(1.0 / (RRF_K + pl.col("rank"))).sum(),
        sources=pl.col("source").sort_by("rank"),
    )


def _with_context(
    fused: pl.DataFrame, ev: pl.DataFrame, catalog: pl.DataFrame, current_item: str | None
) -> pl.DataFrame:
    from recctl.serving.served import items_of

    extra = [] if current_item is None else [current_item]
    ids = pl.concat([fused["item_id"], ev["item_id"], pl.Series(extra, dtype=pl.String)])
    cat = items_of(catalog, ids).select("item_id", "category", "price")
    last = ev.filter(pl.col("back") == 1).select("user_id", "item_id")
    if current_item is not None:
        last = last.with_columns(item_id=pl.lit(current_item))
    ctx = (
        last.join(cat, on="item_id", how="left")
        .select("user_id", ctx_category="category")
        .join(
            ev.join(cat, on="item_id").group_by("user_id").agg(ctx_price=pl.col("price").median()),
            on="user_id",
            how="left",
        )
    )
    out = fused.join(cat, on="item_id", how="left").join(ctx, on="user_id", how="left")
    boost = (
        1.0
        + CATEGORY_BOOST * (pl.col("category") == pl.col("ctx_category")).fill_null(False).cast(pl.Float64)
        + PRICE_BOOST
        * ((pl.col("price") - pl.col("ctx_price")).abs() <= PRICE_BAND).fill_null(False).cast(pl.Float64)
    )
    return out.select("user_id", "item_id", score=pl.col("score") * boost, sources="sources")


def _top(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    return (
        frame.sort(["user_id", "score", "item_id"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("user_id") < n)
        .cast(CANDIDATE_SCHEMA)  # type: ignore[arg-type]
    )


def trending(served: Served, n: int, catalog: pl.DataFrame, *, category: str | None = None) -> pl.DataFrame:
    """item_id, score, sources: the run's trending list (its first ``popular`` generator), within
    ``category`` (a path prefix) when given and it has items there, else overall."""
    names = served.names_of_kind("popular")
    if not names:
        return pl.DataFrame(schema={k: v for k, v in CANDIDATE_SCHEMA.items() if k != "user_id"})
    gen: Any = served.generator(names[0])
    ranking = gen.ranking.select("item_id", "score")
    if category:
        from recctl.rules.filters import norm_category, under

        inside = catalog.select("item_id", c=norm_category(pl.col("category"))).filter(under("c", [category]))
        scoped = ranking.join(inside.select("item_id"), on="item_id", how="semi")
        ranking = scoped if scoped.height else ranking
    top: pl.DataFrame = (
        ranking.sort("score", "item_id", descending=[True, False])
        .head(n)
        .with_columns(
            score=pl.col("score").cast(pl.Float64), sources=pl.lit([names[0]], dtype=pl.List(pl.String))
        )
    )
    return top
