"""The ranker's half of ``Pipeline.fit``: its training rows (label split, every generator's candidates
for the label users, one block of users at a time, labels, negatives, features) and the LightGBM fit or
the fallback the pipeline serves instead (and why)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import polars as pl

from recctl import progress
from recctl.candidates.base import release_memory
from recctl.ranking import dataset as D
from recctl.ranking.merge import merge, proposals
from recctl.ranking.ranker import LABEL, train_ranker
from recctl.seeds import derive_seed

if TYPE_CHECKING:
    from recctl.ranking.pipeline import Pipeline

log = logging.getLogger("recctl.ranking.pipeline")
#: label users whose candidates one generator proposes at once in training (a user's list does not depend
#: on the others'; 2,000 users at once cost co-occurrence 1 GB of scores on Complete Journey)
CANDIDATE_USERS = 500


def training_data(
    pipe: Pipeline, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None
) -> tuple[D.LabelSplit, pl.DataFrame, pl.DataFrame]:
    """(label split, merged candidates, labelled and described training rows sorted by user)."""
    p = pipe.params
    with progress.stage("label split"):
        split = D.label_split(train, p.label, p.label_window, p.target_events)
    users = D.sample_users(split.labels["user_id"], p.max_users, derive_seed(seed, "users"))
    seen = split.history.select("user_id", "item_id").unique() if p.filter_seen else None
    # one generator at a time: fitted on the history, its candidates taken, then freed (all of them
    # alive at once were 0.7 GB of models on Complete Journey)
    blocks = [users.slice(lo, CANDIDATE_USERS) for lo in range(0, users.len(), CANDIDATE_USERS)] or [users]
    seen_of = _by_block(seen, blocks)
    del seen
    per_block: list[list[pl.DataFrame]] = [[] for _ in blocks]  # each block's proposals per generator
    for i, spec in enumerate(p.generators, 1):
        gen = pipe.fit_generators(split.history, seed, items, "history", [spec], i)[spec.name]
        with progress.stage(f"candidates of {spec.name} for {users.len()} label users"):
            for got, b, s in zip(per_block, blocks, seen_of, strict=True):
                got.append(proposals(gen, spec.name, b, p.n_per_generator, s))
        del gen
        release_memory()
    cands, data = _merged(per_block, [g.name for g in p.generators], split.labels)
    data = D.sample_negatives(
        data, hard_rank=p.hard_rank, negatives=p.negatives, seed=derive_seed(seed, "neg")
    )
    with progress.stage("features"):
        data = pipe.describe(data, split.history, items, split.as_of)
        data = data.sort("user_id", maintain_order=True)
    return split, cands, data


def fit_ranker(pipe: Pipeline, train: pl.DataFrame, seed: int, items: pl.DataFrame | None) -> dict[str, Any]:
    """Train the ranker into ``pipe.ranker`` and say what it learned from; or leave it None and say
    why the pipeline serves its fallback (too few labels, a LightGBM that cannot fit or that learned
    nothing): a model fit on one user with all scores tied must never be served as a ranker."""
    p = pipe.params
    try:
        split, cands, data = training_data(pipe, train, seed=seed, items=items)
    except D.NoLabels as exc:
        return _fallback(pipe, None, None, str(exc), {})
    learners = data["user_id"].n_unique()  # users with a positive among their candidates
    positives = int(data[LABEL].sum()) if data.height else 0
    n_label = split.labels["user_id"].n_unique()
    info: dict[str, Any] = {
        "label_split": split.how,
        "label_as_of": split.as_of.isoformat(),
        "label_users": n_label,
        # the seeded sample of them the ranker learns from ([ranker] params.max_users, 0 = all of them;
        # D.sample_users)
        "max_users": p.max_users,
        "sampled_users": n_label if p.max_users <= 0 else min(n_label, p.max_users),
        "learning_users": learners,
        "candidate_recall": _recall(cands, split.labels.join(cands.select("user_id").unique(), on="user_id")),
    }
    if learners < p.min_label_users or positives < p.min_positives:
        return _fallback(
            pipe,
            cands,
            split.labels,
            f"{learners} users with {positives} positives among their candidates, below the "
            f"minimum of {p.min_label_users} users and {p.min_positives} positives "
            "([ranker] min_label_users / min_positives)",
            info | {"positives": positives},
        )
    t_users, v_users = D.split_users(data["user_id"], p.valid_share, derive_seed(seed, "valid"))
    features = [
        c for c, t in data.schema.items() if c not in ("user_id", "item_id", LABEL) and t.is_numeric()
    ]
    from recctl.ranking.ranker import RankerInputs, lightgbm

    # the float32 matrices only: the training rows are freed before LightGBM bins its copy
    tr = RankerInputs.of(data, features, t_users)
    va = RankerInputs.of(data, features, v_users)
    del data
    info |= {
        "train_users": t_users.len(),
        "valid_users": v_users.len(),
        "train_rows": len(tr.y),
        "positives": int(tr.y.sum()),
        "features": len(features),
    }

    try:
        with progress.stage("LightGBM fit"):
            ranker = train_ranker(tr, va, features, p.lgbm, derive_seed(seed, "lgbm"))
    except (ValueError, lightgbm().basic.LightGBMError) as exc:
        return _fallback(pipe, cands, split.labels, f"LightGBM could not fit: {str(exc).strip()[:200]}", info)
    if not any(v["splits"] for v in ranker.importances.values()):
        return _fallback(
            pipe,
            cands,
            split.labels,
            "the ranker learned nothing: every tree is one leaf, all scores tied",
            info,
        )
    pipe.ranker = ranker
    return info | {"best_iteration": ranker.best_iteration, "valid_ndcg": ranker.valid_ndcg}


def _fallback(
    pipe: Pipeline, cands: pl.DataFrame | None, labels: pl.DataFrame | None, reason: str, info: dict[str, Any]
) -> dict[str, Any]:
    """The info of a pipeline without a ranker: what it serves instead and why. ``best`` is decided
    on the ranker's own labels (the training view's label window: nothing of an evaluation's test)."""
    fallback = pipe.params.fallback
    extra: dict[str, Any] = {}
    if fallback == "best":
        hits = _label_hits(pipe, cands, labels)
        top = max(hits.values(), default=0)
        winners = [g for g, v in hits.items() if v == top]
        fallback = winners[0] if top > 0 and len(winners) == 1 else "blend"
        extra = {"fallback_hits@10": hits}
    log.info("%s: no ranker (%s): serving %s", pipe.name, reason, fallback)
    return info | {"fallback": fallback, "fallback_reason": reason, **extra}


