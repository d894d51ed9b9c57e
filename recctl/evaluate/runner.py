"""Run a protocol over models: fit each on the split's training view, rank the whole catalog, score.

Every number carries the protocol that produced it (``settings`` and ``data`` in the result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, get_args

import polars as pl

from recctl import progress
from recctl.candidates.base import CandidateGenerator
from recctl.config import CandidateSpec, EvaluateConfig, Protocol, RecctlConfig
from recctl.errors import ConfigError
from recctl.evaluate import metrics as M
from recctl.evaluate.splits import VARIANTS, Split, from_frames, leave_one_out, next_basket, temporal
from recctl.seeds import derive_seed

ACCURACY = ("recall", "precision", "ndcg", "mrr", "map", "hit")
EXAMPLE_USERS = 3  # customers shown with their history and lists in the report
EXAMPLE_RECS = 10
EXAMPLE_HISTORY = 6
# test users ranked at once: a block's lists at the stage-1 depth (300) stay small; the generators' own
# block (candidates.base.BLOCK_USERS, a multiple of SASRec's score batch of 1024), so that every batch
# inside is one of a single call over every user
BLOCK_USERS = 4096
# a pipeline ranks at most this many test users at once (its chunk_users when smaller): every chunk holds
# each generator's candidates to the stage-1 depth and their features (8.5 GB at 4000 users on Beauty)
PIPELINE_BLOCK_USERS = 1024
PROTOCOLS = get_args(Protocol)


@dataclass(frozen=True)
class Options:
    protocol: str
    variant: str
    ks: list[int]
    curve_ks: list[int]
    filter_seen: bool
    n_boot: int
    seed: int
    candidate_ns: tuple[int, ...] = ()  # stage-1 candidate recall@N (e.g. 100, 300)

    @classmethod
    def from_config(cls, cfg: RecctlConfig, **override: Any) -> Options:
        e: EvaluateConfig = cfg.evaluate
        ks: list[int] = override.get("ks") or e.ks
        variant = e.effective_variant(override.get("variant"))
        protocol = override.get("protocol") or e.protocol
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}: use {', '.join(PROTOCOLS)}")
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
        return cls(
            protocol=protocol,
            variant=variant,
            ks=ks,
            curve_ks=sorted(set(e.curve_ks) | set(ks)),
            filter_seen=variant != "repeat",  # one meaning: the repeat variant is "nothing filtered"
            n_boot=e.n_boot,
            seed=cfg.seed,
            candidate_ns=tuple(override.get("candidate_ns") or e.candidate_ns),
        )


def baseline_specs(cfg: RecctlConfig) -> list[CandidateSpec]:
    all_ = {
        "popular": CandidateSpec(name="popular", kind="popular"),
        "personal-top": CandidateSpec(
            name="personal-top", kind="personal", params={"event_types": list(cfg.evaluate.target_events)}
        ),
        "popular-recent": CandidateSpec(
            name="popular-recent", kind="popular", params={"window_days": cfg.evaluate.recent_days}
        ),
        "random": CandidateSpec(name="random", kind="random"),
    }
    return [all_[b] for b in cfg.evaluate.baselines]


def make_split(
    events: pl.DataFrame, cfg: RecctlConfig, opts: Options, *, cutoff: str | None = None,
    files: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> Split:  # fmt: skip
    """The protocol's split, then [prepare] over its training view only (as `recctl train` cleans the
    events it trains on); the targets are never cleaned. ``split.info["prepare"]`` holds the report."""
    from recctl.prepare import prepare

    with progress.stage(f"{opts.protocol} split"):
        split = _split(events, cfg, opts, cutoff=cutoff, files=files)
    with progress.stage("prepare the training view"):
        cleaned = prepare(split.train, cfg.prepare)
        valid = None if split.valid_train is None else prepare(split.valid_train, cfg.prepare).events
    info = {**split.info, "prepare": cleaned.as_dict()}
    return replace(split, train=cleaned.events, valid_train=valid, raw_train=split.train, info=info)


def _split(
    events: pl.DataFrame, cfg: RecctlConfig, opts: Options, *, cutoff: str | None = None,
    files: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> Split:  # fmt: skip
    if opts.protocol == "temporal":
        return temporal(
            events,
            cutoff or cfg.evaluate.cutoff,
            target_events=cfg.evaluate.target_events,
            variant=opts.variant,
            key="--cutoff" if cutoff else "[evaluate] cutoff",
        )
    if opts.protocol == "leave-one-out":
        return leave_one_out(events)
    if opts.protocol == "next-basket":
        return next_basket(events, target_events=cfg.evaluate.target_events, variant=opts.variant)
    assert files is not None, "the files protocol needs training and test frames"
    return from_frames(*files, variant=opts.variant)


def score_model(
    spec: CandidateSpec, split: Split, opts: Options, *, popularity: pl.DataFrame, items: pl.DataFrame,
    fitted: dict[str, CandidateGenerator] | None = None, categories: pl.DataFrame | None = None,
    example_users: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit ``spec`` on the split's training view and score it. The pipeline reuses the generators in
    ``fitted`` (fitted on the same training view); every generator fitted here is added to it.
    ``categories`` (`M.target_categories`) adds ``by_category`` at the first K; the top-K lists of
    ``example_users`` come back as ``_examples`` (for the report's example customers)."""
    from recctl.ranking import PIPELINE, build_model

    t0 = time.perf_counter()
    gen = build_model(spec)
    seed = derive_seed(opts.seed, "evaluate", spec.name)
    if spec.kind == PIPELINE:
        gen.fit(split.train, seed=seed, items=items, fitted=fitted)  # type: ignore[call-arg]
    else:
        gen.fit(split.train, seed=seed, items=items)
        if fitted is not None:
            fitted[spec.name] = gen
    fit_s = time.perf_counter() - t0
    users = split.test["user_id"].unique()
    exclude = split.seen() if opts.filter_seen else None
    recs, hits = rank_blocks(gen, users, opts, split.test, exclude)
    recommend_s = time.perf_counter() - t0 - fit_s
    per_user = M.per_user_metrics(recs, split.test, opts.curve_ks)
    means, ci = M.summarize(per_user, n_boot=opts.n_boot, seed=derive_seed(opts.seed, "bootstrap"))
    beyond = M.beyond_accuracy(
        recs, opts.ks, item_popularity=popularity, n_users_train=split.train["user_id"].n_unique(),
        item_features=items.select("item_id", "category"),
    )  # fmt: skip
    metrics = {f"{m}@{k}": means[f"{m}@{k}"] for k in opts.ks for m in ACCURACY} | beyond
    metrics_s = time.perf_counter() - t0 - fit_s - recommend_s
    # the model's stage end line says where its time went (one line per model in the stage logs)
    progress.note(f"fit {fit_s:.1f} s, {users.len()} test users ranked in {recommend_s:.1f} s, "
                  f"metrics {metrics_s:.1f} s ({opts.n_boot} bootstrap resamples)")  # fmt: skip
    if not opts.filter_seen:
        metrics |= M.repeat_explore(recs, split.test, split.seen(), opts.ks)
    sampling = getattr(gen, "sampling", None)
    return {
        "metrics": metrics,
        "ci95": {k: list(v) for k, v in ci.items() if int(k.split("@")[1]) in opts.ks},
        "curve": {m: {str(k): means[f"{m}@{k}"] for k in opts.curve_ks} for m in ("recall", "ndcg")},
        "by_state": M.by_group(per_user, split.visitor_states()),
        "pop_deciles": M.popularity_deciles(recs, opts.ks[0], popularity),
        "candidate_recall": {
            f"recall@{n}": _recall(hits.filter(pl.col("rank") <= n), split.test) for n in opts.candidate_ns
        },
        "wall_s": round(time.perf_counter() - t0, 3),
        "fit_s": round(fit_s, 3),
        "recommend_s": round(recommend_s, 3),
        **({"training": _training(gen)} if spec.kind == PIPELINE else {}),
        # what a sampling generator trained on (SASRec: users, sequences, users per epoch)
        **({"sampling": sampling} if sampling else {}),
        "_hits": hits,
        "_per_user": per_user.select("user_id", *[f"ndcg@{k}" for k in opts.ks]),
        **({"by_category": M.by_category(recs, categories, opts.ks[0])} if categories is not None else {}),
        "_examples": recs.filter(
            pl.col("user_id").is_in(example_users or []), pl.col("rank") <= EXAMPLE_RECS
        ),
    }


