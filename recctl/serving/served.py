"""The promoted run as serving sees it: its config and meta at once, its models only when asked.

``promoted(runs_dir)`` reads ``runs/PROMOTED`` and the run's meta.json and config.json (cheap: the
online-store path of ``recommend --user`` needs nothing more; a run holding a pickle file is refused). ``Served.pipeline()`` loads the ranking pipeline with all its
generators; ``Served.generator(name)`` loads one generator alone (``recommend --item`` needs only the
co-occurrence or similarity ones). Loaded runs are cached per process, keyed by run id, so a long-lived
caller (or the in-process latency benchmark) pays the loading once. Before a model folder is loaded its
files are checked against the run's manifest (``recctl.run_files.verify``): a damaged file is a
NotTrainedError naming the run and the file, and only the paths that read that folder fail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recctl import run_files, runs
from recctl.errors import ConfigError, NotTrainedError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from recctl.candidates.base import CandidateGenerator
    from recctl.ranking.pipeline import Pipeline

#: item-to-item relations of ``recommend --item`` → the co-occurrence mode that provides them
RELATIONS = {"bought-together": "basket", "viewed-together": "session"}


@dataclass
class Served:
    run_id: str
    path: Path
    config: dict[str, Any]  # the run's resolved config (config.json)
    meta: dict[str, Any]
    _pipeline: Pipeline | None = field(default=None, repr=False)
    _generators: dict[str, CandidateGenerator] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------ what the run has

    @property
    def specs(self) -> list[dict[str, Any]]:
        """The run's generators as config entries (name, kind, params), in config order."""
        return list(self.config.get("candidates") or [])

    @property
    def pipeline_name(self) -> str | None:
        for name, m in self.meta.get("models", {}).items():
            if m.get("kind") == "pipeline":
                return str(name)
        return None

    def names_of_kind(self, kind: str, **params: Any) -> list[str]:
        """Names of the run's generators of ``kind`` whose params include ``params`` (defaults count:
        a cooccur without ``mode`` is sequential)."""
        defaults = {"cooccur": {"mode": "sequential"}}.get(kind, {})
        out = []
        for s in self.specs:
            p = {**defaults, **(s.get("params") or {})}
            if s["kind"] == kind and all(p.get(k) == v for k, v in params.items()):
                out.append(str(s["name"]))
        return out

    def kind_of(self, name: str) -> str:
        for s in self.specs:
            if s["name"] == name:
                return str(s["kind"])
        raise ConfigError(f"the promoted run {self.run_id} has no generator {name!r}")

    def params_of(self, name: str) -> dict[str, Any]:
        for s in self.specs:
            if s["name"] == name:
                return dict(s.get("params") or {})
        raise ConfigError(f"the promoted run {self.run_id} has no generator {name!r}")

    # ------------------------------------------------------------------------------------- loading

    def pipeline(self) -> Pipeline | None:
        """The ranking pipeline (None when the run was trained with --no-ranker)."""
        name = self.pipeline_name
        if name is None:
            return None
        if self._pipeline is None:
            from recctl.ranking.pipeline import Pipeline

            folder = self.path / "models" / name
            run_files.verify(self.path, folder, trust_mtime=True)  # every file it reads, before any parser
            params = run_files.read_object(folder / "params.json", self.path)
            self._pipeline = Pipeline.load(folder, name, params)
            self._generators.update(self._pipeline.generators)
        return self._pipeline

    def generator(self, name: str) -> CandidateGenerator:
        """One generator of the run, loaded alone (from the pipeline's folder when there is one)."""
        if name not in self._generators:
            from recctl.candidates.base import load_generator

            kind, params = self.kind_of(name), self.params_of(name)
            pipe = self.pipeline_name
            folder = (
                self.path / "models" / pipe / "generators" / name if pipe else self.path / "models" / name
            )
            if not folder.exists():
                raise NotTrainedError(f"the promoted run {self.run_id} has no saved model {name!r}",
                                      hint=run_files.HINT)  # fmt: skip
            # this generator's files only: a damaged other one is not read
            run_files.verify(self.path, folder, trust_mtime=True)
            self._generators[name] = load_generator(kind, folder, name, params)
        return self._generators[name]

    def first(self, kind: str, **params: Any) -> CandidateGenerator | None:
        names = self.names_of_kind(kind, **params)
        return self.generator(names[0]) if names else None


_CACHE: dict[tuple[str, str], Served] = {}
_CATALOG: dict[str, tuple[tuple[Any, ...], Any, float]] = {}
CATALOG_CHECK_S = 2.0  # a long-lived caller checks at most this often whether the catalog changed


def catalog(con: duckdb.DuckDBPyConnection, key: str) -> pl.DataFrame:
    """``recctl.data.load_items`` sorted by item_id (for :func:`items_of`), cached per process for the
    warehouse ``key`` (its path), reloaded when the items or events tables change (row counts and latest
    ingest times: cheap aggregates, run at most every ``CATALOG_CHECK_S`` seconds)."""
    hit = _CATALOG.get(key)
    if hit is not None and time.monotonic() - hit[2] < CATALOG_CHECK_S:
        recent: pl.DataFrame = hit[1]
        return recent
    stamp = tuple(
        con.sql(
            "SELECT (SELECT count(*) FROM items), (SELECT max(ingested_at) FROM items), "
            "(SELECT count(*) FROM events), (SELECT max(ingested_at) FROM events)"
        ).fetchall()[0]
    )
    if hit is not None and hit[0] == stamp:
        _CATALOG[key] = (stamp, hit[1], time.monotonic())
        frame: pl.DataFrame = hit[1]
        return frame
    from recctl.data import load_items

    frame = load_items(con).sort("item_id")
    _CATALOG.clear()
    _CATALOG[key] = (stamp, frame, time.monotonic())
    return frame


def promoted(runs_dir: Path) -> Served:
    """The promoted run (cached per process); NotTrainedError when there is none."""
    run_id = runs.promoted(runs_dir)
    if run_id is None:
        raise NotTrainedError(
            f"no promoted run in {runs_dir}", hint="run `recctl train` (or `recctl runs promote ID`)"
        )
    return load_run(runs_dir, run_id)


def load_run(runs_dir: Path, run_id: str) -> Served:
    """Run ``run_id`` as serving sees it (cached per process: one run at a time, so a promotion frees
    the old one's models); the online store is filled from a run about to be promoted this way."""
    key = (str(runs_dir.resolve()), run_id)
    if key not in _CACHE:
        path = runs.run_path(runs_dir, run_id)
        config, meta = runs.read_config(path), runs.read_meta(path)
        run_files.refuse_pickles(path)  # a run never holds one: a pickle in it means it was tampered with
        _CACHE.clear()
        _CACHE[key] = Served(run_id, path, config, meta)
    return _CACHE[key]


def items_of(catalog: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """The catalog rows of ``ids`` (those in it, each once). A catalog sorted by item_id is searched
    (a request touches a few hundred of 90,000 items: hashing the whole catalog for a join would cost
    ten times more); any other is filtered."""
    import polars as pl

    wanted = ids.cast(pl.String).unique().implode()
    if catalog.height == 0 or not catalog["item_id"].flags["SORTED_ASC"]:
        return catalog.filter(pl.col("item_id").is_in(wanted))
    at = catalog["item_id"].search_sorted(ids.cast(pl.String).unique()).clip(0, catalog.height - 1)
    return (
        catalog[at.cast(pl.Int64)]
        .filter(pl.col("item_id").is_in(wanted))
        .unique("item_id", maintain_order=True)
    )
