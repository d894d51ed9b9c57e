"""Readers: every supported file format as one DuckDB relation of source columns.

CSV/TSV are read as all-VARCHAR so that a bad value becomes a reject row with a reason rather than a
failed cast; DuckDB's own rejects table catches rows it cannot parse at all (broken quoting, wrong
column count, bad encoding) with their raw text and line. JSON is read record by record as text, so
that malformed lines and non-object records are rejects too. Nothing is skipped silently.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from recctl.errors import ConfigError, DataError
from recctl.ingest.inputs import foreign_line_break
from recctl.ingest.mapping import FORMATS, ReadOptions

REJECTS_TABLE = "_recctl_rej_errors"
REJECTS_SCAN = "_recctl_rej_scans"
LINES_TABLE = "_recctl_lines"
#: A delimiter that does not occur in text lines: used to read a file one whole line per row.
_LINE_DELIM = "\x1f"
#: The header line is read to its end, up to this size (a wider one is refused, never cut).
MAX_HEADER_BYTES = 64 << 20

LineMode = Literal["csv", "column", "ordinal"]


@dataclass
class Source:
    path: Path
    format: str
    sql: str  # a relation (usable after FROM), aliased by the caller
    columns: dict[str, str] = field(default_factory=dict)  # name → DuckDB type
    raw_expr: str = "to_json(s)::VARCHAR"  # raw text of a record, over alias s
    error_expr: str = "NULL"  # reason the record is unusable before mapping, over alias s
    nested_expr: str | None = None  # list of source columns holding nested JSON, over alias s
    line_mode: LineMode = "csv"
    header_lines: int = 0
    parse_rejects: bool = False  # DuckDB's CSV rejects table applies
    empty: bool = False
    newline: str | None = None  # the line ending of the first line: DuckDB reads one style per file
    quote: str = ""  # the CSV quote character ('' for none)


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise ConfigError(f"unknown format {explicit!r}; use one of {', '.join(FORMATS)}")
        return explicit
    name = path.name.lower()
    for suffix in (".gz", ".gzip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    by_ext = {
        "csv": "csv", "tsv": "tsv", "tab": "tsv", "json": "json", "ndjson": "ndjson",
        "jsonl": "ndjson", "parquet": "parquet", "pq": "parquet",
    }  # fmt: skip
    if ext in by_ext:
        return by_ext[ext]
    raise ConfigError(
        f"cannot tell the format of {path} from its name",
        hint=f"pass --format or set [read] format in the mapping ({', '.join(FORMATS)})",
    )


def _head(path: Path, n: int = 4096, shown: Path | None = None) -> bytes:
    opener = gzip.open if path.name.lower().endswith((".gz", ".gzip")) else open
    try:
        with opener(path, "rb") as f:
            return bytes(f.read(n))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {shown or path}: {exc}") from exc


def _py_encoding(encoding: str) -> str:
    return {"latin-1": "latin_1", "utf-8": "utf-8-sig"}.get(encoding, encoding)


def _first_line(path: Path, encoding: str, shown: Path) -> str:
    """The first line as text, however long (up to MAX_HEADER_BYTES), without its end (LF, CRLF or a lone
    CR: DuckDB reads all three)."""
    try:
        with path.open(encoding=_py_encoding(encoding), errors="surrogateescape", newline=None) as f:
            line = f.readline(MAX_HEADER_BYTES + 1)
    except UnicodeError as exc:  # utf-16 without a valid start
        raise DataError(f"{shown}: the first line is not {encoding} text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    if len(line) > MAX_HEADER_BYTES:
        raise DataError(f"{shown}: the first line is longer than {MAX_HEADER_BYTES >> 20} MiB")
    line = line.removesuffix("\n")
    if any("\udc80" <= ch <= "\udcff" for ch in line):
        raise DataError(f"{shown}: the first line is not {encoding} text")
    return line.lstrip("\ufeff")


def newline_style(path: Path, encoding: str) -> str | None:
    """The first line's ending: LF, CRLF or CR (None for one line without an ending, or UTF-16)."""
    if encoding == "utf-16":
        return None
    seen = 0
    with path.open("rb") as f:
        while seen <= MAX_HEADER_BYTES and (chunk := f.read(1 << 16)):
            cut = min((i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0), default=-1)
            if cut >= 0:
                if chunk[cut : cut + 1] == b"\n":
                    return "\n"
                nxt = chunk[cut + 1 : cut + 2] or f.read(1)
                return "\r\n" if nxt == b"\n" else "\r"
            seen += len(chunk)
    return None


