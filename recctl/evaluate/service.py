"""``recctl evaluate``: split, score the configured models and the baselines, store, report, gate."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recctl import progress, resources, runs
from recctl.config import CandidateSpec, RecctlConfig
from recctl.data import load_interactions, load_items
from recctl.errors import ConfigError, NotTrainedError
from recctl.evaluate import gate as G
from recctl.evaluate.runner import Options, baseline_specs, evaluate_specs, make_split
from recctl.evaluate.splits import Split
from recctl.ranking import pipeline_spec
from recctl.warehouse import Warehouse
from recctl.warehouse.migrations import migrate


def _scratch_events(cfg: RecctlConfig, paths: list[Path], mapping: str | None) -> pl.DataFrame:
    """Load files into an in-memory warehouse with the ingest engine (same validation, same mapping)."""
    from recctl.ingest import ingest, resolve_mapping
    from recctl.ingest.loader import FileResult

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    resources.configure_private(con)
    migrate(con)
    wh = Warehouse(con, Path(":memory:"), read_only=False)
    report = ingest(wh, cfg, "events", paths, mapping=resolve_mapping(cfg, "events", mapping))
    failed: list[FileResult] = report.failed
    if failed:
        from recctl.errors import DataError

        raise DataError(failed[0].message)
    return load_interactions(con)


def store(con: duckdb.DuckDBPyConnection, result: dict[str, Any]) -> str:
    eval_id = f"{result['created_at'].replace(':', '').replace('-', '')}-{secrets.token_hex(2)}"
    settings = json.dumps({"settings": result["settings"], "data": result["data"]}, default=str)
    rows = []
    for model, r in result["models"].items():
        for metric, value in r["metrics"].items():
            lo, hi = r["ci95"].get(metric, (None, None))
            rows.append((eval_id, result["created_at"], result["dataset"], result["protocol"], result["variant"],
                         model, metric, value, lo, hi, settings))  # fmt: skip
    con.executemany("INSERT INTO eval_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return eval_id


def _gate(
    cfg: RecctlConfig, split: Split, opts: Options, result: dict[str, Any], items: pl.DataFrame,
    candidate: CandidateSpec,
) -> G.GateResult:  # fmt: skip
    metric = cfg.evaluate.gate_metric
    if metric not in result["models"][candidate.name]["metrics"]:
        raise ConfigError(f"gate metric {metric!r} is not computed (ks: {opts.ks})")
    current = runs.promoted(cfg.runs_dir)
    note = ""
    if current is None:
        ref_spec = CandidateSpec(
            name="popular-recent", kind="popular", params={"window_days": cfg.evaluate.recent_days}
        )
        ref_name = "popular-recent (no promoted run)"
    else:
        from pydantic import ValidationError

        path = runs.run_path(cfg.runs_dir, current)
        try:
            conf = RecctlConfig.model_validate(runs.read_config(path))
        except ValidationError as exc:  # saved by another recctl version, or edited
            from recctl.run_files import damaged

            err = exc.errors()[0]
            why = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            raise damaged(path, "config.json", f"is not a configuration of this recctl ({why})") from exc
        ref_spec = pipeline_spec(conf, opts.protocol, filter_seen=opts.filter_seen) or conf.candidates[0]
        ref_name = f"promoted run {current} ({ref_spec.name})"
        differs = G.settings_diff(conf.resolved(), cfg.resolved())
        if differs:  # the reference is fitted again with the run's own settings, not today's: say so
            shown = ", ".join(differs[:6]) + (f" and {len(differs) - 6} more" if len(differs) > 6 else "")
            note = (
                f"the reference was re-fitted with run {current}'s own settings, which differ from the "
                f"current config in {shown}"
            )
    if ref_spec.name in result["models"] and current is None:
        ref_value = result["models"][ref_spec.name]["metrics"][metric]
    elif (ref_spec.name, ref_spec.kind, ref_spec.params) == (
        candidate.name,
        candidate.kind,
        candidate.params,
    ):
        # the live run's settings are the candidate's: fitting them again on this split gives the same
        # model, so its value is the candidate's (a re-fit under another name drew other seeds, and on a
        # small shop the gate refused the very settings it had just trained)
        ref_value = result["models"][candidate.name]["metrics"][metric]
    else:  # fitted under its own name: the seeds are those it was trained with
        with progress.stage(f"reference: {ref_name}"):
            ref = evaluate_specs(split, [ref_spec], opts, items=items, dataset="")
        ref_value = ref["models"][ref_spec.name]["metrics"][metric]
    cand_value = result["models"][candidate.name]["metrics"][metric]
    return G.check(
        metric, (candidate.name, cand_value), (ref_name, ref_value), cfg.evaluate.gate_tolerance, note
    )


def one_basket_each(test: pl.DataFrame) -> bool:
    """Whether the test file holds one basket per user (orders, else sessions, else days: a last-order
    split), so that the ranker's ``label = "auto"`` takes each user's last basket, as the test does."""
    from recctl.data import basket_key

    if test.height == 0:
        return False
    per_user = test.group_by("user_id").agg(basket_key().n_unique().alias("n"))["n"]
    return bool((per_user == 1).all())


def filtering(cfg: RecctlConfig, opts: Options, *, pipeline: str | None) -> dict[str, str]:
    """What is filtered where, in words (the report and the CLI show it); refuses the contradiction of an
    evaluation that counts repurchases while the pipeline's [rules] exclude every bought item (its lists
    could never hit a repeat target, and nothing would say why)."""
    rules = cfg.rules
    if not opts.filter_seen and pipeline and not rules.allows_repurchase():
        raise ConfigError(
            f"the {opts.variant} variant counts repeat purchases as hits, but [rules] exclude_bought = true "
            f"removes every bought item from {pipeline}'s lists, so it could never hit one",
            hint="allow repurchase in the rules ([rules] exclude_bought = false, as configs/grocery.toml does, "
            "or [[rules.repurchase]] categories), or evaluate with seen items filtered (--variant all)",
        )
    out = {
        "evaluation": (
            "items the user touched in training are removed from every model's list"
            if opts.filter_seen
            else "nothing is removed: repeat purchases can be hit (metrics split into repeat and explore)"
        ),
    }
    if pipeline:
        out[pipeline] = (
            f"[rules] after ranking: {rules.bought_policy()}"
            + ("; out-of-stock items excluded" if rules.exclude_out_of_stock else "")
            + (f"; hidden ({', '.join(rules.hide_event_types)}) excluded" if rules.hide_event_types else "")
            + (
                "; its candidates keep bought items"
                if rules.allows_repurchase() and not opts.filter_seen
                else ""
            )
        )
    return out


def run_evaluate(
    wh: Warehouse, cfg: RecctlConfig, *, protocol: str | None = None, variant: str | None = None,
    ks: list[int] | None = None, cutoff: str | None = None, models: list[str] | None = None,
    train_files: list[Path] | None = None, test_files: list[Path] | None = None, mapping: str | None = None,
    dataset: str | None = None, gate: bool = False, candidates: list[CandidateSpec] | None = None,
    candidate_ns: list[int] | None = None,
) -> tuple[dict[str, Any], G.GateResult | None]:  # fmt: skip
    """Evaluate the configured candidates and the baselines under one protocol; store rows in eval_runs."""
    opts = Options.from_config(cfg, protocol=protocol, variant=variant, ks=ks, candidate_ns=candidate_ns)
    files = None
    if opts.protocol == "files":
        if not train_files or not test_files:
            raise ConfigError("the files protocol needs --train FILE and --test FILE")
        with progress.stage("load the training and test files"):
            files = (_scratch_events(cfg, train_files, mapping), _scratch_events(cfg, test_files, mapping))
        events = files[0]
    else:
        with progress.stage("load events"):
            events = load_interactions(wh.con)
    items = load_items(wh.con)
    if files is not None:
        extra = files[0].select("item_id").unique().join(items.select("item_id"), on="item_id", how="anti")
        items = pl.concat([items, extra], how="diagonal_relaxed")
    split = make_split(events, cfg, opts, cutoff=cutoff, files=files)
    configured = candidates if candidates is not None else cfg.candidates
    protocol = opts.protocol
    if files is not None and cfg.ranker.label == "auto" and one_basket_each(files[1]):
        protocol = "next-basket"  # a last-order split in files: the ranker learns from last baskets too
    pipe = pipeline_spec(cfg, protocol, configured, filter_seen=opts.filter_seen)
    judged = pipe or (configured[0] if configured else None)
    specs = [s for s in ([pipe] if pipe else []) + configured if not models or s.name in models]
    specs += [b for b in baseline_specs(cfg) if not models or b.name in models]
    if not specs:
        raise ConfigError(f"no model named {', '.join(models or [])}")
    how = filtering(cfg, opts, pipeline=pipe.name if pipe is not None and pipe in specs else None)
    result = evaluate_specs(split, specs, opts, items=items, dataset=dataset or wh.path.stem)
    result["settings"]["filtering"] = how
    gate_result = None
    if gate:
        if judged is None:
            raise NotTrainedError("nothing to gate: no [[candidates]] configured")
        if judged.name not in result["models"]:
            raise ConfigError(f"the gate judges {judged.name}: include it in --models")
        gate_result = _gate(cfg, split, opts, result, items, judged)
        result["gate"] = {"passed": gate_result.passed, "reason": gate_result.reason}
        if gate_result.note:
            result["gate"]["note"] = gate_result.note
    if not wh.read_only:
        result["eval_id"] = store(wh.con, result)
    return result, gate_result
