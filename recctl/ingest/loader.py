"""Loading one file: read → stage → rejects → dedupe or upsert → manifest, in one transaction.

A process killed mid-file leaves nothing of that file (DuckDB rolls the open transaction back), and the
manifest has no 'ok' row for it, so the next run loads it completely.

The four counts are measured separately: read is what the reader produced (records plus the lines it
could not parse), loaded what the insert wrote, rejected the rows written to ingest_rejects, duplicate
the rows found already present or superseded. read = loaded + rejected + duplicate is then a real check;
a file for which it fails is rolled back and reported failed, never recorded as loaded.

A file that cannot be read or loaded is a 'failed' manifest row with the reason and the batch goes on;
an interrupt (Ctrl-C, SIGTERM, DuckDB's InterruptException) rolls the file back and propagates.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from recctl.errors import DataError, RecctlError, WarehouseError
from recctl.ingest import write
from recctl.ingest.inputs import Input, Scan, check_regular, prepared, scan_file, stamp
from recctl.ingest.mapping import Mapping, content_hash
from recctl.ingest.sources import (
    LINES_TABLE,
    REJECTS_SCAN,
    REJECTS_TABLE,
    detect_format,
    ident,
    open_source,
    sql_str,
)
from recctl.ingest.stage import Rules, stage_sql
from recctl.ingest.write import STAGE, scalar
from recctl.schema import INGEST_FILES_COLUMNS


@dataclass
class FileResult:
    path: str
    target: str
    status: str  # loaded | unchanged | failed
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    seconds: float = 0.0
    message: str = ""
    #: what a person should know about a loaded file (also printed on stderr by the CLI)
    warnings: list[str] = field(default_factory=list)
    #: rejected rows per kind of reason ("missing ts": 2), most frequent first; a row with two
    #: reasons counts under both
    reject_reasons: dict[str, int] = field(default_factory=dict)
    #: rows_rejected / rows_read reached [ingest] max_reject_share (set by ``ingest``): exit 65
    reject_share_exceeded: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def previous_load(
    con: duckdb.DuckDBPyConnection, sha: str, target: str
) -> tuple[str, datetime, str | None] | None:
    """The latest successful load of this content into ``target``: path, time and mapping hash."""
    rows = con.execute(
        "SELECT path, finished_at, mapping_sha256 FROM ingest_files WHERE sha256 = ? AND target = ? "
        "AND status = 'ok' ORDER BY finished_at DESC LIMIT 1",
        [sha, target],
    ).fetchall()
    return (str(rows[0][0]), rows[0][1], rows[0][2]) if rows else None


_MANIFEST_COLUMNS = ", ".join(c.name for c in INGEST_FILES_COLUMNS)


def _record(
    con: duckdb.DuckDBPyConnection, r: FileResult, sha: str | None, mapping: Mapping, started: datetime
) -> None:
    con.execute(
        f"INSERT INTO ingest_files ({_MANIFEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [r.path, sha, r.target, mapping.source, r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_duplicate,
         started, datetime.now(UTC).replace(tzinfo=None), "ok" if r.status != "failed" else "failed",
         r.message or None, content_hash(mapping)],
    )  # fmt: skip


#: one reject reason → its kind: timestamps, then ": value" and a trailing quoted value dropped
_REASON_KINDS = (
    "SELECT k, count(*) AS n FROM (SELECT lower(trim(regexp_replace(regexp_replace(regexp_replace("
    r"part, ' ?\d{4}-\d\d-\d\d([ T][0-9:.]+)?', '', 'g'), ':.*$', ''), ' ''.*''$', ''))) AS k "
    "FROM (SELECT unnest(string_split(reason, '; ')) AS part FROM ingest_rejects "
    "WHERE source_file = ? AND target = ?)) GROUP BY k ORDER BY n DESC, k"
)


def reject_reasons(con: duckdb.DuckDBPyConnection, path: str, target: str) -> dict[str, int]:
    """The file's rejected rows per kind of reason ("missing ts", "price is not a number"), in SQL."""
    return {str(k): int(n) for k, n in con.execute(_REASON_KINDS, [path, target]).fetchall()}


