"""Recommendations for users: visitor state → strategy → candidates → guard → rules → reasons.

``recommend_users`` is the one path for a single ``recommend --user`` answered on the fly and for the
batch that fills the online store, so both give the same lists:

1. each user's **state** (recctl/serving/states.py) picks a **strategy** from ``[serving.strategies]``:
   ``personalized`` (the promoted run's ranking pipeline, or its first generator without a ranker),
   ``session`` (the visitor's recent events through the sequence model and co-occurrence) or
   ``trending`` (the run's trending list, within the context's category when one is given). A user the
   models cannot place falls through personalized → session → trending;
2. the **over-personalization guard**: a visitor who touched fewer than ``min_items`` distinct items
   gets a blend in which ``trending_share`` of the slots go to trending items, at most
   ``max_per_category`` items per category;
3. the current **[rules]** (filters on the visitor's events up to now, business rules, diversity), plus
   the boosts of the user's **segments** (configs/segments.toml);
4. one **reason** per item (recctl/serving/explain.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from recctl.serving import explain
from recctl.serving.served import items_of
from recctl.serving.session import CANDIDATE_SCHEMA, MAX_ITEMS, session_candidates, trending

if TYPE_CHECKING:
    import duckdb

    from recctl.config import RecctlConfig, RulesConfig
    from recctl.serving.served import Served

OUTPUT = ["user_id", "rank", "item_id", "score", "sources", "reason", "rules", "state", "strategy"]


STABLE_K = 30  # lists up to this long come from the same candidates: a longer one extends a shorter one


def depth(k: int) -> int:
    """Candidates per source (and per visitor before the rules) for a list of ``k``: room for the rules'
    filters and caps, and the same for every ``k <= STABLE_K`` (fused scores, the ranker's candidates
    and MMR's scaling all depend on it, so a k-dependent depth let k=3 and k=5 rank different items
    first)."""
    return 3 * max(k, STABLE_K) + 20


@dataclass
class Inputs:
    """What ranking a set of users reads from the warehouse (loaded once for a whole batch)."""

    catalog: pl.DataFrame  # recctl.data.load_items
    events: pl.DataFrame  # the users' item events (recctl.data interaction frame columns)
    visitors: pl.DataFrame  # recctl.serving.states.visitors of the users


def load_inputs(
    con: duckdb.DuckDBPyConnection, user_ids: list[str], *, cache_key: str | None = None
) -> Inputs:
    """The catalog (cached per process under ``cache_key``, the warehouse path, when given), and the
    events and states of ``user_ids`` (``recommend --all`` reads every user's in chunks instead:
    recctl/serving/store.py)."""
    from recctl.data import load_interactions, load_items
    from recctl.serving.served import catalog
    from recctl.serving.states import visitors

    events = load_interactions(con, users=user_ids)
    items = catalog(con, cache_key) if cache_key else load_items(con).sort("item_id")
    return Inputs(items, events, visitors(con, user_ids))


def with_recent(inputs: Inputs, recent: pl.DataFrame) -> Inputs:
    """``inputs`` with events not in the warehouse yet (the HTTP service's per-visitor recent events, in
    the interaction frame's columns) added to their users' history, and those users' states moved on by
    them: a purchase makes a buyer, any event makes a new visitor returning."""
    if recent.height == 0:
        return inputs
    events = pl.concat([inputs.events, recent.select(inputs.events.columns).cast(inputs.events.schema)])
    events = events.sort("user_id", "ts", maintain_order=True)
    counts = events.group_by("user_id").agg(
        n_items=pl.col("item_id").n_unique().cast(pl.Int64), n_events=pl.len().cast(pl.Int64)
    )
    buyers = recent.filter(pl.col("event_type") == "purchase")["user_id"].unique()
    touched = recent["user_id"].unique()
    visitors = (
        inputs.visitors.drop("n_items", "n_events")
        .join(counts, on="user_id", how="left", maintain_order="left")
        .with_columns(
            state=pl.when(pl.col("user_id").is_in(buyers.implode()))
            .then(pl.lit("buyer"))
            .when(pl.col("user_id").is_in(touched.implode()) & (pl.col("state") == "new"))
            .then(pl.lit("returning"))
            .otherwise(pl.col("state")),
            n_items=pl.col("n_items").fill_null(0),
            n_events=pl.col("n_events").fill_null(0),
        )
        .select(inputs.visitors.columns)
    )
    return Inputs(inputs.catalog, events, visitors)


def recent_items(events: pl.DataFrame) -> pl.DataFrame:
    """user_id, item_id, position, back (1 = the latest): each user's last MAX_ITEMS distinct items."""
    return (
        events.select("user_id", "item_id", "ts")
        .sort("user_id", "ts", maintain_order=True)
        .unique(["user_id", "item_id"], keep="last", maintain_order=True)
        .with_columns(back=pl.int_range(pl.len(), 0, -1).over("user_id"))
        .filter(pl.col("back") <= MAX_ITEMS)
        .with_columns(position=pl.int_range(pl.len()).over("user_id"))
        .select("user_id", "item_id", "position", "back")
    )


def recommend_users(
    con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, served: Served, inputs: Inputs, k: int, *,
    category: str | None = None, current_item: str | None = None, now: datetime | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Each of ``inputs.visitors``' users' top ``k`` (columns ``OUTPUT``), users in input order."""
    s = cfg.serving
    now = now or datetime.now(UTC).replace(tzinfo=None)
    n = depth(k)
    strat = inputs.visitors.with_columns(
        strategy=pl.col("state").replace_strict(s.strategies.model_dump(), return_dtype=pl.String)
    )
    recent = recent_items(inputs.events)
    parts: list[pl.DataFrame] = []

    todo = strat.filter(pl.col("strategy") == "personalized")["user_id"]
    if todo.len():
        got = _personalized(served, todo, n, inputs.events)
        parts.append(got)
        todo = todo.filter(~todo.is_in(got["user_id"].unique().implode()))
    todo = pl.concat([todo, strat.filter(pl.col("strategy") == "session")["user_id"]])
    if todo.len():
        ev = recent.join(todo.to_frame(), on="user_id", how="semi")
        got = session_candidates(served, ev, n, inputs.catalog, current_item=current_item)
        parts.append(got)
        todo = todo.filter(~todo.is_in(got["user_id"].unique().implode()))
    todo = pl.concat([todo, strat.filter(pl.col("strategy") == "trending")["user_id"]])
    if category is None and current_item is not None:  # a product page: trending in its category
        found = items_of(inputs.catalog, pl.Series([current_item]))["category"]
        category = found[0] if found.len() and found[0] else None
    trend = trending(served, n, inputs.catalog, category=category)
    if todo.len():
        parts.append(todo.to_frame().join(trend, how="cross").select(list(CANDIDATE_SCHEMA)))
    cands = pl.concat([p.select(list(CANDIDATE_SCHEMA)).cast(CANDIDATE_SCHEMA) for p in parts])  # type: ignore[arg-type]

    thin = strat.filter((pl.col("n_items") < s.min_items) & (pl.col("strategy") != "trending"))["user_id"]
    if thin.len() and s.trending_share > 0:
        cands = _blend(cands, thin, trend, inputs.catalog, s.trending_share, s.max_per_category)
    rules = _rules_for(con, cfg, strat["user_id"].to_list())
    from recctl.rules import apply

    ranked = apply(cands, history=inputs.events, items=inputs.catalog, cfg=rules, now=now, k=k).frame
    out = _buy_again_reasons(explain.reasons(ranked, recent, served, inputs.catalog), served, inputs, now)
    return out.join(strat.select("user_id", "state", "strategy"), on="user_id", how="left").select(OUTPUT)


def _buy_again_reasons(out: pl.DataFrame, served: Served, inputs: Inputs, now: datetime) -> pl.DataFrame:
    """An item the customer bought before is explained by its cycle ("you buy this about every 9 days;
    last bought 11 days ago"), whatever proposed it."""
    from recctl.serving.buy_again import cycle_reasons

    bought = inputs.events.filter(pl.col("event_type") == "purchase").join(
        out.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi"
    )
    if bought.height == 0:
        return out
    # the cycles of a (user, item) come from its own events alone: only the listed items of these users
    pairs = out.select("user_id", "item_id").join(bought.select("user_id").unique(), on="user_id", how="semi")
    cyc = cycle_reasons(
        served, inputs.events.join(pairs.unique(), on=["user_id", "item_id"], how="semi"), now
    )
    if cyc.height == 0:
        return out
    joined = out.join(
        cyc.rename({"reason": "_cycle"}), on=["user_id", "item_id"], how="left", maintain_order="left"
    )
    return joined.with_columns(reason=pl.coalesce("_cycle", "reason")).drop("_cycle")


def buy_again_users(
    con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, served: Served, inputs: Inputs, k: int, *,
    now: datetime | None = None,
) -> pl.DataFrame:  # fmt: skip
    """The ``buy-again`` list of ``inputs.visitors``' users (columns ``OUTPUT``): their bought items by
    how due they are, through the current rules and segments (recctl/serving/buy_again.py)."""
    from recctl.serving.buy_again import buy_again

    now = now or datetime.now(UTC).replace(tzinfo=None)
    rules = _rules_for(con, cfg, inputs.visitors["user_id"].to_list())
    out = buy_again(served, inputs.events, inputs.catalog, rules, k, now)
    return (
        out.join(inputs.visitors.select("user_id", "state"), on="user_id", how="left")
        .with_columns(strategy=pl.lit("buy-again"))
        .select(OUTPUT)
    )


def _personalized(served: Served, users: pl.Series, n: int, events: pl.DataFrame) -> pl.DataFrame:
    """The pipeline's ranked candidates (items the user touched left out, as in its training, when its
    ``filter_seen`` is on), or the run's first generator's list when it has no ranker."""
    pipe = served.pipeline()
    if pipe is not None:
        seen = events.select("user_id", "item_id").unique() if pipe.params.filter_seen else None
        return pipe.rank(users, n, exclude=seen)
    name = served.specs[0]["name"]
    recs = served.generator(name).for_users(users, n)
    return recs.select("user_id", "item_id", "score", sources=pl.lit([name], dtype=pl.List(pl.String)))


def _blend(
    cands: pl.DataFrame, users: pl.Series, trend: pl.DataFrame, catalog: pl.DataFrame, share: float, cap: int
) -> pl.DataFrame:
    """For ``users``: their list interleaved with trending (``share`` of the slots), at most ``cap``
    items per category (0 = no cap); score = 1 / slot, so the rules keep this order."""
    own = cands.filter(pl.col("user_id").is_in(users.implode()))
    rest = cands.filter(~pl.col("user_id").is_in(users.implode()))
    personal = own.with_columns(slot=(pl.int_range(1, pl.len() + 1).over("user_id") / max(1e-9, 1 - share)))
    popular = (
        users.to_frame()
        .join(trend, how="cross")
        .with_columns(slot=pl.int_range(1, pl.len() + 1).over("user_id") / max(1e-9, share))
    )
    both = (
        pl.concat([personal.select(*CANDIDATE_SCHEMA, "slot"), popular.select(*CANDIDATE_SCHEMA, "slot")])
        .sort("user_id", "slot", maintain_order=True)
        .unique(["user_id", "item_id"], keep="first", maintain_order=True)
    )
    if cap > 0:
        both = (
            both.join(
                items_of(catalog, both["item_id"]).select("item_id", "category"), on="item_id", how="left"
            )
            .with_columns(n_cat=pl.int_range(1, pl.len() + 1).over("user_id", "category"))
            .with_columns(slot=pl.when(pl.col("n_cat") > cap).then(pl.col("slot") + 1e6).otherwise("slot"))
            .sort("user_id", "slot", maintain_order=True)
        )
    blended = both.with_columns(score=1.0 / pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Float64))
    return pl.concat([rest, blended.select(list(CANDIDATE_SCHEMA))])


def _rules_for(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, users: list[str]) -> RulesConfig:
    """The current [rules], rules naming a segment resolved to its members, plus the boosts and buries
    of these users' segments (configs/segments.toml; membership from the last `segments apply`)."""
    path = cfg.serving.segments_file
    if not path.exists():
        if any(r.segment is not None for r in cfg.rules.business):
            from recctl.errors import ConfigError

            raise ConfigError(f"[rules] name segments but the segments file {path} does not exist",
                              hint="set [serving] segments_file, or run `recctl init` for the example")  # fmt: skip
        return cfg.rules
    from recctl.rules.segments import load_segments, resolve_segment_rules, segment_rules

    members = con.sql(
        "SELECT user_id, segment FROM segment_members WHERE user_id IN (SELECT unnest(?))", params=[users]
    ).pl()
    rules = resolve_segment_rules(cfg.rules, members, segments=load_segments(path))
    extra = segment_rules(con, cfg, users)
    return rules.model_copy(update={"business": [*rules.business, *extra]}) if extra else rules


def as_document(
    frame: pl.DataFrame, user_id: str, run_id: str, source: str, explain_: bool
) -> dict[str, Any]:
    """The ``recommend --json`` document of one user."""
    rows = frame.filter(pl.col("user_id") == user_id).sort("rank")
    state = rows["state"][0] if rows.height and "state" in rows.columns else None
    strategy = rows["strategy"][0] if rows.height and "strategy" in rows.columns else None
    items = []
    for r in rows.iter_rows(named=True):
        item = {"item_id": r["item_id"], "rank": int(r["rank"]), "score": _num(r["score"]),
                "sources": list(r["sources"] or []), "reason": r["reason"]}  # fmt: skip
        if explain_:
            item["rules"] = list(r.get("rules") or [])
        items.append(item)
    return {"user_id": user_id, "run_id": run_id, "state": state, "strategy": strategy, "source": source,
            "items": items}  # fmt: skip


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 6)