def _describe(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> dict[str, str]:
    try:
        rows = con.sql(f"DESCRIBE SELECT * FROM {sql}").fetchall()
    except (duckdb.Error, UnicodeDecodeError) as exc:  # DuckDB quotes raw bytes in some messages
        raise DataError(f"cannot read {path}: {_error_line(exc)}") from exc
    return {str(r[0]): str(r[1]) for r in rows}


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "DuckDB's reader stopped at bytes that are not valid UTF-8"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lines_reader(data: Path, read: ReadOptions) -> str:
    """The file as one VARCHAR column ``_line``, one row per line, no quoting, rejects captured."""
    return (
        f"read_csv({sql_str(str(data))}, columns={{'_line': 'VARCHAR'}}, header=false, "
        f"delim={sql_str(_LINE_DELIM)}, quote='', escape='', auto_detect=false, "
        f"encoding={sql_str(read.encoding)}, store_rejects=true, "
        f"rejects_table={sql_str(REJECTS_TABLE)}, rejects_scan={sql_str(REJECTS_SCAN)})"
    )


def json_pointer(key: str) -> str:
    """``key`` as a JSON pointer (RFC 6901) in SQL: ``$x``, ``a.b`` or ``0`` are keys, never JSONPath."""
    return sql_str("/" + key.replace("~", "~0").replace("/", "~1"))


def _json_columns(con: duckdb.DuckDBPyConnection, records_sql: str, path: Path) -> list[str]:
    try:
        rows = con.sql(
            f"SELECT k FROM (SELECT unnest(_keys) AS k FROM {records_sql}) GROUP BY k ORDER BY min(k)"
        ).fetchall()
    except (duckdb.Error, UnicodeDecodeError) as exc:  # DuckDB quotes raw bytes in some messages
        raise DataError(f"cannot read {path}: {_error_line(exc)}") from exc
    return [str(r[0]) for r in rows]


def _json_source(
    con: duckdb.DuckDBPyConnection, path: Path, data: Path, fmt: str, read: ReadOptions
) -> Source:
    if fmt == "ndjson":
        base = f"(SELECT _line FROM {_lines_reader(data, read)} WHERE trim(_line) <> '')"
        line_mode: LineMode = "csv"
        parse_rejects = True
    else:
        base = f"(SELECT json::VARCHAR AS _line FROM read_json_objects({sql_str(str(data))}, format='array'))"
        line_mode, parse_rejects = "ordinal", False
    # a key given twice in one object: which value is meant is undefined, so the record is rejected
    records = (
        "(SELECT _line, _rec, _keys, CASE WHEN NOT _valid THEN 'invalid JSON' "
        "WHEN _rec IS NULL THEN 'record is not a JSON object' "
        "WHEN len(_keys) <> len(list_distinct(_keys)) THEN 'a key appears twice in the record: ' || "
        "array_to_string(list_distinct(list_filter(_keys, lambda k, i: list_position(_keys, k) < i)), ', ') "
        "END AS _src_error FROM (SELECT *, json_keys(_rec) AS _keys FROM "
        "(SELECT _line, _valid, CASE WHEN _valid AND json_type(_line::JSON) = 'OBJECT' THEN _line::JSON END "
        f"AS _rec FROM (SELECT _line, json_valid(_line) AS _valid FROM {base}))))"
    )
    # an empty key can be neither named in SQL nor mapped: like any unmapped key it stays in the raw text
    keys = [k for k in _json_columns(con, records, path) if k]
    _check_names(keys, path)
    cols = ", ".join(f"_rec->>{json_pointer(k)} AS {ident(k)}" for k in keys)
    nested = (
        "list_filter(_keys, lambda k: json_type(_rec -> ('/' || replace(replace(k, '~', '~0'), '/', '~1'))) "
        "IN ('OBJECT', 'ARRAY'))"
        if keys
        else "[]::VARCHAR[]"
    )
    sql = f"(SELECT {cols + ', ' if cols else ''}{nested} AS _nested, _src_error, _line FROM {records})"
    return Source(
        path, fmt, sql, columns=dict.fromkeys(keys, "VARCHAR"), raw_expr="s._line",
        error_expr="s._src_error", nested_expr="s._nested", line_mode=line_mode,
        parse_rejects=parse_rejects,
    )  # fmt: skip


def _check_names(names: list[str], path: Path) -> None:
    """Column names DuckDB can hold apart: no NUL character, no two that differ only in case."""
    for i, n in enumerate(names, 1):
        if "\x00" in n:
            raise DataError(
                f"{path}: column {i} ({n.replace(chr(0), '<NUL>')[:80]!r}) has a NUL byte in its name"
            )
    seen: dict[str, str] = {}
    for n in names:
        other = seen.setdefault(n.lower(), n)
        if other != n:
            raise DataError(
                f"{path}: the columns {other[:80]!r} and {n[:80]!r} differ only in case (DuckDB cannot tell "
                "them apart)"
            )


def _header_fields(path: Path, data: Path, read: ReadOptions) -> tuple[list[str], str]:
    """Column names from the first line, and the delimiter (given, or the likeliest of , ; tab |).

    The header is parsed here rather than by DuckDB's sniffer: one broken quote further down must not
    change how the whole file is read.
    """
    text = _first_line(data, read.encoding, path)
    delim = read.delimiter
    if delim is None:
        counts = {d: text.count(d) for d in (",", ";", "\t", "|")}
        delim = max(counts, key=lambda d: (counts[d], d == ","))
    quote = read.quote if read.quote is not None else '"'
    try:
        row = next(csv.reader([text], delimiter=delim, quotechar=quote or None, strict=True), [])
    except csv.Error as exc:
        raise DataError(f"{path}: the first line cannot be read as CSV ({exc}): {text[:80]!r}") from exc
    if read.header:
        names = [c.strip() for c in row]
        if not names or any(not n for n in names):
            raise DataError(f"{path}: the header line has an empty column name: {text[:200]!r}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{path}: the header repeats column names: {', '.join(dupes)[:200]}")
    else:
        names = [f"column{i}" for i in range(len(row))]
    if read.column_names:
        if len(read.column_names) != len(names):
            raise DataError(
                f"{path}: the mapping names {len(read.column_names)} columns, the file has {len(names)}"
            )
        names = list(read.column_names)
    _check_names(names, path)
    return names, delim


def _csv_source(
    con: duckdb.DuckDBPyConnection, path: Path, data: Path, fmt: str, read: ReadOptions, cr_free: bool
) -> Source:
    if fmt == "tsv" and read.delimiter is None:
        read = read.model_copy(update={"delimiter": "\t"})
    names, delim = _header_fields(path, data, read)
    quote = read.quote if read.quote is not None else '"'
    columns = "{" + ", ".join(f"{sql_str(n)}: 'VARCHAR'" for n in names) + "}"
    opts = [
        "auto_detect=false",
        f"columns={columns}",
        f"header={'true' if read.header else 'false'}",
        f"delim={sql_str(delim)}",
        f"quote={sql_str(quote)}",
        f"escape={sql_str(quote)}",
        f"encoding={sql_str(read.encoding)}",
        "store_rejects=true",
        f"rejects_table={sql_str(REJECTS_TABLE)}",
        f"rejects_scan={sql_str(REJECTS_SCAN)}",
    ]
    sql = f"read_csv({sql_str(str(data))}, {', '.join(opts)})"
    newline = newline_style(data, read.encoding)
    # an LF file without any CR byte (known from the hashing pass) has no other line break to find
    skip = cr_free and newline == "\n"
    if newline is not None and not skip and (line := foreign_line_break(data, newline, quote)) is not None:
        names_ = {"\n": "LF", "\r": "CR", "\r\n": "CRLF"}
        raise DataError(
            f"{path}: mixed line endings: the lines end in {names_[newline]}, but line {line} ends in another "
            "line break outside a quoted value, and DuckDB reads one line ending per file (records would run "
            "together); convert the file to one line ending (e.g. with dos2unix)"
        )
    return Source(
        path, fmt, sql, columns=dict.fromkeys(names, "VARCHAR"), line_mode="csv",
        header_lines=1 if read.header else 0, parse_rejects=True, newline=newline, quote=quote,
    )  # fmt: skip


def _sequences_source(con: duckdb.DuckDBPyConnection, path: Path, data: Path, read: ReadOptions) -> Source:
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {LINES_TABLE} AS SELECT _line FROM {_lines_reader(data, read)}"
    )
    sep = sql_str(read.separator)
    start = sql_str(read.sequence_start.isoformat(sep=" "))
    sql = (
        "(SELECT _lineno, _line, tokens[1] AS user_id, unnest(items) AS item_id, "
        "generate_subscripts(items, 1) AS position, "
        f"TIMESTAMP {start} + to_seconds(generate_subscripts(items, 1) * {int(read.step_seconds)}) AS ts "
        "FROM (SELECT _rid - (SELECT min(rowid) FROM " + LINES_TABLE + ") + 1 AS _lineno, _line, tokens, "
        "CASE WHEN len(tokens) < 2 THEN [NULL::VARCHAR] ELSE tokens[2:] END AS items "
        f"FROM (SELECT rowid AS _rid, _line, list_filter(string_split(trim(_line), {sep}), lambda t: t <> '') AS tokens "
        f"FROM {LINES_TABLE} WHERE trim(_line) <> '')))"
    )
    cols = {"user_id": "VARCHAR", "item_id": "VARCHAR", "position": "BIGINT", "ts": "TIMESTAMP"}
    return Source(
        path, "sequences", sql, columns=cols, raw_expr="s._line", line_mode="column", parse_rejects=True
    )


