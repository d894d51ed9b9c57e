"""``[resources] threads``, ``memory`` and ``temp_dir`` applied to a DuckDB connection (DuckDB's share of
the budget, ``recctl.resources``), refused (exit 2) when DuckDB cannot work with them: DuckDB's own parser
refuses "lots", but takes "-5GB" as no limit at all, "0GB" as a limit every later query fails on, and starts
100 000 threads when asked to (the config's own checks catch those first; this is the last word)."""

from __future__ import annotations

import re

import duckdb

from recctl import resources
from recctl.config import RecctlConfig
from recctl.errors import ConfigError

MAX_THREADS = 1024
MIN_MEMORY = 16 * 2**20  # below this DuckDB cannot pin the blocks of a small scan
_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
_MEMORY_HINT = "memory takes a size such as '16GB', '500MB' or '50%' of RAM (at least 32MB)"


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n", 1)[0]
    return text.split(": ", 1)[-1] if ": " in text else text


def _bytes(setting: str) -> float | None:
    """DuckDB's display of a memory setting (``'15.2 MiB'``) in bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(bytes|[KMGTP]iB)\s*", setting)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def _refuse(key: str, value: object, reason: str, hint: str) -> ConfigError:
    return ConfigError(f"invalid configuration: 'resources.{key}' = {value!r}: {reason}", hint=hint)


def apply_settings(con: duckdb.DuckDBPyConnection, cfg: RecctlConfig) -> None:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # DuckDB's own bar would write to stdout
    res = cfg.resources
    threads = res.threads
    if threads is not None:
        if not 1 <= int(threads) <= MAX_THREADS:
            raise _refuse(
                "threads", threads, f"must be between 1 and {MAX_THREADS}", "threads takes a positive integer"
            )
        con.execute(f"SET threads = {int(threads)}")
    try:
        limit = resources.duckdb_memory(res.memory)
    except ValueError as exc:
        raise _refuse("memory", res.memory, str(exc), _MEMORY_HINT) from None
    if limit:  # None: DuckDB's default, as before
        try:
            con.execute("SET memory_limit = ?", [limit])
        except duckdb.Error as exc:
            raise _refuse("memory", res.memory, _reason(exc), _MEMORY_HINT) from None
        try:
            got = _bytes(str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]))
        except duckdb.OutOfMemoryException:
            got = 0.0
        if got is not None and got < MIN_MEMORY:
            raise _refuse("memory", res.memory, "too small for DuckDB to run a query", _MEMORY_HINT)
