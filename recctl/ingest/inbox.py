"""Events collected by `recctl serve` (``POST /v1/events``): checked with ingest's own rules, appended
durably to an inbox folder, loaded by ``recctl ingest events --inbox`` exactly once.

- :func:`check_events`: a batch → (accepted, rejected with reasons). It runs the very stage SELECT of
  ``recctl ingest`` (``recctl.ingest.stage.stage_sql`` over the identity mapping of the events table, the
  same ``[ingest]`` rules) on the batch written as JSON lines, so an event the service accepts is one
  ingest loads and an event it refuses gets ingest's reason.
- :class:`Inbox`: accepted events are appended as JSON lines to ``<inbox>/events-<time>-<pid>-<n>.ndjson.open``
  and fsync'd before the service answers 2xx; the file is closed (renamed to ``.ndjson``, the folder
  fsync'd) when it reaches ``ROTATE_BYTES`` or ``[service] inbox_rotate`` seconds (60), and when the
  server stops. A file left
  open by a process that died (kill -9) is closed by the next reader: its last line is cut if it was
  half written (never answered 2xx), the rest kept.
- :func:`ready_files` / :func:`done`: what ``ingest --inbox`` loads (closed files, oldest first), and the
  move of a loaded file into ``<inbox>/loaded/``. A file loaded twice (a crash between the commit and the
  move) adds nothing: the manifest knows its content and the events' keys are already present.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recctl import schema
from recctl.errors import DataError

if TYPE_CHECKING:
    import polars as pl

    from recctl.config import RecctlConfig

OPEN, CLOSED, LOADED = ".ndjson.open", ".ndjson", "loaded"
ROTATE_BYTES = 16 * 2**20
_LOCAL = threading.local()  # one in-memory DuckDB per thread for the checks (a connect costs ~14 ms)


def _checker() -> Any:
    con = getattr(_LOCAL, "con", None)
    if con is None:
        import duckdb

        con = _LOCAL.con = duckdb.connect()
        con.execute("SET threads = 1")  # one thread: the rows come back in the batch's order
    return con


def inbox_dir(cfg: RecctlConfig) -> Path:
    path = cfg.warehouse.path
    return cfg.service.inbox_dir or path.with_name(path.name + ".inbox")


def check_events(
    cfg: RecctlConfig, events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], pl.DataFrame | None]:
    """``events`` (objects in the events table's schema) → (accepted events as given, ``[{"index",
    "reason"}]``, the accepted item events typed as ingest types them, in the interaction frame's columns
    (``recctl.data.load_interactions``; None when there are none)). An event without ``ts`` is stamped with
    the time it arrived (UTC)."""
    import polars as pl

    from recctl.data import INTERACTION_COLUMNS as FRAME
    from recctl.ingest import rules_from
    from recctl.ingest.mapping import identity_mapping
    from recctl.ingest.sources import open_source
    from recctl.ingest.stage import stage_sql

    if not events:
        return [], [], None
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    stamped = [e if e.get("ts") not in (None, "") else {**e, "ts": now} for e in events]
    mapping = identity_mapping("events")
    with tempfile.TemporaryDirectory(prefix="recctl-events-") as tmp:
        path = Path(tmp) / "batch.ndjson"
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in stamped), encoding="utf-8")
        con = _checker()
        src = open_source(con, path, "ndjson", mapping.read)
        sql, carried, _ = stage_sql(con, src, mapping, rules_from(cfg))
        cols = ", ".join(c if c in carried else f"NULL::{schema.sql_type('events', c)} AS {c}" for c in FRAME)
        rows = con.sql(f"SELECT _reason, {cols} FROM ({sql})").pl()
    reasons = rows["_reason"].to_list()
    if len(reasons) != len(stamped):
        raise DataError(f"the batch of {len(stamped)} events read back as {len(reasons)} records",
                        hint="this is a recctl bug: please report it with the batch")  # fmt: skip
    accepted = [e for e, why in zip(stamped, reasons, strict=True) if why is None]
    rejected = [{"index": i, "reason": why} for i, why in enumerate(reasons) if why is not None]
    typed = rows.filter(pl.col("_reason").is_null() & pl.col("item_id").is_not_null()).select(
        pl.coalesce("user_id", pl.lit("session:") + pl.col("session_id")).alias("user_id"), *FRAME[1:]
    )
    return accepted, rejected, typed if typed.height else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Inbox:
    """One process's appender (thread-safe): every ``append`` is on disk when it returns."""

    def __init__(self, folder: Path, rotate_s: float = 60.0) -> None:
        self.folder = folder
        self.rotate_s = rotate_s
        self._lock = threading.Lock()
        self._file: Any = None
        self._path: Path | None = None
        self._opened = 0.0
        self._n = 0

    def append(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events).encode("utf-8")
        with self._lock:
            full = self._file is not None and self._file.tell() >= ROTATE_BYTES
            if self._file is None or full or time.monotonic() - self._opened >= self.rotate_s:
                self._rotate()
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        self._close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._path = self.folder / f"events-{stamp}-{os.getpid()}-{self._n}{OPEN}"
        self._file = open(self._path, "ab")  # noqa: SIM115 (kept open across appends)
        self._opened = time.monotonic()
        _fsync_dir(self.folder)

    def _close(self) -> None:
        if self._file is None or self._path is None:
            return
        self._file.close()
        self._file = None
        if self._path.stat().st_size:
            os.replace(self._path, self._path.with_name(self._path.name[: -len(OPEN)] + CLOSED))
        else:
            self._path.unlink()
        _fsync_dir(self.folder)
        self._path = None

    def tick(self) -> None:
        """Close the current file once it is ``rotate_s`` old, appended to or not (the server calls this
        periodically, so that ``ingest --inbox`` gets an idle server's events within that time)."""
        with self._lock:
            if self._file is not None and time.monotonic() - self._opened >= self.rotate_s:
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    return int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(path: Path) -> None:
    """Close a file its writer left open when it died: cut a half-written last line, keep the rest."""
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if keep:
        if len(keep) != len(data):
            with open(path, "r+b") as f:
                f.truncate(len(keep))
                os.fsync(f.fileno())
        os.replace(path, path.with_name(path.name[: -len(OPEN)] + CLOSED))
    else:
        path.unlink()
    _fsync_dir(path.parent)


def ready_files(folder: Path) -> list[Path]:
    """The closed inbox files, oldest first, after closing those of writers that died."""
    if not folder.exists():
        return []
    for p in folder.glob(f"*{OPEN}"):
        pid = _pid_of(p.name)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            _recover(p)
    return sorted(folder.glob(f"*{CLOSED}"))


def done(path: Path) -> None:
    """Move a loaded file out of the way (``loaded/``), so the next ``--inbox`` run does not read it."""
    target = path.parent / LOADED
    target.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, target / path.name)
    _fsync_dir(path.parent)
