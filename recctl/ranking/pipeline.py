"""The two-stage recommender as one model: candidate generators → features → LightGBM LambdaRank.

``Pipeline`` follows the generators' protocol (``fit`` / ``for_users`` / ``save`` / ``load``), so the
evaluation harness measures it exactly like any single generator, on the same split.

``fit(train)``:
1. splits ``train`` once more (``dataset.label_split``): history and labels;
2. fits every generator on the history, merges their top ``n_per_generator`` for the labelled users,
   describes each (user, candidate) by the candidate columns and the feature store's features as of the
   label cutoff, labels it and trains LambdaRank (early stopping on a share of the users): steps 1-2 are
   ``training.py``;
3. fits the generators again on all of ``train`` (or takes ``fitted`` ones, already fitted on exactly
   that frame) and the features as of the end of ``train``: what ``for_users`` ranks with.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self

import polars as pl
from pydantic import Field

from recctl import progress
from recctl.candidates.base import CandidateGenerator, Params, build, rank_top, release_memory
from recctl.ranking import training
from recctl.ranking.merge import candidate_columns, column_stem, propose, source_names
from recctl.ranking.ranker import LGBMParams, TrainedRanker, matrix
from recctl.seeds import derive_seed

log = logging.getLogger(__name__)


class GeneratorSpec(Params):
    name: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineParams(Params):
    generators: list[GeneratorSpec] = Field(min_length=1)
    n_per_generator: int = Field(100, ge=1)  # candidates each generator proposes per user
    label: Literal["temporal", "last-item", "last-basket"] = "temporal"
    label_window: str = "auto"  # temporal: the window at the end of training that provides the labels
    # fewer labelled users / positives than these (or a LightGBM that cannot fit or learns nothing): no
    # ranker; the pipeline serves ``fallback``: "best" (the generator that finds the most of the ranker's
    # own labels in its top 10; the blend when none or several tie), "blend" (reciprocal-rank merge) or
    # one generator's list
    min_label_users: int = Field(20, ge=1)
    min_positives: int = Field(20, ge=1)
    fallback: str = "best"
    target_events: list[str] = Field(default_factory=lambda: ["purchase"])  # temporal labels
    filter_seen: bool = True  # candidates never include what the user already interacted with
    features: bool = True  # the feature store's user / item / pair features besides the candidates'
    # negatives per user in the training groups: a uniform sample of the user's unlabelled candidates, so
    # that training sees the candidates as ranking will (keeping the generators' top ranks first made the
    # negatives look better than the positives and the ranker learned to promote low-ranked items)
    negatives: int = Field(200, ge=1)
    hard_rank: int = Field(0, ge=0)  # > 0: negatives some generator ranked this high are always kept
    max_users: int = Field(30_000, ge=0)  # labelled users sampled for training (0 = all)
    valid_share: float = Field(0.15, ge=0, lt=1)  # of them, for early stopping
    chunk_users: int = Field(4000, ge=1)  # users ranked at once (bounds memory)
    lgbm: LGBMParams = Field(default_factory=LGBMParams)
    # [rules] (recctl.config.RulesConfig as a dict) applied after ranking; None = none
    rules: dict[str, Any] | None = None


class Pipeline:
    kind = "pipeline"
    Params = PipelineParams

    def __init__(self, name: str, params: PipelineParams) -> None:
        self.name = name
        self.params = params
        self.generators: dict[str, CandidateGenerator] = {}
        self.ranker: TrainedRanker | None = None
        self.features: Any = None  # recctl.features.FeatureSet as of the end of training
        self.info: dict[str, Any] = {}
        self.rules: Any = None  # RulesConfig
        self.history = pl.DataFrame()  # the events the rules look at (purchases, hidden items, views)
        self.catalog = pl.DataFrame()  # the items the rules look at (stock, brand, category, price)
        self.as_of: datetime | None = None

    @classmethod
    def from_spec(cls, spec: Any) -> Pipeline:
        """The pipeline of a ``CandidateSpec`` of kind ``pipeline`` (see ``recctl.ranking.build_model``)."""
        from recctl.ranking import build_model

        model = build_model(spec)
        assert isinstance(model, Pipeline)
        return model

    # ------------------------------------------------------------------------------------------ fit

    def fit(
        self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None,
        fitted: dict[str, CandidateGenerator] | None = None,
    ) -> None:  # fmt: skip
        t0 = time.perf_counter()
        self.fit_ranker(train, seed=seed, items=items)
        self.finish(train, seed=seed, items=items, fitted=fitted)
        self.info["fit_s"] = round(time.perf_counter() - t0, 3)
        log.info("%s: %s", self.name, self.info)

    def fit_ranker(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        """Step 1 of ``fit``: the ranker (or the fallback) from the label split of ``train``. The
        generators it fits on the history are freed before it returns, so a caller that fits the final
        generators afterwards (``recctl train``) never holds both sets at once."""
        self.ranker = None
        self.info = training.fit_ranker(self, train, seed, items)

    def finish(
        self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None,
        fitted: dict[str, CandidateGenerator] | None = None,
    ) -> None:  # fmt: skip
        """Step 2 of ``fit``: the generators fitted on all of ``train`` (``fitted`` ones are taken as
        they are, the others fitted here), the features as of its end and what the rules look at
        (``recctl train`` uses :meth:`features_at_end` and :meth:`finish_saved` instead)."""
        p = self.params
        final = dict(fitted or {})
        missing = [g for g in p.generators if g.name not in final]
        final |= self.fit_generators(train, seed, items, "final", missing)
        self.generators = {g.name: final[g.name] for g in p.generators}
        self.features_at_end(train, items)
        self._keep_for_rules(train, items)

    def features_at_end(self, train: pl.DataFrame, items: pl.DataFrame | None) -> None:
        """The features as of the end of ``train`` (what ``for_users`` ranks with). ``recctl train``
        builds them before it fits the final generators, so the two never hold memory at once."""
        with progress.stage("features as of the end of training"):
            self.features = self._feature_set(train, items, _after(train))
        self.as_of = _after(train)

    def save_features(self, path: Path) -> None:
        """Write the end features into the folder ``save`` writes (``path``) and drop them from memory:
        ``recctl train`` does so before it fits the final generators, which it saves one by one
        (:meth:`save_generator`) instead of holding them all until :meth:`save`."""
        self._write_features(path)
        self.features = None

    @staticmethod
    def save_generator(path: Path, name: str, gen: CandidateGenerator) -> None:
        """Write one final generator where ``save`` writes the pipeline's generator ``name``."""
        gen.save(path / "generators" / name)

    def finish_saved(self, train: pl.DataFrame, items: pl.DataFrame | None, saved: list[str]) -> None:
        """:meth:`finish` for a caller that saved every final generator (``saved``) and the features
        into the run folder already: only what the rules look at is kept; :meth:`save` writes the rest."""
        if missing := [g.name for g in self.params.generators if g.name not in saved]:
            raise ValueError(f"{self.name}: generators {missing} were not saved")
        self.generators = {}
        self._keep_for_rules(train, items)

    @property
    def fallback(self) -> str | None:
        """What the pipeline serves instead of a ranker (None: it has a ranker)."""
        return None if self.ranker is not None else self.info.get("fallback")

    def _keep_for_rules(self, train: pl.DataFrame, items: pl.DataFrame | None) -> None:
        if self.params.rules is None:
            return
        from recctl.config import RulesConfig

        self.rules = RulesConfig.model_validate(self.params.rules)
        types = ["purchase", *self.rules.hide_event_types]
        if self.rules.exclude_viewed_times:
            types.append("view")
        self.history = train.filter(pl.col("event_type").is_in(types))
        self.catalog = items if items is not None else pl.DataFrame({"item_id": train["item_id"].unique()})

    def fit_generators(
        self, events: pl.DataFrame, seed: int, items: pl.DataFrame | None, stage: str,
        specs: list[GeneratorSpec] | None = None, number: int | None = None,
    ) -> dict[str, CandidateGenerator]:  # fmt: skip
        """``specs`` (default: every generator) fitted on ``events``; ``number``: the position of a single
        spec among all generators (for the stage names)."""
        out: dict[str, CandidateGenerator] = {}
        todo = self.params.generators if specs is None else specs
        where = "on the label history" if stage == "history" else "on all of training"
        total = len(self.params.generators) if number is not None else len(todo)
        for i, spec in enumerate(todo, number or 1):
            with progress.stage(f"fit generator {spec.name} {where} ({i}/{total})"):
                gen = build(spec.kind, spec.name, spec.params)
                gen.fit(events, seed=derive_seed(seed, stage, spec.name), items=items)
                release_memory()
            out[spec.name] = gen
        return out

    def _feature_set(self, events: pl.DataFrame, items: pl.DataFrame | None, as_of: datetime) -> Any:
        if not self.params.features or items is None:
            return None
        from recctl.features import build as build_features

        return build_features(events, items, as_of)

    def describe(
        self, cands: pl.DataFrame, events: pl.DataFrame, items: pl.DataFrame | None, as_of: datetime
    ) -> pl.DataFrame:
        fs = self._feature_set(events, items, as_of)
        return self._with_features(cands, fs)

    @staticmethod
    def _with_features(cands: pl.DataFrame, fs: Any) -> pl.DataFrame:
        if fs is None:
            return cands
        from recctl.features import pair_features

        described: pl.DataFrame = pair_features(fs, cands)
        return described

    # ------------------------------------------------------------------------------------ recommend

    def _finish(self, scored: pl.DataFrame, n: int, explain: bool) -> pl.DataFrame:
        """The top ``n`` per user after the rules (with their ``rules`` labels when ``explain``)."""
        if self.rules is None or self.as_of is None:
            return rank_top(scored, n, None)
        from recctl.rules import apply

        ranked = scored.sort(["user_id", "score", "item_id"], descending=[False, True, False])
        final = apply(
            ranked, history=self.history, items=self.catalog, cfg=self.rules, now=self.as_of, k=n
        ).frame
        cols = ["user_id", "item_id", "score", "rank", *(["rules", "sources"] if explain else [])]
        return final.select(cols).with_columns(pl.col("score").fill_null(0.0), pl.col("rank").cast(pl.Int32))

    def for_users(
        self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None, explain: bool = False
    ) -> pl.DataFrame:
        """Each user's ``n`` best items after ranking and the rules; ``explain`` adds the ``rules`` that
        touched each item (boosts, pins, repurchase windows, diversity moves) and the ``sources``."""
        if (self.ranker is None and self.fallback is None) or n < 1:
            return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64,
                                        "rank": pl.Int32})  # fmt: skip
        out = [self._finish(scored, n, explain) for scored in self._ranked_chunks(users, n, exclude, explain)]
        if not out:
            return self.for_users(pl.Series([], dtype=pl.String), 0)
        return pl.concat(out)

    def rank(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        """Each user's ``n`` best merged candidates scored by the ranker, before any rule: user_id,
        item_id, score, ``sources`` (the generators that proposed it, best rank first), sorted by user then
        score. Each generator proposes ``max(n, n_per_generator)``. Serving applies the current rules itself."""
        parts = list(self._ranked_chunks(users, n, exclude, True, keep=n))
        if not parts:
            return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64,
                                        "sources": pl.List(pl.String)})  # fmt: skip
        return pl.concat(parts)

    def _ranked_chunks(
        self, users: pl.Series, n: int, exclude: pl.DataFrame | None, sources: bool, keep: int | None = None
    ) -> Iterator[pl.DataFrame]:
        """Per chunk of users their scored candidates sorted by user then score (only each user's ``keep``
        best when given), with ``sources`` when asked (named after the cut: the rank columns ride along)."""
        assert self.ranker is not None or self.fallback is not None
        names = list(self.generators)
        ranks = [f"{column_stem(g)}_rank" for g in names] if sources else []
        todo = users.unique().sort().cast(pl.String)
        for lo in range(0, todo.len(), self.params.chunk_users):
            chunk = todo.slice(lo, self.params.chunk_users)
            ex = (
                None if exclude is None else exclude.join(chunk.to_frame("user_id"), on="user_id", how="semi")
            )
            cands = propose(self.generators, chunk, max(n, self.params.n_per_generator), ex)
            if cands.height == 0:
                continue
            if self.ranker is None:
                scored = cands.select("user_id", "item_id", *ranks, score=self._fallback_score())
            else:
                described = self._with_features(cands, self.features)
                scored = described.select("user_id", "item_id", *ranks)
                # the frames freed before LightGBM predicts: only the float32 matrix is alive beside it
                x = matrix(described, self.ranker.features)
                del described, cands
                scored = scored.with_columns(score=pl.Series(self.ranker.predict(x), dtype=pl.Float64))
                del x
            scored = scored.sort(["user_id", "score", "item_id"], descending=[False, True, False])
            if keep is not None:
                scored = scored.filter(pl.int_range(pl.len()).over("user_id") < keep)
            if sources:
                scored = scored.with_columns(source_names(scored, names)).drop(ranks)
            yield scored.select("user_id", "item_id", "score", *(["sources"] if sources else []))

    def _fallback_score(self) -> pl.Expr:
        """Without a ranker: the blend (sum of reciprocal ranks over the generators), or one generator's
        list first in its own order and then the blend of the others."""
        blend = pl.col("c_rrank_sum").cast(pl.Float64)
        if self.fallback in (None, "blend"):
            return blend
        rank = pl.col(f"{column_stem(str(self.fallback))}_rank").cast(pl.Float64)
        return pl.when(rank.is_not_null()).then(1e9 - rank).otherwise(blend)

    # ------------------------------------------------------------------------------- save and load

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(self.params.model_dump_json(indent=1))
        (path / "training.json").write_text(json.dumps(self.info, indent=1, default=str))
        if self.ranker is not None:
            self.ranker.save(path)
        if self.rules is not None:
            self.history.write_parquet(path / "rules_history.parquet")
            self.catalog.write_parquet(path / "rules_catalog.parquet")
            (path / "rules.json").write_text(
                json.dumps({"as_of": self.as_of.isoformat() if self.as_of else None}, indent=1)
            )
        for name, gen in self.generators.items():
            self.save_generator(path, name, gen)
        if self.features is not None:
            self._write_features(path)

    def _write_features(self, path: Path) -> None:
        from recctl.features import saved

        saved.write(self.features, path / "features")  # user tables sorted: a loaded run reads ranges

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        """The pipeline ``save`` wrote; a damaged or missing file is one NotTrainedError naming the run and
        the file (``recctl.run_files.unloadable``), a generator's own error passes as it is."""
        from recctl.candidates.base import unloadable
        from recctl.errors import RecctlError
        from recctl.run_files import refuse_pickles, run_root

        refuse_pickles(run_root(path) or path, path)
        try:
            return cls._load(path, name, params)
        except (RecctlError, MemoryError):
            raise
        except Exception as exc:  # a reader's error on data it did not write: say which file
            raise unloadable(name, path, exc) from exc

    @classmethod
    def _load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        from recctl.candidates.base import load_generator

        PipelineParams.model_validate(params)
        pipe = cls(name, PipelineParams.model_validate_json((path / "params.json").read_text()))
        pipe.info = json.loads((path / "training.json").read_text())
        if (path / "ranker.txt").exists() or (
            path / "ranker.json"
        ).exists():  # one without the other: BadFile
            pipe.ranker = TrainedRanker.load(path)
        if (path / "rules.json").exists() and pipe.params.rules is not None:
            from recctl.config import RulesConfig

            pipe.rules = RulesConfig.model_validate(pipe.params.rules)
            pipe.history = pl.read_parquet(path / "rules_history.parquet")
            pipe.catalog = pl.read_parquet(path / "rules_catalog.parquet")
            as_of = json.loads((path / "rules.json").read_text())["as_of"]
            pipe.as_of = datetime.fromisoformat(as_of) if as_of else None
        for spec in pipe.params.generators:
            pipe.generators[spec.name] = load_generator(
                spec.kind, path / "generators" / spec.name, spec.name, spec.params
            )
        if (path / "features").exists():
            from recctl.features import saved

            pipe.features = saved.read(path / "features")
        return pipe

    def candidate_features(self) -> list[str]:
        return candidate_columns([g.name for g in self.params.generators])


def serves(fallback: str) -> str:
    """What a pipeline without a ranker serves, in words: "the blend of its generators" / "generator X's list"."""
    return "the blend of its generators" if fallback == "blend" else f"generator {fallback}'s list"


def _after(events: pl.DataFrame) -> datetime:
    last = events["ts"].max()
    assert isinstance(last, datetime)
    return last + timedelta(microseconds=1)
