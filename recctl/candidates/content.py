"""``content``: TF-IDF (scikit-learn) over title, description, brand, category and attributes.

Each field has its own vectorizer; its L2-normalized block is scaled by the square root of the field's
weight, so the cosine of two items is the weighted mean of their per-field cosines. Item neighbours are
cosines on the L2-normalized rows (sparse × dense products, top-k per item with ``argpartition``). A user's
profile is the normalized sum of the vectors of the items in their history, each weighted by its event
type and decayed with a half-life. The catalog, not the interactions, defines the candidates: items nobody
has touched yet (new arrivals) are recommended as soon as they are in the catalog; out-of-stock items are
left out unless ``keep_out_of_stock``. A popularity prior is added to the cosine; how much content beats
popularity differs by shop (fashion: a little prior; groceries: a lot), so by default its weight is
calibrated in ``fit`` on a holdout: the last 10% of the training events (``holdout``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from recctl.candidates.base import RECS_SCHEMA, Params, register

DEFAULT_FIELDS = {"title": 1.0, "description": 0.5, "brand": 1.0, "category": 1.0, "attributes": 0.5}
FIELDS = tuple(DEFAULT_FIELDS)
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0, "rating": 3.0, "like": 2.0}
_SCALAR = r'"([^"]+)"\s*:\s*("[^"]*"|-?\d+(?:\.\d+)?|true|false)'
_ARRAY = r'"([^"]+)"\s*:\s*\[([^\[\]{}]*)\]'
_BATCH = 256  # users or items scored per dense block (catalog × batch float32)


class ContentParams(Params):
    fields: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FIELDS))  # weight of each field
    ngram_range: tuple[int, int] = (1, 2)  # word n-grams of title and description
    min_df: int = Field(1, ge=1)  # in how many items a title/description/attribute term must occur
    max_features: int | None = Field(None, ge=1)  # per field: the most frequent terms only
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    default_event_weight: float = Field(1.0, ge=0)  # event types not in event_weights
    half_life_days: float = Field(30.0, ge=0)  # recency decay of the profile; 0 = none
    log_counts: bool = True  # a user's weight for an item is log1p(sum of event weights)
    # weight of the popularity prior (recency-weighted distinct users, log-scaled to [0, 1]); None = the
    # value of calibration_grid with the best recall@20 on the last 10% of the training events
    popularity_weight: float | None = Field(None, ge=0)
    calibration_grid: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    neighbors: int = Field(50, ge=1)  # at most this many related items per item (for_items)
    keep_out_of_stock: bool = False

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(FIELDS))
        if unknown or any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError(f"fields are weights >= 0 (one > 0) of {', '.join(FIELDS)}; unknown: {unknown}")
        return v


def weighted_events(
    train: pl.DataFrame, weights: dict[str, float], default: float, half_life_days: float
) -> pl.DataFrame:
    """``train`` plus ``recency`` = 0.5 ** (age before the last training event / half-life) and ``w`` =
    event-type weight × recency; events of weight 0 are dropped."""
    recency = pl.lit(1.0)
    if half_life_days > 0 and train.height:
        age = (pl.col("ts").max() - pl.col("ts")).dt.total_seconds(fractional=True) / 86400.0
        recency = 0.5 ** (age / half_life_days)
    w = pl.col("event_type").replace_strict(weights, default=default, return_dtype=pl.Float64)
    return train.with_columns(recency=recency).with_columns(w=w * pl.col("recency")).filter(pl.col("w") > 0)


def popularity(ev: pl.DataFrame) -> pl.DataFrame:
    """item_id, pop: distinct users, each counted with the recency of their latest event on the item,
    log-scaled to [0, 1] (``ev`` from ``weighted_events``)."""
    pop = (
        ev.group_by("item_id", "user_id")
        .agg(pl.col("recency").max())
        .group_by("item_id")
        .agg(pop=pl.col("recency").sum().log1p())
    )
    # rounded: float sums in any order (parallel group-bys) then give the same ranking
    return pop.with_columns((pl.col("pop") / pl.col("pop").max().clip(lower_bound=1e-12)).round(12))


def holdout(
    train: pl.DataFrame, weights: dict[str, float], default: float, seed: int, n_users: int = 1000
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events before the last 10% of ``train`` (by time), and targets after: (user_id, item_id) pairs
    of the heaviest event type there, new to users with earlier events (at most ``n_users`` of them,
    drawn by a seeded hash of their ids)."""
    none = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
    if train.height < 10:
        return train, none
    cut = train["ts"].sort().gather(int(train.height * 0.9))[0]
    early, late = train.filter(pl.col("ts") < cut), train.filter(pl.col("ts") >= cut)
    w = pl.col("event_type").replace_strict(weights, default=default, return_dtype=pl.Float64)
    late = late.filter(w == late.select(w.max()).item())
    pairs = early.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
    targets = (
        late.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .unique()
        .join(pairs, on=["user_id", "item_id"], how="anti")
        .join(pairs.select("user_id").unique(), on="user_id", how="semi")
    )
    users = targets.select("user_id").unique().sort(pl.col("user_id").hash(seed), "user_id").head(n_users)
    return early, targets.join(users, on="user_id", how="semi")


