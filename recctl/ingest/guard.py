"""Mapping expressions are contained: one scalar expression over the source row, nothing else.

A ``[columns]`` or ``[attributes]`` value that is not a source column is spliced into the stage SQL as
``(expr)``. Before that, DuckDB's own parser checks it (``json_serialize_sql('SELECT (' || expr || ')')``,
the text passed as a parameter, so the check itself runs nothing): it must be exactly one SELECT whose
only content is one select-list entry: no FROM, WHERE, GROUP BY, ORDER BY, LIMIT, CTE, second statement
(``; COMMIT; CREATE TABLE ...``), parameter or ``*``. The parse tree is then walked: subqueries, table
functions (every ``function_type = 'table'`` of ``duckdb_functions()``: ``read_text``, ``read_csv``,
``glob``, ``query``, ``*_scan``, ...) and scalar functions that reach beyond the row (sequences, settings,
the environment) are refused unless the config says ``[ingest] allow_file_functions = true``. Statements
are refused always.

A value that does not parse at all can still be the name of an odd source column (``"Sales Value"``);
it is accepted here only if it has no ``;`` and is then used as a column name, never as SQL: a file
without that column is refused (see ``stage.mapped_expressions``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from recctl.errors import ConfigError
from recctl.ingest.mapping import Mapping

#: Scalar functions that read or change state outside the row being mapped.
OUTSIDE_SCALARS = frozenset(
    {"nextval", "setval", "currval", "current_setting", "getenv", "current_query", "getvariable"}
)
HINT = "a mapping value is a source column or one scalar SQL expression over the source columns"
FLAG_HINT = "set [ingest] allow_file_functions = true in the config to allow it (trusted mappings only)"


@dataclass(frozen=True)
class Verdict:
    ok: bool  # a single scalar expression that may run
    parses: bool  # whether it parses as an expression at all
    why: str = ""


_TABLE_FUNCTIONS: frozenset[str] | None = None


def _table_functions(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Every table function DuckDB has (asked once per process: they reach a mapping expression only
    through a FROM or a subquery, both refused anyway, so this is the second line of defence)."""
    global _TABLE_FUNCTIONS
    if _TABLE_FUNCTIONS is None:
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro', 'pragma')"
        ).fetchall()
        _TABLE_FUNCTIONS = frozenset(str(r[0]) for r in rows)
    return _TABLE_FUNCTIONS


def _walk(node: Any, denied: frozenset[str], allow: bool) -> str | None:
    """The first forbidden construct under ``node``, in words (None when there is none)."""
    if isinstance(node, list):
        for child in node:
            if (why := _walk(child, denied, allow)) is not None:
                return why
        return None
    if not isinstance(node, dict):
        return None
    cls = node.get("class")
    if not allow:
        if cls == "SUBQUERY":
            return "a subquery reads tables outside the source row"
        if node.get("type") == "TABLE_FUNCTION":
            return "a table function reads outside the source row"
        name = str(node.get("function_name", "")).lower() if cls in ("FUNCTION", "WINDOW") else ""
        if name in denied:
            return f"function {name}() reads files or tables outside the source row"
        if name in OUTSIDE_SCALARS:
            return f"function {name}() reads or changes state outside the source row"
    return next((w for v in node.values() if (w := _walk(v, denied, allow)) is not None), None)


def judge(con: duckdb.DuckDBPyConnection, expr: str, *, allow: bool, denied: frozenset[str]) -> Verdict:
    """Whether ``expr`` is one scalar expression that may run (``denied``: the table functions)."""
    if "\x00" in expr:
        return Verdict(False, False, "it contains a NUL character")
    raw = con.execute("SELECT json_serialize_sql(?)", [f"SELECT ({expr}\n)"]).fetchall()[0][0]
    tree = json.loads(raw)
    if tree.get("error"):
        msg = str(tree.get("error_message", "does not parse")).splitlines()[0]
        if ";" in expr or tree.get("error_type") != "parser":
            return Verdict(False, False, f"it is not a single expression ({msg})")
        return Verdict(False, False, f"it does not parse as an expression ({msg})")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        return Verdict(False, True, "it is several statements, a mapping value is one expression")
    node = statements[0].get("node", {})
    extra = (
        node.get("type") != "SELECT_NODE"
        or node.get("from_table", {}).get("type") != "EMPTY"
        or len(node.get("select_list", [])) != 1
        or node.get("where_clause") is not None
        or node.get("group_expressions")
        or node.get("group_sets")
        or node.get("having") is not None
        or node.get("qualify") is not None
        or node.get("sample") is not None
        or node.get("modifiers")
        or node.get("cte_map", {}).get("map")
    )
    if extra:
        return Verdict(False, True, "it is more than one scalar expression (FROM, WHERE, ORDER BY, ...)")
    if _has_class(node["select_list"], ("PARAMETER", "STAR")):
        # `$price` parses as a parameter and `*` as a star: neither means anything here, so the value can
        # only be the name of a column (a JSON key "$price"): decided against the file's columns
        return Verdict(False, False, "a parameter or * is no expression here")
    why = _walk(node["select_list"], denied, allow)
    return Verdict(why is None, True, why or "")


def _has_class(node: Any, classes: tuple[str, ...]) -> bool:
    if isinstance(node, list):
        return any(_has_class(c, classes) for c in node)
    if isinstance(node, dict):
        return node.get("class") in classes or any(_has_class(v, classes) for v in node.values())
    return False


def _check_timezone(con: duckdb.DuckDBPyConnection, mapping: Mapping) -> None:
    tz = mapping.timestamp.timezone
    try:
        con.execute("SET TimeZone = " + "'" + tz.replace("'", "''") + "'")
    except duckdb.Error as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        candidates = next((ln for ln in lines if ln.startswith("Candidate")), None)
        raise ConfigError(
            f"mapping {mapping.source}: [timestamp] timezone {tz!r} is not a known time zone",
            hint=(candidates or "use an IANA name such as UTC or Europe/Berlin")[:200],
        ) from exc
    finally:
        con.execute("SET TimeZone = 'UTC'")


def mapping_values(mapping: Mapping) -> list[tuple[str, str]]:
    """(key as written in the mapping, value) of every value that may be an expression."""
    out = [(f"[columns] {k}", v) for k, v in mapping.columns.items()]
    out += [(f"[attributes] {k}", v) for k, v in mapping.attributes.items()]
    return out


def check_mapping(con: duckdb.DuckDBPyConnection, mapping: Mapping, *, allow_file_functions: bool) -> None:
    """Refuse (ConfigError, exit 2) a mapping whose expressions could run anything beyond one scalar
    expression, or whose time zone DuckDB does not know. Runs once, before any file is read."""
    _check_timezone(con, mapping)
    denied = _table_functions(con)
    for key, expr in mapping_values(mapping):
        v = judge(con, expr, allow=allow_file_functions, denied=denied)
        if v.ok or (not v.parses and ";" not in expr and "\x00" not in expr):
            continue  # a column name that is no expression is checked against each file's columns
        shown = expr if len(expr) <= 80 else expr[:77] + "..."
        raise ConfigError(
            f"mapping {mapping.source}: {key} = {shown!r} is refused: {v.why}",
            hint=FLAG_HINT if v.parses and not allow_file_functions else HINT,
        )


def runnable(con: duckdb.DuckDBPyConnection, expr: str, *, allow_file_functions: bool) -> Verdict:
    """The same judgement for one expression at stage time (defence in depth: the stage never splices a
    value that is not a source column unless this says it may run)."""
    return judge(con, expr, allow=allow_file_functions, denied=_table_functions(con))