def _keyed_json_source(con: duckdb.DuckDBPyConnection, path: Path, data: Path, read: ReadOptions) -> Source:
    k, v = ident(read.key_column), ident(read.value_column)
    # Each raw document is parsed once into a MAP (keys stay in document order; a JSON null value
    # becomes NULL). `j -> key` per key re-parsed the whole document for every key (quadratic: 85 s for
    # a 650 KB object), and json_each over a JSON string is just as slow in DuckDB 2.0.
    sql = (
        f"(SELECT unnest(map_keys(m)) AS {k}, CAST(unnest(map_values(m)) AS VARCHAR) AS {v} FROM "
        f"(SELECT CAST(json AS MAP(VARCHAR, JSON)) AS m FROM read_json_objects({sql_str(str(data))}, "
        "format='unstructured') WHERE json_type(json) = 'OBJECT'))"
    )
    cols = {read.key_column: "VARCHAR", read.value_column: "VARCHAR"}
    _describe(con, sql, path)
    # a document that is not an object has no key/value pairs to reject one by one: refuse the file
    # rather than skip it silently
    others = con.execute(
        f"SELECT count(*), any_value(json_type(json)) FROM read_json_objects({sql_str(str(data))}, "
        "format='unstructured') WHERE json_type(json) <> 'OBJECT'"
    ).fetchall()[0]
    if others[0]:
        raise DataError(
            f"{path}: {others[0]} top-level JSON value(s) are not objects (e.g. {others[1]}); a keyed_json "
            "file is one or more objects of key → value"
        )
    return Source(path, "keyed_json", sql, columns=cols, line_mode="ordinal")


