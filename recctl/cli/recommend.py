"""``recctl recommend``: for a user, an item, an anonymous session, or every user into the online store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recctl.cli.state import State
from recctl.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console


def _tsv(doc: dict[str, Any], explain: bool) -> None:
    """Data on stdout without --json: one line per item, rank, item, score, reason (+ sources)."""
    for it in doc["items"]:
        score = "" if it["score"] is None else f"{it['score']:.6g}"
        extra = f"\t{','.join(it['sources'])}" if explain else ""
        sys.stdout.write(f"{it['rank']}\t{it['item_id']}\t{score}\t{it['reason']}{extra}\n")
    sys.stdout.flush()


def _render_batch(r: dict[str, Any], c: Console) -> None:
    states = ", ".join(f"{s} {n:,}" for s, n in r["by_state"].items())
    c.print(f"online store: {r['users']:,} users × top {r['k']} = {r['rows']:,} rows from run {r['run_id']} in "
            f"{r['seconds']} s ({r['users_per_s']} users/s); {states}")  # fmt: skip
    if r["out"]:
        c.print(f"written to {r['out']}")


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    def recommend_cmd(
        ctx: typer.Context,
        user: Annotated[str | None, typer.Option("--user", help="recommend for this user id")] = None,
        item: Annotated[str | None, typer.Option("--item", help="items related to this product")] = None,
        session: Annotated[
            str | None,
            typer.Option(
                "--session", help="an anonymous visitor's events as JSON lines: FILE, or - for stdin"
            ),
        ] = None,
        all_: Annotated[
            bool, typer.Option("--all", help="precompute every user's list into the online store (recs)")
        ] = False,
        k: Annotated[int | None, typer.Option("--k", min=1, help="list length (default [serving] k)")] = None,
        explain: Annotated[
            bool, typer.Option("--explain", help="also print sources (and the rules that touched each item)")
        ] = False,
        strategy: Annotated[
            str, typer.Option("--strategy", help="--item: similar | bought-together | viewed-together")
        ] = "similar",
        category: Annotated[
            str | None,
            typer.Option("--category", help="context: the category page (path prefix) being shown"),
        ] = None,
        context_item: Annotated[
            str | None, typer.Option("--context-item", help="context: the product page being shown")
        ] = None,
        list_name: Annotated[
            str,
            typer.Option(
                "--list",
                help="--user: main (the ranked list) | buy-again (bought items due to be re-bought, "
                "with their cycle as the reason)",
            ),
        ] = "main",
        live: Annotated[
            bool, typer.Option("--live", help="--user: rank now even when the online store is fresh")
        ] = False,
        mapping: Annotated[
            str | None,
            typer.Option(
                "--mapping",
                help="--session: the events mapping (name or file) whose event and field names the lines "
                "use, e.g. pageview for view (default: [ingest] default_mapping.events)",
            ),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="--all: also write the lists to this parquet file")
        ] = None,
        wait: Annotated[
            float | None,
            typer.Option(
                "--wait",
                help="wait up to SECONDS for the warehouse (default [serving] read_wait; --all: for the lock)",
            ),
        ] = None,
    ) -> None:
        """Recommendations from the promoted run: exactly one of --user, --item, --session, --all.

        --user answers from the online store when it is fresh (rows of the promoted run younger than
        [serving] max_age), else ranks on the fly by the visitor's state (new, returning, signed-in,
        buyer); `--list buy-again` lists the bought items the user is due to re-buy, with the cycle
        as the reason ("you buy this about every 9 days; last bought 11 days ago"). --session reads an anonymous visitor's events (JSON lines with the fields of events:
        item_id, event_type, ts, ...; or the shop's own event and field names through --mapping); no events gives
        trending items for the context. Lists up to 30 items extend each other (--k 3 is the top of --k 5). Output: one line per
        item (rank, item, score, reason) on stdout, or the JSON document with --json.
        """
        from recctl.serving import service

        chosen = [name for name, v in (("--user", user), ("--item", item), ("--session", session),
                                       ("--all", all_ or None)) if v is not None]  # fmt: skip
        if len(chosen) != 1:
            raise ConfigError("give exactly one of --user, --item, --session, --all"
                              + (f" (got {', '.join(chosen)})" if chosen else ""))  # fmt: skip
        if out is not None and not all_:
            raise ConfigError("--out goes with --all")
        if list_name != "main" and user is None:
            raise ConfigError("--list goes with --user")
        if mapping is not None and session is None:
            raise ConfigError("--mapping goes with --session")
        from recctl.names import one_of
        from recctl.serving.item import STRATEGIES

        one_of(strategy, STRATEGIES, what="strategy", where="--strategy")
        one_of(list_name, service.LISTS, what="list", where="--list")
        state: State = ctx.obj
        cfg = state.config
        if all_:  # it takes the writer lock itself: it reads read-only until it writes
            from recctl import progress

            with progress.reporting(state.out, "recommend --all"):
                result = service.recommend_all(cfg, k=k, out=out, wait=wait)
            state.out.emit(result, lambda c: _render_batch(result, c))
            return
        text = None
        if session is not None:
            text = sys.stdin.read() if session == "-" else _read(Path(session))
        from recctl.warehouse import open_reader

        with open_reader(cfg, wait=cfg.serving.read_wait if wait is None else wait) as wh:
            if user is not None:
                doc = service.recommend_user(wh, cfg, user, k=k, explain=explain, category=category,
                                             current_item=context_item, live=live, list_name=list_name)  # fmt: skip
            elif item is not None:
                doc = service.recommend_item(wh, cfg, item, strategy=strategy, k=k)
            else:
                assert text is not None
                doc = service.recommend_session(wh, cfg, text, k=k, explain=explain, category=category,
                                                current_item=context_item, mapping=mapping)  # fmt: skip
        if state.out.json_mode:
            state.out.emit(doc)
        else:
            _tsv(doc, explain)
        if doc.get("fallback"):  # in the JSON document too ("fallback": true); said on stderr either way
            state.out.warn(f"no {doc['strategy']} data for {doc['item_id']} in run {doc['run_id']}: "
                           "these are similar items (content similarity) instead")  # fmt: skip


def _read(path: Path) -> str:
    from recctl.errors import InputMissingError

    if not path.exists():
        raise InputMissingError(f"session file not found: {path}")
    return path.read_text(encoding="utf-8")
