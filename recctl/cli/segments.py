"""``recctl segments``: rule-based customer segments and their actions (list, show, apply)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State
from recctl.errors import ConfigError, WarehouseError

if TYPE_CHECKING:
    from rich.console import Console


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--now takes an ISO date or time, not {text!r}", hint="e.g. 2026-10-01 or 2026-10-01T12:30"
        ) from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def _render_list(doc: dict[str, Any], c: Console) -> None:
    from rich.table import Table

    applied = doc["applied_at"] or "never (run `recctl segments apply`)"
    t = Table(title=f"{doc['file']} · members applied {applied}", title_justify="left")
    for col in ("segment", "conditions", "actions", "members"):
        t.add_column(col, justify="right" if col == "members" else "left")
    for s in doc["segments"]:
        n = "—" if s["members"] is None else f"{s['members']:,}"
        t.add_row(f"[bold]{s['name']}[/]\n[dim]{s['description']}[/]", "\n".join(s["conditions"]),
                  "\n".join(s["actions"]) or "—", n)  # fmt: skip
    c.print(t)
    if doc["stale_segments"]:
        c.print(f"[yellow]members of segments no longer in the file:[/] {doc['stale_segments']} "
                "(`recctl segments apply` drops them)")  # fmt: skip


def _render_show(doc: dict[str, Any], c: Console) -> None:
    if not doc["segments"]:
        c.print(f"{doc['user_id']}: in no segment" + (f" (last apply {doc['applied_at']})" if doc["applied_at"]
                                                      else " (segments were never applied)"))  # fmt: skip
        return
    c.print(f"[bold]{doc['user_id']}[/] · membership applied {doc['applied_at']}")
    for s in doc["segments"]:
        c.print(f"  [bold]{s['name']}[/]: {s['description']}  [dim]({'; '.join(s['conditions'])})[/]")
    for r in doc["rules"]:
        what = ", ".join([*r["categories"], *r["brands"]] +
                         [f"{k} {r[k]:g}" for k in ("price_min", "price_max") if r[k] is not None])  # fmt: skip
        c.print(f"  {r['action']} x{r['factor']:g} ({r['name']}): {what}")
    if doc["actions"]:
        c.print(f"  actions: {', '.join(doc['actions'])}")
    if doc["stale_segments"]:
        c.print(f"  [yellow]stale memberships (no longer in the file):[/] {', '.join(doc['stale_segments'])}")


def _render_apply(doc: dict[str, Any], c: Console) -> None:
    from rich.table import Table

    t = Table(title=f"as of {doc['now']}: {doc['users_evaluated']:,} users ({doc['seconds']} s)",
              title_justify="left")  # fmt: skip
    t.add_column("segment")
    t.add_column("members", justify="right")
    for name, n in doc["segments"].items():
        t.add_row(name, f"{n:,}")
    c.print(t)


def register(app: typer.Typer) -> None:
    seg_app = typer.Typer(
        help="Rule-based customer segments ([serving] segments_file) and their actions: boosts, buries and "
        "action ids the shop shows.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    app.add_typer(seg_app, name="segments")

    @seg_app.command("list")
    def list_cmd(ctx: typer.Context) -> None:
        """The segments file: each segment's conditions in words, its actions, and its member count from the
        last `segments apply` (— when there is no warehouse or it was never applied)."""
        from recctl.rules.segment_defs import describe_action, load_segments
        from recctl.rules.segments import member_counts
        from recctl.warehouse import open_reader

        state: State = ctx.obj
        cfg = state.config
        defs = load_segments(cfg.serving.segments_file)
        counts: dict[str, int] | None = None
        applied = None
        if cfg.warehouse.path.exists():
            with open_reader(cfg) as wh:
                counts, applied = member_counts(wh.con)
        else:
            state.out.warn(f"no warehouse at {cfg.warehouse.path}: member counts unknown")
        doc = {
            "file": str(cfg.serving.segments_file),
            "applied_at": applied,
            "segments": [
                {
                    "name": s.name,
                    "description": s.description,
                    "conditions": s.conditions(),
                    "actions": [describe_action(a) for a in s.actions],
                    "definition": s.model_dump(mode="json", exclude_defaults=True),
                    "members": None if counts is None or applied is None else counts.get(s.name, 0),
                }
                for s in defs.segments
            ],
            "stale_segments": sorted(set(counts or {}) - set(defs.names)),
        }
        rows: list[dict[str, Any]] = doc["segments"]  # type: ignore[assignment]
        state.out.emit(doc, lambda c: _render_list(doc, c), rows=rows,
                       columns=("name", "description", "conditions", "actions", "members"))  # fmt: skip

    @seg_app.command("show")
    def show_cmd(
        ctx: typer.Context,
        user_id: Annotated[
            str, typer.Argument(help="customer id (or session:<id> for an anonymous visitor)")
        ],
        wait: Annotated[
            float, typer.Option("--wait", help="wait up to SECONDS while a writer holds the warehouse")
        ] = 0.0,
    ) -> None:
        """One customer's segments as of the last `segments apply`, the boosts and buries they bring to the
        customer's recommendations, and the action ids to show. An unknown id is in no segment."""
        from recctl.rules.segments import show_user
        from recctl.warehouse import open_reader

        state: State = ctx.obj
        cfg = state.config
        with open_reader(cfg, wait=wait) as wh:
            doc = show_user(wh.con, cfg, user_id)
        state.out.emit(doc, lambda c: _render_show(doc, c))

    @seg_app.command("apply")
    def apply_cmd(
        ctx: typer.Context,
        now: Annotated[
            str | None,
            typer.Option(
                "--now",
                help="evaluate as of this ISO date or time (UTC; later events ignored); default: the "
                "current time, or the newest event when it is more than a day older (with a warning)",
            ),
        ] = None,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Compute every segment's members from the events, catalog and customers, and replace the
        segment_members table with them in one transaction (run it after each ingest, e.g. nightly).
        An export that lags the clock by more than a day is evaluated as of its newest event, so that
        recency conditions do not empty: a warning says so; --now overrides."""
        from recctl import progress
        from recctl.rules.segments import apply_segments
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        cfg = state.config
        when = _parse_now(now)
        if not cfg.warehouse.path.exists():
            raise WarehouseError(f"no warehouse at {cfg.warehouse.path}", hint="run `recctl ingest` first")
        with (
            progress.reporting(state.out, "segments apply"),
            open_writer(cfg, "segments apply", wait=wait) as wh,
        ):
            doc = apply_segments(wh, cfg, now=when)
        from rich.markup import escape

        for w in doc["warnings"]:  # it changed what was computed: said even with --quiet, on one line
            state.out.err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
        state.out.emit(doc, lambda c: _render_apply(doc, c))
