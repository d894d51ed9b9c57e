"""Offline ranking metrics: per-user accuracy, bootstrap summaries, beyond-accuracy and popularity profiles.

Inputs are polars frames: ``recs`` (user_id, item_id, rank: 1-based, unique per user) and ``targets``
(user_id, item_id: the held-out relevant items, binary relevance). Everything is vectorized (polars
group-bys and joins, numpy array ops); the only Python loops run over K values, metric names or
bootstrap chunks.

Definitions (binary gains, as in RecBole / LensKit full-ranking evaluation), with hits = recommended
items of rank <= K that are targets of the user and n = the user's number of targets:
  recall@K = hits / n      precision@K = hits / K (even when fewer than K items were recommended)
  hit@K = 1 if hits > 0    mrr@K = 1 / rank of the first hit (0 without a hit)
  ndcg@K = Σ_hits 1/log2(rank + 1) / Σ_{i=1..min(n, K)} 1/log2(i + 1)
  map@K = Σ_{hit at rank r} (hits within the first r / r) / min(n, K)
Choices: duplicate (user, item) rows in ``recs`` keep their best (smallest) rank and the other rows are
dropped; the ranks are used as given (no re-numbering, so a gap left by a dropped duplicate stays a gap).
Recs of users without targets are ignored by `per_user_metrics` but count in `beyond_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from recctl.errors import ConfigError, DataError

FloatArray = npt.NDArray[np.float64]

METRICS: tuple[str, ...] = ("recall", "precision", "ndcg", "mrr", "map", "hit")
#: Memory allowed for one bootstrap chunk (about 32 bytes per replicate × user cell are live at once).
_BOOT_BUDGET_BYTES = 128 * 2**20
_BOOT_BYTES_PER_CELL = 32
_N_DECILES = 10


def _check_ks(ks: Sequence[int]) -> list[int]:
    k_list = list(dict.fromkeys(int(k) for k in ks))
    if not k_list or min(k_list) < 1:
        raise ConfigError(f"cut-offs K must be a non-empty list of positive integers, got {list(ks)}")
    return k_list


def _require(df: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{name} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")
    nulls = [c for c in columns if df[c].null_count() > 0]
    if nulls:
        raise DataError(f"{name} has null values in {', '.join(nulls)}")


def _best_ranks(recs: pl.DataFrame, k_max: int) -> pl.DataFrame:
    """user_id, item_id, rank (Int64): one row per (user, item) with its best rank, for ranks <= k_max.

    Filtering before de-duplicating gives the same rows (a pair's best rank is <= k_max exactly when one
    of its rows is), so the uniqueness of ranks per user is checked on this top-k_max part only.
    """
    _require(recs, ("user_id", "item_id", "rank"), "recs")
    dtype = recs.schema["rank"]
    if not (dtype.is_integer() or dtype == pl.Null):
        raise DataError(f"recs.rank must be an integer column, got {dtype}")
    if recs.height and recs["rank"].min() < 1:  # type: ignore[operator]
        raise DataError("recs.rank is 1-based: found a rank below 1")
    df = (
        recs.lazy()
        .select(
            pl.col("user_id").cast(pl.String),
            pl.col("item_id").cast(pl.String),
            pl.col("rank").cast(pl.Int64),
        )
        .filter(pl.col("rank") <= k_max)
        .group_by("user_id", "item_id")
        .agg(pl.col("rank").min())
        .collect()
    )
    if df.select(pl.struct("user_id", "rank").is_duplicated().any()).item():
        raise DataError("recs.rank must be unique per user: two items share a rank")
    return df


def _targets(targets: pl.DataFrame) -> pl.DataFrame:
    _require(targets, ("user_id", "item_id"), "targets")
    return targets.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()


def per_user_metrics(recs: pl.DataFrame, targets: pl.DataFrame, ks: Sequence[int]) -> pl.DataFrame:
    """One row per user in ``targets`` (sorted by user_id): user_id, n_targets, then per K the six metrics.

    Users without recs (or without a hit) get zeros. All metric columns are Float64 (hit@K is 0.0 / 1.0).
    """
    k_list = _check_ks(ks)
    k_max = max(k_list)
    tgt = _targets(targets)
    users = tgt.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("n_targets")).sort("user_id")
    hits = (
        _best_ranks(recs, k_max)
        .join(tgt, on=["user_id", "item_id"], how="inner")
        # ranks are unique per user, so the ordinal rank of a hit's rank is its 1-based hit number
        .with_columns(pl.col("rank").rank("ordinal").over("user_id").cast(pl.Float64).alias("hit_no"))
        .with_columns(pl.col("rank").cast(pl.Float64))
    )
    aggs: list[pl.Expr] = []
    for k in k_list:
        within = pl.col("rank") <= k
        aggs += [
            within.sum().cast(pl.Float64).alias(f"_hits{k}"),
            (1.0 / (pl.col("rank") + 1.0).log(2)).filter(within).sum().alias(f"_dcg{k}"),
            (1.0 / pl.col("rank").filter(within).min()).alias(f"_rr{k}"),
            (pl.col("hit_no") / pl.col("rank")).filter(within).sum().alias(f"_ap{k}"),
        ]
    per = users.join(hits.group_by("user_id").agg(aggs), on="user_id", how="left").with_columns(
        pl.exclude("user_id", "n_targets").fill_null(0.0)  # users without a hit
    )

    n_targets = per["n_targets"].to_numpy().astype(np.int64)
    # ideal_dcg[m] = Σ_{i=1..m} 1/log2(i + 1), m = min(n_targets, K) >= 1
    ideal_dcg = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64)))))
    columns: dict[str, pl.Series | FloatArray] = {"user_id": per["user_id"], "n_targets": per["n_targets"]}
    for k in k_list:
        n_hits = per[f"_hits{k}"].to_numpy()
        capped = np.minimum(n_targets, k)
        columns[f"recall@{k}"] = n_hits / n_targets
        columns[f"precision@{k}"] = n_hits / k
        columns[f"ndcg@{k}"] = per[f"_dcg{k}"].to_numpy() / ideal_dcg[capped]
        columns[f"mrr@{k}"] = per[f"_rr{k}"].to_numpy().astype(np.float64)
        columns[f"map@{k}"] = per[f"_ap{k}"].to_numpy() / capped
        columns[f"hit@{k}"] = (n_hits > 0).astype(np.float64)
    return pl.DataFrame(columns)


def metric_columns(per_user: pl.DataFrame) -> list[str]:
    """The metric columns of a per-user frame: every column named ``<metric>@<K>``, in frame order."""
    return [c for c in per_user.columns if "@" in c]


def _bootstrap_means(values: FloatArray, n_boot: int, seed: int, chunk_rows: int) -> FloatArray:
    """(n_boot × n_metrics) means of ``values`` (n_users × n_metrics) over users resampled with replacement.

    Replicate b draws n_users indices with ``Generator(seed).integers``; the generator's stream does not
    depend on how the replicates are split into chunks, so every chunk size gives the same resamples.
    """
    n_users = values.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, values.shape[1]), dtype=np.float64)
    for start in range(0, n_boot, chunk_rows):
        rows = min(chunk_rows, n_boot - start)
        idx = rng.integers(0, n_users, size=(rows, n_users), dtype=np.int64)
        idx += np.arange(rows, dtype=np.int64)[:, None] * n_users  # one bincount for the whole chunk
        counts = np.bincount(idx.ravel(), minlength=rows * n_users).reshape(rows, n_users)
        del idx
        out[start : start + rows] = (counts.astype(np.float64) @ values) / n_users
    return out


def summarize(
    per_user: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Mean of every metric column over users, and percentile-bootstrap confidence intervals over users.

    The bootstrap resamples users (not recommendations) ``n_boot`` times, in chunks of replicates sized so
    that at most ``_BOOT_BUDGET_BYTES`` of working memory is used. Without users every value is NaN.
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ConfigError(f"ci must be strictly between 0 and 1, got {ci}")
    names = metric_columns(per_user)
    _require(per_user, names, "per_user")
    if not names:
        return {}, {}
    if per_user.height == 0:
        nan = float("nan")
        return dict.fromkeys(names, nan), dict.fromkeys(names, (nan, nan))
    values = per_user.select(pl.col(names).cast(pl.Float64)).to_numpy().astype(np.float64, copy=False)
    means = values.mean(axis=0)
    chunk_rows = max(1, _BOOT_BUDGET_BYTES // (_BOOT_BYTES_PER_CELL * values.shape[0]))
    boot = _bootstrap_means(values, n_boot, seed, min(chunk_rows, n_boot))
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return (
        {c: float(means[j]) for j, c in enumerate(names)},
        {c: (float(low[j]), float(high[j])) for j, c in enumerate(names)},
    )


def _catalog(item_popularity: pl.DataFrame) -> pl.DataFrame:
    """item_id, count, pos (0 = most popular; ties by item_id), decile (1 = the 10% most popular)."""
    _require(item_popularity, ("item_id", "count"), "item_popularity")
    pop = item_popularity.select(pl.col("item_id").cast(pl.String), pl.col("count").cast(pl.Int64))
    if pop["item_id"].is_duplicated().any():
        raise DataError("item_popularity has duplicate item_id rows")
    n_items = pop.height
    return (
        pop.sort(["count", "item_id"], descending=[True, False])
        .with_row_index("pos")
        .with_columns(pl.col("pos").cast(pl.Int64))
        .with_columns(((pl.col("pos") * _N_DECILES) // max(n_items, 1) + 1).alias("decile"))
    )


def beyond_accuracy(
    recs: pl.DataFrame,
    ks: Sequence[int],
    *,
    item_popularity: pl.DataFrame,
    n_users_train: int,
    item_features: pl.DataFrame | None = None,
) -> dict[str, float]:
    """coverage@K, novelty@K, top1pct_share@K and (with ``item_features``) ild@K over all users' recs.

    - coverage: distinct catalog items in the top-K of any user / catalog size (items missing from
      ``item_popularity`` are not part of the catalog and do not count);
    - novelty: mean over top-K (user, item) pairs of -log2(max(count, 1) / n_users_train);
    - top1pct_share: share of top-K pairs whose item is among the floor(1% of the catalog), at least 1,
      most popular items (count descending, ties by item_id);
    - ild: mean over users with >= 2 items in their top-K of 1 - same-category pairs / all pairs, where
      same-category pairs = Σ_c n_c(n_c - 1)/2; items without a known category (absent from
      ``item_features`` or null) form one extra category "unknown" distinct from every known one.
    Without any recommendation (or, for ild, without a user of >= 2 items) a metric is 0.0.
    """
    k_list = _check_ks(ks)
    if n_users_train < 1:
        raise ConfigError(f"n_users_train must be positive, got {n_users_train}")
    catalog = _catalog(item_popularity)
    n_top = max(1, catalog.height // 100)
    top = (
        _best_ranks(recs, max(k_list))
        .join(catalog.select("item_id", "count", "pos"), on="item_id", how="left")
        .with_columns(
            pl.col("count").is_not_null().alias("in_catalog"),
            (pl.col("pos") < n_top).fill_null(False).alias("is_top"),
            -(pl.max_horizontal(pl.col("count").fill_null(0), 1) / n_users_train).log(2).alias("novelty"),
        )
    )
    if item_features is not None:
        _require(item_features, ("item_id",), "item_features")
        if "category" not in item_features.columns:
            raise DataError("item_features lacks column category")
        categories = item_features.select(
            pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String)
        ).unique(subset="item_id", keep="first", maintain_order=True)
        top = top.join(categories, on="item_id", how="left")  # unknown -> null, grouped as one value

    out: dict[str, float] = {}
    for k in k_list:
        top_k = top.filter(pl.col("rank") <= k)
        n_recs = top_k.height
        n_covered = top_k.filter("in_catalog")["item_id"].n_unique()
        out[f"coverage@{k}"] = n_covered / catalog.height if catalog.height else 0.0
        out[f"novelty@{k}"] = float(top_k["novelty"].mean()) if n_recs else 0.0  # type: ignore[arg-type]
        out[f"top1pct_share@{k}"] = float(top_k["is_top"].sum()) / n_recs if n_recs else 0.0
        if item_features is not None:
            out[f"ild@{k}"] = _intra_list_diversity(top_k)
    return out


def _intra_list_diversity(top_k: pl.DataFrame) -> float:
    per_user = (
        top_k.group_by("user_id", "category")
        .agg(pl.len().cast(pl.Float64).alias("n_c"))
        .group_by("user_id")
        .agg(pl.col("n_c").sum().alias("n"), (pl.col("n_c") * (pl.col("n_c") - 1) / 2).sum().alias("same"))
        .filter(pl.col("n") >= 2)
        .select(1.0 - pl.col("same") / (pl.col("n") * (pl.col("n") - 1) / 2))
    )
    return float(per_user.to_series().mean()) if per_user.height else 0.0  # type: ignore[arg-type]


def popularity_deciles(recs: pl.DataFrame, k: int, item_popularity: pl.DataFrame) -> list[float]:
    """Share of top-k (user, item) recs per catalog popularity decile (decile 1 = the 10% most popular).

    Decile of the item at popularity position p (0-based, count descending, ties by item_id) among n
    catalog items: floor(10 p / n) + 1, so decile sizes differ by at most one (some are empty if n < 10).
    Recs of items outside the catalog are left out; the shares sum to 1, or are all 0 without recs.
    """
    k = _check_ks([k])[0]
    hits = _best_ranks(recs, k).join(_catalog(item_popularity), on="item_id")
    counts = np.bincount(hits["decile"].to_numpy() - 1, minlength=_N_DECILES).astype(np.float64)
    total = counts.sum()
    return [float(x) for x in (counts / total if total else counts)]


def catalog_deciles(item_popularity: pl.DataFrame) -> list[float]:
    """Share of all interactions (Σ count) per popularity decile, deciles as in `popularity_deciles`."""
    catalog = _catalog(item_popularity)
    weights = catalog["count"].to_numpy().astype(np.float64)
    sums = np.bincount(catalog["decile"].to_numpy() - 1, weights=weights, minlength=_N_DECILES)
    total = sums.sum()
    return [float(x) for x in (sums / total if total else sums)]


def by_group(per_user: pl.DataFrame, groups: pl.DataFrame) -> dict[str, dict[str, float | int]]:
    """{group: {"users": n, metric: mean over the group's users}} for the groups in ``groups``.

    ``groups`` has user_id, group; a user may belong to several groups (each (user, group) pair counts
    once). Users missing from either frame, and null groups, are left out. Groups come sorted by name.
    """
    _require(groups, ("user_id",), "groups")
    if "group" not in groups.columns:
        raise DataError("groups lacks column group")
    names = metric_columns(per_user)
    membership = (
        groups.select(pl.col("user_id").cast(pl.String), pl.col("group").cast(pl.String))
        .drop_nulls()
        .unique()
    )
    stats = (
        per_user.select(pl.col("user_id").cast(pl.String), *names)
        .join(membership, on="user_id", how="inner")
        .group_by("group")
        .agg(pl.len().alias("users"), *[pl.col(c).cast(pl.Float64).mean() for c in names])
        .sort("group")
    )
    result: dict[str, dict[str, float | int]] = {}
    for row in stats.iter_rows(named=True):  # one row per group
        result[str(row["group"])] = {"users": int(row["users"]), **{c: float(row[c]) for c in names}}
    return result


def repeat_explore(
    recs: pl.DataFrame, targets: pl.DataFrame, seen: pl.DataFrame, ks: Sequence[int]
) -> dict[str, float]:
    """The repeat / explore split of the next-basket literature (Li et al. 2023, "A Next Basket
    Recommendation Reality Check"): a *repeat* target is one the user already touched in training
    (``seen``), an *explore* target one they did not.

    - ``repeat_target_share``: the share of all targets that are repeats;
    - ``repeat_hit_share@K``: the share of the hits within the top K that are repeat targets (0 without hits);
    - ``recall_repeat@K`` / ``recall_explore@K``: recall on the repeat (explore) targets alone, the mean over
      the users that have such targets.
    """
    k_list = _check_ks(ks)
    tgt = (
        _targets(targets)
        .join(_targets(seen).with_columns(_rep=pl.lit(True)), on=["user_id", "item_id"], how="left")
        .with_columns(pl.col("_rep").fill_null(False))
    )
    hits = _best_ranks(recs, max(k_list)).join(tgt, on=["user_id", "item_id"], how="inner")
    out: dict[str, float] = {
        "repeat_target_share": float(tgt["_rep"].mean() or 0.0) if tgt.height else 0.0,  # type: ignore[arg-type]
    }
    n = tgt.group_by("user_id", "_rep").len("n")
    for k in k_list:
        within = hits.filter(pl.col("rank") <= k)
        out[f"repeat_hit_share@{k}"] = float(within["_rep"].mean() or 0.0) if within.height else 0.0  # type: ignore[arg-type]
        per = n.join(
            within.group_by("user_id", "_rep").len("h"), on=["user_id", "_rep"], how="left"
        ).with_columns(r=pl.col("h").fill_null(0) / pl.col("n"))
        for flag, name in ((True, "repeat"), (False, "explore")):
            part = per.filter(pl.col("_rep") == flag)["r"]
            out[f"recall_{name}@{k}"] = float(part.mean()) if part.len() else 0.0  # type: ignore[arg-type]
    return out


def paired_lift(
    per_user: pl.DataFrame, other: pl.DataFrame, metric: str, *, n_boot: int = 1000, seed: int = 0,
    ci: float = 0.95,
) -> tuple[float, float, float]:  # fmt: skip
    """The relative lift of ``metric`` of one model over another on the same test users, mean(a) / mean(b)
    − 1, with a paired percentile-bootstrap interval: each replicate resamples users and takes both
    models' means over the same resample, so the interval reflects the difference, not the two spreads."""
    both = per_user.select("user_id", a=pl.col(metric).cast(pl.Float64)).join(
        other.select("user_id", b=pl.col(metric).cast(pl.Float64)), on="user_id", how="inner"
    )
    if both.height == 0 or both["b"].sum() == 0:
        nan = float("nan")
        return nan, nan, nan
    values = both.select("a", "b").to_numpy().astype(np.float64, copy=False)
    chunk_rows = max(1, _BOOT_BUDGET_BYTES // (_BOOT_BYTES_PER_CELL * values.shape[0]))
    boot = _bootstrap_means(values, max(1, n_boot), seed, min(chunk_rows, max(1, n_boot)))
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = boot[:, 0] / boot[:, 1] - 1.0
    lifts = lifts[np.isfinite(lifts)]  # a resample where the other model scored 0 has no relative lift
    if lifts.size == 0:
        nan = float("nan")
        return nan, nan, nan
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(lifts, [alpha, 1.0 - alpha])
    point = float(values[:, 0].mean() / values[:, 1].mean() - 1.0)
    return point, float(low), float(high)


def target_categories(targets: pl.DataFrame, items: pl.DataFrame, *, max_groups: int = 12) -> pl.DataFrame:
    """user_id, item_id, category: each target pair with its item's category cut to one path level.

    Category paths ("Women > Shoes > Boots") are cut at the deepest level that gives at most ``max_groups``
    distinct values among the targets; when even the top level gives more, the ``max_groups - 1`` largest
    keep their name and the rest become "other". Items without a category are "unknown".
    """
    _require(items, ("item_id",), "items")
    cats = (
        items.select(pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String))
        if "category" in items.columns
        else items.select(pl.col("item_id").cast(pl.String), category=pl.lit(None, pl.String))
    ).unique(subset="item_id", keep="first", maintain_order=True)
    parts = (
        _targets(targets)
        .join(cats, on="item_id", how="left")
        .with_columns(
            pl.col("category")
            .str.split(">")
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter(pl.element() != ""))
            .alias("_parts")
        )
    )
    depth = int(parts["_parts"].list.len().max() or 0)  # type: ignore[arg-type]
    level = 1
    for d in range(depth, 0, -1):  # a loop over path levels (a handful)
        n = parts.select(pl.col("_parts").list.head(d).list.join(" > ").n_unique()).item()
        if n <= max_groups:
            level = d
            break
    out = parts.with_columns(
        category=pl.when(pl.col("_parts").list.len() > 0)
        .then(pl.col("_parts").list.head(level).list.join(" > "))
        .otherwise(pl.lit("unknown"))
    ).select("user_id", "item_id", "category")
    counts = out.group_by("category").len().sort(["len", "category"], descending=[True, False])
    if counts.height > max_groups:
        keep = counts.head(max_groups - 1)["category"]
        out = out.with_columns(
            category=pl.when(pl.col("category").is_in(keep.implode()))
            .then("category")
            .otherwise(pl.lit("other"))
        )
    return out


def by_category(recs: pl.DataFrame, groups: pl.DataFrame, k: int) -> dict[str, float]:
    """{category: share of that category's target pairs found in the user's top ``k``} for the categories
    of ``groups`` (user_id, item_id, category, from `target_categories`), sorted by name."""
    k = _check_ks([k])[0]
    hit = _best_ranks(recs, k).select("user_id", "item_id", _hit=pl.lit(1.0))
    rows = (
        groups.join(hit, on=["user_id", "item_id"], how="left")
        .group_by("category")
        .agg(pl.col("_hit").fill_null(0.0).mean())
        .sort("category")
    )
    return dict(zip(rows["category"].to_list(), [float(v) for v in rows["_hit"].to_list()], strict=True))


def category_counts(groups: pl.DataFrame) -> dict[str, dict[str, int]]:
    """{category: {"targets": target pairs, "users": distinct users}} of `target_categories`' groups."""
    rows = (
        groups.group_by("category").agg(targets=pl.len(), users=pl.col("user_id").n_unique()).sort("category")
    )
    return {
        r["category"]: {"targets": int(r["targets"]), "users": int(r["users"])}
        for r in rows.iter_rows(named=True)
    }
