"""What the HTTP service answers from: a snapshot of the warehouse and the promoted run, swapped when
either changes.

A long-lived server must not hold the DuckDB file: DuckDB refuses a read-write open while another process
has it open, so cron's ``ingest``, ``train`` and ``recommend --all`` would fail. The service therefore
opens the warehouse read-only only to copy it — the tables the serving functions read, into a DuckDB
file of its own (the events sorted by user, so that one visitor's events are one row group of the scan)
in a folder named after what it holds — and answers from that file, opened read-only by each worker.
The copy of Complete Journey (1.47 M events) takes under two seconds, inside a writer's wait for
readers (``recctl.warehouse.connection.READER_GRACE``, 5 s); a shop whose copy takes longer makes a
writer that starts meanwhile exit 75 (retry), never wait forever.

:class:`Holder` keeps the current :class:`Snapshot` and checks every ``[service] reload_interval``
seconds whether the promoted run or the warehouse file changed; if so it builds the next snapshot and
loads the run's models *before* swapping, so no request waits for a model load or sees half of a
change, and none fails: a request holds the snapshot it started with, and the previous snapshot's
files are kept until the one after it replaces them. A snapshot that cannot be taken (a writer has
the file) is retried at the next check while the current one goes on serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recctl import runs
from recctl.errors import NotTrainedError, RecctlError

if TYPE_CHECKING:
    import duckdb

    from recctl.config import RecctlConfig
    from recctl.serving.served import Served
    from recctl.warehouse import Warehouse

#: the tables the serving functions read (recctl/serving, recctl/rules): nothing else is copied (not the
#: ingest log, the evaluation history or the offline feature tables)
SERVED = ("events", "items", "users", "recs", "segment_members")
DB = "serve.duckdb"
ORDER = {"events": "user_id, ts", "recs": "user_id, rank"}
#: an online store of at most this many rows is also held as a dict by user (a stored list is then a
#: lookup, ~0.05 ms, against ~1.6 ms for the query); a larger one is read by the query, one row group of
#: the user-sorted table per request
INDEX_ROWS = 1_000_000
DONE = "SNAPSHOT_OK"


def snapshot_root(cfg: RecctlConfig) -> Path:
    path = cfg.warehouse.path
    return cfg.service.snapshot_dir or path.with_name(path.name + ".serve")


def fingerprint(cfg: RecctlConfig) -> tuple[str | None, tuple[int, ...]]:
    """What a snapshot is of: the promoted run id and the warehouse file's (and WAL's) size, mtime, inode."""
    stamp: list[int] = []
    for p in (cfg.warehouse.path, Path(f"{cfg.warehouse.path}.wal")):
        try:
            st = p.stat()
            stamp += [st.st_size, st.st_mtime_ns, st.st_ino]
        except FileNotFoundError:
            stamp += [-1, -1, -1]
    return runs.promoted(cfg.runs_dir), tuple(stamp)


def _name(fp: tuple[str | None, tuple[int, ...]]) -> str:
    return hashlib.sha256(repr(fp).encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """One consistent view: the served run, its models loaded, and the warehouse copy it ranks from."""

    run_id: str | None
    folder: Path
    con: duckdb.DuckDBPyConnection
    served: Served | None
    taken_at: datetime
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)
    #: the online store by user: (item_id, rank, score, sources, reason, state, strategy, run_id,
    #: created_at) rows by rank, so a stored list is a dict lookup (recs holds k rows per user)
    recs: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[Warehouse]:
        """A per-request cursor shaped like an open read-only warehouse (what the serving functions take);
        ``path`` is the snapshot folder, so per-process caches keyed by it start afresh with each snapshot."""
        from recctl.warehouse import Warehouse

        cur = self.con.cursor()
        try:
            yield Warehouse(cur, self.folder, read_only=True)
        finally:
            cur.close()

    def stored(self, user_id: str, run_id: str, max_age: str, k: int) -> dict[str, Any] | None:
        """``recctl.serving.store.stored`` from the in-memory index of the snapshot's online store: the same
        rows, filter and document, without a query per request."""
        from recctl.config import parse_duration
        from recctl.serving.store import stored_document

        if not self.recs:  # no index (an empty or a large store): the query
            from recctl.serving.store import stored

            with self.warehouse() as wh:
                return stored(wh.con, user_id, run_id, max_age, k)
        rows = self.recs.get(user_id)
        if not rows:
            return None
        since = datetime.now(UTC).replace(tzinfo=None) - parse_duration(max_age)
        return stored_document([r[:7] for r in rows if r[7] == run_id and r[8] > since][:k])

    def describe(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "snapshot": self.folder.name, "taken_at": self.taken_at.isoformat(),
                "seconds": round(self.seconds, 3), "tables": self.tables}  # fmt: skip


def _copy(cfg: RecctlConfig, dest: Path) -> dict[str, int]:
    """The served tables of the warehouse into ``dest/serve.duckdb``, in one short read-only open."""
    from recctl.warehouse import open_reader

    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")  # each worker process copies into its own
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    target = str(tmp / DB).replace("'", "''")
    counts: dict[str, int] = {}
    with open_reader(cfg, wait=0.0) as wh:
        present = {r[0] for r in wh.con.sql(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND NOT temporary"
        ).fetchall()}  # fmt: skip
        wh.con.execute(f"ATTACH '{target}' AS _recctl_snap (READ_WRITE)")
        try:
            for name in (n for n in SERVED if n in present):
                order = f" ORDER BY {ORDER[name]}" if name in ORDER else ""
                wh.con.execute(f"CREATE TABLE _recctl_snap.{name} AS SELECT * FROM {name}{order}")
                counts[name] = int(wh.con.sql(f"SELECT count(*) FROM _recctl_snap.{name}").fetchall()[0][0])
        finally:
            wh.con.execute("DETACH _recctl_snap")
    (tmp / DONE).write_text("".join(f"{k}\t{v}\n" for k, v in counts.items()))
    try:
        tmp.rename(dest)
    except OSError:  # another worker finished the same snapshot first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _counts(folder: Path) -> dict[str, int]:
    lines = (folder / DONE).read_text().splitlines()
    return {k: int(v) for k, v in (line.split("\t") for line in lines if line)}


def _open(cfg: RecctlConfig, folder: Path) -> duckdb.DuckDBPyConnection:
    """The snapshot file read-only (each worker process opens it; none can change it)."""
    import duckdb

    from recctl.warehouse.settings import apply_settings

    con = duckdb.connect(str(folder / DB), read_only=True)
    apply_settings(con, cfg)
    return con


def take(cfg: RecctlConfig) -> Snapshot:
    """The snapshot of what is promoted and stored now (reusing a finished folder of the same state), with
    the run's models loaded. NotTrainedError when nothing is promoted; LockHeldError while a writer has
    the warehouse."""
    from recctl.serving.served import promoted

    t0 = time.perf_counter()
    fp = fingerprint(cfg)
    if fp[0] is None:
        raise NotTrainedError("no promoted run to serve", hint="run `recctl train` first")
    folder = snapshot_root(cfg) / _name(fp)
    if not (folder / DONE).exists():
        _copy(cfg, folder)
    tables = _counts(folder)
    con = _open(cfg, folder)
    served = promoted(cfg.runs_dir)
    if served.pipeline_name is not None:
        served.pipeline()  # loaded before the swap: no request pays for it
    recs: dict[str, list[tuple[Any, ...]]] = {}
    if 0 < tables.get("recs", 0) <= INDEX_ROWS:
        for row in con.sql(
            "SELECT user_id, item_id, rank, score, sources, reason, state, strategy, run_id, created_at FROM recs "
            "ORDER BY user_id, rank"
        ).fetchall():
            recs.setdefault(row[0], []).append(row[1:])
    return Snapshot(served.run_id, folder, con, served, datetime.now(UTC), time.perf_counter() - t0, tables,
                    recs)  # fmt: skip


class Holder:
    """The current snapshot and the thread that replaces it when the run or the warehouse changes."""

    def __init__(self, cfg: RecctlConfig) -> None:
        self.cfg = cfg
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._fp: tuple[str | None, tuple[int, ...]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: called with each new snapshot once it serves (the recent events drop what it holds)
        self.on_swap: list[Callable[[Snapshot], None]] = []

    def refresh(self) -> bool:
        """Take a new snapshot when the state changed since the current one; True when it swapped."""
        with self._lock:
            fp = fingerprint(self.cfg)
            if self.current is not None and fp == self._fp:
                return False
            try:
                snap = take(self.cfg)
            except RecctlError as exc:  # a writer has the file, nothing promoted yet: keep what we have
                self.last_error = exc.message
                return False
            previous, self.current, self._fp = self.current, snap, fp
            self.last_error = None
            self.reloads += 1
            self._sweep(keep={snap.folder, previous.folder if previous else snap.folder})
        for hook in self.on_swap:
            hook(snap)
        return True

    def _sweep(self, keep: set[Path]) -> None:
        """Old snapshot folders go: not the current or the previous one (requests may still read it), nor
        any finished within the last minute or ten reload intervals (another worker may serve it)."""
        root = snapshot_root(self.cfg)
        young = time.time() - max(60.0, 10 * self.cfg.service.reload_interval)
        for p in root.iterdir() if root.exists() else ():
            if not p.is_dir() or p in keep:
                continue
            with contextlib.suppress(OSError):
                done = p / DONE
                if (done.stat().st_mtime if done.exists() else p.stat().st_mtime) < young:
                    shutil.rmtree(p, ignore_errors=True)

    def start(self) -> None:
        """Watch in the background; the first snapshot too, so /healthz answers while it is taken."""
        self._thread = threading.Thread(target=self._watch, name="recctl-snapshot", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        first = True
        while first or not self._stop.wait(self.cfg.service.reload_interval):
            first = False
            try:
                self.refresh()
            except Exception as exc:  # the watcher never dies: the error is kept for /readyz and said once
                why = f"{type(exc).__name__}: {exc}"
                if why != self.last_error:
                    print(f"recctl serve: snapshot failed: {why}", file=sys.stderr, flush=True)
                self.last_error = why

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
