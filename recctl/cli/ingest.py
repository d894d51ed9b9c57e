"""``recctl ingest events|items|users PATH...``"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recctl.cli.state import State
from recctl.errors import ConfigError, DataError
from recctl.schema import FORMATS

if TYPE_CHECKING:
    from rich.console import Console

    from recctl.console import Output
    from recctl.ingest import FileResult, IngestReport

TABLE_HELP = "events | items | users"


def render_report(report: IngestReport, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"ingest {report.target}  (mapping: {report.mapping})", title_justify="left")
    for col in ("file", "status", "read", "loaded", "rejected", "duplicate", "s"):
        table.add_column(col, justify="left" if col in ("file", "status") else "right")
    styles = {"loaded": "green", "unchanged": "dim", "failed": "bold red"}
    for f in report.files:
        table.add_row(
            Path(f.path).name, f"[{styles[f.status]}]{f.status}[/]", f"{f.rows_read:,}", f"{f.rows_loaded:,}",
            f"{f.rows_rejected:,}", f"{f.rows_duplicate:,}", f"{f.seconds:.1f}",
        )  # fmt: skip
    t = report.totals()
    table.add_row(
        "[b]total[/]", "", f"{t['rows_read']:,}", f"{t['rows_loaded']:,}", f"{t['rows_rejected']:,}",
        f"{t['rows_duplicate']:,}", "",
    )  # fmt: skip
    console.print(table)
    for f in report.files:
        if f.message:
            console.print(
                f"  {Path(f.path).name}: {f.message}",
                style="red" if f.status == "failed" else "dim",
                markup=False,
            )
        for w in f.warnings:
            if w != f.message:
                console.print(f"  {Path(f.path).name}: warning: {w}", style="yellow", markup=False)
    if t["rows_rejected"]:
        console.print(
            "  rejected rows are in the ingest_rejects table (file, line, raw, reason): "
            "`recctl status` counts them"
        )


def reject_summary(f: FileResult, top: int = 3) -> str:
    """One line for a file with rejected rows: how many of how many, the main reasons, where to look."""
    name = Path(f.path).name
    kinds = list(f.reject_reasons.items())
    why = ", ".join(f"{n:,} {k}" for k, n in kinds[:top]) + (", …" if len(kinds) > top else "")
    return (
        f"recctl ingest: {name}: {f.rows_rejected:,} of {f.rows_read:,} rows rejected"
        + (f" ({why})" if why else "")
        + f"; see recctl rejects --file {name}"
    )


def _warn(out: Output, message: str) -> None:
    """One warning line on stderr, never wrapped (a log line per file)."""
    from rich.markup import escape

    out.err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        ctx: typer.Context,
        table: Annotated[str, typer.Argument(help=TABLE_HELP, metavar="TABLE")],
        paths: Annotated[
            list[str] | None,
            typer.Argument(help="files, folders or quoted glob patterns", metavar="[PATH...]"),
        ] = None,
        mapping: Annotated[
            str | None,
            typer.Option("--mapping", "-m", help="mapping name in configs/mappings/ or a TOML path"),
        ] = None,
        fmt: Annotated[
            str | None, typer.Option("--format", "-f", help=f"force the format: {', '.join(FORMATS)}")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="re-read files already loaded (still adds no duplicates)")
        ] = False,
        wait: Annotated[
            float | None, typer.Option("--wait", help="wait up to SECONDS for another writer, then exit 75")
        ] = None,
        inbox: Annotated[
            bool,
            typer.Option(
                "--inbox",
                help="events: load the events `recctl serve` collected ([service] inbox_dir), each file once",
            ),
        ] = False,
    ) -> None:
        """Load raw event, item or user files into the warehouse: validated, de-duplicated, idempotent.

        Each file is one transaction. Bad rows go to the ingest_rejects table with file, line, raw text and
        reason; the per-file counts always reconcile: read = loaded + rejected + duplicate. Files whose
        content was already loaded are skipped (use --force to re-read). Exit 65 when a file cannot be
        loaded at all (e.g. a required column is missing) or when a file's rejected rows reach [ingest]
        max_reject_share of its records (default 1.0: every row rejected; the accepted rows stay loaded),
        66 when an input does not exist, 75 when another job holds the warehouse. A file with rejected
        rows always prints one summary line on stderr, even with --quiet. A file is the same load only
        with the same content AND the same mapping content: a fixed mapping re-reads it.
        """
        from recctl import progress
        from recctl.ingest import check_format, ingest, resolve_mapping, resolve_paths
        from recctl.warehouse import open_writer

        state: State = ctx.obj
        cfg = state.config
        check_format(fmt)
        if inbox:
            from recctl.ingest import inbox as ib
            from recctl.ingest.mapping import identity_mapping

            if table != "events" or paths or mapping or fmt:
                raise ConfigError("--inbox goes with `ingest events` alone (no paths, --mapping or --format)")
            m, fmt = identity_mapping("events"), "ndjson"
        else:
            if not paths:
                raise ConfigError("give the files to load", hint="recctl ingest events PATH... (or --inbox)")
            m = resolve_mapping(cfg, table, mapping)
        out = state.out
        with progress.reporting(out, f"ingest {table}"), open_writer(cfg, f"ingest {table}", wait=wait) as wh:
            files = ib.ready_files(ib.inbox_dir(cfg)) if inbox else resolve_paths(paths or [])
            report = ingest(wh, cfg, table, files, mapping=m, fmt=fmt, force=force)
        if inbox:
            for f in report.files:
                if f.status != "failed":
                    ib.done(Path(f.path))
        cols = ("path", "status", "rows_read", "rows_loaded", "rows_rejected", "rows_duplicate", "seconds",
                "message")  # fmt: skip
        rows = [f.as_dict() for f in report.files]
        out.emit(report.as_dict(), lambda c: render_report(report, c), rows=rows, columns=cols)
        # what a person must know is on stderr whatever the output mode (the table shows it to a terminal)
        if not out.people and not out.quiet:
            for f in report.files:
                for w in f.warnings:
                    _warn(out, f"{Path(f.path).name}: {w}")
            for f in report.failed[1:]:
                _warn(out, f"failed: {f.message}")
        # rejected rows are news for cron too: one line per such file, even with --quiet or --json
        for f in report.files:
            if f.status == "loaded" and f.rows_rejected:
                out.err.print(reject_summary(f), markup=False, highlight=False, soft_wrap=True)
        if report.failed:
            first = report.failed[0]
            more = f" (and {len(report.failed) - 1} more files)" if len(report.failed) > 1 else ""
            raise DataError(f"{first.message}{more}")
        if over := report.over_reject_share:
            f = over[0]
            more = f" (and {len(over) - 1} more files)" if len(over) > 1 else ""
            raise DataError(
                f"{Path(f.path).name}: {f.rows_rejected:,} of {f.rows_read:,} rows rejected "
                f"({f.rows_rejected / f.rows_read:.0%}), at or above [ingest] max_reject_share = "
                f"{cfg.ingest.max_reject_share!r}{more}; "
                + (
                    f"its accepted rows ({f.rows_loaded:,}) stay loaded"
                    if f.rows_loaded
                    else "nothing was loaded"
                ),
                hint=f"see `recctl rejects --file {Path(f.path).name}`; a fixed mapping re-reads the file",
            )
