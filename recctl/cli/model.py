"""``recctl evaluate``, ``recctl train`` and ``recctl runs``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from recctl.cli.state import State
from recctl.config import Protocol, RecctlConfig, Variant
from recctl.errors import ConfigError, GateFailedError
from recctl.names import name_list, one_of

if TYPE_CHECKING:
    from rich.console import Console


def _ks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--k takes a comma-separated list of integers, not {text!r}") from None


def model_names(cfg: RecctlConfig) -> list[str]:
    """What `evaluate --models` can name: the ranked pipeline (when on), the generators, the baselines."""
    pipeline = [cfg.ranker.name] if cfg.ranker.enabled and cfg.candidates else []
    return pipeline + [s.name for s in cfg.candidates] + list(cfg.evaluate.baselines)


def render_evaluation(result: dict[str, Any], c: Console) -> None:
    from rich.table import Table

    s, d = result["settings"], result["data"]
    where = f"cutoff {s['cutoff']}, targets {', '.join(s['target_events'])}" if "cutoff" in s else ""
    if d.get("basket"):
        where = f"last basket by {d['basket']} (mean {d.get('mean_basket_size', 0):g} items)"
    c.print(
        f"[bold]{result['dataset']}[/] · protocol {result['protocol']} ({result['variant']}) {where} · "
        f"{'seen items filtered' if s['filter_seen'] else 'seen items kept'} · {s['ranking']} · "
        f"{d['test_users']:,} test users, {d['test_targets']:,} targets, {d['train_events']:,} training events"
    )
    for where_, what in (s.get("filtering") or {}).items():
        c.print(f"filtered in {where_}: {what}", markup=False, highlight=False)
    removed = (d.get("prepare") or {}).get("events_removed")
    if removed:
        c.print(f"[prepare] removed {removed:,} training events before fitting (targets are never cleaned)")
    k0 = s["ks"][0]
    cols = [f"{m}@{k}" for k in s["ks"] for m in ("recall", "ndcg")]
    cols += [f"mrr@{k0}", f"map@{k0}", f"coverage@{k0}", f"novelty@{k0}"]
    t = Table(title_justify="left", caption="± half-width of the bootstrap 95% interval over users",
              caption_justify="left")  # fmt: skip
    t.add_column("model")
    for col in cols:
        t.add_column(col, justify="right")
    for name, r in result["models"].items():
        cells = []
        for col in cols:
            v = r["metrics"].get(col, float("nan"))
            lo_hi = r["ci95"].get(col)
            cells.append(f"{v:.4f}" + (f" [dim]±{(lo_hi[1] - lo_hi[0]) / 2:.4f}[/]" if lo_hi else ""))
        t.add_row(name, *cells)
    c.print(t)
    split_rows = [
        (n, r["metrics"]) for n, r in result["models"].items() if "repeat_target_share" in r["metrics"]
    ]
    if split_rows:
        share = split_rows[0][1]["repeat_target_share"]
        t = Table(title=f"repeat / explore ({share:.0%} of the targets are repeats)", title_justify="left")
        rcols = [f"{m}@{k0}" for m in ("repeat_hit_share", "recall_repeat", "recall_explore")]
        for col in ["model", *rcols]:
            t.add_column(col, justify="left" if col == "model" else "right")
        for name, m in split_rows:
            t.add_row(name, *(f"{m.get(col, float('nan')):.4f}" for col in rcols))
        c.print(t)
    for name, r in result["models"].items():
        tr = r.get("training") or {}
        if tr.get("fallback"):
            from recctl.ranking.pipeline import serves

            c.print(f"{name} has no ranker: it serves {serves(tr['fallback'])} "
                    f"({tr.get('fallback_reason')})", markup=False)  # fmt: skip
        elif tr:
            c.print(f"{name}'s ranker learned from the {tr.get('label_split')} labels of {tr.get('label_users', 0):,} "
                    f"users ({tr.get('train_users', 0):,} for training, {tr.get('valid_users', 0):,} for early stopping)")  # fmt: skip
        lifts = r.get("lift") or {}
        if lifts:
            key = f"ndcg@{k0}"
            parts = [f"{o} {v[key][0]:+.1%} [{v[key][1]:+.1%}, {v[key][2]:+.1%}]" for o, v in lifts.items()
                     if o not in ("random",) and key in v]  # fmt: skip
            c.print(f"{name}'s {key} over (paired 95% interval): " + "; ".join(parts))
    if "candidate_union_recall" in result:
        per_model = ", ".join(
            f"{name} {' / '.join(f'{v:.3f}' for v in r['candidate_recall'].values())}"
            for name, r in result["models"].items()
        )
        union = " / ".join(f"{v:.3f}" for v in result["candidate_union_recall"].values())
        ns = " / ".join(result["candidate_union_recall"])
        of = ", ".join(result["candidate_union_of"])
        c.print(f"stage-1 candidate {ns}: {per_model}; union of {of}: {union}")
    if "gate" in result:
        c.print(("[green]" if result["gate"]["passed"] else "[bold red]") + result["gate"]["reason"] + "[/]")


def _removed(state: State, names: list[str]) -> None:
    if names:
        state.out.info(f"removed {len(names)} staging folder(s) of trains that are no longer running: "
                       + ", ".join(names))  # fmt: skip


def render_run(meta: dict[str, Any], c: Console, top: int = 20) -> None:
    """meta.json as JSON, then each ranker's most important features as a table."""
    from rich.table import Table

    plain = {**meta, "models": {n: {k: v for k, v in m.items() if k != "importances"}
                                for n, m in meta.get("models", {}).items()}}  # fmt: skip
    c.print_json(data=plain, default=str)
    for name, m in meta.get("models", {}).items():
        imp = m.get("importances")
        if not imp:
            continue
        t = Table(title=f"{name}: feature importances (top {min(top, len(imp))} of {len(imp)})",
                  title_justify="left")  # fmt: skip
        t.add_column("feature")
        t.add_column("gain share", justify="right")
        t.add_column("splits", justify="right")
        for f, v in list(imp.items())[:top]:
            t.add_row(f, f"{v['gain_share']:.3f}", str(v["splits"]))
        c.print(t)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        protocol: Annotated[
            str | None,
            typer.Option(
                "--protocol", help="temporal | leave-one-out | next-basket | files (default: config)"
            ),
        ] = None,
        k: Annotated[str | None, typer.Option("--k", help="cut-offs, e.g. 10,20 (default: config)")] = None,
        variant: Annotated[
            str | None,
            typer.Option(
                "--variant",
                help="all | new-items (seen items filtered) | repeat (nothing filtered: repurchases count, "
                "metrics split into repeat and explore targets)",
            ),
        ] = None,
        cutoff: Annotated[
            str | None,
            typer.Option(
                "--cutoff",
                help="temporal: where the test window starts: auto, 30m, 6h, 7d, 4w (back from the last "
                "event), 10% (of the data's span) or an ISO date (default: [evaluate] cutoff)",
            ),
        ] = None,
        models: Annotated[
            str | None, typer.Option("--models", help="only these models, comma-separated")
        ] = None,
        train: Annotated[
            list[Path] | None, typer.Option("--train", help="files protocol: training file(s)")
        ] = None,
        test: Annotated[
            list[Path] | None, typer.Option("--test", help="files protocol: test file(s)")
        ] = None,
        mapping: Annotated[
            str | None, typer.Option("--mapping", help="files protocol: the files' mapping")
        ] = None,
        dataset: Annotated[str | None, typer.Option("--dataset", help="label for the results")] = None,
        candidate_n: Annotated[
            str | None, typer.Option("--candidate-n", help="stage-1 candidate recall@N, e.g. 100,300")
        ] = None,
        report: Annotated[
            Path | None, typer.Option("--report", help="write a self-contained HTML report")
        ] = None,
        gate: Annotated[
            bool, typer.Option("--gate", help="exit 3 if the first candidate is worse than the promoted run")
        ] = False,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Offline evaluation with an honest protocol: configured models beside popular, popular-recent, random
        and personal-top (each user's own most-bought items).

        Full ranking over the whole catalog (never sampled negatives). What is filtered where is printed with
        the results: the variant's seen-item filter, and the pipeline's [rules] (a repeat evaluation with
        rules that exclude every bought item is refused). next-basket holds out each user's last basket. Recall, NDCG, MRR, MAP, precision, hit rate with bootstrap 95% intervals,
        coverage, novelty, diversity and a new / returning / buyer breakdown. Every result row is stored in
        the eval_runs table; --report writes one HTML page that works offline: a verdict with its paired
        interval first, example customers with product names, a breakdown by category and by visitor
        state (small groups flagged). With --gate, exit 3 when the candidate is worse than the promoted run
        (or popular-recent) by more than the tolerance; when the live run's settings differ from the
        current ones, the gate says which.
        """
        from recctl import progress
        from recctl.evaluate.service import run_evaluate
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        cfg = state.config
        if protocol is not None:
            one_of(protocol, get_args(Protocol), what="protocol", where="--protocol")
        if variant is not None:
            one_of(variant, get_args(Variant), what="variant", where="--variant")
        chosen = name_list(models, model_names(cfg), what="model", where="--models") if models else None
        with progress.reporting(state.out, "evaluate"):
            with open_writer(cfg, "evaluate", wait=wait) as wh:
                result, gate_result = run_evaluate(
                    wh, cfg, protocol=protocol, variant=variant, ks=_ks(k), cutoff=cutoff, models=chosen,
                    train_files=train, test_files=test, mapping=mapping, dataset=dataset, gate=gate,
                    candidate_ns=_ks(candidate_n),
                )  # fmt: skip
            if report is not None:
                from recctl.evaluate.report import write_report

                with progress.stage("HTML report"):
                    result["report"] = str(write_report(result, report))
        rows = [{"model": name, **r["metrics"]} for name, r in result["models"].items()]
        state.out.emit(result, lambda c: render_evaluation(result, c), rows=rows)
        if report is not None:
            state.out.info(f"report: {result['report']}")
        for name, r in result["models"].items():
            tr = r.get("training") or {}
            if tr.get("fallback"):
                from recctl.ranking.pipeline import serves

                state.out.warn(f"{name} has no ranker on this split: {tr.get('fallback_reason')}; it was "
                               f"evaluated as {serves(tr['fallback'])}")  # fmt: skip
        if gate_result is not None and gate_result.note:
            state.out.warn(f"gate: {gate_result.note}")
        if gate_result is not None and not gate_result.passed:
            raise GateFailedError(gate_result.reason)

    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        candidates: Annotated[
            str | None,
            typer.Option(
                "--candidates",
                help="only these configured generators, comma-separated (a partial train: not promoted "
                "over the live run without --promote)",
            ),
        ] = None,
        gate: Annotated[
            bool, typer.Option("--gate", help="promote only if it evaluates as well as the promoted run")
        ] = False,
        no_ranker: Annotated[
            bool,
            typer.Option(
                "--no-ranker",
                help="fit the generators only, no LightGBM ranking stage (a partial train when the config "
                "has the ranker on)",
            ),
        ] = False,
        promote: Annotated[
            bool,
            typer.Option(
                "--promote",
                help="promote a partial train (--candidates subset, --no-ranker) over the live run",
            ),
        ] = False,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Fit the candidate generators and the LightGBM ranker on all events into runs/<id>/ and promote it.

        The run folder holds the resolved config, meta.json, the fitted models as plain data and a manifest
        of their checksums. It is moved into place only when complete; a failure (or a failed --gate, exit 3)
        leaves the promoted run live. A partial train (a --candidates subset, or --no-ranker with the ranker
        configured) is saved but does not replace a live run unless --promote is given. Train holds the
        writer lock but reads read-only: serving goes on. When the online store is in use, it is filled
        from the new run before the promotion.
        """
        from recctl import progress
        from recctl.train import train

        state: State = ctx.obj
        cfg = state.config
        valid = [s.name for s in cfg.candidates]
        names = (
            name_list(candidates, valid, what="candidate generator", where="--candidates")
            if candidates
            else None
        )
        with progress.reporting(state.out, "train"):
            result = train(cfg, gate=gate, names=names, ranker=not no_ranker, wait=wait, promote=promote)
        _removed(state, result.pop("removed_staging"))
        for warning in result.get("warnings", []):
            state.out.warn(warning)
        _filled(state, result.get("online_store"))
        run_id = result["run_id"]
        done = "trained and promoted" if result["promoted"] else "trained (not promoted)"
        state.out.emit(
            result, lambda c: c.print(f"{done} run [bold]{run_id}[/]: {', '.join(result['models'])}")
        )
        if not result["promoted"]:  # news for a cron log too: said whatever the output mode
            state.out.err.print(
                f"recctl train: run {run_id} saved, not promoted: {result['not_promoted']}; promote it with "
                f"`recctl runs promote {run_id}`, or train with --promote",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip

    runs_app = typer.Typer(
        help="List, inspect and promote model runs.", no_args_is_help=True, rich_markup_mode=None
    )
    app.add_typer(runs_app, name="runs")

    @runs_app.command("list")
    def runs_list(ctx: typer.Context) -> None:
        """All runs in runs_dir, oldest first, with the promoted one marked; a damaged run is listed as
        broken with its problem. Staging folders left by killed trains are removed."""
        from recctl.runs import list_runs, sweep_staging

        state: State = ctx.obj
        _removed(state, sweep_staging(state.config.runs_dir))
        rows = list_runs(state.config.runs_dir)

        def render(c: Console) -> None:
            from rich.table import Table

            t = Table()
            for col in ("run", "created", "status", "models", "promoted"):
                t.add_column(col)
            for r in rows:
                t.add_row(r["run_id"], r["created_at"] or "", r.get("status", ""), ", ".join(r.get("models", {})),
                          "✓" if r["promoted"] else "")  # fmt: skip
            c.print(t)

        state.out.emit(
            rows, render, columns=("run_id", "created_at", "status", "models", "promoted", "problem")
        )
        for r in rows:
            if r.get("problem"):
                state.out.warn(f"run {r['run_id']} is broken: {r['problem']}")

    @runs_app.command("prune")
    def runs_prune(
        ctx: typer.Context,
        keep: Annotated[
            int,
            typer.Option("--keep", min=0, help="how many of the newest runs to keep (besides the promoted)"),
        ],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="list what would be removed, remove nothing")
        ] = False,
        wait: Annotated[
            float | None,
            typer.Option("--wait", help="wait up to SECONDS for a running train (the writer lock)"),
        ] = None,
    ) -> None:
        """Remove old runs: all but the KEEP newest, and never the promoted run (broken runs count like the
        others). Holds the writer lock, so it waits for a running train. --json lists the removed runs."""
        from recctl.runs import prune
        from recctl.warehouse import writer_lock

        state: State = ctx.obj
        cfg = state.config
        with writer_lock(cfg, "runs prune", wait=wait):
            doc = prune(cfg.runs_dir, keep, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        state.out.emit(doc, lambda c: c.print(
            f"{verb} {len(doc['removed'])} run(s), {doc['freed_bytes'] / 1e6:.1f} MB; kept {len(doc['kept'])}"
            + (f" (promoted {doc['promoted']})" if doc["promoted"] else ""), markup=False))  # fmt: skip

    @runs_app.command("show")
    def runs_show(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
        """One run: models, data, timings, the ranker's feature importances, its evaluation (--gate)."""
        from recctl.runs import describe

        state: State = ctx.obj
        meta = describe(state.config.runs_dir, run_id)
        state.out.emit(meta, lambda c: render_run(meta, c))

    @runs_app.command("promote")
    def runs_promote(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(help="run id")],
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the writer lock")
        ] = None,
    ) -> None:
        """Make RUN_ID the live run (atomic), for instance to roll back to an earlier one.

        When the online store is in use, it is filled from the run first (under the writer lock,
        reading read-only), so the run answers from the store from its first request.
        """
        from recctl.serving.store import promote

        state: State = ctx.obj
        store = promote(state.config, run_id, wait=wait)
        state.out.emit({"promoted": run_id, "online_store": store}, lambda c: c.print(f"promoted {run_id}"))
        _filled(state, store)


def _filled(state: State, store: dict[str, Any] | None) -> None:
    if store:
        state.out.info(f"online store filled from the run: {store['users']:,} users × top {store['k']} "
                       f"in {store['seconds']} s")  # fmt: skip
