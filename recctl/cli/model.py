"""``recctl evaluate``, ``recctl train`` and ``recctl runs``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State
from recctl.errors import ConfigError, GateFailedError

if TYPE_CHECKING:
    from rich.console import Console


def _ks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--k takes a comma-separated list of integers, not {text!r}") from None


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
        if tr:
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
            typer.Option("--cutoff", help="temporal: '4w', '28d' (last weeks/days) or an ISO date"),
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
        the eval_runs table; --report writes one HTML page that works offline. With --gate, exit 3 when the
        candidate is worse than the promoted run (or popular-recent) by more than the tolerance.
        """
        from recctl.evaluate.service import run_evaluate
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        cfg = state.config
        with open_writer(cfg, "evaluate", wait=wait) as wh:
            result, gate_result = run_evaluate(
                wh, cfg, protocol=protocol, variant=variant, ks=_ks(k), cutoff=cutoff,
                models=[m.strip() for m in models.split(",")] if models else None,
                train_files=train, test_files=test, mapping=mapping, dataset=dataset, gate=gate,
                candidate_ns=_ks(candidate_n),
            )  # fmt: skip
        if report is not None:
            from recctl.evaluate.report import write_report

            result["report"] = str(write_report(result, report))
        rows = [{"model": name, **r["metrics"]} for name, r in result["models"].items()]
        state.out.emit(result, lambda c: render_evaluation(result, c), rows=rows)
        if report is not None:
            state.out.info(f"report: {result['report']}")
        if gate_result is not None and not gate_result.passed:
            raise GateFailedError(gate_result.reason)

    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        candidates: Annotated[
            str | None, typer.Option("--candidates", help="only these configured generators, comma-separated")
        ] = None,
        gate: Annotated[
            bool, typer.Option("--gate", help="promote only if it evaluates as well as the promoted run")
        ] = False,
        no_ranker: Annotated[
            bool, typer.Option("--no-ranker", help="fit the generators only, no LightGBM ranking stage")
        ] = False,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Fit the candidate generators and the LightGBM ranker on all events into runs/<id>/ and promote it.

        The run folder holds the resolved config, meta.json, the fitted models as plain data and a manifest
        of their checksums. It is moved into place only when complete; a failure (or a failed --gate, exit 3)
        leaves the promoted run live. Train holds the writer lock but reads read-only: serving goes on.
        """
        from recctl.train import train

        state: State = ctx.obj
        cfg = state.config
        names = [c.strip() for c in candidates.split(",")] if candidates else None
        result = train(cfg, gate=gate, names=names, ranker=not no_ranker, wait=wait)
        _removed(state, result.pop("removed_staging"))
        state.out.emit(result, lambda c: c.print(f"trained and promoted run [bold]{result['run_id']}[/]: "
                                                  f"{', '.join(result['models'])}"))  # fmt: skip

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

    @runs_app.command("show")
    def runs_show(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
        """One run: models, data, timings, the ranker's feature importances, its evaluation (--gate)."""
        from recctl.runs import describe

        state: State = ctx.obj
        meta = describe(state.config.runs_dir, run_id)
        state.out.emit(meta, lambda c: render_run(meta, c))

    @runs_app.command("promote")
    def runs_promote(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
        """Make RUN_ID the live run (atomic), for instance to roll back to an earlier one."""
        from recctl.runs import promote

        state: State = ctx.obj
        promote(state.config.runs_dir, run_id)
        state.out.emit({"promoted": run_id}, lambda c: c.print(f"promoted {run_id}"))