def open_source(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, read: ReadOptions, data: Path | None = None,
    *, cr_free: bool = False,
) -> Source:  # fmt: skip
    """Describe ``path`` as a relation of source columns, read from ``data`` (its verified plain copy
    when it is compressed; default: ``path`` itself). ``cr_free``: ``data`` is known to hold no CR byte.
    Raises DataError for unreadable files."""
    data = data or path
    if fmt != "parquet" and not _head(data, shown=path).strip():
        return Source(path, fmt, "(SELECT 1 WHERE false)", empty=True)
    if fmt == "json" and _head(data, shown=path).lstrip()[:1] == b"{":
        fmt = "ndjson"  # a .json file of JSON lines
    con.execute(f"DROP TABLE IF EXISTS {REJECTS_TABLE}")
    con.execute(f"DROP TABLE IF EXISTS {REJECTS_SCAN}")
    if fmt in ("csv", "tsv"):
        return _csv_source(con, path, data, fmt, read, cr_free)
    if fmt in ("json", "ndjson"):
        return _json_source(con, path, data, fmt, read)
    if fmt == "parquet":
        sql = f"read_parquet({sql_str(str(data))})"
        columns = _describe(con, sql, path)
        _check_names(list(columns), path)
        return Source(path, fmt, sql, columns=columns, line_mode="ordinal")
    if fmt == "sequences":
        return _sequences_source(con, path, data, read)
    if fmt == "keyed_json":
        return _keyed_json_source(con, path, data, read)
    raise ConfigError(f"unknown format {fmt!r}")
