"""Data as plain text for pipes and cron logs: TSV for tables, ``key<TAB>value`` lines for one record.

What a command prints on stdout when stdout is not a terminal (or with ``--quiet``), made from the same
JSON-able data as its ``--json`` document:

- a table (a list of records) is TSV: one header line with the column names, then one line per row;
- one record (a mapping) is one ``key<TAB>value`` line per value, nested mappings flattened into dotted
  keys (``events.rows``) and lists of records numbered (``ingest.recent.0.path``);
- in a cell, ``None`` is empty, booleans are ``true`` / ``false``, a list of values is joined with
  ``"; "``, a nested mapping shows its keys, and tabs and line breaks are written as ``\\t``, ``\\n``, ``\\r``
  so that every row stays one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def cell(value: Any) -> str:
    """One value as a single line of text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "; ".join(cell(k) for k in value)
    if isinstance(value, list | tuple | set | frozenset):
        return "; ".join(cell(v) for v in value)
    return str(value).translate(_ESCAPES)


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys of all rows, in the order they first appear."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def tsv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A header line and one line per row; a missing key is an empty cell."""
    cols = list(columns) if columns is not None else columns_of(rows)
    lines = ["\t".join(cell(c) for c in cols)]
    lines += ["\t".join(cell(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}" if prefix else str(i), v, out)
    else:
        out.append((prefix, cell(value)))


def record(data: Mapping[str, Any]) -> str:
    """One ``key<TAB>value`` line per (flattened) value."""
    pairs: list[tuple[str, str]] = []
    _flatten("", data, pairs)
    return "".join(f"{cell(k)}\t{v}\n" for k, v in pairs)


def render(
    data: Any, rows: Sequence[Mapping[str, Any]] | None = None, columns: Sequence[str] | None = None
) -> str:
    """``rows`` (or ``data`` when it is a list of records) as TSV, else ``data`` as one record."""
    if rows is None and isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
        rows = data
    if rows is not None or columns is not None:
        return tsv(rows or [], columns)
    if isinstance(data, Mapping):
        return record(data)
    if isinstance(data, list | tuple):
        return "".join(cell(v) + "\n" for v in data)
    return cell(data) + "\n"