def one_line(text: str) -> str:
    """A message as one printable line: names and values from a file may hold line breaks or NULs."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _quietly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Clean-up that must not hide the error being handled (a ROLLBACK after a failed COMMIT has no
    transaction left: "cannot rollback - no transaction is active" is not the news)."""
    with contextlib.suppress(duckdb.Error):
        con.execute(sql)


def _reason(exc: BaseException, inp: Input | None, path: Path) -> str:
    if isinstance(exc, RecctlError):
        text = exc.message
    elif isinstance(exc, UnicodeDecodeError):  # the DuckDB error message itself quoted invalid bytes
        text = f"{path}: DuckDB's reader stopped at bytes that are not valid UTF-8"
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        text = first if str(path) in first else f"{path}: {first}"
    if inp is not None and inp.data_path != path:
        text = text.replace(str(inp.data_path), str(path))
    return text


def _stage_counts(con: duckdb.DuckDBPyConnection, mapping: Mapping, cols: list[str]) -> tuple[int, list[str]]:
    """One scan of the stage table: its rows and the mapped (not constant) columns with no
    value in any good row (worth saying: it is often a typo)."""
    given = [c for c in cols if c not in mapping.constants]
    good = "count(*) FILTER (WHERE _reason IS NULL)"
    counts = con.execute(
        f"SELECT count(*), {good}"
        + "".join(f", count({ident(c)}) FILTER (WHERE _reason IS NULL)" for c in given)
        + f" FROM {STAGE}"
    ).fetchall()[0]
    rows, n_good = int(counts[0]), int(counts[1])
    empty = [
        f"{c} (from {mapping.columns.get(c, c)!r}) is empty in every loaded row"
        for c, n in zip(given, counts[2:], strict=True)
        if not n
    ]
    return rows, empty if n_good else []


def _load(
    con: duckdb.DuckDBPyConnection, inp: Input, mapping: Mapping, rules: Rules, fmt: str | None,
    result: FileResult, started: datetime,
) -> None:  # fmt: skip
    """Everything of one file inside the open transaction; fills ``result``."""
    path, target = inp.path, mapping.target
    # the rejects of an earlier read of this file are superseded by this read's
    con.execute("DELETE FROM ingest_rejects WHERE source_file = ? AND target = ?", [str(path), target])
    con.execute(f"SET TimeZone = {sql_str(mapping.timestamp.timezone)}")
    kind = detect_format(path, fmt or mapping.read.format)
    src = open_source(con, path, kind, mapping.read, inp.data_path, cr_free=inp.cr_free)
    if src.empty:
        result.message = "empty file: no records"
        result.warnings.append(result.message)
        return
    sql, cols, warnings = stage_sql(con, src, mapping, rules)
    result.warnings += warnings
    if src.format != "sequences":
        con.execute(f"DROP TABLE IF EXISTS {REJECTS_TABLE}")
        con.execute(f"DROP TABLE IF EXISTS {REJECTS_SCAN}")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {sql}")
    except duckdb.InterruptException:
        raise
    except (duckdb.Error, UnicodeDecodeError) as exc:
        why = _reason(exc, inp, path)
        if "state machine reached an invalid state" in why:
            why += " (the file mixes line endings LF, CRLF and CR, or has a CR inside an unquoted value)"
        raise DataError(why) from exc
    con.execute("SET TimeZone = 'UTC'")
    parse_rejected = write.insert_parse_rejects(con, src, target, started)
    write.check_line_endings(con, src)
    stage_rows, empty = _stage_counts(con, mapping, cols)
    write.insert_stage_rejects(con, src, target, started)
    if target == "events":
        loaded, duplicate = write.load_events(con, cols, str(path), started)
    else:
        loaded, duplicate = write.upsert(con, target, cols, str(path), started)
    rejected = scalar(
        con, "SELECT count(*) FROM ingest_rejects WHERE source_file = ? AND target = ?", [str(path), target]
    )
    read = stage_rows + parse_rejected
    if read != loaded + rejected + duplicate:
        raise DataError(
            f"{path}: the counts do not reconcile (read {read} ≠ loaded {loaded} + rejected {rejected} + "
            f"duplicate {duplicate}); nothing of it was loaded",
            hint="this is a recctl bug: please report it with the file",
        )
    result.rows_read, result.rows_loaded = read, loaded
    result.rows_rejected, result.rows_duplicate = rejected, duplicate
    if rejected:
        result.reject_reasons = reject_reasons(con, str(path), target)
    if read == 0:
        result.message = "no records (header only?)"
        result.warnings.append(result.message)
    result.warnings += empty


