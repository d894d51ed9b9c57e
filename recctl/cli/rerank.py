"""``recctl rerank``: re-order a given list (search results, a category page) by one visitor's affinities."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from recctl.cli.state import State
from recctl.errors import ConfigError, DataError


def parse_items(text: str) -> list[str]:
    """Item ids from a JSON list of ids or of objects with an ``item_id`` (numbers are taken as ids)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"the item list on stdin is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint='give a JSON list such as ["p1", "p2"] or [{"item_id": "p1"}, ...]',
        ) from None
    if not isinstance(data, list):
        raise DataError(f"the item list on stdin must be a JSON list, not a {type(data).__name__}")
    out: list[str] = []
    for k, entry in enumerate(data):
        value = entry.get("item_id") if isinstance(entry, dict) else entry
        if isinstance(value, bool) or not isinstance(value, str | int):
            what = "an object without a string item_id" if isinstance(entry, dict) else json.dumps(entry)
            raise DataError(f"entry {k + 1} of the item list is {what}; expected an item id")
        out.append(str(value))
    return out


def _tsv(doc: dict[str, Any]) -> None:
    """Data on stdout without --json: rank, item, score, reason per line."""
    lines = [
        f"{it['rank']}\t{it['item_id']}\t{it['score']:.6g}\t{it['reason'] or ''}\n" for it in doc["items"]
    ]
    sys.stdout.write("".join(lines))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    @app.command("rerank")
    def rerank_cmd(
        ctx: typer.Context,
        user: Annotated[
            str,
            typer.Option("--user", help="the visitor: a customer id, or session:<id> for an anonymous one"),
        ],
        items: Annotated[
            list[str] | None,
            typer.Argument(
                help="item ids in their current order; none (or -) reads a JSON list of ids, or of objects "
                'with "item_id", from stdin',
                show_default=False,
            ),
        ] = None,
        impact: Annotated[
            float | None,
            typer.Option(
                "--impact",
                help="weight of the visitor's affinities, 0 (order unchanged) to 100 (affinity only); "
                "default: rerank_impact in [serving]",
            ),
        ] = None,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for the warehouse")
        ] = None,
    ) -> None:
        """Re-rank a given list 1:1 for one visitor: every item comes back once, only the order changes.

        Each item's affinity (0-1) combines the visitor's share of its brand, of its category (deepest
        path prefix they browse), its price against their usual range and its discount against their
        taste for deals; the new score is (1 - impact/100) x position + impact/100 x affinity. A visitor
        without events keeps the order (personalized: false); items not in the catalog keep affinity 0.
        Output: rank, item, score, reason per line on stdout, or the JSON document with --json.
        """
        if not user.strip():
            raise ConfigError("--user is required", hint="recctl rerank --user U ITEM ...")
        if impact is not None:
            from recctl.serving.rerank import check_impact

            check_impact(impact)
        if not items or items == ["-"]:
            if sys.stdin.isatty():
                raise ConfigError(
                    "no items to re-rank", hint="give item ids as arguments, or pipe a JSON list on stdin"
                )
            ids = parse_items(sys.stdin.read())
        elif "-" in items:
            raise ConfigError("- (read stdin) cannot be mixed with item ids on the command line")
        else:
            ids = list(items)
        from recctl.serving.rerank import run_rerank
        from recctl.warehouse import open_reader

        state: State = ctx.obj
        cfg = state.config
        with open_reader(cfg, wait=cfg.serving.read_wait if wait is None else wait) as wh:
            doc = run_rerank(wh.con, cfg, user, ids, impact)
        if not doc["personalized"]:
            state.out.warn(f"no events for {user}: the order is unchanged")
        unknown = [it["item_id"] for it in doc["items"] if not it["known"]]
        if unknown:
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            state.out.warn(f"{len(unknown)} item(s) not in the catalog kept with affinity 0: "
                           f"{', '.join(unknown[:5])}{more}")  # fmt: skip
        if state.out.json_mode:
            state.out.emit(doc)
        else:
            _tsv(doc)