def rank_blocks(
    gen: CandidateGenerator, users: pl.Series, opts: Options, test: pl.DataFrame, exclude: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each test user's list to the deepest K of the curve, and the (user, item, rank) target hits down to
    the deepest stage-1 depth, ranked ``BLOCK_USERS`` users at a time (a pipeline: at most
    ``PIPELINE_BLOCK_USERS``; users sorted).

    A generator's list for a user does not depend on the other users asked for with it, so the result is
    the one of a single call; but only one block's full-depth lists (up to the deepest candidate depth,
    and whatever a generator scores before its cut) are in memory at once, not every user's.
    """
    depth, keep = max([*opts.curve_ks, *opts.candidate_ns]), max(opts.curve_ks)
    todo = users.unique().cast(pl.String).sort()
    chunk = getattr(getattr(gen, "params", None), "chunk_users", None)
    size = BLOCK_USERS if chunk is None else min(int(chunk), PIPELINE_BLOCK_USERS)
    recs, hits = [], []
    with progress.stage("rank test users", total=todo.len(), unit="users"):
        for lo in range(0, todo.len(), size):
            block = todo.slice(lo, size)
            frame = block.to_frame("user_id")
            ex = None if exclude is None else exclude.join(frame, on="user_id", how="semi")
            got = gen.for_users(block, depth, exclude=ex)
            hits.append(
                got.join(test, on=["user_id", "item_id"], how="semi").select("user_id", "item_id", "rank")
            )
            recs.append(got.filter(pl.col("rank") <= keep))
            del got, ex
            progress.advance(block.len())
    if not recs:
        got = gen.for_users(todo, depth, exclude=exclude)
        return got, got.select("user_id", "item_id", "rank")
    return pl.concat(recs), pl.concat(hits)


def _training(pipe: Any) -> dict[str, Any]:
    """What the pipeline's ranker learned from: its label split and how many users had labels."""
    keys = (
        "label_split",
        "label_as_of",
        "label_users",
        "train_users",
        "valid_users",
        "positives",
        "best_iteration",
        "fallback",
        "fallback_reason",
    )
    return {k: pipe.info[k] for k in keys if k in pipe.info}


