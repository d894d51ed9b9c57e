"""The online store: table ``recs`` (each user's precomputed top-K) and ``recommend --all`` that fills it.

A lookup is fresh when its rows come from the promoted run and are younger than ``[serving] max_age``;
``recommend --user`` answers from a fresh lookup and ranks on the fly otherwise. ``batch`` ranks every
user (every user with events and every registered user) in user-id order, in chunks of
``batch_chunk_users`` (a chunk's events and states are a slice of the sorted frames, and the pipeline's
features are cut to the chunk's users the same way: a chunk costs its own rows, not the shop's), on
``batch_workers`` threads (each with its own DuckDB cursor; polars, LightGBM and torch release the GIL),
each chunk in one pass (``recommend_users``: every generator, the features, one ranker prediction and
the rules over the whole chunk), writes each chunk's rows to a parquet part as it is ranked (memory
bounded by a chunk, not by the shop) and replaces the table's contents from the parts in one
transaction, so readers see the old lists or the new ones, never a mix, and a failed batch leaves the
old ones.
``refill`` does the same for a run about to be promoted (by ``train`` or ``runs promote``) when the store
is in use, keeping the promoted run's rows beside the new ones until the promotion: a newly promoted run
answers from the store from its first request (a live answer costs seconds: every model is loaded).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recctl import progress
from recctl.config import parse_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    import duckdb
    import polars as pl

    from recctl.config import RecctlConfig
    from recctl.serving.served import Served
    from recctl.warehouse import Warehouse

    Opener = Callable[[], AbstractContextManager[Warehouse]]

_COLS = ("user_id", "rank", "item_id", "score", "reason", "sources", "run_id", "created_at", "state",
         "strategy")  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def stored(
    con: duckdb.DuckDBPyConnection, user_id: str, run_id: str, max_age: str, k: int
) -> dict[str, Any] | None:
    """``state``, ``strategy`` (those the list was ranked for) and ``items`` (the user's stored top
    ``k``) when fresh (same run, younger than ``max_age``), else None. Plain DuckDB and Python: the fast
    path of ``recommend --user`` imports neither polars nor the models."""
    since = _now() - parse_duration(max_age)
    rows = con.sql(
        "SELECT item_id, rank, score, sources, reason, state, strategy FROM recs "
        "WHERE user_id = ? AND run_id = ? AND created_at > ? ORDER BY rank LIMIT ?",
        params=[user_id, run_id, since, k],
    ).fetchall()
    return stored_document(rows)


def stored_document(rows: list[tuple[Any, ...]]) -> dict[str, Any] | None:
    """A user's stored rows (item_id, rank, score, sources, reason, state, strategy; by rank) → what
    :func:`stored` returns (the HTTP service's in-memory index of the store answers through this too)."""
    if not rows:
        return None
    items = [
        {
            "item_id": i,
            "rank": int(r),
            "score": None if s is None else round(float(s), 6),
            "sources": list(src or []),
            "reason": why,
        }
        for i, r, s, src, why, _, _ in rows
    ]
    return {"state": rows[0][5], "strategy": rows[0][6], "items": items}


def freshness(con: duckdb.DuckDBPyConnection, promoted: str | None, max_age: str) -> dict[str, Any]:
    """What `recctl status` shows about the online store: the promoted run's rows (``run_ids``: every
    run with rows; the previous run's rows stay beside a newly promoted one's until the next batch)."""
    (runs_,) = con.sql("SELECT list(DISTINCT run_id ORDER BY run_id) FROM recs").fetchall()[0]
    rows, users, oldest, newest = con.sql(
        "SELECT count(*), count(DISTINCT user_id), min(created_at), max(created_at) FROM recs WHERE run_id = ?",
        params=[promoted],
    ).fetchall()[0]
    seconds = None if newest is None else (_now() - newest).total_seconds()
    age = None if seconds is None else round(seconds / 3600.0, 2)
    fresh = bool(
        rows and promoted is not None and seconds is not None
        and seconds < parse_duration(max_age).total_seconds()
    )  # fmt: skip
    return {"rows": rows, "users": users, "run_ids": runs_ or [], "promoted_run": promoted,
            "created_at": newest, "oldest": oldest, "age_hours": age, "max_age": max_age, "fresh": fresh}  # fmt: skip


def serve_batch(
    cfg: RecctlConfig, *, k: int | None = None, out: Path | None = None, wait: float | None = None
) -> dict[str, Any]:
    """``batch`` as `recommend --all` runs it: under the writer lock, ranking through a read-only
    connection (serving calls keep being answered, from the previous lists, meanwhile) into parquet
    parts, then a short read-write open for the one-transaction write."""
    from recctl.warehouse import open_reader, reopen_writer, writer_lock

    with writer_lock(cfg, "recommend --all", wait=wait):
        with reopen_writer(cfg, wait=wait):
            pass  # pending migrations first: readers refuse an old schema
        t0 = time.perf_counter()
        with _parts_folder(cfg) as folder:
            with open_reader(cfg, wait=cfg.warehouse.lock_wait if wait is None else wait) as wh:
                parts, report = rank_into(wh, cfg, folder, k=k)
            with progress.stage("write the online store"), reopen_writer(cfg, wait=wait) as wh:
                write(wh.con, parts)
            return _finish(report, parts, out, t0)


def refill(cfg: RecctlConfig, run_id: str, reading: Opener, writing: Opener) -> dict[str, Any] | None:
    """Before run ``run_id`` is promoted: when the online store is in use (it has rows), rank every
    user with that run (as many items as the store holds) through ``reading()`` and add its rows
    through ``writing()`` (one transaction), beside the promoted run's (those of any other run are
    removed), so the new run answers from the store from its first request and the old one until the
    promotion. None when the store is empty (the shop does not use it)."""
    from recctl.runs import promoted as promoted_id
    from recctl.serving.served import load_run

    live = promoted_id(cfg.runs_dir)
    with _parts_folder(cfg) as folder:
        with reading() as wh:
            (n, k) = wh.con.sql("SELECT count(*), max(rank) FROM recs").fetchall()[0]
            if not n:
                return None
            t0 = time.perf_counter()
            with progress.stage("fill the online store from the new run"):
                parts, report = rank_into(wh, cfg, folder, k=int(k), served=load_run(cfg.runs_dir, run_id))
        with writing() as wh:
            write(wh.con, parts, keep=None if live == run_id else live, replace=run_id)
        return _finish(report, parts, None, t0)


def promote(cfg: RecctlConfig, run_id: str, *, wait: float | None = None) -> dict[str, Any] | None:
    """`recctl runs promote ID`: check the run, then under the writer lock fill the online store from it
    (``refill``: reading read-only, one short write) and promote it. Returns the store's report (None:
    the store is empty or there is no warehouse)."""
    from recctl import runs
    from recctl.warehouse import open_reader, reopen_writer, writer_lock

    runs.promotable(cfg.runs_dir, run_id)
    report = None
    with writer_lock(cfg, "runs promote", wait=wait):
        if cfg.warehouse.path.exists():
            read_wait = cfg.warehouse.lock_wait if wait is None else wait
            report = refill(
                cfg, run_id, lambda: open_reader(cfg, wait=read_wait), lambda: reopen_writer(cfg, wait=wait)
            )
        runs.promote(cfg.runs_dir, run_id)
    return report


def batch(
    wh: Warehouse, cfg: RecctlConfig, *, k: int | None = None, out: Path | None = None
) -> dict[str, Any]:
    """Rank every user into ``recs`` (and ``out`` as parquet) on an open writer; returns the report."""
    t0 = time.perf_counter()
    with _parts_folder(cfg) as folder:
        parts, report = rank_into(wh, cfg, folder, k=k)
        with progress.stage("write the online store"):
            write(wh.con, parts)
        return _finish(report, parts, out, t0)


def rank_all(
    wh: Warehouse, cfg: RecctlConfig, *, k: int | None = None, served: Served | None = None,
    now: datetime | None = None,
) -> tuple[pl.DataFrame | None, dict[str, Any]]:  # fmt: skip
    """Every user's top ``k`` as rows of ``recs`` in one frame (None when there is nobody), and the report
    so far; ranked by ``served`` (default: the promoted run) at ``now`` (default: the clock; also the
    rows' ``created_at``). ``rank_into`` is the same with bounded memory."""
    import polars as pl

    frames, report = _ranked(wh, cfg, k=k, served=served, now=now)
    rows = pl.concat(list(frames)) if report["users"] else None
    report = _counted(report, [] if rows is None else [rows])
    return (rows if rows is not None and rows.height else None), report


def rank_into(
    wh: Warehouse, cfg: RecctlConfig, folder: Path, *, k: int | None = None, served: Served | None = None,
    now: datetime | None = None,
) -> tuple[list[Path], dict[str, Any]]:  # fmt: skip
    """``rank_all`` with memory bounded by a chunk of users: each chunk's rows go to a parquet part in
    ``folder`` as they are ranked (in user order); returns the parts and the report. ``write`` inserts
    them in one transaction."""
    frames, report = _ranked(wh, cfg, k=k, served=served, now=now)
    parts: list[Path] = []
    counts: list[Any] = []
    for frame in frames:
        if frame.height:
            parts.append(folder / f"part-{len(parts):06d}.parquet")
            frame.write_parquet(parts[-1])
            counts.append(frame.select("user_id", "state"))
    return parts, _counted(report, counts)


def _counted(report: dict[str, Any], frames: list[pl.DataFrame]) -> dict[str, Any]:
    """The report with the rows and the users per state of the ranked ``frames`` (chunks hold disjoint users)."""
    import polars as pl

    if not frames:
        return {**report, "rows": 0, "by_state": {}}
    both = pl.concat([f.select("user_id", "state") for f in frames])
    by_state = dict(both.group_by("state").agg(pl.col("user_id").n_unique()).sort("state").iter_rows())
    return {**report, "rows": both.height, "by_state": by_state}


def _ranked(
    wh: Warehouse, cfg: RecctlConfig, *, k: int | None, served: Served | None, now: datetime | None
) -> tuple[Iterator[pl.DataFrame], dict[str, Any]]:
    """The rows of ``recs`` chunk by chunk (``batch_chunk_users`` users each, ranked on ``batch_workers``
    threads, yielded in user order) and the report without the row counts. Progress: the stage ``rank
    users`` counts users per chunk (n/N, N known from the start)."""
    import tempfile

    import polars as pl

    from recctl.data import by_key, export_interactions, load_items, read_users, rows_of
    from recctl.serving.served import promoted
    from recctl.serving.states import visitors
    from recctl.serving.user import Inputs, recommend_users

    k = k or cfg.serving.k
    served = served or promoted(cfg.runs_dir)
    cfg.warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix=".recctl-events-", dir=cfg.warehouse.path.parent)
    events = Path(scratch.name) / "events.parquet"
    with progress.stage("load users, events and the run"):
        # the events sorted by user into a parquet file, not memory: a chunk reads its users' row groups
        export_interactions(wh.con, events)
        catalog = load_items(wh.con).sort("item_id")
        states = by_key(visitors(wh.con, None), "user_id")  # users in id order: chunks are id ranges
        if served.pipeline() is None:  # load the models once, before the threads share them
            for s in served.specs:
                served.generator(s["name"])
    blank = _blank(wh.con, cfg, states)
    warm = by_key(states.filter(~pl.col("user_id").is_in(blank["user_id"].implode())), "user_id")
    size = cfg.serving.batch_chunk_users
    chunks = [warm["user_id"].slice(lo, size) for lo in range(0, warm.height, size)]
    now = now or _now()
    run_id = served.run_id

    def one(chunk: pl.Series) -> pl.DataFrame:
        inputs = Inputs(catalog, read_users(events, chunk), rows_of(states, "user_id", chunk))
        cur = wh.con.cursor()
        try:
            recs = recommend_users(cur, cfg, served, inputs, k, now=now)
        finally:
            cur.close()
        return recs.select(
            "user_id", "rank", "item_id", "score", "reason", "sources",
            run_id=pl.lit(run_id), created_at=pl.lit(now), state="state", strategy="strategy",
        )  # fmt: skip

    def copies() -> Iterator[tuple[int, pl.DataFrame]]:
        """The blank users' lists: per state, the list of its first user, copied in chunks."""
        for (_,), ids in blank.group_by("state", maintain_order=True):
            users = ids["user_id"]
            first = one(users.head(1)).drop("user_id")
            for lo in range(0, users.len(), size):
                part = users.slice(lo, size)
                yield part.len(), part.to_frame().join(first, how="cross").select(list(_COLS))

    def frames() -> Iterator[pl.DataFrame]:
        # progress is counted here, in the command's thread, as each chunk's lists arrive (in order)
        with scratch, progress.stage("rank users", total=states.height, unit="users"):
            if cfg.serving.batch_workers > 1 and len(chunks) > 1:
                with ThreadPoolExecutor(cfg.serving.batch_workers) as pool:
                    for chunk, frame in zip(chunks, pool.map(one, chunks), strict=True):
                        progress.advance(chunk.len())
                        yield frame
            else:
                for chunk in chunks:
                    frame = one(chunk)
                    progress.advance(chunk.len())
                    yield frame
            for n, frame in copies():
                progress.advance(n)
                yield frame

    return frames(), {"run_id": run_id, "users": states.height, "k": k, "created_at": now}