_TEMP_TABLES = (STAGE, "_recctl_perr", "_recctl_pshift", "_recctl_dups", "_recctl_drop", "_recctl_win",
                "_recctl_upd", REJECTS_TABLE, REJECTS_SCAN, LINES_TABLE)  # fmt: skip


def _fail(
    con: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping, message: str, sha: str | None,
    started: datetime, t0: float,
) -> FileResult:  # fmt: skip
    """The manifest row of a file that could not be loaded; when even that cannot be written (disk full,
    a broken warehouse) the batch stops: nothing further could be recorded either."""
    message = one_line(message)
    result = FileResult(str(path), mapping.target, "failed", message=message)
    result.seconds = round(time.perf_counter() - t0, 3)
    try:
        _record(con, result, sha, mapping, started)
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        second = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WarehouseError(
            f"{message} (and the failure could not be recorded in the warehouse: {second})"
        ) from exc
    return result


def _unchanged(inp: Input, scan: Scan) -> None:
    """A plain file DuckDB read in place must still be the one hashed: same size, mtime and inode."""
    try:
        same = inp.compressed or stamp(inp.path) == scan.stamp
    except OSError:
        same = False
    if not same:
        raise DataError(f"{inp.path} changed while it was being read; run the ingest again")


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    mapping: Mapping,
    rules: Rules,
    *,
    fmt: str | None = None,
    force: bool = False,
) -> FileResult:
    target = mapping.target
    t0 = time.perf_counter()
    started = datetime.now(UTC).replace(tzinfo=None)
    result = FileResult(str(path), target, "loaded")
    sha: str | None = None
    try:
        check_regular(path)
        try:
            scan = scan_file(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        sha = scan.sha256
    except DataError as exc:
        return _fail(con, path, mapping, exc.message, sha, started, t0)
    prev = previous_load(con, sha, target)
    if not force and prev is not None and prev[2] == content_hash(mapping):
        result.status = "unchanged"
        result.message = (
            f"same content already loaded from {prev[0]} at {prev[1]:%Y-%m-%d %H:%M:%S} with the same mapping"
        )
        return result
    if not force and prev is not None:  # the file is the same, what the mapping makes of it is not
        result.message = f"re-read: loaded from {prev[0]} at {prev[1]:%Y-%m-%d %H:%M:%S} with " + (
            "another mapping content" if prev[2] else "a recctl that did not record the mapping"
        )
    inp: Input | None = None
    try:
        with prepared(path, scan) as inp:
            if inp.sha256 != sha:
                raise DataError(f"{path} changed while it was being read; run the ingest again")
            con.execute("BEGIN TRANSACTION")
            try:
                _load(con, inp, mapping, rules, fmt, result, started)
                _unchanged(inp, scan)
                result.warnings = [one_line(w) for w in result.warnings]
                result.seconds = round(time.perf_counter() - t0, 3)
                _record(con, result, sha, mapping, started)
                con.execute("COMMIT")
            except BaseException:
                _quietly(con, "ROLLBACK")
                raise
            finally:
                _quietly(con, "SET TimeZone = 'UTC'")
                for t in _TEMP_TABLES:
                    _quietly(con, f"DROP TABLE IF EXISTS {t}")
    except duckdb.InterruptException:
        raise
    except (RecctlError, duckdb.Error, UnicodeDecodeError) as exc:
        from recctl.warehouse.integrity import classify

        if (damaged := classify(exc)) is not None:  # the warehouse, not this file: stop the batch
            raise damaged from exc
        return _fail(con, path, mapping, _reason(exc, inp, path), sha, started, t0)
    return result