def recall_at(recs: pl.DataFrame, targets: pl.DataFrame, k: int = 20) -> float:
    """Mean over target users of hits in the top ``k`` / min(targets, k)."""
    if targets.height == 0:
        return 0.0
    hits = recs.filter(pl.col("rank") <= k).join(targets, on=["user_id", "item_id"]).group_by("user_id").len()
    per = targets.group_by("user_id").len("n").join(hits, on="user_id", how="left")
    return float(per.select((pl.col("len").fill_null(0) / pl.col("n").clip(upper_bound=k)).mean()).item())


def best_weight(grid: list[float], recs: list[pl.DataFrame], targets: pl.DataFrame) -> float:
    """The grid value whose recommendations have the best recall@20; ties go to the earlier value."""
    values = [recall_at(r, targets) for r in recs]
    return grid[values.index(max(values))] if grid else 1.0


def catalog_of(train: pl.DataFrame, items: pl.DataFrame | None) -> pl.DataFrame:
    """The catalog (or the interactions' items), plus interacted items it lacks, one row per id, by id."""
    seen = train.select(pl.col("item_id").cast(pl.String)).unique()
    if items is None:
        return seen.sort("item_id")
    cat = items.with_columns(pl.col("item_id").cast(pl.String)).unique("item_id", keep="first")
    return pl.concat([cat, seen.join(cat, on="item_id", how="anti")], how="diagonal_relaxed").sort("item_id")


def category_levels(col: str = "category") -> pl.Expr:
    """'A > B > C' → ['a', 'b', 'c'] (lowercased, stripped); null stays null."""
    return pl.col(col).str.to_lowercase().str.split(">").list.eval(pl.element().str.strip_chars())


