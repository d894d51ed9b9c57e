"""``recctl features``: build the offline feature tables and the online snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State

if TYPE_CHECKING:
    from rich.console import Console


def _render(result: dict[str, Any], c: Console) -> None:
    from rich.table import Table

    t = Table(title=f"features as of {result['as_of']}  ({result['seconds']} s)", title_justify="left",
              show_header=False)  # fmt: skip
    t.add_column(style="bold")
    t.add_column()
    t.add_row("events used", f"{result['events']:,}")
    t.add_row("users / items", f"{result['users']:,} / {result['items']:,}")
    t.add_row("features", f"{result['features']} (windows {', '.join(f'{w}d' for w in result['windows'])})")
    t.add_row("offline tables", ", ".join(f"{k} {v:,}" for k, v in result["tables"].items()))
    t.add_row("online snapshot", "replaced" if result["online"] else "kept (it is newer than this as_of)")
    c.print(t)


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features_cmd(
        ctx: typer.Context,
        as_of: Annotated[
            str | None,
            typer.Option("--as-of", help="ISO date or time (UTC); default: just after the newest event"),
        ] = None,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Build the feature store: user, item and user×item features from the events before --as-of.

        Writes one offline snapshot per as_of (features_user, features_item, features_user_item,
        features_user_brand, features_user_category, features_item_attrs, features_user_last; a rerun with
        the same --as-of replaces it), a features_meta row, and the online snapshot (online_user_features,
        online_item_features) when this as_of is the newest built.
        """
        from recctl import progress
        from recctl.features.store import run_features
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        cfg = state.config
        with progress.reporting(state.out, "features"), open_writer(cfg, "features", wait=wait) as wh:
            result = run_features(wh, cfg, as_of)
        state.out.emit(result, lambda c: _render(result, c))