def _label_hits(pipe: Pipeline, cands: pl.DataFrame | None, labels: pl.DataFrame | None) -> dict[str, int]:
    """Per generator, how many labels it ranked in its top 10 for the labelled users."""
    if cands is None or labels is None or cands.height == 0:
        return {}
    from recctl.ranking.merge import column_stem

    found = cands.join(labels.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi")
    return {
        g.name: int(found.filter(pl.col(f"{column_stem(g.name)}_rank") <= 10).height)
        for g in pipe.params.generators
    }


def _by_block(seen: pl.DataFrame | None, blocks: list[pl.Series]) -> list[pl.DataFrame | None]:
    """``seen`` cut to each block's users, in one join: a generator handed every label user's seen items
    for a block of 500 spent its time on the others' (popular's cross join grows with the most items any
    of them saw; 95 s for 30,000 users at 10 M events). A user's list depends on their own rows alone."""
    if seen is None:
        return [None] * len(blocks)
    tags = pl.concat(
        [b.to_frame("user_id").with_columns(_block=pl.lit(i, pl.UInt32)) for i, b in enumerate(blocks)]
    )
    groups = seen.join(tags, on="user_id", how="inner").partition_by(
        "_block", as_dict=True, include_key=False
    )
    empty = seen.clear()
    return [groups.get((i,), empty) for i in range(len(blocks))]


def _merged(
    per_block: list[list[pl.DataFrame]], names: list[str], labels: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``merge`` of each block's proposals, those rows labelled by ``D.label_candidates``), block by block
    and emptied as it goes: the outer joins, and then the labels' join, over every label user at once were
    the peak of an Amazon Beauty evaluation (3.6 GB, then 3.4 GB). The blocks hold disjoint users in
    increasing order and ``merge`` sorts each by user and item, so the blocks concatenated without a copy
    are the whole, sorted."""
    merged: list[pl.DataFrame] = []
    labelled: list[pl.DataFrame] = []
    while per_block:
        m = merge(per_block.pop(0), names)
        merged.append(m)
        labelled.append(D.label_candidates(m, labels))
    keep = [k for k, m in enumerate(merged) if m.height] or [0]
    return (
        pl.concat([merged[k] for k in keep], rechunk=False),
        pl.concat([labelled[k] for k in keep], rechunk=False),
    )


def _recall(cands: pl.DataFrame, labels: pl.DataFrame) -> float:
    """Share of the labels found among the candidates (stage-1 recall of the merged lists)."""
    if labels.height == 0:
        return 0.0
    hit = labels.join(cands.select("user_id", "item_id"), on=["user_id", "item_id"], how="semi").height
    return round(hit / labels.height, 4)