def _norm(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.strip_chars().str.replace_all(r"[^\w=]+", "_")


def _category_docs(cat: pl.DataFrame) -> pl.Series:
    """Tokens: each path prefix ('women', 'women/shoes', …) and each part ('a:shoes'; '|' splits too)."""
    lv = cat.select(lv=category_levels().list.eval(_norm(pl.element())))["lv"]
    depth = int(lv.list.len().max() or 0)  # type: ignore[arg-type]
    prefixes = [
        pl.when(lv.list.len() >= k).then(lv.list.slice(0, k).list.join("/")) for k in range(1, depth + 1)
    ]
    atoms = cat["category"].str.extract_all(r"[^>|,]+").list.eval("a:" + _norm(pl.element()))
    return pl.select(
        d=pl.concat_str([*prefixes, atoms.list.join(" ")], separator=" ", ignore_nulls=True).fill_null("")
    )["d"]


def _attribute_docs(cat: pl.DataFrame) -> pl.Series:
    """JSON attributes → 'key=value' tokens (arrays give one token per element); nested keys flattened."""
    a = cat.select(row=pl.int_range(pl.len()), a=pl.col("attributes").cast(pl.String).fill_null(""))
    scalars = a.select("row", m=pl.col("a").str.extract_all(_SCALAR)).explode("m").drop_nulls()
    scalars = scalars.select(
        "row", k=pl.col("m").str.extract(r'^"([^"]+)"', 1), v=pl.col("m").str.extract(r':\s*"?([^"]*)"?$', 1)
    )
    arrays = a.select("row", m=pl.col("a").str.extract_all(_ARRAY)).explode("m").drop_nulls()
    arrays = arrays.select(
        "row",
        k=pl.col("m").str.extract(r'^"([^"]+)"', 1),
        v=pl.col("m").str.extract(r"\[(.*)\]$", 1).str.split(","),
    ).explode("v")
    toks = pl.concat([scalars, arrays]).select(
        "row", t=_norm(pl.col("k")) + "=" + _norm(pl.col("v").str.strip_chars(' "'))
    )
    docs = toks.filter(~pl.col("t").str.ends_with("=")).group_by("row").agg(pl.col("t").str.join(" "))
    return a.join(docs, on="row", how="left")["t"].fill_null("")


def item_vectors(cat: pl.DataFrame, p: ContentParams) -> Any:
    """The L2-normalized TF-IDF rows (float32 CSR) of the catalog, in ``cat`` order."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    blocks = []
    for field, weight in p.fields.items():
        if weight <= 0 or field not in cat.columns:
            continue
        kw: dict[str, Any] = {"token_pattern": r"\S+", "lowercase": False}
        if field in ("title", "description"):
            docs = cat[field].cast(pl.String).fill_null("")
            kw = {"ngram_range": p.ngram_range, "stop_words": "english", "min_df": p.min_df}
        elif field == "brand":
            docs = cat.select(_norm(pl.col("brand").cast(pl.String)).fill_null(""))["brand"]
        elif field == "category":
            docs = _category_docs(cat)
        else:
            docs = _attribute_docs(cat)
            kw["min_df"] = p.min_df
        vec = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, max_features=p.max_features, **kw)
        try:
            block = vec.fit_transform(docs.to_list())
        except ValueError:  # no term in any item (an empty field, or every term pruned)
            continue
        blocks.append(block * np.float32(np.sqrt(weight)))
    if not blocks:
        return sp.csr_matrix((cat.height, 1), dtype=np.float32)
    return normalize(sp.hstack(blocks, format="csr")).astype(np.float32)


def top_per_row(scores: Any, n: int) -> tuple[Any, Any]:
    """Column indices and scores of each row's ``n`` best entries, best first (ties: lower column first)."""
    k = min(n, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(k), scores.shape)
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


@register("content")
class Content:
    kind = "content"
    Params = ContentParams

    def __init__(self, name: str, params: ContentParams) -> None:
        import scipy.sparse as sp

        self.name = name
        self.params = params
        self.items = pl.DataFrame(schema={"item_id": pl.String, "eligible": pl.Boolean, "pop": pl.Float32})
        self.users = pl.DataFrame(schema={"user_id": pl.String})
        self.X: Any = sp.csr_matrix((0, 1), dtype=np.float32)  # items × terms
        self.P: Any = sp.csr_matrix((0, 1), dtype=np.float32)  # users × terms
        self.pop_weight = params.popularity_weight if params.popularity_weight is not None else 1.0

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        cat = catalog_of(train, items)
        self.X = item_vectors(cat, p)
        ev = weighted_events(train, p.event_weights, p.default_event_weight, p.half_life_days)
        in_stock = pl.col("in_stock") if "in_stock" in cat.columns else pl.lit(None, pl.Boolean)
        self.items = cat.select(
            "item_id", eligible=pl.lit(p.keep_out_of_stock) | in_stock.cast(pl.Boolean).fill_null(True)
        )
        self.items = self.items.with_columns(pop=self._pop(ev))
        self.users, self.P = self._profiles(ev)
        self.pop_weight = (
            p.popularity_weight if p.popularity_weight is not None else self._calibrate(train, seed)
        )

    def _pop(self, ev: pl.DataFrame) -> pl.Series:
        pop = popularity(ev.with_columns(pl.col("item_id").cast(pl.String)))
        joined = self.items.select("item_id").join(pop, on="item_id", how="left", maintain_order="left")
        return joined["pop"].fill_null(0.0).cast(pl.Float32)

    def _profiles(self, ev: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
        """Users with events on catalog items, and their L2-normalized weighted sums of item vectors."""
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize

        idx = self.items.select("item_id", i=pl.int_range(pl.len(), dtype=pl.Int64))
        ui = (
            ev.with_columns(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
            .group_by("user_id", "item_id")
            .agg(pl.col("w").sum())
            .join(idx, on="item_id")
        )
        if self.params.log_counts:
            ui = ui.with_columns(pl.col("w").log1p())
        users = ui.select("user_id").unique().sort("user_id")
        ui = ui.join(users.with_row_index("u"), on="user_id").sort("u", "i")  # a fixed summation order
        shape = (users.height, self.items.height)
        W = sp.csr_matrix((ui["w"].to_numpy(), (ui["u"].to_numpy(), ui["i"].to_numpy())), shape=shape)
        return users, normalize((W @ self.X).astype(np.float32)).tocsr()

    def _calibrate(self, train: pl.DataFrame, seed: int) -> float:
        p = self.params
        early, targets = holdout(train, p.event_weights, p.default_event_weight, seed)
        if targets.height == 0:
            return 1.0
        ev = weighted_events(early, p.event_weights, p.default_event_weight, p.half_life_days)
        users, P = self._profiles(ev)
        seen = ev.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
        pop = self._pop(ev).to_numpy()
        recs = self._rank(users, P, pop, p.calibration_grid, targets["user_id"], 20, seen)
        return best_weight(p.calibration_grid, recs, targets)

    def _cosines(self, Q: Any) -> Any:
        """Batch × catalog cosines of the (normalized) rows of ``Q`` with the catalog rows."""
        return np.ascontiguousarray(np.asarray(self.X @ Q.T.toarray(), dtype=np.float32).T)

    def _rank(
        self, table: pl.DataFrame, P: Any, pop: Any, weights: list[float], users: pl.Series, n: int,
        exclude: pl.DataFrame | None,
    ) -> list[pl.DataFrame]:  # fmt: skip
        """For each popularity weight, the top ``n`` of the known ``users`` (profiles: ``table``, ``P``)."""
        wanted = pl.DataFrame({"user_id": users.cast(pl.String)}).unique()
        known = table.with_row_index("u").join(wanted, on="user_id").sort("u")
        blocked = ~self.items["eligible"].to_numpy()
        ex = None
        if exclude is not None and exclude.height:
            ex = exclude.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).join(
                self.items.select("item_id", i=pl.int_range(pl.len())), on="item_id"
            )
        out: list[list[pl.DataFrame]] = [[] for _ in weights]
        for start in range(0, known.height, _BATCH):
            b = known.slice(start, _BATCH).with_row_index("col")
            cos = self._cosines(P[b["u"].to_numpy()])
            cos[:, blocked] = -np.inf
            if ex is not None:
                e = ex.join(b.select("user_id", "col"), on="user_id")
                cos[e["col"].to_numpy(), e["i"].to_numpy()] = -np.inf
            for j, w in enumerate(weights):
                cols, vals = top_per_row(cos + np.float32(w) * pop, n)
                out[j].append(self._frame(b["user_id"], cols, vals, vals, "user_id", "item_id"))
        empty = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64})
        return [
            pl.concat([empty, *frames])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32))
            .select(list(RECS_SCHEMA))
            .cast(RECS_SCHEMA)  # type: ignore[arg-type]
            for frames in out
        ]

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        pop = self.items["pop"].to_numpy()
        return self._rank(self.users, self.P, pop, [self.pop_weight], users, n, exclude)[0]

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """The ``min(n, neighbors)`` most similar eligible items with cosine > 0.

        Ranked by cosine to 4 decimals, then popularity, then id (items with the same text tie exactly);
        ``score`` is the cosine itself.
        """
        idx = self.items.with_row_index("i").select("item_id", "i")
        known = pl.DataFrame({"item_id": items.cast(pl.String)}).unique().join(idx, on="item_id").sort("i")
        blocked = ~self.items["eligible"].to_numpy()
        tie = (1e-5 * self.items["pop"].to_numpy()).astype(np.float32)
        out = [pl.DataFrame(schema={"item_id": pl.String, "related_id": pl.String, "score": pl.Float64})]
        for start in range(0, known.height, _BATCH):
            b = known.slice(start, _BATCH)
            q = b["i"].to_numpy()
            cos = self._cosines(self.X[q])
            key = np.where(cos > 1e-6, np.round(cos, 4) + tie, -np.inf)
            key[:, blocked] = -np.inf
            key[np.arange(q.size), q] = -np.inf
            cols, vals = top_per_row(key, min(n, self.params.neighbors))
            out.append(
                self._frame(
                    b["item_id"], cols, vals, np.take_along_axis(cos, cols, 1), "item_id", "related_id"
                )
            )
        return pl.concat(out).with_columns(rank=pl.int_range(1, pl.len() + 1).over("item_id").cast(pl.Int32))

    def pair_scores(self, anchors: pl.Series, items: pl.Series) -> np.ndarray:
        """The cosines of the pairs (the score of ``for_items``); NaN for unknown or ineligible items."""
        from recctl.candidates.ease import matrix_pair_scores

        X, ids = self.X, self.items["item_id"]
        out = matrix_pair_scores(anchors, items, ids, lambda a, b: X[a].multiply(X[b]).sum(axis=1))
        out[~items.cast(pl.String).is_in(ids.filter(self.items["eligible"]).implode()).to_numpy()] = np.nan
        return out

    def _frame(self, keys: pl.Series, cols: Any, vals: Any, score: Any, key: str, other: str) -> pl.DataFrame:
        """Long (key, other, score) rows of a top-k block (row r of the block is ``keys[r]``), no -inf."""
        ok = np.isfinite(vals)
        rows = np.broadcast_to(np.arange(cols.shape[0])[:, None], ok.shape)
        return pl.DataFrame(
            {
                key: keys.gather(rows[ok]),
                other: self.items["item_id"].gather(cols[ok]),
                "score": score[ok].astype(np.float64),
            }
        )

    def save(self, path: Path) -> None:
        import scipy.sparse as sp

        path.mkdir(parents=True, exist_ok=True)
        self.items.write_parquet(path / "items.parquet")
        self.users.write_parquet(path / "users.parquet")
        sp.save_npz(path / "item_vectors.npz", self.X.tocsr())
        sp.save_npz(path / "user_profiles.npz", self.P.tocsr())
        state = {"params": self.params.model_dump(), "popularity_weight": self.pop_weight}
        (path / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        import scipy.sparse as sp

        gen = cls(name, ContentParams.model_validate(params))
        gen.items = pl.read_parquet(path / "items.parquet")
        gen.users = pl.read_parquet(path / "users.parquet")
        gen.X = sp.load_npz(path / "item_vectors.npz").tocsr()
        gen.P = sp.load_npz(path / "user_profiles.npz").tocsr()
        gen.pop_weight = float(json.loads((path / "state.json").read_text())["popularity_weight"])
        return gen
