"""``recctl init``, ``recctl status`` and ``recctl sample``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State
from recctl.console import to_json

if TYPE_CHECKING:
    from rich.console import Console


def _render_status(s: dict[str, Any], c: Console) -> None:
    from rich.table import Table

    ev = s["events"]
    t = Table(title=f"warehouse {s['warehouse']}  ({s['size_mb']} MB, schema v{s['schema_version']})",
              title_justify="left", show_header=False)  # fmt: skip
    t.add_column(style="bold")
    t.add_column()
    t.add_row(
        "events",
        f"{ev['rows']:,}  ({ev['users']:,} users, {ev['sessions']:,} sessions, {ev['items']:,} items)",
    )
    t.add_row("time span", f"{ev['first_ts']} → {ev['last_ts']}")
    t.add_row("by type", ", ".join(f"{k} {v:,}" for k, v in ev["by_type"].items()) or "-")
    t.add_row("items / users", f"{s['items']:,} / {s['users']:,}")
    files = s["ingest"]["files"]
    t.add_row("ingested files", ", ".join(f"{k} {v['files']}" for k, v in files.items()) or "none")
    t.add_row("rejected rows", ", ".join(f"{k} {v:,}" for k, v in s["ingest"]["rejects"].items()) or "0")
    if "online_store" in s:
        o = s["online_store"]
        t.add_row("promoted run", s.get("promoted_run") or "none (run `recctl train`)")
        store = (
            f"{o['users']:,} users, {o['rows']:,} rows from run {', '.join(o['run_ids'])}, made {o['created_at']} "
            f"({o['age_hours']} h ago; max_age {o['max_age']}): {'fresh' if o['fresh'] else 'STALE'}"
            if o["rows"]
            else "empty (run `recctl recommend --all`)"
        )
        t.add_row("online store", store)
    w = s["writer"]
    stale = s.get("stale_lock")
    none = f"none (stale lock record of pid {stale.get('pid')}, not running)" if stale else "none"
    t.add_row("writer", f"pid {w['pid']} ({w['command']}) since {w['started_at']}" if w else none)
    c.print(t)


def _render_examples(examples: dict[str, Any], c: Console) -> None:
    """The demo's last word: lists with their reasons for a new visitor, a loyal buyer and a product."""
    from rich.table import Table

    titles = {
        "new_visitor": "a new visitor ({user_id}: {state}, {strategy})",
        "loyal_buyer": "a loyal buyer ({user_id}: {state}, {strategy})",
        "buy_again": "buy it again, for a customer with a consumable habit ({user_id}: --list buy-again)",
        "product": "related to product {item_id} ({strategy})",
    }
    for key, doc in examples.items():
        t = Table()  # the heading above it, not as its title: a title wraps to a narrow table's width
        for col in ("#", "item", "reason", "sources"):
            t.add_column(col)
        for it in doc["items"]:
            t.add_row(str(it["rank"]), it["item_id"], it["reason"], ", ".join(it["sources"]))
        c.print()
        c.print(titles[key].format(**doc), style="italic", markup=False, highlight=False)
        c.print(t)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init_cmd(
        ctx: typer.Context,
        directory: Annotated[Path, typer.Argument(help="project folder (created if missing)")] = Path("."),
    ) -> None:
        """Scaffold DIR/configs/ (commented recctl.toml, ingest mappings) and an empty, migrated warehouse.

        Existing files are kept. The warehouse goes to --warehouse, else DIR/recctl.duckdb.
        """
        from recctl.config import load_config
        from recctl.scaffold import scaffold
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        directory.mkdir(parents=True, exist_ok=True)
        result = scaffold(directory)
        wh_path = state.warehouse or directory / "recctl.duckdb"
        cfg = load_config(state.config_path, overrides={"warehouse": {"path": str(wh_path)}})
        with open_writer(cfg, "init") as wh:
            result["warehouse"] = str(wh.path)

        def render(c: Console) -> None:
            for p in result["written"]:
                c.print(f"  [green]wrote[/] {p}")
            for p in result["kept"]:
                c.print(f"  [dim]kept[/]  {p}")
            c.print(f"  warehouse ready: {result['warehouse']}")

        state.out.emit(result, render)

    @app.command("status")
    def status_cmd(
        ctx: typer.Context,
        show_config: Annotated[
            bool,
            typer.Option(
                "--config",
                "--show-config",
                help="print the resolved configuration and exit (with a value, --config FILE is the global "
                "option)",
            ),
        ] = False,
        wait: Annotated[
            float, typer.Option("--wait", help="wait up to SECONDS while a writer is busy")
        ] = 0.0,
    ) -> None:
        """What is in the warehouse: counts, time span, ingested files, rejects, the current writer, the
        promoted run and the online store's freshness (rows from the promoted run younger than max_age)."""
        from recctl.status import warehouse_status
        from recctl.warehouse import open_reader

        state: State = ctx.obj
        cfg = state.config
        if show_config:
            # the resolved config is data: stdout, always
            typer.echo(json.dumps(cfg.resolved(), indent=None if state.out.json_mode else 2))
            return
        with open_reader(cfg, wait=wait) as wh:
            s = warehouse_status(wh, cfg)
        state.out.emit(s, lambda c: _render_status(s, c))

    @app.command("rejects")
    def rejects_cmd(
        ctx: typer.Context,
        file: Annotated[
            str | None, typer.Option("--file", help="only files whose path contains this")
        ] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many rows")] = 50,
        wait: Annotated[
            float, typer.Option("--wait", help="wait up to SECONDS while a writer is busy")
        ] = 0.0,
    ) -> None:
        """Show rejected input rows (latest first): file, record number, reason and the raw text."""
        from recctl.status import list_rejects
        from recctl.warehouse import open_reader

        state: State = ctx.obj
        with open_reader(state.config, wait=wait) as wh:
            rows = list_rejects(wh, file=file, limit=limit)

        def render(c: Console) -> None:
            from rich.table import Table

            t = Table(title=f"ingest_rejects (latest {len(rows)})", title_justify="left")
            for col in ("file", "line", "reason", "raw"):
                t.add_column(col, overflow="fold")
            for r in rows:
                t.add_row(Path(r["source_file"]).name, str(r["line"]), r["reason"], r["raw"][:120])
            c.print(t)

        state.out.emit(
            rows, render, columns=("source_file", "target", "line", "reason", "raw", "ingested_at")
        )

    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        data: Annotated[Path, typer.Option("--data", help="sample shop folder")] = Path("sample_data"),
        workdir: Annotated[Path, typer.Option("--workdir", help="where the demo project goes")] = Path(
            "demo"
        ),
        quick: Annotated[
            bool,
            typer.Option(
                "--quick", help="three generators (trending, next-item, itemknn) and the ranker only"
            ),
        ] = False,
    ) -> None:
        """The whole pipeline on the sample shop: init a project in --workdir, ingest, train, evaluate,
        apply the segments and fill the online store.

        Ends with the evaluation table (models beside the baselines), recommendations with their reasons
        for a new visitor, a loyal buyer and a product, and the path of the HTML report. Prints
        its tables even when stderr is not a terminal (it is a tour); --quiet or --json turn them off.
        """
        from recctl import progress
        from recctl.cli.ingest import render_report
        from recctl.demo import run_demo

        state: State = ctx.obj
        with progress.reporting(state.out, "demo"):
            result = run_demo(data, workdir, quick=quick)
        data_out = {**result, "ingest": [r.as_dict() for r in result["ingest"]]}
        from recctl.cli.model import render_evaluation

        if state.out.json_mode:
            state.out.emit(data_out)
        elif not state.out.quiet:
            c = state.out.err
            c.print(f"[bold]recctl demo[/] — project in {result['workdir']}/, sample shop from {data}/\n")
            for report in result["ingest"]:
                render_report(report, c)
            _render_status(result["status"], c)
            c.print(f"\ntrained run [bold]{result['train']['run_id']}[/] in {result['workdir']}/runs\n")
            render_evaluation(result["evaluation"], c)
            seg = ", ".join(f"{k} {v:,}" for k, v in result["segments"]["segments"].items())
            store = result["online_store"]
            c.print(f"\nsegments applied: {seg}; online store: {store['users']:,} users × top {store['k']} "
                    f"in {store['seconds']} s")  # fmt: skip
            _render_examples(result["examples"], c)
            c.print(f"\nHTML report: [bold]{result['report']}[/]")

    @app.command("sample")
    def sample_cmd(
        ctx: typer.Context,
        out_dir: Annotated[Path, typer.Argument(help="folder to write the sample shop into")],
        seed: Annotated[
            int | None, typer.Option("--seed", help="seed (default: the config's root seed)")
        ] = None,
        users: Annotated[
            int | None, typer.Option("--users", min=10, help="visitors (default 2000; --scale: events / 10)")
        ] = None,
        items: Annotated[
            int | None,
            typer.Option(
                "--items", min=50, help="items (default 1500; --scale: 100k at 1M events, 1M at 100M)"
            ),
        ] = None,
        days: Annotated[
            int | None, typer.Option("--days", min=14, help="window in days (default 90; --scale: 91)")
        ] = None,
        scale: Annotated[
            str | None,
            typer.Option(
                "--scale",
                help="instead: a shop of this many events (1M, 250k, 100M) streamed to events.parquet, "
                "items.parquet and users.parquet (mappings scale-shop-events|items|users)",
            ),
        ] = None,
        chunk: Annotated[
            int, typer.Option("--chunk", min=1, help="--scale: events per Parquet row group (bounds memory)")
        ] = 1_000_000,
    ) -> None:
        """Generate the synthetic fashion shop (events, items, users, planted ground truth) into OUT_DIR.

        With --scale, a shop of any size in bounded memory (Zipf popularity, heavy-tailed users, sessions
        with a view → cart → purchase funnel, brands and price tiers) as Parquet, for the scale benchmark.
        """
        state: State = ctx.obj
        root_seed = state.config.seed if seed is None else seed
        if scale is not None:
            from recctl.sample.scale import generate_scale, parse_count

            summary = generate_scale(out_dir, parse_count(scale), seed=root_seed, items=items, users=users,
                                     days=days or 91, chunk=chunk)  # fmt: skip
        else:
            from recctl.sample import generate

            summary = generate(out_dir, seed=root_seed, n_users=users or 2000, n_items=items or 1500,
                               days=days or 90)  # fmt: skip
        state.out.emit(summary, lambda c: c.print_json(to_json(summary)))
