"""``recctl train``: fit the configured candidate generators on all data into a new run, then promote it.

The run is built in a temporary folder and moved into ``runs/<run_id>/`` only when complete; with a gate,
it is promoted only if it evaluates at least as well as the promoted run (within the tolerance). Any
failure leaves the promoted run live.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from recctl import __version__, runs
from recctl.candidates.base import build
from recctl.config import RecctlConfig
from recctl.data import load_interactions, load_items
from recctl.errors import DataError, GateFailedError
from recctl.evaluate.service import run_evaluate
from recctl.seeds import derive_seed
from recctl.warehouse import Warehouse


def run_train(
    wh: Warehouse, cfg: RecctlConfig, *, gate: bool = False, names: list[str] | None = None
) -> dict[str, Any]:
    specs = [s for s in cfg.candidates if not names or s.name in names]
    if not specs:
        raise DataError("no candidate generators to train: check [[candidates]] or --candidates")
    events = load_interactions(wh.con)
    catalog = load_items(wh.con)
    if events.height == 0:
        raise DataError(
            "the warehouse has no item events to train on", hint="run `recctl ingest events` first"
        )
    run_id = runs.new_run_id()
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    staging = runs.staging_path(cfg.runs_dir, run_id)
    models: dict[str, Any] = {}
    try:
        resolved = cfg.resolved()
        resolved["candidates"] = [s.model_dump() for s in specs]
        runs.write_json(staging / "config.json", resolved)
        for spec in specs:
            t0 = time.perf_counter()
            gen = build(spec.kind, spec.name, spec.params)
            gen.fit(events, seed=derive_seed(cfg.seed, "train", spec.name), items=catalog)
            gen.save(staging / "models" / spec.name)
            models[spec.name] = {"kind": spec.kind, "fit_s": round(time.perf_counter() - t0, 3)}
        meta: dict[str, Any] = {
            "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "recctl_version": __version__,
            "models": models,
            "data": {
                "events": events.height,
                "users": events["user_id"].n_unique(),
                "items": events["item_id"].n_unique(),
                "last_event": events["ts"].max(),
            },
        }
        gate_result = None
        if gate:
            result, gate_result = run_evaluate(wh, cfg, gate=True, models=[specs[0].name], candidates=specs)
            meta["evaluation"] = {
                "metrics": result["models"][specs[0].name]["metrics"],
                "gate": result["gate"],
            }
        meta["status"] = "gate_failed" if gate_result and not gate_result.passed else "trained"
        path = runs.finish(cfg.runs_dir, staging, run_id, meta)
    except BaseException:
        runs.discard(staging)
        raise
    if gate_result is not None and not gate_result.passed:
        raise GateFailedError(f"run {run_id} not promoted: {gate_result.reason}")
    runs.promote(cfg.runs_dir, run_id)
    return {"run_id": run_id, "path": str(path), "promoted": True, **meta}
