"""The warehouse side of ``recctl prepare``: load the interactions, clean them, store the result.

The cleaned events become the table ``events_prepared`` (replaced whole on every run, never edited in
place: ``events`` stays the untouched record of what was ingested) and every run appends one row per
filter to ``prepare_log``, so what a cleaning removed stays visible later. Both tables are created here
on first use rather than by a migration: they are derived data that a rerun rebuilds.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import duckdb

from recctl import progress
from recctl.config import RecctlConfig
from recctl.data import INTERACTION_COLUMNS, load_interactions
from recctl.errors import WarehouseError
from recctl.prepare import PrepareResult, prepare
from recctl.warehouse import Warehouse

PREPARED_TABLE = "events_prepared"
LOG_TABLE = "prepare_log"

_LOG_DDL = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    run_id VARCHAR, run_at TIMESTAMP, step INTEGER, filter VARCHAR, enabled BOOLEAN, params JSON,
    events_before BIGINT, events_removed BIGINT, events_after BIGINT, users_removed BIGINT,
    items_removed BIGINT, purchases_removed BIGINT, events_changed BIGINT, detail VARCHAR
)"""


def _store(con: duckdb.DuckDBPyConnection, result: PrepareResult, run_id: str, run_at: datetime) -> None:
    """Replace ``events_prepared`` and log the run, in one transaction: a crash leaves the previous
    table and log as they were."""
    rows = [
        (run_id, run_at, i, r.filter, r.enabled, json.dumps(r.params), r.events_before, r.events_removed,
         r.events_after, r.users_removed, r.items_removed, r.purchases_removed, r.events_changed, r.detail)
        for i, r in enumerate(result.report, start=1)
    ]  # fmt: skip
    frame = result.events.select(INTERACTION_COLUMNS).to_arrow()
    con.execute("BEGIN TRANSACTION")
    try:
        con.register("_recctl_prepared", frame)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {PREPARED_TABLE} AS SELECT * FROM _recctl_prepared")
        finally:
            con.unregister("_recctl_prepared")
        con.execute(_LOG_DDL)
        con.executemany(f"INSERT INTO {LOG_TABLE} VALUES ({', '.join('?' * 14)})", rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def run_prepare(wh: Warehouse, cfg: RecctlConfig, dry_run: bool = False) -> dict[str, Any]:
    """Clean the warehouse's interactions with ``cfg.prepare``; unless ``dry_run``, store the result.

    Returns the JSON document of ``recctl prepare --json``: run id and time, totals, one entry per
    filter, and the tables written (none for a dry run).
    """
    if not dry_run and wh.read_only:
        raise WarehouseError("recctl prepare needs the warehouse open for writing (or a dry run)")
    run_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    run_id = f"{run_at:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    with progress.stage("load events"):
        events = load_interactions(wh.con)
    with progress.stage("filters"):
        result = prepare(events, cfg.prepare)
    if not dry_run:
        with progress.stage("store events_prepared"):
            _store(wh.con, result, run_id, run_at)
    return {
        "run_id": run_id,
        "run_at": run_at,
        "dry_run": dry_run,
        **result.as_dict(),
        "written": [] if dry_run else [PREPARED_TABLE, LOG_TABLE],
    }