def _blank(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig, states: pl.DataFrame) -> pl.DataFrame:
    """user_id, state of the users ``recommend --all`` ranks once per state and copies: no event at all
    (so no model, feature, recent item or rule looks at anything of theirs), in no segment and named by
    no business rule. Their lists differ only by the user id (``tests/test_serving.py`` compares them
    with live answers); in a large shop most registered customers are such users."""
    import polars as pl

    named = {u for r in cfg.rules.business for u in r.users}
    if cfg.serving.segments_file.exists():
        named |= {u for (u,) in con.sql("SELECT DISTINCT user_id FROM segment_members").fetchall()}
    return states.filter(
        (pl.col("n_events") == 0)
        & ~pl.col("user_id").is_in(pl.Series(sorted(named), dtype=pl.String).implode())
    ).select("user_id", "state")


@contextmanager
def _parts_folder(cfg: RecctlConfig) -> Iterator[Path]:
    """A scratch folder beside the warehouse for a batch's parquet parts, removed afterwards."""
    import tempfile

    parent = cfg.warehouse.path.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".recctl-recs-", dir=parent) as tmp:
        yield Path(tmp)


def _finish(report: dict[str, Any], parts: list[Path], out: Path | None, t0: float) -> dict[str, Any]:
    """The batch's report, once the rows of ``parts`` are stored (and copied to ``out``, one parquet file)."""
    if out is not None and parts:
        import polars as pl

        with progress.stage(f"write {out.name}"):
            out.parent.mkdir(parents=True, exist_ok=True)
            pl.scan_parquet(parts).sink_parquet(out)
    seconds = time.perf_counter() - t0
    users = report["users"]
    return {**report, "seconds": round(seconds, 2), "users_per_s": round(users / seconds, 1) if seconds > 0 else None,
            "out": str(out) if out else None}  # fmt: skip


