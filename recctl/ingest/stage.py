"""SQL that turns a source relation into typed canonical rows with a reject reason.

One statement, four layers, all inside DuckDB:
  1. map:      canonical column = constant | source column | SQL expression
  2. type:     cast text to the canonical types (try_cast: failures become NULL, detected in 3)
  3. validate: one reason string per row (NULL = good), every failed check listed
  4. finish:   raw text for rejected rows only; the event identity key
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import duckdb

from recctl import schema
from recctl.errors import DataError
from recctl.ingest.mapping import Mapping
from recctl.ingest.sources import Source, ident, sql_str

NUMERIC_TYPES = ("DOUBLE", "BIGINT")
_NUMERIC_SOURCE = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UB", "UI", "US", "UT")  # fmt: skip
_NEGATIVE_NOT_ALLOWED = frozenset({"price", "original_price", "discount", "likes", "review_count"})


@dataclass(frozen=True)
class Rules:
    event_types: tuple[str, ...]
    now: datetime  # UTC, naive
    future_limit: datetime
    future_tolerance: str
    min_timestamp: datetime


def _literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return sql_str(value)


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMP {sql_str(value.isoformat(sep=' '))}"


def mapped_expressions(source: Source, mapping: Mapping) -> dict[str, str]:
    """canonical column → SQL expression over source alias ``s`` (only the columns that are given)."""
    out: dict[str, str] = {}
    for col in schema.mappable_columns(mapping.target):
        if col in mapping.constants:
            out[col] = _literal(mapping.constants[col])
        elif col in mapping.columns:
            expr = mapping.columns[col]
            if expr in source.columns:
                out[col] = f"s.{ident(expr)}"
            elif not _is_bare(expr):
                out[col] = f"({expr})"
            # else: a mapped column the file lacks: left empty (required ones fail in check_required)
        elif col == "attributes" and mapping.attributes:
            parts = []
            for name, expr in mapping.attributes.items():
                value = f"s.{ident(expr)}" if expr in source.columns else f"({expr})"
                parts += [sql_str(name), value]
            out[col] = f"json_object({', '.join(parts)})"
        elif col in source.columns:
            out[col] = f"s.{ident(col)}"
    return out


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


def absent_columns(source: Source, mapping: Mapping) -> list[str]:
    """Mapped source columns that the file does not have (each canonical column is then left empty)."""
    return [e for c, e in mapping.columns.items() if _is_bare(e) and e not in source.columns]


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


def _describe_types(con: duckdb.DuckDBPyConnection, source: Source, exprs: dict[str, str]) -> dict[str, str]:
    select = ", ".join(f"{e} AS {ident('m_' + c)}" for c, e in exprs.items())
    try:
        rows = con.sql(f"DESCRIBE SELECT {select} FROM {source.sql} AS s").fetchall()
    except duckdb.Error as exc:
        msg = str(exc).strip().splitlines()[0]
        raise DataError(f"{source.path}: a mapping expression fails: {msg}") from exc
    return {str(r[0])[2:]: str(r[1]) for r in rows}


def _ts_expr(m: str, src_type: str, mapping: Mapping) -> str:
    tz = sql_str(mapping.timestamp.timezone)
    unit = mapping.timestamp.unit
    if src_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"make_timestamp(epoch_us({m}))"
    if src_type.startswith(("TIMESTAMP", "DATE")):
        base = f"CAST({m} AS TIMESTAMP)"
        return (
            base
            if mapping.timestamp.timezone == "UTC"
            else f"(({base} AT TIME ZONE {tz}) AT TIME ZONE 'UTC')"
        )

    def epoch(x: str) -> str:
        factor = {"s": "1e6", "ms": "1e3", "us": "1"}
        if unit != "auto":
            return f"make_timestamp(CAST({x} * {factor[unit]} AS BIGINT))"
        return (
            f"make_timestamp(CAST({x} * CASE WHEN abs({x}) >= 1e14 THEN 1 "
            f"WHEN abs({x}) >= 1e11 THEN 1e3 ELSE 1e6 END AS BIGINT))"
        )

    if src_type.startswith(_NUMERIC_SOURCE):
        return epoch(f"CAST({m} AS DOUBLE)")
    text = m if src_type == "VARCHAR" else f"CAST({m} AS VARCHAR)"
    if mapping.timestamp.format:
        parsed = f"try_strptime(trim({text}), {sql_str(mapping.timestamp.format)})"
        parsed = (
            parsed
            if mapping.timestamp.timezone == "UTC"
            else f"(({parsed} AT TIME ZONE {tz}) AT TIME ZONE 'UTC')"
        )
    else:
        # a text without zone is read in the session time zone, set to the mapping's during the load
        parsed = f"make_timestamp(epoch_us(try_cast({text} AS TIMESTAMPTZ)))"
    if unit != "auto":
        return f"coalesce({parsed}, {epoch(f'try_cast({text} AS DOUBLE)')})"
    return f"coalesce({parsed}, {epoch(f'try_cast({text} AS DOUBLE)')})"


def _typed(col: str, sql_type: str, m: str, src_type: str, mapping: Mapping) -> str:
    if col == "event_type":
        cases = " ".join(
            f"WHEN {sql_str(k.strip().lower())} THEN {sql_str(v)}" for k, v in mapping.event_types.items()
        )
        low = f"lower(trim(CAST({m} AS VARCHAR)))"
        return f"CASE {low} {cases} ELSE {low} END" if cases else low
    if sql_type == "VARCHAR":
        if col in schema.ID_COLUMNS:
            v = m if src_type == "VARCHAR" else f"CAST({m} AS VARCHAR)"
            return f"NULLIF(CASE WHEN starts_with({v}, ' ') OR ends_with({v}, ' ') THEN trim({v}) ELSE {v} END, '')"
        return f"NULLIF(CAST({m} AS VARCHAR), '')"
    if sql_type == "DOUBLE":
        return f"CAST({m} AS DOUBLE)" if src_type.startswith(_NUMERIC_SOURCE) else f"try_cast({m} AS DOUBLE)"
    if sql_type == "BIGINT":
        return f"try_cast(try_cast(trim(CAST({m} AS VARCHAR)) AS DOUBLE) AS BIGINT)"
    if sql_type == "BOOLEAN":
        if src_type == "BOOLEAN":
            return m
        low = f"lower(trim(CAST({m} AS VARCHAR)))"
        return f"CASE WHEN {low} IN ('yes', 'y') THEN TRUE WHEN {low} IN ('no', 'n') THEN FALSE ELSE try_cast({low} AS BOOLEAN) END"
    if sql_type == "TIMESTAMP":
        return _ts_expr(m, src_type, mapping)
    if sql_type == "JSON":
        if src_type in ("VARCHAR", "JSON"):
            return f"try_cast(NULLIF(trim({m}), '') AS JSON)"
        return f"to_json({m})"
    raise AssertionError(f"no conversion for {sql_type}")


def _quoted(m: str) -> str:
    return f"'''' || left(CAST({m} AS VARCHAR), 80) || ''''"


def _checks(col: str, sql_type: str, m: str, given: bool, rules: Rules, target: str) -> list[str]:
    out: list[str] = []
    if not given:
        return out
    present = f"(NULLIF(trim(CAST({m} AS VARCHAR)), '') IS NOT NULL)"
    if sql_type in NUMERIC_TYPES:
        kind = "a number" if sql_type == "DOUBLE" else "a whole number"
        out.append(f"CASE WHEN {col} IS NULL AND {present} THEN '{col} is not {kind}: ' || {_quoted(m)} END")
        if col in _NEGATIVE_NOT_ALLOWED:
            out.append(f"CASE WHEN {col} < 0 THEN '{col} is negative: ' || CAST({col} AS VARCHAR) END")
    elif sql_type == "BOOLEAN":
        out.append(
            f"CASE WHEN {col} IS NULL AND {present} THEN '{col} is not true/false: ' || {_quoted(m)} END"
        )
    elif sql_type == "JSON":
        out.append(f"CASE WHEN {col} IS NULL AND {present} THEN '{col} is not valid JSON' END")
    elif sql_type == "TIMESTAMP":
        unparseable = f"WHEN {col} IS NULL AND {present} THEN 'unparseable {col}: ' || {_quoted(m)} "
        if target == "events" and col == "ts":
            # the time of an event must be plausible; catalog dates (releases, sign-ups) may be anything
            out.append(
                f"CASE WHEN {col} IS NULL AND NOT {present} THEN 'missing {col}' {unparseable}"
                f"WHEN {col} > {_ts_literal(rules.future_limit)} THEN '{col} ' || CAST({col} AS VARCHAR) || "
                f"' is in the future (beyond the {rules.future_tolerance} tolerance)' "
                f"WHEN {col} < {_ts_literal(rules.min_timestamp)} THEN '{col} ' || CAST({col} AS VARCHAR) || "
                f"' is before min_timestamp {rules.min_timestamp.date()}' END"
            )
        else:
            out.append(f"CASE {unparseable}END")
    return out


def stage_sql(
    con: duckdb.DuckDBPyConnection, source: Source, mapping: Mapping, rules: Rules
) -> tuple[str, list[str]]:
    """The SELECT producing the stage table, and the canonical columns it carries."""
    target = mapping.target
    exprs = mapped_expressions(source, mapping)
    check_required(source, mapping, exprs)
    src_types = _describe_types(con, source, exprs) if exprs else {}
    cols = schema.mappable_columns(target)

    raw_select = "s" if source.raw_expr.startswith("to_json") else source.raw_expr
    l1 = [f"{e} AS {ident('m_' + c)}" for c, e in exprs.items()]
    l1 += [f"{raw_select} AS _rawsrc", f"{source.error_expr} AS _src_error"]
    l1.append(f"{source.nested_expr} AS _nested" if source.nested_expr else "NULL::VARCHAR[] AS _nested")
    if source.line_mode == "column":
        l1.append("s._lineno AS _lineno")

    l2 = ["*"]
    for c in cols:
        t = schema.sql_type(target, c)
        if c in exprs:
            l2.append(f"{_typed(c, t, ident('m_' + c), src_types[c], mapping)} AS {ident(c)}")
        else:
            l2.append(f"NULL::{t} AS {ident(c)}")

    reasons: list[str] = []
    if target == "events":
        known = ", ".join(sql_str(e) for e in rules.event_types)
        itemless = ", ".join(sql_str(e) for e in schema.ITEMLESS_EVENT_TYPES)
        reasons += [
            "CASE WHEN user_id IS NULL AND session_id IS NULL THEN 'missing user_id and session_id' END",
            f"CASE WHEN event_type IS NULL THEN 'missing event_type' WHEN event_type NOT IN ({known}) "
            f"THEN 'unknown event type ' || {_quoted('m_event_type')} END",
            f"CASE WHEN item_id IS NULL AND coalesce(event_type NOT IN ({itemless}), TRUE) "
            "THEN 'missing item_id' END",
        ]
    else:
        key = schema.KEYS[target]
        reasons.append(f"CASE WHEN {key} IS NULL THEN 'missing {key}' END")
    for c in cols:
        reasons += _checks(c, schema.sql_type(target, c), ident("m_" + c), c in exprs, rules, target)
    if source.nested_expr:
        for c, name in bare_sources(source, mapping).items():
            if schema.sql_type(target, c) != "JSON":
                reasons.append(
                    f"CASE WHEN list_contains(_nested, {sql_str(name)}) THEN '{c} is a nested JSON value' END"
                )
    # a record that is not even a JSON object gets that one reason, not a list of missing columns
    reason = f"coalesce(_src_error, NULLIF(concat_ws('; ', {', '.join(reasons)}), ''))"
    raw_final = "to_json(_rawsrc)::VARCHAR" if raw_select == "s" else "CAST(_rawsrc AS VARCHAR)"
    # events carry only the columns this file gives (the rest are NULL); upserts merge every column
    carried = [c for c in cols if c in exprs] if target == "events" else cols
    l4 = [ident(c) for c in carried]
    l4 += ["_reason", f"CASE WHEN _reason IS NOT NULL THEN {raw_final} END AS _raw"]
    if source.line_mode == "column":
        l4.append("_lineno")
    if target == "events":
        l4.append(f"{schema.event_key_sql()} AS _key")
    sql = (
        f"SELECT {', '.join(l4)} FROM (SELECT *, {reason} AS _reason FROM "
        f"(SELECT {', '.join(l2)} FROM (SELECT {', '.join(l1)} FROM {source.sql} AS s)))"
    )
    return sql, carried
