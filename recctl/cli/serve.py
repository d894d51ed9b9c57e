"""``recctl serve``: the HTTP service (routes in recctl/service/app.py, README "HTTP service")."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from recctl.cli.state import State


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        ctx: typer.Context,
        host: Annotated[
            str | None, typer.Option("--host", help="address to bind (default [service] host, 127.0.0.1)")
        ] = None,
        port: Annotated[
            int | None, typer.Option("--port", min=1, max=65535, help="port (default [service] port, 8000)")
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", min=1, max=64, help="worker processes (default 1)")
        ] = None,
    ) -> None:
        """Serve recommendations over HTTP until interrupted: the same lists, sources and reasons as
        `recctl recommend` (one JSON contract), from a snapshot of the warehouse and the promoted run.

        The server never keeps the warehouse open: it copies what serving reads into a snapshot folder
        beside it (a read-only open of a second or two) and answers from that, so cron's ingest, train
        and recommend --all run while it serves. A new promoted run or changed warehouse is picked up
        within [service] reload_interval seconds, models loaded before the switch. Routes:
        /v1/recommend/user/ID, /v1/recommend/item/ID, /v1/recommend/session, /v1/rerank,
        /v1/segments/ID, /healthz, /readyz, /metrics, /openapi.json. Needs the serve extra.
        """
        from recctl.service.run import check_installed, serve

        check_installed()
        state: State = ctx.obj
        cfg = state.config
        update = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
        if update:
            cfg = cfg.model_copy(update={"service": cfg.service.model_copy(update=update)})
        s = cfg.service
        if not state.out.quiet:  # a server's log line, terminal or not
            print(f"recctl serve: http://{s.host}:{s.port} ({s.workers} worker{'s' * (s.workers > 1)}), "
                  "Ctrl-C stops", file=sys.stderr, flush=True)  # fmt: skip
        result = serve(cfg, verbose=state.out.verbose > 0)
        state.out.emit(result, lambda c: c.print(f"stopped serving on {s.host}:{s.port}"))