def _recall(hits: pl.DataFrame, test: pl.DataFrame) -> float:
    """Mean over test users of the share of their targets among ``hits`` (their hit pairs)."""
    per_user = (
        test.group_by("user_id")
        .len("n")
        .join(hits.unique(["user_id", "item_id"]).group_by("user_id").len("h"), on="user_id", how="left")
    )
    share = (per_user["h"].fill_null(0) / per_user["n"]).to_numpy()
    return float(share.mean()) if len(share) else 0.0


def evaluate_specs(
    split: Split, specs: list[CandidateSpec], opts: Options, *, items: pl.DataFrame, dataset: str
) -> dict[str, Any]:
    """The result document (what --json prints, the report draws and eval_runs stores)."""
    popularity = (
        items.select("item_id")
        .join(
            split.train.group_by("item_id").agg(count=pl.col("user_id").n_unique()), on="item_id", how="left"
        )
        .with_columns(pl.col("count").fill_null(0))
    )
    from recctl.ranking import PIPELINE

    # the pipeline last: it reuses the generators fitted for their own rows (same training view)
    pipes = [s for s in specs if s.kind == PIPELINE]
    wanted = {g["name"]: (g["kind"], g.get("params", {})) for p in pipes for g in p.params["generators"]}
    cache: dict[str, CandidateGenerator] = {}
    scored: dict[str, dict[str, Any]] = {}
    categories = M.target_categories(split.test, items)
    chosen = _example_users(split, opts.seed)
    for i, s in enumerate([s for s in specs if s.kind != PIPELINE] + pipes, 1):
        keep = wanted.get(s.name) == (s.kind, s.params)
        with progress.stage(f"model {s.name}" + (f" ({i}/{len(specs)})" if len(specs) > 1 else "")):
            scored[s.name] = score_model(
                s, split, opts, popularity=popularity, items=items,
                fitted=cache if keep or s in pipes else None, categories=categories, example_users=chosen,
            )  # fmt: skip
    cache.clear()
    models = {s.name: scored[s.name] for s in specs}
    hits = {name: m.pop("_hits") for name, m in models.items()}
    per_user = {name: m.pop("_per_user") for name, m in models.items()}
    example_recs = {name: m.pop("_examples") for name, m in models.items()}
    shown = specs[0].name  # the pipeline, else the first configured generator, else the first baseline
    for p in pipes:  # the pipeline against every other model on the same users: a paired interval
        if p.name not in models:
            continue
        with progress.stage(f"paired lift intervals of {p.name}"):
            models[p.name]["lift"] = {
                other: {
                    f"ndcg@{k}": list(M.paired_lift(per_user[p.name], pu, f"ndcg@{k}", n_boot=opts.n_boot,
                                                    seed=derive_seed(opts.seed, "lift")))
                    for k in opts.ks
                }
                for other, pu in per_user.items()
                if other != p.name
            }  # fmt: skip
    # the union of what stage 1 would hand the ranker: every generator but the random baseline
    members = [s.name for s in specs if s.kind != "random"]
    union = {
        f"recall@{n}": _recall(pl.concat([hits[m].filter(pl.col("rank") <= n) for m in members]), split.test)
        for n in opts.candidate_ns
        if members
    }
    return {
        "protocol": split.protocol,
        "variant": split.variant,
        "dataset": dataset,
        "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "settings": {
            "ks": opts.ks,
            "curve_ks": opts.curve_ks,
            "filter_seen": opts.filter_seen,
            "n_boot": opts.n_boot,
            "seed": opts.seed,
            "ranking": "full catalog, no sampled negatives",
            **(
                {"cutoff": split.info["cutoff"], "target_events": split.info["target_events"]}
                if split.protocol == "temporal"
                else {}
            ),
        },
        "data": {**split.info, "catalog_items": items.height},
        "catalog_deciles": M.catalog_deciles(popularity),
        "models": models,
        "categories": M.category_counts(categories),
        "examples": {"model": shown, "customers": _examples(split, items, chosen, example_recs[shown])},
        **({"candidate_union_recall": union, "candidate_union_of": members} if union else {}),
    }


