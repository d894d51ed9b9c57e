"""``recctl status``: what is in the warehouse, what was ingested, who is writing."""

from __future__ import annotations

from typing import Any

from recctl.config import RecctlConfig
from recctl.warehouse import Warehouse
from recctl.warehouse.integrity import verify
from recctl.warehouse.lock import holder_state, lock_path_for
from recctl.warehouse.migrations import current_version


def _rows(wh: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in wh.con.sql(sql).fetchall()]


def warehouse_status(wh: Warehouse, cfg: RecctlConfig | None = None) -> dict[str, Any]:
    """Counts and ingest history; with ``cfg`` also the promoted run and the online store's freshness."""
    ev = _rows(
        wh,
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT session_id), count(DISTINCT item_id), "
        "min(ts), max(ts) FROM events",
    )[0]
    by_type = dict(_rows(wh, "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"))
    # files: distinct (path, target) by the status of their latest read; reads: manifest rows (a file
    # re-read with --force or changed in place is one file, two reads); the row counts sum over reads,
    # so that read = loaded + rejected + duplicate holds for the totals as for each read
    files = _rows(
        wh,
        "SELECT r.status, coalesce(f.n, 0), r.reads, r.rd, r.lo, r.rj, r.du FROM (SELECT status, count(*) AS reads, "
        "sum(rows_read) AS rd, sum(rows_loaded) AS lo, sum(rows_rejected) AS rj, sum(rows_duplicate) AS du "
        "FROM ingest_files GROUP BY 1) r LEFT JOIN (SELECT status, count(*) AS n FROM (SELECT status FROM "
        "ingest_files QUALIFY row_number() OVER (PARTITION BY path, target ORDER BY finished_at DESC, "
        "started_at DESC) = 1) GROUP BY 1) f USING (status) ORDER BY 1",
    )
    recent = _rows(
        wh,
        "SELECT path, target, status, rows_read, rows_loaded, rows_rejected, rows_duplicate, finished_at, message "
        "FROM ingest_files ORDER BY finished_at DESC LIMIT 10",
    )
    rejects_by_target = dict(_rows(wh, "SELECT target, count(*) FROM ingest_rejects GROUP BY 1"))
    # a reader reports who is writing (a record left by a killed writer is stale); a writer is that holder
    holder, stale = holder_state(lock_path_for(wh.path)) if wh.read_only else (None, None)
    return {
        "warehouse": str(wh.path),
        "size_mb": round(wh.path.stat().st_size / 1e6, 2),
        "schema_version": current_version(wh.con),
        "events": {
            "rows": ev[0],
            "users": ev[1],
            "sessions": ev[2],
            "items": ev[3],
            "first_ts": ev[4],
            "last_ts": ev[5],
            "by_type": by_type,
        },
        "items": _rows(wh, "SELECT count(*) FROM items")[0][0],
        "users": _rows(wh, "SELECT count(*) FROM users")[0][0],
        "ingest": {
            "files": {
                str(s): {
                    "files": n,
                    "reads": reads,
                    "read": r or 0,
                    "loaded": lo or 0,
                    "rejected": rj or 0,
                    "duplicate": d or 0,
                }
                for s, n, reads, r, lo, rj, d in files
            },
            "rejects": rejects_by_target,
            "recent": [
                dict(
                    zip(
                        (
                            "path",
                            "target",
                            "status",
                            "read",
                            "loaded",
                            "rejected",
                            "duplicate",
                            "finished_at",
                            "message",
                        ),
                        r,
                        strict=True,
                    )
                )
                for r in recent
            ],
        },
        "writer": holder,
        "stale_lock": stale,
        "verified_rows": verify(wh.con, wh.path),  # every data block read: a damaged one is exit 2
    } | ({} if cfg is None else _serving(wh, cfg))


def _serving(wh: Warehouse, cfg: RecctlConfig) -> dict[str, Any]:
    from recctl import runs
    from recctl.serving.store import freshness

    run_id = runs.promoted(cfg.runs_dir)
    return {"promoted_run": run_id, "online_store": freshness(wh.con, run_id, cfg.serving.max_age)}


def list_rejects(wh: Warehouse, *, file: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rejected rows, optionally of files whose path contains ``file``."""
    where, params = ("WHERE source_file LIKE ?", [f"%{file}%"]) if file else ("", [])
    rows = wh.con.execute(
        f"SELECT source_file, target, line, reason, raw, ingested_at FROM ingest_rejects {where} "
        "ORDER BY ingested_at DESC, source_file, line LIMIT ?",
        [*params, limit],
    ).fetchall()
    keys = ("source_file", "target", "line", "reason", "raw", "ingested_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]
