"""SQL that turns a source relation into typed canonical rows with a reject reason.

One statement, four layers, all inside DuckDB:
  1. map:      canonical column = constant | source column | SQL expression
  2. type:     cast text to the canonical types (try_cast: failures become NULL, detected in 3)
  3. validate: one reason string per row (NULL = good), every failed check listed
  4. finish:   raw text for rejected rows only; the event identity key
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from recctl import schema
from recctl.errors import DataError
from recctl.ingest.mapping import Mapping
from recctl.ingest.resolve import (
    bare_sources,
    check_absent,
    check_not_events,
    check_required,
    mapped_expressions,
)
from recctl.ingest.sources import Source, ident, sql_str

NUMERIC_TYPES = ("DOUBLE", "BIGINT")
_NUMERIC_SOURCE = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UB", "UI", "US", "UT")  # fmt: skip
_NEGATIVE_NOT_ALLOWED = frozenset({"price", "original_price", "discount", "likes", "review_count"})


def _numeric(src_type: str) -> bool:
    """A numeric DuckDB type (not a list or array of numbers: ``BIGINT[]`` starts like ``BIGINT``)."""
    return src_type.startswith(_NUMERIC_SOURCE) and not src_type.endswith("]")


@dataclass(frozen=True)
class Rules:
    event_types: tuple[str, ...]
    now: datetime  # UTC, naive
    future_limit: datetime
    future_tolerance: str
    min_timestamp: datetime
    allow_file_functions: bool = False


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMP {sql_str(value.isoformat(sep=' '))}"


def _describe_types(con: duckdb.DuckDBPyConnection, source: Source, exprs: dict[str, str]) -> dict[str, str]:
    select = ", ".join(f"{e} AS {ident('m_' + c)}" for c, e in exprs.items())
    try:
        rows = con.sql(f"DESCRIBE SELECT {select} FROM {source.sql} AS s").fetchall()
    except (duckdb.Error, UnicodeDecodeError) as exc:  # DuckDB quotes raw bytes in some messages
        msg = str(exc).strip().splitlines()[0]
        raise DataError(f"{source.path}: a mapping expression fails: {msg}") from exc
    return {str(r[0])[2:]: str(r[1]) for r in rows}


#: Epoch microseconds beyond this are outside DuckDB's TIMESTAMP range (about ±292,000 years).
_MAX_EPOCH_US = 9.2e18


def _local_to_utc(ts: str, mapping: Mapping) -> str:
    if mapping.timestamp.timezone == "UTC":
        return ts
    return f"(({ts} AT TIME ZONE {sql_str(mapping.timestamp.timezone)}) AT TIME ZONE 'UTC')"


def _from_number(x: str, mapping: Mapping) -> str:
    """A timestamp from a DOUBLE expression ``x``: epoch seconds, ms or us (auto: by magnitude), NULL when
    not finite or out of range (the row is then rejected as unparseable). With unit = "auto" an 8-digit
    whole number that is a date YYYYMMDD (19000101 … 29991231) is that date, midnight in the mapping's
    time zone: as epoch seconds it would be a moment in 1970-1973, which no shop's events are."""
    factor = {"s": "1e6", "ms": "1e3", "us": "1"}
    unit = mapping.timestamp.unit
    scale = (
        factor[unit]
        if unit != "auto"
        else f"CASE WHEN abs({x}) >= 1e14 THEN 1 WHEN abs({x}) >= 1e11 THEN 1e3 ELSE 1e6 END"
    )
    us = f"({x} * {scale})"
    epoch = f"CASE WHEN isfinite({us}) AND abs({us}) < {_MAX_EPOCH_US} THEN make_timestamp(CAST({us} AS BIGINT)) END"
    if unit != "auto":
        return epoch
    ymd = _local_to_utc(f"try_strptime(CAST(CAST({x} AS BIGINT) AS VARCHAR), '%Y%m%d')", mapping)
    return f"CASE WHEN {x} BETWEEN 19000101 AND 29991231 AND {x} = floor({x}) THEN {ymd} ELSE {epoch} END"


def _ts_expr(m: str, src_type: str, mapping: Mapping) -> str:
    if src_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"make_timestamp(epoch_us({m}))"
    if src_type.startswith(("TIMESTAMP", "DATE")):
        return _local_to_utc(f"CAST({m} AS TIMESTAMP)", mapping)
    if _numeric(src_type):
        return _from_number(f"CAST({m} AS DOUBLE)", mapping)
    text = m if src_type == "VARCHAR" else f"CAST({m} AS VARCHAR)"
    if mapping.timestamp.format:
        parsed = _local_to_utc(f"try_strptime(trim({text}), {sql_str(mapping.timestamp.format)})", mapping)
    else:
        # a text without zone is read in the session time zone, set to the mapping's during the load
        parsed = f"make_timestamp(epoch_us(try_cast({text} AS TIMESTAMPTZ)))"
    # CASE, not coalesce: DuckDB hoists an expression used several times out of a coalesce and computes
    # it for every row, so the number parse (try_cast to DOUBLE, 1 s of a 10M-row load) ran on every text
    # time; inside the ELSE branch it runs only for the texts that are not a time
    fallback = _from_number(f"try_cast({text} AS DOUBLE)", mapping)
    return f"CASE WHEN {parsed} IS NOT NULL THEN {parsed} ELSE {fallback} END"


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
        if _numeric(src_type):
            return f"CAST({m} AS DOUBLE)"
        # a STRUCT, LIST or BLOB has no cast to DOUBLE at all: through its text, the row gets a reason
        return f"try_cast({m if src_type == 'VARCHAR' else f'CAST({m} AS VARCHAR)'} AS DOUBLE)"
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
        # NaN, inf and 1e309 (read as inf) parse as DOUBLE but are no price, value or quantity
        finite = (
            f" WHEN NOT isfinite({col}) THEN '{col} is not a finite number: ' || {_quoted(m)}"
            if sql_type == "DOUBLE"
            else ""
        )
        out.append(
            f"CASE WHEN {col} IS NULL AND {present} THEN '{col} is not {kind}: ' || {_quoted(m)}{finite} END"
        )
        if col in _NEGATIVE_NOT_ALLOWED:
            out.append(
                f"CASE WHEN {col} < 0 AND {col} > '-inf'::DOUBLE THEN '{col} is negative: ' || "
                f"CAST({col} AS VARCHAR) END"
            )
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
) -> tuple[str, list[str], list[str]]:
    """The SELECT producing the stage table, the canonical columns it carries, and warnings."""
    target = mapping.target
    exprs, absent = mapped_expressions(con, source, mapping, allow_file_functions=rules.allow_file_functions)
    warnings = check_absent(con, source, mapping, absent)
    check_required(source, mapping, exprs)
    check_not_events(source, mapping, exprs)
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
    return sql, carried, warnings
