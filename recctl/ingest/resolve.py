"""Mapping values resolved against one file's columns: a source column, a checked expression, or a
column the file lacks (refused, unless earlier loads filled it); and the whole-file checks on the result
(required columns present, an items or users file that is really events)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from recctl import schema
from recctl.errors import ConfigError, DataError
from recctl.ingest import guard
from recctl.ingest.mapping import Mapping
from recctl.ingest.sources import Source, ident, json_pointer, sql_str


def _literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return sql_str(value)


def _binds_alone(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether a bare word is an expression without any column (``current_date``) rather than a name.
    Asked on a cursor of its own: a failed statement would abort the file's transaction."""
    cur = con.cursor()
    try:
        cur.execute(f"DESCRIBE SELECT ({name}\n)")
    except (duckdb.Error, UnicodeDecodeError):
        return False
    finally:
        cur.close()
    return True


@dataclass(frozen=True)
class Absent:
    """A mapping value naming a column the file does not have."""

    column: str  # the canonical column it feeds
    attribute: str | None  # the [attributes] key, when it is one
    expr: str

    @property
    def key(self) -> str:
        return f"[attributes] {self.attribute}" if self.attribute else f"[columns] {self.column}"


def _value(
    con: duckdb.DuckDBPyConnection, source: Source, col: str, attr: str | None, expr: str, allow: bool,
    absent: list[Absent],
) -> str | None:  # fmt: skip
    """The SQL for one mapping value over alias ``s``: the source column of that name, else the checked
    expression; None (and an entry in ``absent``) when it names a column the file does not have."""
    if expr in source.columns:
        return f"s.{ident(expr)}"
    if _is_bare(expr) and not _binds_alone(con, expr):
        absent.append(Absent(col, attr, expr))
        return None
    verdict = guard.runnable(con, expr, allow_file_functions=allow)
    if verdict.ok:
        return f"({expr}\n)"  # exactly the text the guard parsed: a trailing -- comment ends at the line
    if not verdict.parses:
        absent.append(Absent(col, attr, expr))  # not SQL, so a column name: one this file lacks
        return None
    key = f"[attributes] {attr}" if attr else f"[columns] {col}"
    raise ConfigError(f"mapping {source.path}: {key} = {expr[:80]!r} is refused: {verdict.why}")


def mapped_expressions(
    con: duckdb.DuckDBPyConnection, source: Source, mapping: Mapping, *, allow_file_functions: bool = False
) -> tuple[dict[str, str], list[Absent]]:
    """canonical column → SQL expression over source alias ``s`` (only the columns that are given), and
    the mapping values that name columns the file does not have."""
    out: dict[str, str] = {}
    absent: list[Absent] = []
    for col in schema.mappable_columns(mapping.target):
        if col in mapping.constants:
            out[col] = _literal(mapping.constants[col])
        elif col in mapping.columns:
            value = _value(con, source, col, None, mapping.columns[col], allow_file_functions, absent)
            if value is not None:
                out[col] = value
        elif col == "attributes" and mapping.attributes:
            parts = []
            for name, expr in mapping.attributes.items():
                value = _value(con, source, col, name, expr, allow_file_functions, absent)
                parts += [sql_str(name), value or "NULL"]
            out[col] = f"json_object({', '.join(parts)})"
        elif col in source.columns:
            out[col] = f"s.{ident(col)}"
    return out, absent


def bare_sources(source: Source, mapping: Mapping) -> dict[str, str]:
    """canonical column → the source column it is taken from as is (not via an expression)."""
    out = {}
    for col in schema.mappable_columns(mapping.target):
        if col in mapping.constants:
            continue
        name = mapping.columns.get(col, col)
        if name in source.columns:
            out[col] = name
    return out


def _is_bare(expr: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expr)) and expr.upper() not in (
        "NULL",
        "TRUE",
        "FALSE",
    )


def _stored(con: duckdb.DuckDBPyConnection, target: str, a: Absent) -> bool:
    """Whether earlier loads gave the warehouse values for what ``a`` feeds."""
    value = ident(a.column) if a.attribute is None else f"{ident(a.column)} ->> {json_pointer(a.attribute)}"
    return bool(con.execute(f"SELECT 1 FROM {target} WHERE {value} IS NOT NULL LIMIT 1").fetchall())


def check_absent(
    con: duckdb.DuckDBPyConnection, source: Source, mapping: Mapping, absent: list[Absent]
) -> list[str]:
    """A mapping value naming a column the file does not have stops the file (exit 65): a misspelled
    column would load NULL in every row. Unless earlier loads already filled that column: then the file
    is a partial export (an update of some columns) and only a warning is returned."""
    refused = [a for a in absent if not _stored(con, mapping.target, a)]
    if refused:
        have = ", ".join(source.columns) or "no columns"
        raise DataError(
            f"{source.path}: mapped column{'s' if len(refused) > 1 else ''} not in the file: "
            f"{'; '.join(f'{a.key} = {a.expr!r}' for a in refused)} (mapping: {mapping.source}); "
            f"the file has: {have[:300]}",
            hint="fix the name in the mapping (a file may lack a mapped column only once earlier loads "
            "filled that column)",
        )
    return [f"{a.key} = {a.expr!r} is not in this file: the stored values are kept" for a in absent]


def check_not_events(source: Source, mapping: Mapping, exprs: dict[str, str]) -> None:
    """An items or users file in which nothing but the key maps, while it has other columns, is refused:
    it is usually an events file given to the wrong table (it would add bare ids and drop the rest)."""
    if mapping.target == "events":
        return
    key = schema.KEYS[mapping.target]
    if set(exprs) - {key}:
        return
    used = {mapping.columns.get(key, key)}
    others = [c for c in source.columns if c not in used]
    if others:
        raise DataError(
            f"{source.path}: nothing in the file maps to a {mapping.target} column besides {key}; its other "
            f"columns ({', '.join(others)[:200]}) would be dropped: is it an events file?",
            hint=f"ingest events with `recctl ingest events`, or map the columns in the {mapping.target} mapping",
        )


def check_required(source: Source, mapping: Mapping, exprs: dict[str, str]) -> None:
    """A required column that is neither mapped nor present stops the file (exit 65)."""
    missing = [c for c in schema.REQUIRED[mapping.target] if c not in exprs]
    if mapping.target == "events" and not any(c in exprs for c in schema.EVENT_ACTOR_COLUMNS):
        missing.append("user_id or session_id")
    if missing:
        named = [f"{c} (mapped from {mapping.columns[c]!r})" if c in mapping.columns else c for c in missing]
        raise DataError(
            f"{source.path}: required column {', '.join(named)} missing for {mapping.target} "
            f"(mapping: {mapping.source}); the file has: {', '.join(source.columns) or 'no columns'}",
            hint="map it in [columns] or set it in [constants] of the mapping",
        )