def write(
    con: duckdb.DuckDBPyConnection, rows: pl.DataFrame | list[Path] | None, *, keep: str | None = None,
    replace: str | None = None,
) -> None:  # fmt: skip
    """Replace the contents of ``recs`` with ``rows`` (a frame, or the parquet parts of ``rank_into``,
    which DuckDB reads as it inserts) in one transaction (None or no parts: empty it), keeping the rows of
    run ``keep`` when given (the promoted run, while ``rows`` come from the run about to replace it;
    ``replace``: that run's id, whose earlier rows go). Readers see the old lists or the new ones, never
    a mix; a failure leaves the old ones."""
    con.execute("BEGIN TRANSACTION")
    try:
        if keep is None:
            con.execute("DELETE FROM recs")
        else:
            con.execute("DELETE FROM recs WHERE run_id IS DISTINCT FROM ? OR run_id = ?", [keep, replace])
        if isinstance(rows, list):
            if rows:
                files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in rows)
                con.execute(
                    f"INSERT INTO recs ({', '.join(_COLS)}) SELECT {', '.join(_COLS)} FROM read_parquet([{files}])"
                )
        elif rows is not None and rows.height:
            con.register("_recctl_new_recs", rows.select(list(_COLS)))
            con.execute(
                f"INSERT INTO recs ({', '.join(_COLS)}) SELECT {', '.join(_COLS)} FROM _recctl_new_recs"
            )
            con.unregister("_recctl_new_recs")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