def _example_users(split: Split, seed: int) -> list[str]:
    """A few test users with some history, drawn at random (seeded: the same users on a rerun)."""
    import numpy as np

    train = split.raw_train if split.raw_train is not None else split.train
    with_history = train.group_by("user_id").len().filter(pl.col("len") >= 3).select("user_id")
    pool = split.test.select("user_id").unique().join(with_history, on="user_id").sort("user_id")["user_id"]
    if pool.len() == 0:
        return []
    rng = np.random.default_rng(derive_seed(seed, "examples"))
    picked = rng.choice(pool.len(), size=min(EXAMPLE_USERS, pool.len()), replace=False)
    return sorted(pool.gather(picked.tolist()).to_list())


def item_names(items: pl.DataFrame) -> pl.DataFrame:
    """item_id, name: as a recommendation's reason names the item (``serving.explain.label``: the title,
    else brand · category leaf, else the brand or the whole category path), else the item id."""
    from recctl.serving.explain import label

    missing = [c for c in ("title", "brand", "category") if c not in items.columns]
    known = items.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
    return known.select(
        pl.col("item_id").cast(pl.String),
        name=pl.coalesce(label(" · ", whole_category=True), pl.col("item_id").cast(pl.String)),
    ).unique(subset="item_id", keep="first", maintain_order=True)


def _examples(
    split: Split, items: pl.DataFrame, users: list[str], recs: pl.DataFrame
) -> list[dict[str, Any]]:
    """For each example user: the latest training events, the model's top list (hits marked) and the
    test targets, every item with its name (`item_names`). Small: a few users, at most ten items each."""
    if not users:
        return []
    names = item_names(items)
    train = split.raw_train if split.raw_train is not None else split.train
    wanted = pl.Series("user_id", users, pl.String).implode()
    history = (
        train.filter(pl.col("user_id").is_in(wanted))
        .sort("ts", descending=True)
        .unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .head(EXAMPLE_HISTORY)
        .join(names, on="item_id", how="left")
        .select("user_id", "item_id", "name", "event_type", ts=pl.col("ts").dt.strftime("%Y-%m-%d"))
    )
    targets = split.test.filter(pl.col("user_id").is_in(wanted)).select("user_id", "item_id").unique()
    recommended = (
        recs.join(targets.with_columns(hit=pl.lit(True)), on=["user_id", "item_id"], how="left")
        .join(names, on="item_id", how="left")
        .select("user_id", "item_id", "name", "rank", hit=pl.col("hit").fill_null(False))
        .sort("user_id", "rank")
    )
    bought = targets.join(names, on="item_id", how="left").sort("user_id", "item_id")
    states = dict(split.visitor_states().filter(pl.col("user_id").is_in(wanted)).iter_rows())
    return [  # one entry per example user (EXAMPLE_USERS of them)
        {
            "user": u,
            "state": states.get(u),
            "history": history.filter(pl.col("user_id") == u).drop("user_id").to_dicts(),
            "recommended": recommended.filter(pl.col("user_id") == u).drop("user_id").to_dicts(),
            "targets": bought.filter(pl.col("user_id") == u).drop("user_id").head(EXAMPLE_RECS).to_dicts(),
        }
        for u in users
    ]
