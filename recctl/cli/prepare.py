"""``recctl prepare``: the dataset clean-up filters, with a report of what each one removed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State

if TYPE_CHECKING:
    from rich.console import Console


def render_prepare(doc: dict[str, Any], c: Console) -> None:
    """One row per filter: what it removed and why, its parameters dimmed below; totals in the caption."""
    from rich.table import Table

    title = f"prepare {doc['run_id']}: {doc['events_before']:,} events"
    t = Table(title=title + ("  (dry run: nothing written)" if doc["dry_run"] else ""), title_justify="left",
              caption_justify="left")  # fmt: skip
    t.add_column("filter")
    for col in ("events -", "users -", "items -", "purchases -"):
        t.add_column(col, justify="right")
    t.add_column("what it did", overflow="fold")
    for f in doc["filters"]:
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in f["params"].items())
        t.add_row(
            f["filter"] if f["enabled"] else f"[dim]{f['filter']}[/]", f"{f['events_removed']:,}",
            f"{f['users_removed']:,}", f"{f['items_removed']:,}", f"{f['purchases_removed']:,}",
            f"{f['detail']}\n[dim]{params}[/]",
        )  # fmt: skip
    kept = f"{doc['events_after']:,} of {doc['events_before']:,} events kept"
    t.caption = kept + (f" → {', '.join(doc['written'])}" if doc["written"] else "")
    c.print(t)


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare_cmd(
        ctx: typer.Context,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="report what the filters would remove; write nothing")
        ] = False,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Clean the events before training: sessions from inactivity gaps, repeat bursts, bots, k-core.

        The filters and thresholds come from [prepare] in the config (the defaults change nothing on
        ordinary data); each reports the events, users, items and purchases it removed. The result is
        stored as the table events_prepared and the report appended to prepare_log; --dry-run only
        reports (and reads the warehouse without the writer lock).
        """
        from recctl import progress
        from recctl.prepare import run_prepare
        from recctl.warehouse import open_reader, open_writer

        state: State = ctx.obj
        cfg = state.config
        with progress.reporting(state.out, "prepare"):
            if dry_run:
                with open_reader(cfg, wait=wait or 0.0) as wh:
                    doc = run_prepare(wh, cfg, dry_run=True)
            else:
                with open_writer(cfg, "prepare", wait=wait) as wh:
                    doc = run_prepare(wh, cfg, dry_run=False)
        cols = ("filter", "enabled", "events_removed", "users_removed", "items_removed", "purchases_removed",
                "detail")  # fmt: skip
        state.out.emit(doc, lambda c: render_prepare(doc, c), rows=doc["filters"], columns=cols)
