"""``recctl train``: fit the configured generators and the ranker on all data into a new run, then promote it.

With ``[ranker] enabled`` (the default) the run holds one model, the two-stage pipeline
(``models/<ranker name>/``: the LightGBM text model, its feature list and importances, the features as of
the end of the data, and every generator under ``generators/``); with ``--no-ranker`` each generator is
saved on its own under ``models/<name>/``.

The run is built in a staging folder and moved into ``runs/<run_id>/`` only when complete; with a gate,
it is promoted only if it evaluates at least as well as the promoted run (within the tolerance). Any
failure (an interrupt included) leaves the promoted run live and removes the staging folder; those of
killed trains are removed by the next train (``runs.sweep_staging``).

``train`` (the command) holds the writer lock for the whole fit, so other writers queue, but reads the
events and items through read-only connections, so serving goes on meanwhile; the only write, the
eval_runs rows of a ``--gate`` evaluation, is one short read-write transaction at the end; so is the
online store's refill before the promotion (``recctl.serving.store.refill``, when the store is in use).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any

from recctl import __version__, progress, runs
from recctl.candidates.base import build, release_memory
from recctl.config import RecctlConfig
from recctl.data import load_interactions, load_items
from recctl.errors import DataError, GateFailedError, WarehouseError
from recctl.evaluate.service import run_evaluate
from recctl.names import unknown
from recctl.seeds import derive_seed
from recctl.warehouse import Warehouse

Opener = Callable[[], AbstractContextManager[Warehouse]]


def train(
    cfg: RecctlConfig, *, gate: bool = False, names: list[str] | None = None, ranker: bool = True,
    wait: float | None = None, promote: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """`recctl train`: the staging folders of killed trains are removed first; then, under the writer
    lock, read through read-only connections (serving goes on) and open read-write only for the short
    write at the end (the --gate evaluation's eval_runs rows), and at the start only when the warehouse
    must be created or migrated. ``removed_staging`` lists the staging folders removed."""
    from recctl.warehouse import open_reader, reopen_writer, writer_lock

    removed = runs.sweep_staging(cfg.runs_dir)
    read_wait = cfg.warehouse.lock_wait if wait is None else wait
    with writer_lock(cfg, "train", wait=wait):
        try:
            with open_reader(cfg, wait=read_wait):
                pass
        except WarehouseError:  # no warehouse yet, or pending migrations: readers refuse an old schema
            with reopen_writer(cfg, wait=wait):
                pass  # (or the writer's own error: a newer schema, a damaged file)
        result = _train(
            cfg, lambda: open_reader(cfg, wait=read_wait), lambda: reopen_writer(cfg, wait=wait),
            gate=gate, names=names, ranker=ranker, promote=promote,
        )  # fmt: skip
    return {**result, "removed_staging": removed}


def run_train(
    wh: Warehouse, cfg: RecctlConfig, *, gate: bool = False, names: list[str] | None = None,
    ranker: bool = True, promote: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train on an open warehouse ``wh`` (the demo's writer): reads and writes go through it."""
    runs.sweep_staging(cfg.runs_dir)
    return _train(
        cfg, lambda: nullcontext(wh), lambda: nullcontext(wh), gate=gate, names=names, ranker=ranker,
        promote=promote,
    )  # fmt: skip


def partial(cfg: RecctlConfig, names: list[str] | None, ranker: bool) -> str | None:
    """Why a train is partial (it fits less than the configured pipeline), or None: a subset of
    [[candidates]], or no ranker while [ranker] is on. A partial run replaces a live one only when asked."""
    why = []
    if names and set(names) != {s.name for s in cfg.candidates}:
        why.append(f"--candidates {','.join(names)}")
    if not ranker and cfg.ranker.enabled:
        why.append("--no-ranker")
    return " ".join(why) or None


def _train(
    cfg: RecctlConfig, reading: Opener, writing: Opener, *, gate: bool, names: list[str] | None,
    ranker: bool, promote: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Fit and save a run, reading the warehouse through ``reading()`` and writing through ``writing()``.
    A partial train is promoted only with ``promote`` or when no run is live."""
    from recctl.ranking import pipeline_spec

    partly = partial(cfg, names, ranker)
    if names and (bad := [n for n in names if n not in {s.name for s in cfg.candidates}]):
        raise unknown("candidate generator", bad, [s.name for s in cfg.candidates], "--candidates")
    specs = [s for s in cfg.candidates if not names or s.name in names]
    if not specs:
        raise DataError("no candidate generators to train: check [[candidates]] or --candidates")
    if names:  # the ranker merges the generators being trained
        cfg = cfg.model_copy(update={"ranker": cfg.ranker.model_copy(update={"generators": []})})
    if not ranker:
        cfg = cfg.model_copy(update={"ranker": cfg.ranker.model_copy(update={"enabled": False})})
    pipe = pipeline_spec(cfg, None, specs)
    with progress.stage("load events and items"), reading() as wh:
        events = load_interactions(wh.con)
        catalog = load_items(wh.con)
    if events.height == 0:
        raise DataError(
            "the warehouse has no item events to train on", hint="run `recctl ingest events` first"
        )
    from recctl.prepare import prepare

    with progress.stage("prepare"):
        cleaned = prepare(events, cfg.prepare)  # [prepare]: the same clean-up `recctl prepare` reports
    events = cleaned.events
    run_id = runs.new_run_id()
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    staging = runs.staging_path(cfg.runs_dir, run_id)
    models: dict[str, Any] = {}
    warnings: list[str] = []
    try:
        resolved = cfg.resolved()
        resolved["candidates"] = [s.model_dump() for s in specs]
        runs.write_json(staging / "config.json", resolved)
        model = None
        if pipe is not None:  # the ranker first: its history generators are freed before the final ones
            from recctl.ranking.pipeline import Pipeline, serves

            t0 = time.perf_counter()
            model = Pipeline.from_spec(pipe)
            pipe_seed = derive_seed(cfg.seed, "train", pipe.name)
            pipe_dir = staging / "models" / pipe.name
            with progress.stage("ranker"):
                model.fit_ranker(events, seed=pipe_seed, items=catalog)
                model.features_at_end(events, catalog)
                model.save_features(pipe_dir)  # written now, so the final generators never sit beside them
                release_memory()
            ranker_s = time.perf_counter() - t0
        for i, spec in enumerate(specs, 1):
            t0 = time.perf_counter()
            with progress.stage(f"fit generator {spec.name} ({i}/{len(specs)})"):
                gen = build(spec.kind, spec.name, spec.params)
                gen.fit(events, seed=derive_seed(cfg.seed, "train", spec.name), items=catalog)
                # saved and freed one by one: holding every fitted generator until the end added 0.6 GB
                # to the later fits' peaks on Complete Journey
                if pipe is None:
                    gen.save(staging / "models" / spec.name)
                else:
                    Pipeline.save_generator(pipe_dir, spec.name, gen)
                del gen
                release_memory()
            models[spec.name] = {"kind": spec.kind, "fit_s": round(time.perf_counter() - t0, 3)}
        if pipe is not None and model is not None:
            t0 = time.perf_counter()
            with progress.stage("finish ranker"):
                model.finish_saved(events, catalog, [s.name for s in specs])
            model.info["fit_s"] = round(ranker_s + time.perf_counter() - t0, 3)
            with progress.stage("save run"):
                model.save(pipe_dir)
            models[pipe.name] = {
                "kind": pipe.kind,
                "fit_s": round(ranker_s + time.perf_counter() - t0, 3),
                "generators": [s.name for s in specs],
                "training": model.info,
                "top_features": dict(list((model.ranker.importances if model.ranker else {}).items())[:15]),
            }
            if model.fallback is not None:
                warnings.append(
                    f"{pipe.name} has no ranker: {model.info['fallback_reason']}; it serves "
                    f"{serves(model.fallback)} until there are enough labels"
                )
        meta: dict[str, Any] = {
            "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "recctl_version": __version__,
            "models": models,
            "prepare": cleaned.as_dict(),
            "data": {
                "events": events.height,
                "users": events["user_id"].n_unique(),
                "items": events["item_id"].n_unique(),
                "last_event": events["ts"].max(),
            },
        }
        gate_result = None
        if gate:
            judged = pipe or specs[0]
            with progress.stage("gate evaluation"), reading() as wh:  # read-only: rows are written below
                result, gate_result = run_evaluate(wh, cfg, gate=True, models=[judged.name], candidates=specs)
            if "eval_id" not in result:
                with writing() as wh:
                    result["eval_id"] = _store_evaluation(wh, result)
            meta["evaluation"] = {
                "model": judged.name,
                "eval_id": result["eval_id"],
                "metrics": result["models"][judged.name]["metrics"],
                "gate": result["gate"],
            }
            if result["gate"].get("note"):
                warnings.append(f"gate: {result['gate']['note']}")
        if warnings:
            meta["warnings"] = warnings
        meta["status"] = "gate_failed" if gate_result and not gate_result.passed else "trained"
        meta["partial"] = partly
        with progress.stage("finish run"):  # the manifest of checksums, then the move into place
            path = runs.finish(cfg.runs_dir, staging, run_id, meta)
    except BaseException:
        runs.discard(staging)
        raise
    if gate_result is not None and not gate_result.passed:
        raise GateFailedError(f"run {run_id} not promoted: {gate_result.reason}")
    live = runs.promoted(cfg.runs_dir)
    if partly and not promote and live is not None:
        why = f"a partial train ({partly}) does not replace the live run {live}"
        return {"run_id": run_id, "path": str(path), "promoted": False, "not_promoted": why, **meta}
    from recctl.serving.store import refill

    store = refill(cfg, run_id, reading, writing)  # the new run serves from the store from the start
    runs.promote(cfg.runs_dir, run_id)
    return {"run_id": run_id, "path": str(path), "promoted": True, **meta, "online_store": store}


def _store_evaluation(wh: Warehouse, result: dict[str, Any]) -> str:
    """The evaluation's eval_runs rows, in one transaction."""
    from recctl.evaluate.service import store

    wh.con.execute("BEGIN TRANSACTION")
    try:
        eval_id = store(wh.con, result)
        wh.con.execute("COMMIT")
    except BaseException:
        wh.con.execute("ROLLBACK")
        raise
    return eval_id
